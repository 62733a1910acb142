//! The EL0 transport: `capvisor_ipc`'s [`Transport`], [`ServerTransport`], [`Signal`] and [`Wait`]
//! over the `svc` syscalls, so the `protocol!` clients and `serve` loops run in EL0 services
//! exactly as they run under the hosted transport in host tests.
//!
//! A message travels as the kernel moves it (`docs/ipc.md`, "The ABI"): the first four message
//! words in x2–x5, the rest and the capabilities to transfer in this thread's IPC buffer. The
//! protocol layer works on its own [`IpcBuffer`] value; these types copy between it and the
//! thread's buffer around each syscall (only the words the message uses), so the thread's buffer
//! is never held across an `.await`.
//!
//! Received capabilities land in a [`ReceiveWindow`] of empty slots that each transport owns: the
//! kernel installs them from the window's next slot, and the window moves past them. When it is
//! used up, the transport offers no slot (the null pointer) and the kernel delivers messages
//! without their capabilities (`extra_caps` says how many arrived), as seL4 does. A server that
//! keeps some of what it receives and must go on receiving for ever uses a [`LandingServer`]
//! instead: every message's capabilities arrive in the same slots, the handler moves out what it
//! keeps, and the transport deletes what is left before it receives again, so no client can use
//! up the server's slots by sending capabilities.
//!
//! All operations block the service's thread in the kernel (see [`crate::executor`]): the futures
//! complete on their first poll.

use capvisor_ipc::abi::{IpcBuffer, KernelError, MSG_REGS_IN_CPU, MessageInfo};
use capvisor_ipc::cap::{Badge, CPtr, Cap, Endpoint, ObjectType, Slot};
use capvisor_ipc::protocol::{CallError, Generation, Protocol, encode_request};
use capvisor_ipc::transport::{ServerTransport, Signal, Transport, TransportError, Wait};

use crate::sys::{self, Message};

/// A run of empty slots in this thread's capability space where received capabilities go, used
/// one after the other (a capability a handler deletes does not give its slot back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiveWindow {
    next: u64,
    end: u64,
}

impl ReceiveWindow {
    /// No slots: messages arrive without capabilities.
    pub const NONE: Self = Self { next: 0, end: 0 };

    /// `count` slots from `first` on.
    #[must_use]
    pub const fn new(first: Slot, count: u64) -> Self {
        Self {
            next: first.raw(),
            end: first.raw().saturating_add(count),
        }
    }

    /// The slot the next received capability goes to (`None`: the window is used up).
    #[must_use]
    pub const fn next(&self) -> Option<Slot> {
        if self.next < self.end && self.next != 0 {
            Some(Slot::new(self.next))
        } else {
            None
        }
    }

    /// The `receive_slot` word for the kernel: the next slot, or the null pointer, which no
    /// capability can be installed at.
    fn receive_slot(&self) -> u64 {
        self.next().map_or(CPtr::NULL.raw(), Slot::raw)
    }

    /// Moves past the capabilities that `info` says were installed (unwrapped ones took no slot).
    fn consume(&mut self, info: MessageInfo) {
        let unwrapped = info.caps_unwrapped().count_ones() as usize;
        let installed = info.extra_caps().saturating_sub(unwrapped) as u64;
        self.next = self.next.saturating_add(installed).min(self.end);
    }
}

/// Message words a payload of `length` bytes occupies.
const fn words(length: usize) -> usize {
    length.div_ceil(8)
}

/// Puts the part of `buffer`'s message that does not fit in registers (words and capabilities)
/// into the thread's IPC buffer, and names the slot where received capabilities go.
fn stage(info: MessageInfo, buffer: &IpcBuffer, window: &ReceiveWindow) {
    sys::with_ipc_buffer(|thread| {
        let used = words(info.length());
        if used > MSG_REGS_IN_CPU {
            thread.msg[MSG_REGS_IN_CPU..used].copy_from_slice(&buffer.msg[MSG_REGS_IN_CPU..used]);
        }
        let caps = info.extra_caps();
        // Each `copy_from_slice` is a `memcpy` call on this target, even for no bytes.
        if caps > 0 {
            thread.caps[..caps].copy_from_slice(&buffer.caps[..caps]);
        }
        thread.receive_slot = window.receive_slot();
    });
}

/// The message words that travel in x2–x5, word by word (a slice copy is a `memcpy` call).
fn registers(buffer: &IpcBuffer) -> [u64; MSG_REGS_IN_CPU] {
    [buffer.msg[0], buffer.msg[1], buffer.msg[2], buffer.msg[3]]
}

/// Writes the message words that arrived in x2–x5, word by word.
fn set_registers(buffer: &mut IpcBuffer, [a, b, c, d]: [u64; MSG_REGS_IN_CPU]) {
    [buffer.msg[0], buffer.msg[1], buffer.msg[2], buffer.msg[3]] = [a, b, c, d];
}

/// Copies a message that arrived into `buffer`: registers, the buffer words it uses, its badge,
/// and the capabilities it transferred with their attested kinds.
fn arrived(message: &Message, buffer: &mut IpcBuffer, window: &mut ReceiveWindow) -> MessageInfo {
    let info = message.info;
    buffer.tag = info.raw();
    buffer.badge = message.badge;
    set_registers(buffer, message.words);
    let used = words(info.length());
    let caps = info.extra_caps();
    // A short message without capabilities is all in registers: the thread's buffer is not read
    // (each `copy_from_slice` is a `memcpy` call on this target, even for no bytes).
    if used > MSG_REGS_IN_CPU || caps > 0 {
        sys::with_ipc_buffer(|thread| {
            if used > MSG_REGS_IN_CPU {
                buffer.msg[MSG_REGS_IN_CPU..used]
                    .copy_from_slice(&thread.msg[MSG_REGS_IN_CPU..used]);
            }
            buffer.caps[..caps].copy_from_slice(&thread.caps[..caps]);
            buffer.cap_kinds[..caps].copy_from_slice(&thread.cap_kinds[..caps]);
        });
    }
    window.consume(info);
    info
}

/// A client's endpoint capability: [`Transport`] for a `protocol!` client.
#[derive(Debug)]
pub struct EndpointClient {
    endpoint: Cap<Endpoint>,
    window: ReceiveWindow,
}

impl EndpointClient {
    /// Calls through `endpoint`; capabilities in replies land in `window`.
    #[must_use]
    pub const fn new(endpoint: Cap<Endpoint>, window: ReceiveWindow) -> Self {
        Self { endpoint, window }
    }

    /// The endpoint capability.
    #[must_use]
    pub const fn endpoint(&self) -> Cap<Endpoint> {
        self.endpoint
    }
}

impl Transport for EndpointClient {
    async fn call(
        &mut self,
        info: MessageInfo,
        buffer: &mut IpcBuffer,
    ) -> Result<MessageInfo, TransportError> {
        stage(info, buffer, &self.window);
        let registers = registers(buffer);
        let reply = sys::call(self.endpoint.cptr(), info, registers)?;
        Ok(arrived(&reply, buffer, &mut self.window))
    }
}

/// A server's endpoint capability: [`ServerTransport`] for a `protocol!` `serve` loop.
#[derive(Debug)]
pub struct EndpointServer {
    endpoint: Cap<Endpoint>,
    window: ReceiveWindow,
}

impl EndpointServer {
    /// Receives on `endpoint`; capabilities in requests land in `window`.
    #[must_use]
    pub const fn new(endpoint: Cap<Endpoint>, window: ReceiveWindow) -> Self {
        Self { endpoint, window }
    }

    /// Where the next received capability goes.
    #[must_use]
    pub const fn window(&self) -> ReceiveWindow {
        self.window
    }
}

impl ServerTransport for EndpointServer {
    async fn recv(&mut self, buffer: &mut IpcBuffer) -> Result<MessageInfo, TransportError> {
        sys::with_ipc_buffer(|thread| thread.receive_slot = self.window.receive_slot());
        let message = sys::recv(self.endpoint.cptr())?;
        Ok(arrived(&message, buffer, &mut self.window))
    }

    async fn reply_recv(
        &mut self,
        reply: MessageInfo,
        buffer: &mut IpcBuffer,
    ) -> Result<MessageInfo, TransportError> {
        stage(reply, buffer, &self.window);
        let registers = registers(buffer);
        let message = sys::reply_recv(self.endpoint.cptr(), reply, registers)?;
        Ok(arrived(&message, buffer, &mut self.window))
    }
}

/// A server's endpoint capability whose received capabilities land in the same three slots
/// (a message carries at most [`MAX_CAPS`](capvisor_ipc::abi::MAX_CAPS)) for every message:
/// [`ServerTransport`] for a `protocol!` `serve` loop that must receive for ever. The handler moves
/// out what it keeps (CNode `Move`); whatever is left there is deleted before the next receive.
/// The slots must be empty to begin with; the service's CNode is its slot 1 (every boot
/// service's, `docs/architecture.md`, "EL0 services").
#[derive(Debug)]
pub struct LandingServer {
    endpoint: Cap<Endpoint>,
    first: Slot,
    /// Slots from `first` on that the last message filled.
    left: u64,
}

impl LandingServer {
    /// Receives on `endpoint`; capabilities in requests land from `first` on.
    #[must_use]
    pub const fn new(endpoint: Cap<Endpoint>, first: Slot) -> Self {
        Self {
            endpoint,
            first,
            left: 0,
        }
    }

    /// The landing slots' window, fresh for one message.
    const fn window(&self) -> ReceiveWindow {
        ReceiveWindow::new(self.first, capvisor_ipc::abi::MAX_CAPS as u64)
    }

    /// Deletes what the last message left in the landing slots (a slot the handler emptied by
    /// moving its capability out answers `EmptySlot`, which is what it should be).
    fn clear(&mut self) {
        let own_cnode = CPtr::new(1);
        for slot in self.first.raw()..self.first.raw() + self.left {
            let _ = sys::delete(own_cnode, slot);
        }
        self.left = 0;
    }

    /// Notes how many landing slots `info`'s message filled.
    fn landed(&mut self, message: &Message, buffer: &mut IpcBuffer) -> MessageInfo {
        let mut window = self.window();
        let info = arrived(message, buffer, &mut window);
        self.left = window.next - self.first.raw();
        info
    }
}

impl ServerTransport for LandingServer {
    async fn recv(&mut self, buffer: &mut IpcBuffer) -> Result<MessageInfo, TransportError> {
        self.clear();
        let slot = self.first.raw();
        sys::with_ipc_buffer(|thread| thread.receive_slot = slot);
        let message = sys::recv(self.endpoint.cptr())?;
        Ok(self.landed(&message, buffer))
    }

    async fn reply_recv(
        &mut self,
        reply: MessageInfo,
        buffer: &mut IpcBuffer,
    ) -> Result<MessageInfo, TransportError> {
        self.clear();
        stage(reply, buffer, &self.window());
        let registers = registers(buffer);
        let message = sys::reply_recv(self.endpoint.cptr(), reply, registers)?;
        Ok(self.landed(&message, buffer))
    }
}

/// Sends `request` of protocol `P` through `endpoint` without waiting for a reply (seL4's
/// `Send`: blocks until the server takes it). For requests whose server is not expected to answer,
/// such as one that is meant to fault; capabilities are not sent this way.
///
/// # Errors
/// [`CallError::Encode`] when the request does not fit; [`CallError::Transport`] with the kernel's
/// error.
pub fn send<P: Protocol>(
    endpoint: Cap<Endpoint>,
    request: &P::Request,
    generation: Generation,
) -> Result<(), CallError> {
    let mut buffer = IpcBuffer::default();
    let info =
        encode_request::<P>(request, generation, &[], &mut buffer).map_err(CallError::Encode)?;
    stage(info, &buffer, &ReceiveWindow::NONE);
    let mut registers = [0; MSG_REGS_IN_CPU];
    registers.copy_from_slice(&buffer.msg[..MSG_REGS_IN_CPU]);
    sys::send(endpoint.cptr(), info, registers).map_err(|e| CallError::Transport(e.into()))
}

/// A notification capability whose kind the kernel confirmed: [`Signal`] and [`Wait`].
///
/// The kernel ORs the *capability's badge* into the word on a signal (seL4: the bits are fixed
/// when the capability is minted), so [`Signal::signal`] takes exactly [`Notification::badge`] and
/// refuses other bits with `InvalidArgument` rather than send bits nobody asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Notification {
    cap: Cap<capvisor_ipc::cap::Notification>,
    badge: Badge,
}

impl Notification {
    /// Asks the kernel what `cap` is (`Identify`) and keeps it if it is a notification.
    ///
    /// # Errors
    /// The kernel's lookup errors (`InvalidSlot`, `EmptySlot`, …); `WrongType` when `cap` names
    /// another kind of object.
    pub fn identify(cap: Cap<capvisor_ipc::cap::Notification>) -> Result<Self, KernelError> {
        let [kind, _rights, badge, _] = sys::invoke(
            cap.cptr(),
            capvisor_ipc::abi::Invocation::Identify.code(),
            &[],
        )?;
        let notification = u64::from(capvisor_ipc::cap::Notification::KIND.code());
        if kind != notification {
            return Err(KernelError::WrongType);
        }
        Ok(Self {
            cap,
            badge: Badge::new(badge),
        })
    }

    /// The capability.
    #[must_use]
    pub const fn cap(&self) -> Cap<capvisor_ipc::cap::Notification> {
        self.cap
    }

    /// The bits a signal through this capability sets.
    #[must_use]
    pub const fn badge(&self) -> Badge {
        self.badge
    }
}

impl Signal for Notification {
    fn signal(&self, bits: u64) -> Result<(), TransportError> {
        if bits != self.badge.raw() {
            return Err(KernelError::InvalidArgument.into());
        }
        Ok(sys::signal(self.cap.cptr())?)
    }
}

impl Wait for Notification {
    async fn wait(&mut self) -> Result<u64, TransportError> {
        Ok(sys::wait(self.cap.cptr())?)
    }

    fn poll(&mut self) -> Result<u64, TransportError> {
        Ok(sys::poll(self.cap.cptr())?)
    }
}

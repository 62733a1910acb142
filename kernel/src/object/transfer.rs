//! Moving one message from a sender to a receiver: message words, badge and capabilities.
//!
//! The first [`MSG_REGS_IN_CPU`] words travel in x2–x5; the rest, and capabilities, in the IPC
//! buffers, which are read and written only when the message needs them (a short message without
//! capabilities never touches memory). Capabilities move only when the sender's capability had
//! `GRANT` (or, in a reply, the server received with `GRANT`/`GRANT_REPLY`); each arrives in the
//! receiver's window starting at its buffer's `receive_slot`, as a child of the sender's capability
//! in the derivation tree, so revoking the sender's (or an ancestor) removes it. A capability to the
//! very endpoint the message arrives through is "unwrapped": the receiver gets its badge instead.
//!
//! Failure rules (seL4's): a capability that no longer resolves, or a receive slot that is not
//! empty, ends the transfer there (the receiver's `extra_caps` says how many arrived); a receiver
//! whose IPC buffer cannot be accessed gets only the words that fit in registers and no
//! capabilities. The sender learned about its own bad capabilities and buffer when it sent.

use capvisor_ipc::abi::{
    IpcBuffer, KernelError, MAX_CAPS, MSG_MAX_WORDS, MSG_REGS_IN_CPU, MessageInfo,
};
use capvisor_ipc::cap::{Badge, CPtr, Rights};

use zerocopy::FromZeros;

use super::Kernel;
use super::capability::{Capability, Object};
use super::cspace::SlotId;
use super::effects::{
    Effects, IPC_BADGE_WORD, IPC_CAP_KINDS_WORD, IPC_CAPS_WORD, IPC_MSG_WORD,
    IPC_RECEIVE_SLOT_WORD, IPC_TAG_WORD, IpcWords,
};
use super::memory::{EndpointRef, ThreadRef};
use super::regs::SyscallRegs;
use super::thread::{FaultKind, SendInfo, Thread};

pub(super) const REGISTER_BYTES: usize = MSG_REGS_IN_CPU * 8;

/// A message being sent: its info word, the words that travel in registers and, when the message
/// needs the IPC buffer (longer than the registers, or carrying capabilities), all its words and
/// the sender's capability pointers. The kernel's own messages (faults) fit the registers.
///
/// Short messages carry no [`IpcBuffer`]: building, zeroing and moving 584 bytes for four words was
/// most of the cost of a short call (each move is a `memcpy` call on the kernel's target).
pub(super) struct Message {
    pub info: MessageInfo,
    /// The first [`MSG_REGS_IN_CPU`] words (equal to `body.msg[..MSG_REGS_IN_CPU]` when there is a
    /// body).
    pub words: [u64; MSG_REGS_IN_CPU],
    pub body: Option<IpcBuffer>,
}

impl Message {
    /// No words, no body: what [`Kernel::outgoing`] fills in. (A function, not a constant: a
    /// constant is materialized whole, a 600-byte `memset`, where this stores the few words.)
    #[inline(always)]
    pub const fn empty() -> Self {
        Self {
            info: EMPTY_INFO,
            words: [0; MSG_REGS_IN_CPU],
            body: None,
        }
    }

    /// The capability pointers the message carries.
    fn caps(&self) -> &[u64] {
        match &self.body {
            Some(body) => &body.caps[..self.info.extra_caps().min(MAX_CAPS)],
            None => &[],
        }
    }
}

impl Kernel {
    /// Looks up `cptr` in `thread`'s capability space.
    ///
    /// # Errors
    /// [`KernelError::InvalidSlot`] (no CSpace, null or out-of-range pointer), [`KernelError::Revoked`]
    /// (the CSpace was deleted), [`KernelError::EmptySlot`].
    #[inline(always)]
    pub(super) fn lookup(
        &self,
        thread: ThreadRef,
        cptr: CPtr,
    ) -> Result<(SlotId, Capability), KernelError> {
        let slot = self.lookup_slot(thread, cptr)?;
        let cap = self.slots.cap(slot).ok_or(KernelError::EmptySlot)?;
        Ok((slot, *cap))
    }

    /// The slot `cptr` names in `thread`'s capability space (empty or not).
    ///
    /// # Errors
    /// As [`Kernel::lookup`], except an empty slot is fine.
    pub(super) fn lookup_slot(&self, thread: ThreadRef, cptr: CPtr) -> Result<SlotId, KernelError> {
        self.lookup_slot_of(self.threads.get(thread)?, cptr)
    }

    /// [`Kernel::lookup_slot`] for a thread already looked up.
    #[inline(always)]
    pub(super) fn lookup_slot_of(
        &self,
        thread: &Thread,
        cptr: CPtr,
    ) -> Result<SlotId, KernelError> {
        let cspace = thread.cspace.ok_or(KernelError::InvalidSlot)?;
        self.live_cnode(cspace)?.lookup(cptr)
    }

    /// Where `thread`'s IPC buffer is.
    ///
    /// # Errors
    /// [`KernelError::BadAddress`] when the thread configured none.
    /// Word access to `thread`'s IPC buffer, checked by the glue.
    ///
    /// # Errors
    /// [`KernelError::BadAddress`] when the thread has no buffer or it is not mapped read/write
    /// in its space; `Revoked` when the thread or its space is gone.
    pub(super) fn thread_buffer<'f, F: Effects>(
        &self,
        thread: ThreadRef,
        fx: &'f mut F,
    ) -> Result<F::IpcBuffer<'f>, KernelError> {
        let t = self.threads.get(thread)?;
        let space = t.space.ok_or(KernelError::BadAddress)?;
        if t.ipc_buffer.raw() == 0 {
            return Err(KernelError::BadAddress);
        }
        let space = self.spaces.get(space)?;
        fx.ipc_buffer(&space.glue, t.ipc_buffer)
    }

    pub(super) fn outgoing(
        &self,
        thread: ThreadRef,
        fx: &mut impl Effects,
        message: &mut Message,
    ) -> Result<(), KernelError> {
        let t = self.threads.get(thread)?;
        if let Some(record) = &t.fault {
            // Fault messages are fixed layouts in the registers (`protocols::fault`; a trapped
            // `hvc`/`smc` as a guest call), encoded from the record in place.
            (message.info, message.words) = match &record.fault {
                FaultKind::Guest(fault) => fault.encode(),
                FaultKind::Service(fault) => fault.encode(record.pc),
            };
            return Ok(());
        }
        let regs = SyscallRegs::of(&t.glue.context);
        let info = MessageInfo::decode(regs.info()).map_err(|_| KernelError::InvalidMessageInfo)?;
        let words = regs.words();
        if info.length() <= REGISTER_BYTES && info.extra_caps() == 0 {
            message.info = info;
            message.words = words;
            return Ok(());
        }
        let buffer = self.thread_buffer(thread, fx)?;
        let body = message.body.insert(IpcBuffer::new_zeroed());
        body.msg[..MSG_REGS_IN_CPU].copy_from_slice(&words);
        let used = info.length().div_ceil(8).min(MSG_MAX_WORDS);
        if used > MSG_REGS_IN_CPU {
            let rest = &mut body.msg[MSG_REGS_IN_CPU..used];
            buffer.read(IPC_MSG_WORD + MSG_REGS_IN_CPU, rest);
        }
        let caps = info.extra_caps().min(MAX_CAPS);
        buffer.read(IPC_CAPS_WORD, &mut body.caps[..caps]);
        message.info = info;
        message.words = words;
        Ok(())
    }

    /// Checks a send before the sender commits to it: the message info, the buffer, and every
    /// capability it names.
    ///
    /// # Errors
    /// [`KernelError::InsufficientRights`] when capabilities are sent without `GRANT`; the errors
    /// of [`Kernel::outgoing`] and of looking up each capability.
    pub(super) fn check_send(
        &self,
        thread: ThreadRef,
        info: MessageInfo,
        can_grant: bool,
        fx: &mut impl Effects,
    ) -> Result<(), KernelError> {
        if info.extra_caps() > 0 && !can_grant {
            return Err(KernelError::InsufficientRights);
        }
        let mut message = Message::empty();
        self.outgoing(thread, fx, &mut message)?;
        for &cptr in message.caps() {
            self.lookup(thread, CPtr::new(cptr))?;
        }
        Ok(())
    }

    /// Delivers `sender`'s message to `receiver` (both already out of any queue), setting the
    /// receiver's syscall results. `endpoint` is the endpoint it travels through (for unwrapping).
    pub(super) fn transfer(
        &mut self,
        sender: ThreadRef,
        receiver: ThreadRef,
        send: SendInfo,
        endpoint: Option<EndpointRef>,
        fx: &mut impl Effects,
    ) {
        let mut message = Message::empty();
        if self.outgoing(sender, fx, &mut message).is_err() {
            // The sender's buffer went away while it was queued: what its registers hold still goes.
            message = self.register_message(sender);
        }
        let info = message.info;
        let wants_caps = send.can_grant && info.extra_caps() > 0;
        let (mut length, mut count, mut unwrapped) = (info.length(), 0, 0);
        if info.length() > REGISTER_BYTES || wants_caps {
            // Only the words the message uses are written: the rest of the receiver's buffer is
            // its own.
            match self.thread_buffer(receiver, fx) {
                Ok(mut buffer) => {
                    let (mut caps, mut kinds) = ([0; MAX_CAPS], [0; MAX_CAPS]);
                    if wants_caps {
                        let mut receive_slot = [0];
                        buffer.read(IPC_RECEIVE_SLOT_WORD, &mut receive_slot);
                        let window = (receive_slot[0], &mut caps, &mut kinds);
                        (count, unwrapped) =
                            self.transfer_caps(sender, receiver, &message, endpoint, window);
                    }
                    let used = info.length().div_ceil(8).min(MSG_MAX_WORDS);
                    if let Some(body) = &message.body
                        && used > MSG_REGS_IN_CPU
                    {
                        let words = &body.msg[MSG_REGS_IN_CPU..used];
                        buffer.write(IPC_MSG_WORD + MSG_REGS_IN_CPU, words);
                    }
                    buffer.write(IPC_BADGE_WORD, &[send.badge.raw()]);
                    buffer.write(IPC_CAPS_WORD, &caps[..count]);
                    buffer.write(IPC_CAP_KINDS_WORD, &kinds[..count]);
                    let delivered = delivered_info(info, length, count, unwrapped);
                    buffer.write(IPC_TAG_WORD, &[delivered.raw()]);
                }
                Err(_) => length = length.min(REGISTER_BYTES),
            }
        }
        let delivered = delivered_info(info, length, count, unwrapped);
        self.set_result(
            receiver,
            SyscallRegs::message(send.badge, delivered, message.words),
        );
    }

    /// The registers-only part of a sender's message (its buffer is unavailable).
    fn register_message(&self, sender: ThreadRef) -> Message {
        let regs = self
            .threads
            .get(sender)
            .map(|t| SyscallRegs::of(&t.glue.context))
            .unwrap_or_default();
        let decoded = MessageInfo::decode(regs.info()).ok();
        let label = decoded.map_or(0, MessageInfo::label);
        let length = decoded.map_or(0, |i| i.length().min(REGISTER_BYTES));
        let info = MessageInfo::new(label, length, 0).unwrap_or(EMPTY_INFO);
        Message {
            info,
            words: regs.words(),
            body: None,
        }
    }

    /// Installs the message's capabilities in the receiver's window; returns how many arrived and
    /// which of them were unwrapped.
    fn transfer_caps(
        &mut self,
        sender: ThreadRef,
        receiver: ThreadRef,
        message: &Message,
        endpoint: Option<EndpointRef>,
        (receive_slot, caps, kinds): (u64, &mut [u64; MAX_CAPS], &mut [u64; MAX_CAPS]),
    ) -> (usize, u8) {
        let (mut count, mut unwrapped, mut installed) = (0, 0u8, 0u64);
        for (i, &cptr) in message.caps().iter().enumerate() {
            let Ok((source, cap)) = self.lookup(sender, CPtr::new(cptr)) else {
                break;
            };
            if endpoint.is_some_and(|ep| cap.object == Object::Endpoint(ep)) {
                caps[i] = cap.badge.raw();
                kinds[i] = u64::from(cap.object.kind_code());
                unwrapped |= 1 << i;
                count += 1;
                continue;
            }
            let Some(index) = receive_slot.checked_add(installed) else {
                break;
            };
            let Ok(dest) = self.lookup_slot(receiver, CPtr::new(index)) else {
                break;
            };
            let Ok(derived) = cap.derive(Rights::ALL, None) else {
                break;
            };
            if self.install(dest, derived, Some(source)).is_err() {
                break;
            }
            caps[i] = index;
            kinds[i] = u64::from(cap.object.kind_code());
            installed += 1;
            count += 1;
        }
        (count, unwrapped)
    }

    /// Sends a reply from `server` to its caller, if it has one; a stale or absent caller makes this
    /// a no-op (the reply capability is one-shot and silently spent, as in seL4).
    pub(super) fn reply(&mut self, server: ThreadRef, fx: &mut impl Effects) {
        let Ok(t) = self.threads.get_mut(server) else {
            return;
        };
        let (caller, can_grant) = (t.caller.take(), t.reply_can_grant);
        let Some(caller) = caller else { return };
        let waiting = self
            .threads
            .get(caller)
            .is_ok_and(|c| c.state == super::thread::ThreadState::BlockedReply);
        if !waiting {
            return;
        }
        if self.threads.get(caller).is_ok_and(|c| c.fault.is_some()) {
            self.resolve_fault(server, caller, fx);
            return;
        }
        self.transfer(
            server,
            caller,
            SendInfo {
                badge: Badge::NONE,
                can_grant,
                is_call: false,
            },
            None,
            fx,
        );
        if let Ok(c) = self.threads.get_mut(caller) {
            c.state = super::thread::ThreadState::Inactive;
        }
        self.make_ready(caller);
    }
}

/// The message-info word the receiver gets: the sender's label, the length and capabilities that
/// arrived.
pub(super) fn delivered_info(
    info: MessageInfo,
    length: usize,
    count: usize,
    unwrapped: u8,
) -> MessageInfo {
    MessageInfo::new(info.label(), length, count)
        .and_then(|i| i.with_caps_unwrapped(unwrapped))
        .unwrap_or(info)
}

const EMPTY_INFO: MessageInfo = match MessageInfo::new(0, 0, 0) {
    Ok(info) => info,
    Err(_) => panic!("an empty message-info word is valid"),
};

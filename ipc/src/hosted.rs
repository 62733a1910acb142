//! The hosted transport: endpoints over `async-channel`, each side on its own std thread running an
//! `async-executor`, so a service's `Handler` is unit-tested on the development host without QEMU.
//!
//! It stands in for the kernel faithfully where a service's logic can tell the difference:
//! - a client calls through a badged endpoint capability ([`HostedEndpoint::client`]), and the server
//!   sees that badge;
//! - replies go through an implicit one-shot reply capability: [`ServerTransport::reply_recv`] answers the
//!   last message received, exactly once;
//! - capability transfer resolves each capability pointer in a capability table
//!   ([`HostedKernel::create`]) and reports the object kind to the receiver; as in seL4, transfer stops
//!   at the first capability that does not resolve and the message is delivered with fewer.
//!
//! Where it does not: there is one capability space shared by every hosted thread, so a transferred
//! capability keeps its `CPtr` instead of landing in the receiver's receive slots; and nothing is
//! scheduled by priority. Neither is visible through the protocol API.

use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use crate::abi::{IpcBuffer, MessageInfo};
use crate::cap::{Badge, Cap, ObjectKind, ObjectType};
use crate::local::NotificationWord;
use crate::transport::{ServerTransport, Signal, Transport, TransportError, Wait};

/// The hosted stand-in for the kernel's capability table.
#[derive(Debug, Clone, Default)]
pub struct HostedKernel {
    caps: Arc<Mutex<HashMap<u64, ObjectKind>>>,
    next: Arc<AtomicU64>,
}

impl HostedKernel {
    /// An empty capability table.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates a (stand-in) object of type `T` and returns a capability to it.
    #[must_use]
    pub fn create<T: ObjectType>(&self) -> Cap<T> {
        // Slot 0 is the null capability; start at 1.
        let cptr = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.table().insert(cptr, T::KIND);
        Cap::from_cptr(crate::cap::CPtr::new(cptr))
    }

    /// Deletes a capability (later transfers of it fail, as after a revoke).
    pub fn delete<T: ObjectType>(&self, cap: Cap<T>) {
        self.table().remove(&cap.cptr().raw());
    }

    /// A new endpoint.
    #[must_use]
    pub fn endpoint(&self) -> HostedEndpoint {
        let (sender, receiver) = async_channel::unbounded();
        HostedEndpoint {
            kernel: self.clone(),
            sender,
            receiver,
        }
    }

    /// A new notification object: the signalling capability (cloneable) and the waiting one.
    #[must_use]
    pub fn notification(&self) -> (HostedSignal, HostedWaiter) {
        let word = Arc::new(NotificationWord::new());
        // At most one wake-up token is pending; the word itself carries the bits.
        let (wake, woken) = async_channel::bounded(1);
        (
            HostedSignal {
                word: word.clone(),
                wake,
            },
            HostedWaiter { word, woken },
        )
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<u64, ObjectKind>> {
        // A panic while holding the lock leaves the map consistent (single inserts/removes).
        self.caps.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Copies a message as the kernel would: payload, badge, and the capabilities that resolve.
    fn deliver(
        &self,
        info: MessageInfo,
        from: &IpcBuffer,
        badge: Badge,
    ) -> (MessageInfo, Box<IpcBuffer>) {
        let mut to = Box::new(IpcBuffer::default());
        to.bytes_mut()[..info.length()].copy_from_slice(from.payload(info));
        to.badge = badge.raw();
        let table = self.table();
        let mut transferred = 0;
        for i in 0..info.extra_caps() {
            let Some(kind) = table.get(&from.caps[i]) else {
                break;
            };
            to.caps[i] = from.caps[i];
            to.cap_kinds[i] = u64::from(kind.code());
            transferred += 1;
        }
        // Cannot fail: the label and length come from a valid word and `transferred` is not larger.
        let delivered = MessageInfo::new(info.label(), info.length(), transferred).unwrap_or(info);
        to.tag = delivered.raw();
        (delivered, to)
    }
}

/// A message in flight to a server, with the reply capability for it.
struct Envelope {
    info: MessageInfo,
    message: Box<IpcBuffer>,
    reply: async_channel::Sender<(MessageInfo, Box<IpcBuffer>)>,
}

/// An endpoint: any number of clients, one server loop.
#[derive(Debug, Clone)]
pub struct HostedEndpoint {
    kernel: HostedKernel,
    sender: async_channel::Sender<Envelope>,
    receiver: async_channel::Receiver<Envelope>,
}

impl std::fmt::Debug for Envelope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Envelope")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl HostedEndpoint {
    /// A client capability to this endpoint, minted with `badge`.
    #[must_use]
    pub fn client(&self, badge: Badge) -> HostedClient {
        HostedClient {
            kernel: self.kernel.clone(),
            sender: self.sender.clone(),
            badge,
        }
    }

    /// The server's side. Only one server loop should receive on an endpoint at a time.
    #[must_use]
    pub fn server(&self) -> HostedServer {
        HostedServer {
            kernel: self.kernel.clone(),
            receiver: self.receiver.clone(),
            pending: None,
        }
    }
}

/// A client's badged capability to a hosted endpoint.
#[derive(Debug, Clone)]
pub struct HostedClient {
    kernel: HostedKernel,
    sender: async_channel::Sender<Envelope>,
    badge: Badge,
}

impl Transport for HostedClient {
    async fn call(
        &mut self,
        info: MessageInfo,
        buffer: &mut IpcBuffer,
    ) -> Result<MessageInfo, TransportError> {
        let (info, message) = self.kernel.deliver(info, buffer, self.badge);
        let (reply, replies) = async_channel::bounded(1);
        self.sender
            .send(Envelope {
                info,
                message,
                reply,
            })
            .await
            .map_err(|_| TransportError::Disconnected)?;
        let (info, message) = replies
            .recv()
            .await
            .map_err(|_| TransportError::Disconnected)?;
        *buffer = *message;
        Ok(info)
    }
}

/// A server's side of a hosted endpoint.
#[derive(Debug)]
pub struct HostedServer {
    kernel: HostedKernel,
    receiver: async_channel::Receiver<Envelope>,
    pending: Option<async_channel::Sender<(MessageInfo, Box<IpcBuffer>)>>,
}

impl ServerTransport for HostedServer {
    async fn recv(&mut self, buffer: &mut IpcBuffer) -> Result<MessageInfo, TransportError> {
        let envelope = self
            .receiver
            .recv()
            .await
            .map_err(|_| TransportError::Disconnected)?;
        *buffer = *envelope.message;
        self.pending = Some(envelope.reply);
        Ok(envelope.info)
    }

    async fn reply_recv(
        &mut self,
        reply: MessageInfo,
        buffer: &mut IpcBuffer,
    ) -> Result<MessageInfo, TransportError> {
        if let Some(caller) = self.pending.take() {
            let delivered = self.kernel.deliver(reply, buffer, Badge::NONE);
            // The caller may have gone away; as with seL4, the reply is then dropped.
            let _ = caller.try_send(delivered);
        }
        self.recv(buffer).await
    }
}

/// Runs a future to completion on this thread with a local `async-executor` (so it may spawn
/// non-`Send` tasks through the executor it is given).
pub fn block_on<F, Fut>(task: F) -> Fut::Output
where
    F: FnOnce(Rc<async_executor::LocalExecutor<'static>>) -> Fut,
    Fut: Future,
{
    let executor = Rc::new(async_executor::LocalExecutor::new());
    futures_lite::future::block_on(executor.run(task(executor.clone())))
}

/// Runs a server (or any task) on its own thread with its own executor, as a separate protection
/// domain would run; the thread ends when the future does (e.g. when every client is dropped and the
/// server loop sees [`TransportError::Disconnected`]).
pub fn spawn<F, Fut>(task: F) -> JoinHandle<Fut::Output>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future,
    Fut::Output: Send + 'static,
{
    std::thread::spawn(move || block_on(|_| task()))
}

/// A notification capability for signalling.
#[derive(Debug, Clone)]
pub struct HostedSignal {
    word: Arc<NotificationWord>,
    wake: async_channel::Sender<()>,
}

impl Signal for HostedSignal {
    fn signal(&self, bits: u64) -> Result<(), TransportError> {
        if self.word.signal(bits) {
            // The word was empty, so the waiter may be asleep: leave a token. A full channel already
            // holds one, and the waiter takes the whole word when it wakes, so nothing is lost.
            let _ = self.wake.try_send(());
        }
        Ok(())
    }
}

/// A notification capability for waiting.
#[derive(Debug)]
pub struct HostedWaiter {
    word: Arc<NotificationWord>,
    woken: async_channel::Receiver<()>,
}

impl Wait for HostedWaiter {
    async fn wait(&mut self) -> Result<u64, TransportError> {
        loop {
            let bits = self.word.take();
            if bits != 0 {
                return Ok(bits);
            }
            // A stale token (its bits already taken) only costs one more look at the word.
            self.woken
                .recv()
                .await
                .map_err(|_| TransportError::Disconnected)?;
        }
    }

    fn poll(&mut self) -> Result<u64, TransportError> {
        Ok(self.word.take())
    }
}

//! The `Transport` traits: how a client's call and a server's receive/reply reach the other side.
//!
//! The traits are the seL4 operations at message level: [`Transport::call`] (send, then wait for the
//! reply) and [`ServerTransport::recv`] / [`ServerTransport::reply_recv`] (the server's loop, replying
//! through the implicit one-shot reply capability of the last message received). A message is an
//! [`IpcBuffer`] plus its [`MessageInfo`]; capabilities travel in the buffer's capability slots.
//!
//! Two implementations: the hosted one ([`crate::hosted`], feature `hosted`: std threads and channels, so
//! a service's `Handler` runs in host unit tests), and the EL0 one over `svc`, in the SDK's runtime
//! (`capvisor_rt::ipc`: it needs the runtime's `unsafe` glue).
//!
//! Notifications, the asynchronous half of the design (interrupts and wake-ups as bits in a word), are
//! [`Signal`] and [`Wait`].
//!
//! The futures are not `Send`: EL0 services run single-threaded executors, and the hosted transport
//! drives each side on its own thread with a local executor.

use crate::abi::{IpcBuffer, KernelError, MessageInfo, MessageInfoError};

/// Why a transport operation failed (below the protocol layer).
///
/// # Errors
/// - [`TransportError::Kernel`]: the kernel (or the hosted stand-in) refused the syscall.
/// - [`TransportError::BadMessageInfo`]: the message-info word that arrived is malformed.
/// - [`TransportError::Disconnected`]: the other side is gone (endpoint deleted, hosted thread ended).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportError {
    /// The kernel refused with this error.
    Kernel(KernelError),
    /// A received message-info word is malformed.
    BadMessageInfo(MessageInfoError),
    /// The peer is gone.
    Disconnected,
}

impl From<KernelError> for TransportError {
    fn from(error: KernelError) -> Self {
        Self::Kernel(error)
    }
}

impl From<MessageInfoError> for TransportError {
    fn from(error: MessageInfoError) -> Self {
        Self::BadMessageInfo(error)
    }
}

/// A client's side of one endpoint capability.
#[allow(
    async_fn_in_trait,
    reason = "single-threaded executors on both transports; no Send bound wanted"
)]
pub trait Transport {
    /// Sends the message in `buffer` (described by `info`) and waits for the reply, which overwrites
    /// `buffer`; returns the reply's validated message-info word. On return, `buffer.caps[..n]` and
    /// `buffer.cap_kinds[..n]` describe the `n = extra_caps` capabilities the reply transferred.
    ///
    /// # Errors
    /// [`TransportError`] when the call could not be made or the reply's info word is malformed.
    async fn call(
        &mut self,
        info: MessageInfo,
        buffer: &mut IpcBuffer,
    ) -> Result<MessageInfo, TransportError>;
}

/// A server's side of one endpoint capability.
#[allow(
    async_fn_in_trait,
    reason = "single-threaded executors on both transports; no Send bound wanted"
)]
pub trait ServerTransport {
    /// Waits for a message; it overwrites `buffer` (`buffer.badge` is the sender's badge) and its
    /// validated message-info word is returned. The server now holds the reply capability for it.
    ///
    /// # Errors
    /// [`TransportError`] when receiving failed.
    async fn recv(&mut self, buffer: &mut IpcBuffer) -> Result<MessageInfo, TransportError>;

    /// Replies with the message in `buffer` to the last message received, then waits for the next one,
    /// as [`ServerTransport::recv`]. A reply the caller can no longer take (it went away) is dropped, as
    /// seL4 does: one client leaving never stops the server.
    ///
    /// # Errors
    /// [`TransportError`] when receiving failed.
    async fn reply_recv(
        &mut self,
        reply: MessageInfo,
        buffer: &mut IpcBuffer,
    ) -> Result<MessageInfo, TransportError>;
}

/// The signalling side of a notification capability (seL4's `Signal`): never blocks.
pub trait Signal {
    /// ORs `bits` into the notification word, waking its waiter.
    ///
    /// # Errors
    /// [`TransportError`] when the capability is invalid.
    fn signal(&self, bits: u64) -> Result<(), TransportError>;
}

/// The waiting side of a notification capability (seL4's `Wait` and `Poll`).
#[allow(
    async_fn_in_trait,
    reason = "single-threaded executors on both transports; no Send bound wanted"
)]
pub trait Wait {
    /// Waits until the word is non-zero, then takes (and clears) it.
    ///
    /// # Errors
    /// [`TransportError`] when the capability is invalid or every signaller is gone.
    async fn wait(&mut self) -> Result<u64, TransportError>;

    /// Takes the word without blocking (0 when nothing was signalled).
    ///
    /// # Errors
    /// [`TransportError`] when the capability is invalid.
    fn poll(&mut self) -> Result<u64, TransportError>;
}

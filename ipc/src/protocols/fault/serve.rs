//! Serving fault messages: the [`Handler`] a supervisor or VMM implements, one message's
//! dispatch ([`handle`]) and the receive/reply loop ([`serve`]).

use crate::abi::{IpcBuffer, MessageInfo};
use crate::cap::Badge;
use crate::transport::{ServerTransport, TransportError};

use super::wire::encode_error;
use super::{
    FaultError, FaultMessage, GuestFault, Resolution, ServiceFault, ServiceResolution, Words,
    encode_guest_reply, encode_service_reply,
};

/// A fault handler served by [`serve`]: a supervisor (its services' faults) or a VMM (its
/// guest's vCPUs' faults).
#[allow(
    async_fn_in_trait,
    reason = "single-threaded executors on both transports; no Send bound wanted"
)]
pub trait Handler {
    /// The vCPU that `badge` names faulted.
    ///
    /// # Errors
    /// [`FaultError`]: the kernel leaves the vCPU stopped.
    async fn guest(&mut self, badge: Badge, fault: GuestFault) -> Result<Resolution, FaultError>;

    /// The service thread that `badge` names faulted at `pc`.
    ///
    /// # Errors
    /// [`FaultError`]: the kernel leaves the thread stopped.
    async fn service(
        &mut self,
        badge: Badge,
        pc: u64,
        fault: ServiceFault,
    ) -> Result<ServiceResolution, FaultError>;
}

/// Answers one received message from the sender `badge` names: decodes it, calls the handler and
/// returns the reply. A message that is not a fault message is answered
/// [`FaultError::Malformed`].
pub async fn handle<H: Handler + ?Sized>(
    handler: &mut H,
    badge: Badge,
    info: MessageInfo,
    words: Words,
) -> (MessageInfo, Words) {
    match FaultMessage::decode(info, words) {
        Ok(FaultMessage::Guest(fault)) => encode_guest_reply(&handler.guest(badge, fault).await),
        Ok(FaultMessage::Service { pc, fault }) => {
            encode_service_reply(handler.service(badge, pc, fault).await)
        }
        Err(_) => encode_error(FaultError::Malformed),
    }
}

/// The handler's loop: receive, handle, reply and receive again, until the transport fails.
pub async fn serve<S, H>(server: &mut S, handler: &mut H) -> TransportError
where
    S: ServerTransport,
    H: Handler + ?Sized,
{
    let mut buffer = IpcBuffer::default();
    let mut info = match server.recv(&mut buffer).await {
        Ok(info) => info,
        Err(error) => return error,
    };
    loop {
        let words = [buffer.msg[0], buffer.msg[1], buffer.msg[2], buffer.msg[3]];
        let (reply, words) = handle(handler, Badge::new(buffer.badge), info, words).await;
        [buffer.msg[0], buffer.msg[1], buffer.msg[2], buffer.msg[3]] = words;
        info = match server.reply_recv(reply, &mut buffer).await {
            Ok(info) => info,
            Err(error) => return error,
        };
    }
}

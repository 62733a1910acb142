//! Pong's handler: the protocol's logic, apart from the kernel. A [`Platform`] performs the
//! effects (signal, map, memory), so the same handler runs at EL0 over the `svc` transport and on
//! the host under `capvisor_ipc::hosted` in unit tests.

use capvisor_ipc::abi::KernelError;
use capvisor_ipc::cap::{Cap, Frame, Notification, ObjectType};
use capvisor_ipc::protocol::{Context, Transferred};

use crate::protocol::{Handler, PongError, SHARED_VALUE};

/// What pong asks of the kernel (or of a host stand-in).
pub trait Platform {
    /// Prints one line.
    fn log(&mut self, line: core::fmt::Arguments<'_>);
    /// Signals `notification`; returns the bits it set.
    ///
    /// # Errors
    /// The kernel's refusal (e.g. `EmptySlot` after a revoke).
    fn signal(&mut self, notification: Cap<Notification>) -> Result<u64, KernelError>;
    /// Maps `frame` read/write at the shared address.
    ///
    /// # Errors
    /// The kernel's refusal.
    fn map_shared(&mut self, frame: Cap<Frame>) -> Result<(), KernelError>;
    /// Writes the shared frame's first word.
    fn write_shared(&mut self, value: u64);
    /// Reads the shared frame's first word (faults once the frame is revoked).
    fn read_shared(&mut self) -> u64;
}

/// The server's state.
#[derive(Debug)]
pub struct Pong<P> {
    platform: P,
    doorbell: Cap<Notification>,
    notification: Option<Cap<Notification>>,
    shared: bool,
}

impl<P: Platform> Pong<P> {
    /// A server that grants `doorbell` to callers who ask for it.
    pub fn new(platform: P, doorbell: Cap<Notification>) -> Self {
        Self {
            platform,
            doorbell,
            notification: None,
            shared: false,
        }
    }

    /// The request's first capability, if the kernel attested it is a `T`.
    fn received<T: ObjectType>(&mut self, ctx: &Context) -> Result<Cap<T>, PongError> {
        let any = ctx
            .received()
            .first()
            .copied()
            .flatten()
            .ok_or(PongError::MissingCapability)?;
        self.platform.log(format_args!(
            "received a capability of kind {} in slot {}",
            any.kind().code(),
            any.cptr().raw()
        ));
        any.downcast().map_err(|_| PongError::MissingCapability)
    }

    fn refused(&mut self, what: &str, error: KernelError) -> PongError {
        self.platform.log(format_args!("{what} refused: {error:?}"));
        PongError::Refused
    }
}

impl<P: Platform> Handler for Pong<P> {
    async fn ping(&mut self, ctx: &mut Context, n: u64) -> Result<u64, PongError> {
        self.platform
            .log(format_args!("ping {n} from badge {}", ctx.badge().raw()));
        if n == 0 {
            return Err(PongError::Zero);
        }
        Ok(n.saturating_mul(10))
    }

    async fn notify(&mut self, ctx: &mut Context) -> Result<u64, PongError> {
        let notification = self.received::<Notification>(ctx)?;
        let bits = match self.platform.signal(notification) {
            Ok(bits) => bits,
            Err(error) => return Err(self.refused("signal", error)),
        };
        self.notification = Some(notification);
        Ok(bits)
    }

    async fn share(&mut self, ctx: &mut Context) -> Result<(), PongError> {
        let frame = self.received::<Frame>(ctx)?;
        if let Err(error) = self.platform.map_shared(frame) {
            return Err(self.refused("map", error));
        }
        self.platform.write_shared(SHARED_VALUE);
        self.platform
            .log(format_args!("mapped the frame and wrote to it"));
        self.shared = true;
        Ok(())
    }

    async fn doorbell(
        &mut self,
        ctx: &mut Context,
    ) -> Result<Transferred<Notification>, PongError> {
        ctx.grant(self.doorbell)
            .map_err(|_| PongError::MissingCapability)
    }

    async fn touch(&mut self, _ctx: &mut Context) -> Result<u64, PongError> {
        if let Some(notification) = self.notification {
            let error = self.platform.signal(notification).err();
            self.platform
                .log(format_args!("signal after revoke: {error:?}"));
        }
        if !self.shared {
            return Err(PongError::NothingShared);
        }
        self.platform
            .log(format_args!("touching the revoked frame"));
        let value = self.platform.read_shared();
        self.platform.log(format_args!("still mapped: {value:#x}"));
        Ok(value)
    }
}

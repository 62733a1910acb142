//! IRQ handlers: one per interrupt ID, created from IrqControl, delivering to a notification.
//!
//! When an interrupt fires the glue masks it and calls [`Kernel::handle_irq`]; the handler's
//! notification is signalled with the badge of the notification capability it was given, and the
//! interrupt stays masked until a holder of the handler capability invokes `IrqAck`.
//!
//! Invariant: at most one live handler per interrupt ID.

use capvisor_ipc::abi::KernelError;
use capvisor_ipc::cap::Badge;

use super::Kernel;
use super::arena::{IrqHandlerRef, NotificationRef};
use super::syscall::Schedule;

/// The largest interrupt ID a handler can be issued for (GICv3 SPIs end at 1019).
pub const MAX_INTID: u32 = 1019;

/// An interrupt's handler.
#[derive(Debug, Clone)]
pub struct IrqHandler {
    pub(super) intid: u32,
    pub(super) notification: Option<(NotificationRef, Badge)>,
    pub(super) caps: u32,
}

/// What happened to an interrupt the glue reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IrqOutcome {
    /// A notification was signalled; keep the interrupt masked until `IrqAck`.
    Delivered(Schedule),
    /// Nobody handles this interrupt (no handler, or no notification bound): keep it masked.
    Unhandled,
}

impl Kernel {
    /// Whether an interrupt can still wake a thread: some handler delivers to a notification.
    /// With no thread ready and none of these, nothing can ever run again (one CPU runs threads).
    #[must_use]
    pub fn interrupts_deliver(&self) -> bool {
        self.irqs
            .iter::<IrqHandlerRef>()
            .any(|(_, h)| h.notification.is_some())
    }

    /// Creates the handler object for `intid`.
    ///
    /// # Errors
    /// [`KernelError::RangeError`] beyond [`MAX_INTID`]; [`KernelError::InvalidArgument`] when the
    /// interrupt already has a handler; [`KernelError::NotEnoughMemory`] when the arena is full.
    pub(super) fn create_irq_handler(&mut self, intid: u64) -> Result<IrqHandlerRef, KernelError> {
        let intid = u32::try_from(intid)
            .ok()
            .filter(|&i| i <= MAX_INTID)
            .ok_or(KernelError::RangeError)?;
        if self
            .irqs
            .iter::<IrqHandlerRef>()
            .any(|(_, h)| h.intid == intid)
        {
            return Err(KernelError::InvalidArgument);
        }
        self.irqs.alloc(IrqHandler {
            intid,
            notification: None,
            caps: 0,
        })
    }

    /// Interrupt `intid` fired (the glue has masked it).
    pub fn handle_irq(&mut self, intid: u32) -> IrqOutcome {
        let target = self
            .irqs
            .iter::<IrqHandlerRef>()
            .find(|(_, h)| h.intid == intid)
            .and_then(|(_, h)| h.notification);
        match target {
            Some((notification, badge)) if self.notifications.get(notification).is_ok() => {
                self.signal(notification, badge);
                IrqOutcome::Delivered(self.decide())
            }
            _ => IrqOutcome::Unhandled,
        }
    }
}

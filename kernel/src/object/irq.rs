//! IRQ handlers: one per interrupt ID, created from IrqControl, delivering to a notification.
//!
//! When an interrupt fires the glue masks it and calls [`Kernel::handle_irq`]; the handler's
//! notification is signalled with the badge of the notification capability it was given, and the
//! interrupt stays masked until a holder of the handler capability invokes `IrqAck`.
//!
//! A handler of an SPI may instead forward its interrupt to a vCPU (`IrqForwardToVcpu`): the
//! glue then puts it in the vCPU's list registers, hardware-linked, and leaves the physical
//! interrupt active until the guest deactivates it — the guest's driver handles its device's
//! interrupts without any service in the path.
//!
//! Invariant: at most one live handler per interrupt ID.

use capvisor_ipc::abi::KernelError;
use capvisor_ipc::cap::Badge;

use super::Kernel;
use super::arena::{IrqHandlerRef, NotificationRef, VcpuRef};
use super::syscall::Schedule;

/// The largest interrupt ID a handler can be issued for (GICv3 SPIs end at 1019).
pub const MAX_INTID: u32 = 1019;

/// An interrupt's handler.
#[derive(Debug, Clone)]
pub struct IrqHandler {
    pub(super) intid: u32,
    pub(super) notification: Option<(NotificationRef, Badge)>,
    /// Forwarded to this vCPU as this virtual INTID.
    pub(super) forward: Option<(VcpuRef, u32)>,
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
            forward: None,
            caps: 0,
        })
    }

    /// The vCPU (and virtual INTID) interrupt `intid` is forwarded to, if its handler forwards
    /// it (the glue then injects it instead of masking it and calling [`Kernel::handle_irq`]).
    #[must_use]
    pub fn irq_forward(&self, intid: u32) -> Option<(VcpuRef, u32)> {
        self.irqs
            .iter::<IrqHandlerRef>()
            .find(|(_, h)| h.intid == intid)
            .and_then(|(_, h)| h.forward)
            .filter(|(vcpu, _)| self.vcpus.get(*vcpu).is_ok())
    }

    /// Stops every forward to `vcpu` (being deleted).
    pub(super) fn unforward_vcpu(&mut self, vcpu: VcpuRef) {
        let handlers: heapless::Vec<IrqHandlerRef, 64> = self
            .irqs
            .iter::<IrqHandlerRef>()
            .filter(|(_, h)| h.forward.is_some_and(|(v, _)| v == vcpu))
            .map(|(r, _)| r)
            .collect();
        for handler in handlers {
            if let Ok(h) = self.irqs.get_mut(handler) {
                h.forward = None;
            }
        }
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

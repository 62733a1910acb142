//! IRQ handlers: one per shared peripheral interrupt, created from IrqControl, delivering to a
//! notification or forwarded to a vCPU.
//!
//! Only SPIs (INTID 32–1019, GICv3: IHI 0069H 2.2.1) get handlers. SGIs and PPIs are each CPU's
//! own and the kernel's: the EL2 timer (PPI 26) drives scheduling, the virtual timer (PPI 27) is
//! the kernel's to deliver to the loaded vCPU, and SGIs are its inter-processor signals. So
//! `IrqIssueHandler` for any INTID below 32 (or above 1019) is `RangeError`.
//!
//! When an interrupt fires the glue masks it and calls [`Kernel::handle_irq`]; the handler's
//! notification is signalled with the badge of the notification capability it was given, and the
//! interrupt stays masked until a holder of the handler capability invokes `IrqAck`.
//!
//! A handler may instead forward its interrupt to a vCPU (`IrqForwardToVcpu`): the glue then puts
//! it in the vCPU's list registers, hardware-linked, and leaves the physical interrupt active until
//! the guest deactivates it — the guest's driver handles its device's interrupts without any
//! service in the path. If the vCPU goes away (or the forward is withdrawn) while the guest still
//! holds the interrupt active, the glue deactivates it, so it can never stay active forever.
//!
//! Every handler invocation (`IrqAck`, `IrqSetNotification`, `IrqForwardToVcpu`) needs `WRITE` on
//! the handler capability (`invoke.rs`).
//!
//! The handlers live in a fixed table indexed by SPI (kernel memory, not untyped): there is exactly
//! one per interrupt at most, and only IrqControl's holder creates them.
//!
//! Invariant: at most one live handler per interrupt ID.

use capvisor_ipc::abi::KernelError;
use capvisor_ipc::cap::Badge;

use super::Kernel;
use super::memory::{NotificationRef, ThreadRef, VcpuRef};
use super::regs::Schedule;
use super::thread::ThreadState;

/// The first interrupt ID a handler can be issued for (the first SPI).
pub const FIRST_SPI: u32 = 32;
/// The largest interrupt ID a handler can be issued for (GICv3 SPIs end at 1019).
pub const MAX_INTID: u32 = 1019;
/// Number of SPIs.
const SPIS: usize = (MAX_INTID - FIRST_SPI + 1) as usize;

/// A reference to an interrupt's handler: its INTID and the generation of its table entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IrqHandlerRef {
    intid: u16,
    generation: u32,
}

impl IrqHandlerRef {
    /// The interrupt it handles.
    #[must_use]
    pub const fn intid(self) -> u32 {
        self.intid as u32
    }
}

/// An interrupt's handler.
#[derive(Debug, Clone, Copy)]
pub struct IrqHandler {
    pub(super) intid: u32,
    pub(super) notification: Option<(NotificationRef, Badge)>,
    /// Forwarded to this vCPU as this virtual INTID.
    pub(super) forward: Option<(VcpuRef, u32)>,
    pub(super) caps: u32,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    generation: u32,
    handler: Option<IrqHandler>,
}

/// The handler of each SPI.
pub struct IrqTable {
    entries: [Entry; SPIS],
}

impl core::fmt::Debug for IrqTable {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.iter().map(|(_, h)| h)).finish()
    }
}

impl IrqTable {
    /// No handlers.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            entries: [Entry {
                generation: 0,
                handler: None,
            }; SPIS],
        }
    }

    fn index(intid: u32) -> Option<usize> {
        intid
            .checked_sub(FIRST_SPI)
            .map(|i| i as usize)
            .filter(|&i| i < SPIS)
    }

    /// The handler `r` names.
    ///
    /// # Errors
    /// [`KernelError::Revoked`] when it was freed.
    pub fn get(&self, r: IrqHandlerRef) -> Result<&IrqHandler, KernelError> {
        match Self::index(r.intid()).and_then(|i| self.entries.get(i)) {
            Some(Entry {
                generation,
                handler: Some(handler),
            }) if *generation == r.generation => Ok(handler),
            _ => Err(KernelError::Revoked),
        }
    }

    /// The handler `r` names, mutably.
    ///
    /// # Errors
    /// [`KernelError::Revoked`] when it was freed.
    pub fn get_mut(&mut self, r: IrqHandlerRef) -> Result<&mut IrqHandler, KernelError> {
        match Self::index(r.intid()).and_then(|i| self.entries.get_mut(i)) {
            Some(Entry {
                generation,
                handler: Some(handler),
            }) if *generation == r.generation => Ok(handler),
            _ => Err(KernelError::Revoked),
        }
    }

    /// The live handler of `intid`.
    #[must_use]
    pub fn of(&self, intid: u32) -> Option<&IrqHandler> {
        Self::index(intid)
            .and_then(|i| self.entries.get(i))
            .and_then(|e| e.handler.as_ref())
    }

    /// Creates the handler of SPI `intid`.
    ///
    /// # Errors
    /// [`KernelError::RangeError`] for an INTID that is not an SPI; [`KernelError::InvalidArgument`]
    /// when the interrupt already has a handler.
    pub fn create(&mut self, intid: u64) -> Result<IrqHandlerRef, KernelError> {
        let intid = u32::try_from(intid).map_err(|_| KernelError::RangeError)?;
        let index = Self::index(intid).ok_or(KernelError::RangeError)?;
        let entry = &mut self.entries[index];
        if entry.handler.is_some() {
            return Err(KernelError::InvalidArgument);
        }
        entry.handler = Some(IrqHandler {
            intid,
            notification: None,
            forward: None,
            caps: 0,
        });
        Ok(IrqHandlerRef {
            intid: intid as u16,
            generation: entry.generation,
        })
    }

    /// Frees the handler `r` names; later lookups of `r` fail.
    pub fn free(&mut self, r: IrqHandlerRef) -> Option<IrqHandler> {
        let entry = Self::index(r.intid()).and_then(|i| self.entries.get_mut(i))?;
        if entry.generation != r.generation {
            return None;
        }
        let handler = entry.handler.take()?;
        entry.generation = entry.generation.wrapping_add(1);
        Some(handler)
    }

    /// Every live handler (a scan of the fixed table: bounded).
    pub fn iter(&self) -> impl Iterator<Item = (IrqHandlerRef, &IrqHandler)> {
        self.entries.iter().filter_map(|e| {
            e.handler.as_ref().map(|h| {
                (
                    IrqHandlerRef {
                        intid: h.intid as u16,
                        generation: e.generation,
                    },
                    h,
                )
            })
        })
    }
}

impl Default for IrqTable {
    fn default() -> Self {
        Self::new()
    }
}

/// What happened to an interrupt the glue reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IrqOutcome {
    /// A notification was signalled; keep the interrupt masked until `IrqAck`.
    Delivered(Schedule),
    /// Nobody handles this interrupt (no handler, or no live notification): keep it masked.
    Unhandled,
}

impl Kernel {
    /// Whether an interrupt can still wake a thread: a sleeping vCPU's timer is armed, or some
    /// handler delivers to a notification a thread waits on (or whose bound thread waits in
    /// `Recv`), or forwards to a vCPU asleep in WFI. With no thread ready and none of these,
    /// nothing can ever run again (one CPU runs threads). Called only when idle; at most one
    /// pass over the handler table.
    #[must_use]
    pub fn interrupts_deliver(&self) -> bool {
        let waits = |t: Option<ThreadRef>, state: fn(ThreadState) -> bool| {
            t.and_then(|t| self.threads.get(t).ok())
                .is_some_and(|t| state(t.state))
        };
        let wakes = |h: &IrqHandler| {
            let notified = h.notification.is_some_and(|(n, _)| {
                self.notifications.get(n).is_ok_and(|n| {
                    !n.queue.is_empty()
                        || waits(n.bound, |s| matches!(s, ThreadState::BlockedRecv(_)))
                })
            });
            let forwarded = h.forward.is_some_and(|(vcpu, _)| {
                let thread = self.vcpus.get(vcpu).ok().and_then(|v| v.thread);
                waits(thread, |s| s == ThreadState::WaitingForInterrupt)
            });
            notified || forwarded
        };
        self.timers_pending() || self.irqs.iter().any(|(_, h)| wakes(h))
    }

    /// The vCPU (and virtual INTID) interrupt `intid` is forwarded to, if its handler forwards
    /// it (the glue then injects it instead of masking it and calling [`Kernel::handle_irq`]).
    #[must_use]
    pub fn irq_forward(&self, intid: u32) -> Option<(VcpuRef, u32)> {
        self.irqs
            .of(intid)
            .and_then(|h| h.forward)
            .filter(|(vcpu, _)| self.vcpus.get(*vcpu).is_ok())
    }

    /// Stops every forward to `vcpu` (being deleted); returns how many interrupts the glue must
    /// withdraw, through `withdraw(intid)`.
    pub(super) fn unforward_vcpu(&mut self, vcpu: VcpuRef, mut withdraw: impl FnMut(u32)) {
        for entry in &mut self.irqs.entries {
            if let Some(h) = &mut entry.handler
                && h.forward.is_some_and(|(v, _)| v == vcpu)
            {
                h.forward = None;
                withdraw(h.intid);
            }
        }
    }

    /// Interrupt `intid` fired (the glue has masked it).
    pub fn handle_irq(&mut self, intid: u32) -> IrqOutcome {
        let target = self.irqs.of(intid).and_then(|h| h.notification);
        match target {
            Some((notification, badge))
                if self.notifications.get(notification).is_ok_and(|n| !n.dying) =>
            {
                self.signal(notification, badge);
                IrqOutcome::Delivered(self.decide())
            }
            _ => IrqOutcome::Unhandled,
        }
    }
}

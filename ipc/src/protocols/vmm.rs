//! A VMM's control protocol: start and stop its guest, query its state, inject interrupts.
//!
//! Callers are the system's root service and the device broker (which forwards passthrough interrupts
//! to the VMM whose guest owns them).

use serde::{Deserialize, Serialize};

use crate::protocol::{ProtocolId, Version};
use crate::types::{Intid, VcpuId};

crate::stable_codes! {
    /// A VMM's errors.
    ///
    /// # Errors
    /// Each variant is one reason the VMM refused.
    pub enum VmmError: u16 {
        /// The guest is already running.
        AlreadyRunning = 1,
        /// The guest is not running.
        NotRunning = 2,
        /// No such vCPU.
        NoSuchVcpu = 3,
        /// The interrupt is not routed to this guest.
        NoSuchIrq = 4,
        /// The guest could not be loaded (bad kernel image or device tree).
        LoadFailed = 5,
        /// The caller may not control this VMM.
        NotPermitted = 6,
    }
}

/// The guest's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GuestState {
    /// Loaded, not started.
    Stopped,
    /// Running; this many vCPUs are powered on (PSCI).
    Running {
        /// vCPUs powered on.
        online_vcpus: u32,
    },
    /// The guest asked for SYSTEM_OFF.
    PoweredOff,
    /// The guest asked for SYSTEM_RESET; it will be started again.
    Resetting,
    /// A vCPU hit a fault the VMM could not handle.
    Crashed {
        /// The vCPU that faulted.
        vcpu: VcpuId,
    },
}

crate::protocol! {
    /// A VMM's control protocol.
    protocol Vmm {
        id: ProtocolId::VMM,
        version: Version::new(1, 0),
        error: VmmError,
    }
    /// Loads and starts the guest (boot vCPU only; others come up through PSCI CPU_ON).
    fn start() -> () as Start;
    /// Stops every vCPU.
    fn stop() -> () as Stop;
    /// The guest's state.
    fn state() -> GuestState as State;
    /// Sets the level of a passthrough or virtual interrupt line.
    fn set_irq_level(intid: Intid, asserted: bool) -> () as SetIrqLevel;
}

//! Address and identifier newtypes shared by the protocols (never a bare `u64` across an interface).

#[cfg(feature = "postcard")]
use serde::{Deserialize, Serialize};

macro_rules! newtype {
    ($( $(#[$meta:meta])* $name:ident($inner:ty); )+) => {
        $(
            $(#[$meta])*
            #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
            #[cfg_attr(feature = "postcard", derive(Serialize, Deserialize))]
            #[cfg_attr(feature = "postcard", serde(transparent))]
            pub struct $name($inner);

            impl $name {
                /// Wraps a raw value.
                #[must_use]
                pub const fn new(raw: $inner) -> Self {
                    Self(raw)
                }

                /// The raw value.
                #[must_use]
                pub const fn raw(self) -> $inner {
                    self.0
                }
            }
        )+
    };
}

newtype! {
    /// An intermediate physical address: a guest's (or a service's) stage-2 input address.
    Ipa(u64);
    /// A physical address (the output of stage 2).
    PhysAddr(u64);
    /// A VM, as the VMM and memory manager name it (not the hardware VMID, which the kernel assigns).
    VmId(u32);
    /// A vCPU index within its VM (its MPIDR affinity is derived from it by the VMM).
    VcpuId(u32);
    /// A service thread, as the kernel names it in service-fault messages.
    ThreadId(u32);
    /// A raw ESR_EL2 syndrome value, exactly as hardware reports or as it is to be injected.
    Esr(u64);
    /// A raw FAR value (faulting virtual address).
    Far(u64);
    /// A guest's VTCR_EL2 value (for walking a nested guest hypervisor's stage-2).
    Vtcr(u64);
    /// A guest's VTTBR_EL2 value.
    Vttbr(u64);
    /// An interrupt ID (GICv3 INTID).
    Intid(u32);
    /// A device region, as the device broker numbers them (stable for one boot).
    RegionId(u32);
}

/// Memory access kind, for faults and walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "postcard", derive(Serialize, Deserialize))]
pub enum Access {
    /// A data read.
    Read,
    /// A data write.
    Write,
    /// An instruction fetch.
    Execute,
}

/// The stage-2 memory type, defined with the rest of the memory vocabulary.
pub use crate::memory::MemoryType;

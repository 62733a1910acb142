//! A software walk of AArch64 stage-2 translation tables, exact to the Arm ARM.
//!
//! capvisor reads a guest hypervisor's stage-2 tables from that guest's memory, as hardware would
//! read them, to build shadow stage-2 mappings for the guest's own guests (nested virtualization).
//! Everything here is pure logic over untrusted input:
//!
//! - [`S2Config`] decodes VTCR_EL2/VTTBR_EL2 once, with the configuration checks of the Arm ARM's
//!   AArch64.S2Translate; [`S2Config::walk`] then walks one IPA (AArch64.S2Walk).
//! - Limits come from the implemented PA size ([`Machine`]), never from the guest's input size.
//! - Every fault carries its level and the ESR fault status code hardware would report.
//! - The walk never panics and never loops: at most five lookups, whatever the tables hold.
//! - [`reference`] (feature `reference`, and in tests) is a separate literal transcription of
//!   the pseudocode that the property tests compare the fast walk against.
//! - [`shadow`] composes a guest hypervisor's stage 2 with the guest's own stage 2 into shadow
//!   mappings, with invalidation.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

mod config;
mod fault;
mod memory;
#[cfg(any(test, feature = "reference"))]
pub mod reference;
mod regs;
pub mod shadow;
pub mod visit;
mod walk;

pub use config::S2Config;
pub use fault::{Fault, FaultKind};
pub use memory::{GuestMemory, ReadError, SliceMemory, WordMemory};
pub use regs::{Access, Granule, Ipa, Machine, OutputAddr, PaBits, Vmid, Vtcr, Vttbr};
pub use walk::{Permissions, Translation, WalkObserver, walk};

//! What capvisor's hostile EL0 test services (`tests/hostile/*`, `docs/hostile.md`) share.
//!
//! Principles:
//! - **One place for what a kernel fix may change.** The numbers the attacks depend on (object
//!   kinds, the size argument of an AddressSpace or Vm retype, where scratch pages go) are in
//!   [`abi`]; the invocations the runtime does not wrap are in `invoke` (bare metal only), so an
//!   ABI change is one edit here, not one per service.
//! - **No layout is assumed.** A service finds its capabilities by probing its own CNode
//!   ([`scan`], bare metal only) instead of trusting slot numbers, and takes free slots from a
//!   [`SlotPool`]; a probe never sends a message or blocks, even on an endpoint.
//! - **Typed errors, printed with `{:?}`**: every result is a `Result<_, KernelError>`, so the
//!   console shows `Err(IllegalOperation)`, which the QEMU tests match exactly.
//!
//! The pure parts ([`SlotPool`], [`Text`]) are unit-tested on the host.
#![no_std]

pub mod abi;
mod slots;
mod text;

pub use slots::{SlotList, SlotPool};
pub use text::Text;

#[cfg(target_os = "none")]
pub mod invoke;
#[cfg(target_os = "none")]
pub mod scan;

#[cfg(test)]
extern crate std;

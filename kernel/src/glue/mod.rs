//! The EL2 glue: what runs the object model (`capvisor_kernel::object`) on the hardware. By role:
//! - [`boot`]: the one thing the kernel builds, the root (init), from the image: its segments,
//!   its untyped memory and device regions, IrqControl, the payload and the platform page;
//! - [`effects`]: the object model's [`Effects`](capvisor_kernel::object::Effects) on this CPU —
//!   stage-2 tables, VMIDs, cache and TLB maintenance, IPC buffers, the GIC;
//! - [`exec`]: running threads and vCPUs — exception entry from EL0 and guests, scheduling,
//!   idling, the glue's syscalls, entering a thread;
//! - [`vcpu`]: a vCPU's world switch and the exits the kernel answers itself (its EL1 state, its
//!   timers and GIC interface, debug registers, emulated system registers, injected aborts);
//! - [`stats`]: the per-VM counters and the trace.
//!
//! Dependencies go one way: `exec` → `vcpu`, `effects` → `stats`; `effects` holds the vCPUs'
//! hardware state (`vcpu::Guests`), and `vcpu` does not import `effects`.
//!
//! Address-space layout of a service (stage 1 is off for EL0, so a virtual address is an IPA):
//! the segments the SDK laid out from its ELF file (`capvisor_image::service`: the kernel parses
//! no ELF) below its stack, a stack of the manifest's size ending at `STACK_TOP`, and its IPC
//! buffer page at `IPC_BUFFER`. A service starts with x0 = the IPC buffer's address and SP =
//! `STACK_TOP` (the runtime's convention, `sdk/rt/src/target.rs`).
//!
//! # The kernel's place and the lock
//! `Kernel` is over 300 KiB, far more than a 64 KiB boot stack, so it lives in a `static`
//! initialised at build time (`Kernel::new` is `const`); it is never built on a stack. Its
//! features are set once the platform is known (`Kernel::set_features`). Only CPU 0 runs
//! threads and secondaries are parked, so CPU 0's non-reentrant exception path (IRQs masked at
//! EL2) is the big kernel lock: [`state`] hands out the kernel and the glue only there.

mod boot;
mod effects;
mod exec;
mod stats;
mod vcpu;

pub use boot::load_all;
pub use vcpu::set_platform;

use crate::arch::aarch64::el0::HCR_SERVICE;
use crate::{exit, println};
use capvisor_kernel::object::{Kernel, PlatformFeatures};
use capvisor_kernel::stage2;
use effects::Glue;

/// Input address bits of a service's address space (39: one level-1 root table).
pub const IPA_BITS: u32 = 39;
const PAGE: u64 = 4096;

static mut KERNEL: Kernel = Kernel::new(PlatformFeatures::UNKNOWN);
static mut GLUE: Glue = Glue::new();
/// HCR_EL2 for services: [`HCR_SERVICE`], plus FWB (bit 46) when the descriptors use the FWB
/// encoding (they must agree: Arm ARM D8.6.5).
static mut HCR: u64 = HCR_SERVICE;

/// The kernel and the glue, under the big kernel lock (see the module doc).
fn state() -> (&'static mut Kernel, &'static mut Glue) {
    // SAFETY: only CPU 0 calls this, at boot or in its exception path, which runs with IRQs
    // masked and leaves by `enter_el0` without returning; no caller keeps the references across
    // another call (each exception path starts afresh).
    unsafe { (&mut *(&raw mut KERNEL), &mut *(&raw mut GLUE)) }
}

/// Runs the services; never returns. `ps` is the PARange encoding for VTCR_EL2.PS; `fwb` must
/// be the platform's (the descriptors' encoding).
pub fn start(ps: u64, vmid16: bool, fwb: bool, count: usize) -> ! {
    // SAFETY: CPU 0 only (module invariant), before any service runs.
    unsafe { HCR = HCR_SERVICE | (u64::from(fwb) << 46) };
    let Some(vtcr) = stage2::vtcr(IPA_BITS, ps, vmid16) else {
        println!("capvisor: no stage-2 configuration for {IPA_BITS}-bit service address spaces");
        exit::fail(exit::Status::Refused)
    };
    // SAFETY: VTCR_EL2 only affects the EL1&0 regime, which nothing runs in yet; every service
    // space is built for this configuration (4K granule, start level 1).
    unsafe { crate::arch::aarch64::stage2::set_vtcr(vtcr) };
    println!("capvisor: starting {count} service(s) at EL0");
    crate::arch::aarch64::gic::start_slice();
    exec::schedule()
}

/// Turns on the per-VM trace of mapping and maintenance operations (`capvisor.trace=1`).
pub fn set_trace(on: bool) {
    stats::TRACE.store(on, core::sync::atomic::Ordering::Relaxed);
}

/// HCR_EL2 for services.
fn hcr() -> u64 {
    // SAFETY: written once in `start`, before any service runs; read-only afterwards.
    unsafe { HCR }
}

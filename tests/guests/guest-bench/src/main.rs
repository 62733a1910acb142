//! Benchmark guest for `capvisor bench`: whole-system cost, measured by the guest itself with
//! CNTVCT under QEMU `-icount shift=0` (one instruction per nanosecond), of
//! - `guest_hvc_round_trip`: an `hvc` (PSCI_VERSION) answered by the guest's VMM at EL0 — guest
//!   exit, fault message, VMM, reply, world switch back;
//! - `guest_s2_fault_memmgr`: a first touch of a fresh 2 MiB region of RAM — stage-2 fault, VMM,
//!   memory manager (frame retype, maintenance, block map), reply;
//! - `guest_mmio_write`: a store to an emulated device register (a GIC distributor priority
//!   register of SPIs the guest does not use) — stage-2 data abort, VMM (which needs the stored
//!   value), emulation reply that steps past the store;
//!
//! each beside the floor: the same loop with nothing in it. The lines have the format
//! `capvisor bench` parses: `bench: name=… iterations=… instructions=… floor=…`.
#![cfg_attr(target_os = "none", no_std, no_main)]

capvisor_guest_rt::guest!("bench", run);

/// HVC round trips measured.
#[cfg(target_os = "none")]
const HVC_CALLS: u64 = 2000;
/// The first fresh 2 MiB region touched (RAM below it holds the boot count, the device tree and
/// the guest itself), and how many are touched: guest RAM must be at least 64 MiB.
#[cfg(target_os = "none")]
const FIRST_REGION: u64 = 0x4100_0000;
#[cfg(target_os = "none")]
const REGIONS: u64 = 24;
/// MMIO stores measured, and where: GICD_IPRIORITYR8 of the emulated distributor (QEMU `virt`'s
/// GICD at 0x0800_0000; IHI 0069H 12.9.20), the priorities of SPIs 32–39, which this guest never
/// enables. Zero is their reset value, so the stores change nothing.
#[cfg(target_os = "none")]
const MMIO_WRITES: u64 = 2000;
#[cfg(target_os = "none")]
const GICD_IPRIORITYR8: u64 = 0x0800_0420;

/// Instructions per iteration from `ticks` CNTVCT ticks over `iterations`: one tick is
/// 1e9 / CNTFRQ_EL0 nanoseconds, and under `-icount shift=0` one nanosecond is one instruction.
#[cfg(target_os = "none")]
fn per_iteration(ticks: u64, iterations: u64) -> u64 {
    let frequency: u64;
    // SAFETY: reading CNTFRQ_EL0 has no side effects.
    unsafe { core::arch::asm!("mrs {}, cntfrq_el0", out(reg) frequency, options(nomem, nostack)) };
    let nanoseconds = u128::from(ticks) * 1_000_000_000 / u128::from(frequency.max(1));
    (nanoseconds / u128::from(iterations.max(1))) as u64
}

/// The cost of `iterations` rounds of a loop that only counts.
#[cfg(target_os = "none")]
fn floor(iterations: u64) -> u64 {
    let start = capvisor_guest_rt::counter();
    for n in 0..iterations {
        core::hint::black_box(n);
    }
    per_iteration(capvisor_guest_rt::counter() - start, iterations)
}

#[cfg(target_os = "none")]
fn run() -> capvisor_guest_rt::Outcome {
    use capvisor_guest_rt::{
        Outcome, contract::psci, counter, println, psci_call, read64, write64,
    };
    let version = psci_call(psci::VERSION, 0, 0, 0);
    if version >> 16 != 1 {
        return Outcome::Fail("PSCI_VERSION is not 1.x");
    }
    let hvc_floor = floor(HVC_CALLS);
    let start = counter();
    for _ in 0..HVC_CALLS {
        core::hint::black_box(psci_call(psci::VERSION, 0, 0, 0));
    }
    let hvc = per_iteration(counter() - start, HVC_CALLS);
    println!(
        "bench: name=guest_hvc_round_trip iterations={HVC_CALLS} instructions={hvc} floor={hvc_floor}"
    );
    let fault_floor = floor(REGIONS);
    let start = counter();
    let mut sum = 0u64;
    for region in 0..REGIONS {
        // SAFETY: each address is the first word of a fresh 2 MiB region of this guest's RAM.
        sum = sum.wrapping_add(unsafe { read64(FIRST_REGION + (region << 21)) });
    }
    let fault = per_iteration(counter() - start, REGIONS);
    println!(
        "bench: name=guest_s2_fault_memmgr iterations={REGIONS} instructions={fault} floor={fault_floor}"
    );
    if sum != 0 {
        return Outcome::Fail("fresh guest RAM was not zero");
    }
    let mmio_floor = floor(MMIO_WRITES);
    let start = counter();
    for _ in 0..MMIO_WRITES {
        // SAFETY: an emulated device register (no memory of this guest), 8-byte aligned; a
        // doubleword store has ISV = 1, so the VMM emulates it.
        unsafe { write64(GICD_IPRIORITYR8, 0) };
    }
    let mmio = per_iteration(counter() - start, MMIO_WRITES);
    println!(
        "bench: name=guest_mmio_write iterations={MMIO_WRITES} instructions={mmio} floor={mmio_floor}"
    );
    println!("bench: done");
    Outcome::Pass
}

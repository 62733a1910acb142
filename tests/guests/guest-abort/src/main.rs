//! Test guest `abort`: a load from an IPA outside RAM and every emulated device is a synchronous
//! external abort taken at EL1 (EC 0x25, DFSC 0b010000, FAR = the address), which the guest's own
//! vector handles and steps over.
#![cfg_attr(target_os = "none", no_std, no_main)]

capvisor_guest_rt::guest!("abort", run);

#[cfg(target_os = "none")]
use core::sync::atomic::{AtomicU64, Ordering};

/// The ESR_EL1 and FAR_EL1 the handler saw (ESR is 0 until it runs).
#[cfg(target_os = "none")]
static SEEN: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

#[cfg(target_os = "none")]
fn on_abort(
    fault: &capvisor_guest_rt::Fault,
    frame: &mut capvisor_guest_rt::ExceptionFrame,
) -> bool {
    SEEN[0].store(fault.esr, Ordering::Relaxed);
    SEEN[1].store(fault.far, Ordering::Relaxed);
    // Step over the faulting load, a 4-byte A64 instruction.
    frame.elr += 4;
    true
}

#[cfg(target_os = "none")]
fn run() -> capvisor_guest_rt::Outcome {
    use capvisor_guest_rt::Outcome;
    use capvisor_guest_rt::contract::{UNMAPPED_ADDRESS, esr};
    capvisor_guest_rt::set_sync_hook(on_abort);
    let mut value: u64 = 0x5a5a;
    // SAFETY: the load faults and the hook resumes after it, leaving `value` as it was; an
    // implementation that did not fault would only load a word from outside the program.
    unsafe {
        core::arch::asm!("ldr {v:w}, [{a}]", v = inout(reg) value, a = in(reg) UNMAPPED_ADDRESS,
            options(nostack, readonly));
    }
    let (syndrome, far) = (
        SEEN[0].load(Ordering::Relaxed),
        SEEN[1].load(Ordering::Relaxed),
    );
    capvisor_guest_rt::println!(
        "load from {UNMAPPED_ADDRESS:#x}: ESR_EL1={syndrome:#x} (EC {:#x}, DFSC {:#x}) FAR_EL1={far:#x}",
        esr::class(syndrome),
        esr::dfsc(syndrome)
    );
    if syndrome == 0 {
        return Outcome::Fail("the load from an unmapped IPA did not fault");
    }
    if esr::class(syndrome) != esr::EC_DATA_ABORT_SAME_EL {
        return Outcome::Fail("wrong exception class, expected 0x25 (data abort, same EL)");
    }
    if esr::dfsc(syndrome) != esr::DFSC_SYNC_EXTERNAL {
        return Outcome::Fail("wrong DFSC, expected 0b010000 (synchronous external abort)");
    }
    if esr::far_not_valid(syndrome) || far != UNMAPPED_ADDRESS {
        return Outcome::Fail("FAR_EL1 is not the faulting address");
    }
    if value != 0x5a5a {
        return Outcome::Fail("the faulting load wrote its destination register");
    }
    Outcome::Pass
}

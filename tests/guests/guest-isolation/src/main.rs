//! Test guest `isolation`: two copies run at once, in two VMs with their own VMIDs and stage-2
//! tables over the same IPAs. Each fills a range of its RAM with a pattern seeded by its own
//! start time (the virtual counter), then repeatedly waits (a millisecond of WFI with the virtual
//! timer armed: the vCPU sleeps and the other guest runs meanwhile) and checks that every word
//! is still its own. Shared memory, a shared
//! translation or a stale TLB entry across VMIDs would show up as the other guest's pattern.
#![cfg_attr(target_os = "none", no_std, no_main)]

capvisor_guest_rt::guest!("isolation", run);

/// The first IPA of the checked range, and its size in words (256 KiB).
#[cfg(target_os = "none")]
const BASE: u64 = 0x4080_0000;
#[cfg(target_os = "none")]
const WORDS: u64 = 32 * 1024;
/// Rounds of waiting and checking.
#[cfg(target_os = "none")]
const ROUNDS: u64 = 20;

/// The pattern word at index `n` for `seed` (a multiplicative hash: distinct seeds give distinct
/// words at every index).
#[cfg(target_os = "none")]
fn word(seed: u64, n: u64) -> u64 {
    (seed ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1
}

/// Sleeps about a millisecond: the GIC CPU interface on and the virtual timer armed (its
/// interrupt masked at PSTATE, which still wakes a WFI, Arm ARM D1.6.2 "Wait for Interrupt"),
/// one WFI, the timer off again. A WFI may also complete early (a pending interrupt, or any
/// implementation reason): that is fine.
#[cfg(target_os = "none")]
fn pause() {
    let frequency: u64;
    // SAFETY: reading the counter frequency has no side effects.
    unsafe { core::arch::asm!("mrs {}, cntfrq_el0", out(reg) frequency, options(nomem, nostack)) };
    let deadline = capvisor_guest_rt::counter() + frequency / 1000;
    // SAFETY: the guest's own GIC CPU interface (system registers, priority mask, group 1: a
    // timer interrupt must be one the interface would signal to end a WFI, GIC IHI 0069H 4.8)
    // and virtual timer: compare value, ENABLE (IMASK clear), WFI, then off.
    unsafe {
        core::arch::asm!(
            "msr daifset, #2",
            "mrs {t}, icc_sre_el1",
            "orr {t}, {t}, #1",
            "msr icc_sre_el1, {t}",
            "isb",
            "mov {t}, #0xf0",
            "msr icc_pmr_el1, {t}",
            "mov {t}, #1",
            "msr icc_igrpen1_el1, {t}",
            "msr cntv_cval_el0, {deadline}",
            "mov {t}, #1",
            "msr cntv_ctl_el0, {t}",
            "isb",
            "wfi",
            "msr cntv_ctl_el0, xzr",
            "isb",
            deadline = in(reg) deadline,
            t = out(reg) _,
            options(nostack, nomem)
        )
    };
}

#[cfg(target_os = "none")]
fn run() -> capvisor_guest_rt::Outcome {
    use capvisor_guest_rt::Outcome;
    let seed = capvisor_guest_rt::counter() | 1 << 63;
    capvisor_guest_rt::println!("seed {seed:#x}");
    for n in 0..WORDS {
        // SAFETY: the range is inside this guest's 16 MiB of RAM, above its image and stack.
        unsafe { capvisor_guest_rt::write64(BASE + n * 8, word(seed, n)) };
    }
    for round in 0..ROUNDS {
        pause();
        for n in 0..WORDS {
            // SAFETY: as above.
            let found = unsafe { capvisor_guest_rt::read64(BASE + n * 8) };
            if found != word(seed, n) {
                capvisor_guest_rt::println!(
                    "round {round}: word {n} is {found:#x}, expected {:#x}",
                    word(seed, n)
                );
                return Outcome::Fail("memory changed under the guest");
            }
        }
    }
    Outcome::Pass
}

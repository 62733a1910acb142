//! Test guest `pages`: every page of guest RAM a guest first touches, a whole 2 MiB aligned
//! region and pages of different 2 MiB regions, holds what it writes (stage-2 faults mapping RAM
//! on demand), and two measurements: the first touch of a page (`bench s2_fault`) and a PSCI call
//! (`bench hvc`), in CNTVCT ticks.
#![cfg_attr(target_os = "none", no_std, no_main)]

capvisor_guest_rt::guest!("pages", run);

/// A whole 2 MiB aligned region no other part of the guest uses.
#[cfg(target_os = "none")]
const REGION: u64 = 0x4040_0000;
/// Pages in other 2 MiB regions, at differing offsets within them.
#[cfg(target_os = "none")]
const SCATTERED: [u64; 6] = [
    0x4011_0000,
    0x4060_0000,
    0x4081_3000,
    0x40a0_7000,
    0x40c1_f000,
    0x40ff_f000,
];
#[cfg(target_os = "none")]
const HVC_CALLS: u64 = 1000;

#[cfg(target_os = "none")]
fn pages() -> impl Iterator<Item = u64> {
    (0..512).map(|page| REGION + page * 4096).chain(SCATTERED)
}

#[cfg(target_os = "none")]
fn fill_and_check(page: u64, round: u64) -> bool {
    use capvisor_guest_rt::{encode::pattern, read64, write64};
    for offset in (0..4096).step_by(64) {
        // SAFETY: the test pages are guest RAM outside the image and the boot count.
        unsafe { write64(page + offset, pattern(page, offset, round)) };
    }
    (0..4096).step_by(64).all(|offset| {
        // SAFETY: as above.
        unsafe { read64(page + offset) == pattern(page, offset, round) }
    })
}

#[cfg(target_os = "none")]
fn run() -> capvisor_guest_rt::Outcome {
    use capvisor_guest_rt::{Outcome, contract::psci, counter, println, psci_call, read64};
    // First touch: one load per page of the whole region, timed.
    let start = counter();
    let mut sum = 0u64;
    for page in 0..512 {
        // SAFETY: as in `fill_and_check`.
        sum = sum.wrapping_add(unsafe { read64(REGION + page * 4096) });
    }
    let ticks = counter() - start;
    println!("bench s2_fault {ticks} 512");
    if sum != 0 && capvisor_guest_rt::boot_count() != 0 {
        println!("note: fresh pages were not zero (sum {sum:#x})");
    }
    let mut count = 0u64;
    for round in 1..=2 {
        for page in pages() {
            if !fill_and_check(page, round) {
                println!("page {page:#x} does not hold what was written in round {round}");
                return Outcome::Fail("a page lost what was written to it");
            }
            count += u64::from(round == 1);
        }
    }
    println!("touched {count} pages, each written and verified twice");
    let version = psci_call(psci::VERSION, 0, 0, 0);
    let start = counter();
    for _ in 0..HVC_CALLS {
        psci_call(psci::VERSION, 0, 0, 0);
    }
    let ticks = counter() - start;
    println!("bench hvc {ticks} {HVC_CALLS}");
    println!("PSCI version {}.{}", version >> 16, version & 0xffff);
    Outcome::Pass
}

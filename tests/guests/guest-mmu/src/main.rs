//! Test guest `mmu`: guest RAM keeps its contents across the guest turning its stage-1 MMU and
//! caches on and off (DESIGN.md stage-2 rule 1: RAM is Normal write-back at stage 2, and pages
//! are clean to PoC before a guest with its MMU off first sees them).
#![cfg_attr(target_os = "none", no_std, no_main)]

capvisor_guest_rt::guest!("mmu", run);

/// The test pages: 16 pages of the free 2 MiB region above the image.
#[cfg(target_os = "none")]
const REGION: (u64, u64) = (0x4040_0000, 16);

#[cfg(target_os = "none")]
fn fill(round: u64) {
    use capvisor_guest_rt::{encode::pattern, write64};
    for page in 0..REGION.1 {
        for offset in (0..4096).step_by(8) {
            // SAFETY: the region is guest RAM outside the image, used by nothing else.
            unsafe {
                write64(
                    REGION.0 + page * 4096 + offset,
                    pattern(page, offset, round),
                )
            };
        }
    }
}

/// Whether the region holds round `round`'s pattern.
#[cfg(target_os = "none")]
fn holds(round: u64) -> bool {
    use capvisor_guest_rt::{encode::pattern, read64};
    (0..REGION.1).all(|page| {
        (0..4096).step_by(8).all(|offset| {
            // SAFETY: as in `fill`.
            let value = unsafe { read64(REGION.0 + page * 4096 + offset) };
            value == pattern(page, offset, round)
        })
    })
}

#[cfg(target_os = "none")]
fn run() -> capvisor_guest_rt::Outcome {
    use capvisor_guest_rt::{Outcome, disable_mmu, enable_mmu, println};
    fill(1);
    if !holds(1) {
        return Outcome::Fail("MMU off: RAM does not read back what was written");
    }
    println!("MMU off: {} pages written and read back", REGION.1);
    // SAFETY: the MMU is off and the caches have never been on.
    unsafe { enable_mmu() };
    if !holds(1) {
        return Outcome::Fail("MMU on: data written with the MMU off is not seen");
    }
    fill(2);
    if !holds(2) {
        return Outcome::Fail("MMU on: cacheable RAM does not read back what was written");
    }
    println!("MMU and caches on: data kept, rewritten and read back");
    let end = REGION.0 + REGION.1 * 4096;
    // SAFETY: enabled above; the data lies in REGION.
    unsafe { disable_mmu(REGION.0, end) };
    if !holds(2) {
        return Outcome::Fail("MMU off again: data written with the caches on is lost");
    }
    println!("MMU off again: data written with the caches on is in memory");
    Outcome::Pass
}

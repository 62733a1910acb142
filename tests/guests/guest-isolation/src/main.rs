//! Test guest `isolation`: two copies run at once, in two VMs with their own VMIDs and stage-2
//! tables over the same IPAs. Each fills a range of its RAM with a pattern seeded by its own
//! start time (the virtual counter), then repeatedly waits (WFI: its VMM resumes it, the other
//! guest runs meanwhile) and checks that every word is still its own. Shared memory, a shared
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
        // SAFETY: WFI only waits (it traps to the VMM, which resumes the guest after it).
        unsafe { core::arch::asm!("wfi", options(nostack, nomem)) };
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

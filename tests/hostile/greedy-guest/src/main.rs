//! An attacker guest (issue 13, finding 7), run by `tests/tests/hostile_services.rs` beside a
//! bystander guest: it reads one word in every 2 MiB of its RAM, from the bottom up, as fast as
//! it can, so that the memory manager maps all of it. Its manifest gives it more RAM than the
//! memory manager's pool holds beside the bystander's: before per-guest quotas it took the whole
//! pool and the bystander could not even be loaded; now its VMM is refused at its fair share
//! (`MemError::Quota`) and stops it, and the bystander runs. It prints a line every 4 MiB.
#![cfg_attr(target_os = "none", no_std, no_main)]

capvisor_guest_rt::guest!("greedy", run);

/// Its RAM (the manifest's `memory`), from the contract's base.
#[cfg(target_os = "none")]
const RAM_SIZE: u64 = 32 << 20;

#[cfg(target_os = "none")]
fn run() -> capvisor_guest_rt::Outcome {
    use capvisor_guest_rt::contract::RAM_BASE;
    let step = 2 << 20;
    let (mut touched, mut sum) = (0, 0u64);
    while touched < RAM_SIZE {
        // SAFETY: a read of an aligned word inside this guest's RAM has no side effect.
        sum = sum.wrapping_add(unsafe { capvisor_guest_rt::read64(RAM_BASE + touched) });
        touched += step;
        if touched % (4 << 20) == 0 {
            capvisor_guest_rt::println!("{} MiB of RAM in use", touched >> 20);
        }
    }
    capvisor_guest_rt::println!("read all of its RAM (checksum {sum:#x})");
    capvisor_guest_rt::Outcome::Pass
}

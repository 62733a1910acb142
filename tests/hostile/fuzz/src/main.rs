//! The hostile suite's random syscall sequence (`docs/hostile.md`): a service that issues a long
//! seeded series of random syscalls and invocations on the capabilities it holds and creates —
//! retypes of every kind (Untyped, Endpoint, Notification, CNode, frames, Vm, Vcpu, Thread,
//! AddressSpace), copy, mint, move, delete and revoke, map and unmap, thread configure, resume,
//! suspend and binding, vCPU registers and interrupts, cache and TLB maintenance, non-blocking
//! IPC, IRQ handlers — with valid arguments mixed with arbitrary ones, and never a call that
//! could block ([`plan`]). It is its image's root (so it holds IrqControl), works from a 4 MiB
//! untyped of its own, and names only a region of its own slots. It prints
//! `fuzz: N steps, seed S: ok …; errors by code: …`, revokes everything it made and ends; the
//! bystander then checks the system.
//!
//! Build-time settings (environment variables of the build, so `capvisor build` passes them):
//! `HOSTILE_FUZZ_STEPS` (default 20000), `HOSTILE_FUZZ_SEED` (decimal or `0x…`) and
//! `HOSTILE_FUZZ_TRACE=1` (print every step before making it, and each error) and
//! `HOSTILE_FUZZ_AVOID_KNOWN=1` (steer clear of the hangs issue 13 reports, to look past them).
#![cfg_attr(target_os = "none", no_std, no_main)]

capvisor_rt::service!(run);

mod plan;
mod rng;
mod world;

/// How many steps (`HOSTILE_FUZZ_STEPS` at build time).
const STEPS: u64 = rng::parse(option_env!("HOSTILE_FUZZ_STEPS"), 20_000);
/// The seed (`HOSTILE_FUZZ_SEED` at build time).
const SEED: u64 = rng::parse(option_env!("HOSTILE_FUZZ_SEED"), 0x5eed_0013_c0de_f00d);
/// Whether each step is printed before it is made (`HOSTILE_FUZZ_TRACE=1` at build time), to
/// find the step a kernel never returns from.
#[cfg(target_os = "none")]
const TRACE: bool = rng::parse(option_env!("HOSTILE_FUZZ_TRACE"), 0) != 0;
/// Whether to steer clear of the kernel's known hangs (`HOSTILE_FUZZ_AVOID_KNOWN=1` at build
/// time; `plan::World::avoid_known_hangs`).
#[cfg(target_os = "none")]
const AVOID_KNOWN: bool = rng::parse(option_env!("HOSTILE_FUZZ_AVOID_KNOWN"), 0) != 0;

#[cfg(target_os = "none")]
mod el0;

#[cfg(target_os = "none")]
fn run() -> u64 {
    el0::run(STEPS, SEED, (TRACE, AVOID_KNOWN))
}

/// On the host the plan runs without a kernel: it prints the first steps it would take (as if
/// each succeeded), which shows what a seed does.
#[cfg(not(target_os = "none"))]
fn run() -> u64 {
    let mut rng = rng::Rng::new(SEED);
    let mut region = hostile_common::SlotPool::new();
    for slot in 100..260 {
        region.give(slot);
    }
    let mut world = plan::World::new(region, (1, 2), Some(4), 100);
    for _ in 0..STEPS.min(20) {
        let step = plan::next(&mut rng, &world);
        println!(
            "{:<20} x7={:#x} x0={:#x}",
            step.name, step.number, step.cptr
        );
        world.apply(step.effect);
        world.rescan = false;
    }
    let untyped = hostile_common::abi::kind::UNTYPED;
    println!(
        "an untyped in the region afterwards: {}",
        world.holds(untyped)
    );
    0
}

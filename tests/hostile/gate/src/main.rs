//! The gate of the hostile-guest suite (`docs/hostile-guests.md`): the bystander ends the
//! system when it is done, and it runs as soon as nothing above it is ready — which, in an
//! image whose guests wait for their timers in WFI, is in the middle of their tests. The gate
//! sits between the guests and the bystander: from the first time it runs, it keeps the CPU for
//! [`HOLD_MS`] of the counter (yielding, so equal priorities are not starved), while the guests
//! above it wake, run and sleep again as their timers say; then it ends, and the bystander runs.
//! A scheduling aid, not a timed assertion: a guest that needs longer shows as its missing
//! result line.
#![cfg_attr(target_os = "none", no_std, no_main)]

capvisor_rt::service!(run);

/// How long the gate holds the CPU, in milliseconds of the counter.
const HOLD_MS: u64 = 1000;

#[cfg(target_os = "none")]
fn run() -> u64 {
    let start = capvisor_rt::counter();
    let ticks = capvisor_rt::counter_frequency() / 1000 * HOLD_MS;
    while capvisor_rt::counter().wrapping_sub(start) < ticks {
        capvisor_rt::yield_now();
    }
    capvisor_rt::println!("gate: opened after {HOLD_MS} ms");
    0
}

/// Without the kernel there is nothing to hold: the host program does nothing.
#[cfg(not(target_os = "none"))]
fn run() -> u64 {
    let _ = HOLD_MS;
    0
}

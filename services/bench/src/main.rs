//! capvisor's benchmark service: times kernel paths from EL0 with the virtual counter.
//!
//! Under QEMU `-icount shift=0` (what `capvisor bench` uses) one instruction takes one virtual
//! nanosecond, so counter ticks scaled by 10^9 / CNTFRQ are instructions (QEMU's counter runs at
//! 1 GHz on Armv8.6+ models and 62.5 MHz on older ones; the scaling covers both). Each result is printed
//! beside the floor measured in the same run (the same loop with nothing in it) as one line:
//! `bench: name=<name> iterations=<n> instructions=<per iteration> floor=<per iteration>`.
#![cfg_attr(target_os = "none", no_std, no_main)]

capvisor_rt::service!(run);

const ITERATIONS: u64 = 1000;
const WARM_UP: u64 = 16;

fn run() -> u64 {
    let floor = measure(|| {});
    report("null_syscall", measure(capvisor_rt::yield_now), floor);
    capvisor_rt::debug_write("bench: done\n");
    capvisor_rt::debug_halt(0)
}

/// Instructions per iteration of `body`, after a warm-up.
fn measure(body: impl Fn()) -> u64 {
    for i in 0..WARM_UP {
        body();
        core::hint::black_box(i);
    }
    let start = capvisor_rt::counter();
    for i in 0..ITERATIONS {
        body();
        // Keeps the loop (and so the floor's loop overhead) from being optimised away.
        core::hint::black_box(i);
    }
    let ticks = u128::from(capvisor_rt::counter() - start);
    let per_second = u128::from(capvisor_rt::counter_frequency().max(1));
    (ticks * 1_000_000_000 / per_second / u128::from(ITERATIONS)) as u64
}

fn report(name: &str, per_iteration: u64, floor: u64) {
    let mut line = capvisor_rt::Line::new();
    line.push("bench: name=");
    line.push(name);
    line.push(" iterations=");
    line.push_u64(ITERATIONS);
    line.push(" instructions=");
    line.push_u64(per_iteration);
    line.push(" floor=");
    line.push_u64(floor);
    line.push("\n");
    capvisor_rt::debug_write(line.as_str());
}

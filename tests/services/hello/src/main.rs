//! A test service: greets from EL0, yields to the others a few times, then ends the test run.
#![cfg_attr(target_os = "none", no_std, no_main)]

capvisor_rt::service!(run);

fn run() -> u64 {
    capvisor_rt::debug_write("hello from EL0\n");
    for round in ["first", "second", "third"] {
        capvisor_rt::yield_now();
        capvisor_rt::debug_write(round);
        capvisor_rt::debug_write(" round after yielding\n");
    }
    capvisor_rt::debug_halt(0)
}

//! A test service that never yields: other services make progress only if the kernel preempts
//! it when its time slice ends.
#![cfg_attr(target_os = "none", no_std, no_main)]

capvisor_rt::service!(run);

fn run() -> u64 {
    capvisor_rt::debug_write("spinning without yielding\n");
    let mut counter: u64 = 0;
    loop {
        // SAFETY: a volatile write to a local; it only keeps the loop from being optimised away.
        unsafe { core::ptr::write_volatile(&mut counter, counter.wrapping_add(1)) };
    }
}

//! A test service that touches an address it has no mapping for: the kernel must report the
//! fault with the service's name and stop only this service.
#![cfg_attr(target_os = "none", no_std, no_main)]

capvisor_rt::service!(run);

/// An IPA no segment, stack or IPC buffer of a service covers.
const UNMAPPED: usize = 0x10_0000_0000;

fn run() -> u64 {
    capvisor_rt::debug_write("about to touch an unmapped address\n");
    // SAFETY: not safe, deliberately: on capvisor the read is a stage-2 translation fault that
    // stops this service; it is never run on the host by the tests.
    let value = unsafe { core::ptr::read_volatile(UNMAPPED as *const u64) };
    capvisor_rt::debug_write("still running after the fault?!\n");
    value
}

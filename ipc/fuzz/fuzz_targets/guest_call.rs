//! Fuzzes the fixed-layout guest call and its result (kernel and VMM decode them): refused or
//! round-tripped, never a panic.
#![no_main]

use capvisor_ipc::checks;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    checks::guest_call(data);
});

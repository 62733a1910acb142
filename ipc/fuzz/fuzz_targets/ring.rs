//! Fuzzes the shared-memory ring consumer against a hostile producer: never fooled, never a panic.
#![no_main]

use capvisor_ipc::checks;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    checks::ring(data);
});

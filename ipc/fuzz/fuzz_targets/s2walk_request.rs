//! Fuzzes s2walk requests as its server decodes them: rejected with an error or round-tripped, never a panic.
#![no_main]

use capvisor_ipc::{checks, protocols};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = checks::request::<protocols::s2walk::S2Walk>(data);
});

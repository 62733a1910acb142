//! Fuzzes a raw message-info word (x1 from an untrusted thread): rejected with an error or round-tripped, never a panic.
#![no_main]

use capvisor_ipc::checks;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(raw) = data.get(..8) {
        let raw = u64::from_le_bytes(raw.try_into().expect("8 bytes"));
        checks::message_info(raw);
    }
});

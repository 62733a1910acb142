//! Fuzzes the fault reply decoders (`protocols::fault::{decode_guest_reply,
//! decode_service_reply}`: what the EL2 kernel decodes, in fixed layout): refused, or exactly what
//! the encoders make of the decoded reply, never a panic.
#![no_main]

use capvisor_ipc::checks;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    checks::fault_reply(data);
});

//! Fuzzes the fault message decoder (`protocols::fault::FaultMessage::decode`: what a VMM or
//! supervisor receives, in fixed layout): refused, or exactly what the encoder makes of the
//! decoded value, never a panic.
#![no_main]

use capvisor_ipc::checks;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    checks::fault_message(data);
});

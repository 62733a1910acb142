//! A fault in the kernel gives a decoded register dump (or a panic location) and a non-zero
//! exit status, never a hang.

use capvisor::qemu::Ending;
use capvisor_tests::{assert_contains, assert_line, boot, build};

#[test]
fn data_abort_is_decoded() {
    let image = build("tests/images/fault-data-abort.toml");
    for cpu in ["cortex-a57", "max"] {
        let outcome = boot(&image.path, cpu, 1);
        assert_contains(
            &outcome,
            "capvisor: UNEXPECTED EXCEPTION on cpu 0: synchronous from current EL with SP_ELx",
        );
        // A read of an address no level-0 entry covers: translation fault, level 0 (Arm ARM
        // D24.2.40, DFSC 0b000100).
        assert_contains(
            &outcome,
            "EC=0x25 (data abort from the current EL) IL=1 ISS=0x000004: DFSC=0x04 translation fault, level 0; read",
        );
        assert_contains(&outcome, "FAR_EL2=0x0000dead00000000");
        assert_contains(&outcome, "x30=0x");
        assert_eq!(
            outcome.ending,
            Ending::Exited(1),
            "console:\n{}",
            outcome.console
        );
    }
}

#[test]
fn undefined_instruction_is_decoded() {
    let image = build("tests/images/fault-undefined.toml");
    let outcome = boot(&image.path, "neoverse-n1", 1);
    assert_contains(&outcome, "EC=0x00 (unknown reason) IL=1 ISS=0x000000");
    assert_contains(&outcome, "ELR_EL2=0x");
    assert_eq!(
        outcome.ending,
        Ending::Exited(1),
        "console:\n{}",
        outcome.console
    );
}

#[test]
fn panic_shows_source_location() {
    let image = build("tests/images/fault-panic.toml");
    let outcome = boot(&image.path, "cortex-a710", 2);
    assert_contains(
        &outcome,
        "capvisor: PANIC on cpu 0 at kernel/src/selftest.rs:",
    );
    assert_contains(&outcome, ": deliberate panic (selftest)");
    assert_line(&outcome, "capvisor: stopping with status 2 (Panic)");
    assert_eq!(
        outcome.ending,
        Ending::Exited(2),
        "console:\n{}",
        outcome.console
    );
}

//! Typed IPC between EL0 services on the kernel object model: `ping` (the root) calls `pong`
//! through the endpoint the manifest grants it, transfers a notification and a frame, meets each
//! misuse error, and revokes what it gave, after which `pong`'s access to the frame faults.

use capvisor::qemu::Ending;
use capvisor_tests::{assert_contains, assert_line, boot, build};

fn ping_pong(cpu: &str) {
    let image = build("tests/images/ipc-pingpong.toml");
    let outcome = boot(&image.path, cpu, 1);
    for n in 1..=3 {
        // The badge is ping's image index + 1: pong knows who called.
        assert_line(&outcome, &format!("[pong] ping {n} from badge 1"));
        assert_line(
            &outcome,
            &format!("[ping] pong answered {} to ping {n}", n * 10),
        );
    }
    // Kind 3 is a notification, made from the 64 KiB untyped pong's manifest asks for.
    assert_line(
        &outcome,
        "[pong] retyped an object of kind 3 from its untyped",
    );
    assert_line(&outcome, "[ping] bad slot: Some(InvalidSlot)");
    assert_line(&outcome, "[ping] wrong type: Some(WrongType)");
    assert_line(
        &outcome,
        "[ping] read-only signal: Some(InsufficientRights)",
    );
    // Kind 3 is a notification, kind 6 a frame; they land in pong's receive window.
    assert_line(
        &outcome,
        "[pong] received a capability of kind 3 in slot 100",
    );
    assert_line(
        &outcome,
        "[ping] notification word 0x5 after pong signalled",
    );
    assert_line(
        &outcome,
        "[pong] received a capability of kind 6 in slot 101",
    );
    assert_line(&outcome, "[ping] shared frame holds 0x12345678");
    assert_line(&outcome, "[ping] signal after revoke: Some(EmptySlot)");
    assert_line(&outcome, "[pong] signal after revoke: Some(EmptySlot)");
    // Revoking the frame removed pong's mapping: its next read is a level-3 translation fault.
    assert_contains(
        &outcome,
        "capvisor: service 'pong' faulted and was stopped: EC=0x24 (data abort from a lower EL) \
         IL=1 ISS=0x1c88007: DFSC=0x07 translation fault, level 3; read",
    );
    assert_contains(&outcome, "far=0x100000000");
    assert!(
        !outcome.console.contains("still mapped") && !outcome.console.contains("unexpected"),
        "{}",
        outcome.console
    );
    assert_line(&outcome, "[ping] created and deleted 1100 address spaces");
    assert_line(&outcome, "[ping] done");
    assert_line(
        &outcome,
        "capvisor: service 'ping' halted the system with status 0",
    );
    assert_eq!(
        outcome.ending,
        Ending::Exited(0),
        "console:\n{}",
        outcome.console
    );
}

#[test]
fn ipc_ping_pong_on_cortex_a57() {
    ping_pong("cortex-a57");
}

#[test]
fn ipc_ping_pong_on_max() {
    ping_pong("max");
}

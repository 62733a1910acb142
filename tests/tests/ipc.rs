//! Typed IPC between EL0 services on the kernel object model: `ping` (the root) calls `pong`
//! with the ping/pong protocol's generated client over the EL0 transport, through the endpoint
//! the manifest grants it; `pong` serves it with the generated `serve` loop. Ping transfers a
//! notification and a frame, takes a notification pong grants in a reply, meets each misuse
//! error, and revokes what it gave, after which `pong`'s access to the frame faults.

use capvisor_tests::{assert_contains, assert_exited_ok, assert_line, boot, build};

fn ping_pong(cpu: &str) {
    let image = build("tests/images/ipc-pingpong.toml");
    let outcome = boot(&image.path, cpu, 1);
    // Two tasks of ping's executor take turns at their `.await`s: the spawned ticker runs while
    // the main task is still in its loop (the order within a turn is embassy's run queue's).
    for line in [
        "[ping] main turn 1",
        "[ping] main turn 2",
        "[ping] main turn 3",
        "[ping] ticker turn 1",
        "[ping] ticker turn 2",
    ] {
        assert_line(&outcome, line);
    }
    let position = |line: &str| outcome.console.find(line).unwrap_or(usize::MAX);
    assert!(
        position("[ping] ticker turn 1") < position("[ping] main turn 3"),
        "{}",
        outcome.console
    );
    for n in 1..=3 {
        // The badge is ping's image index + 1: pong knows who called.
        assert_line(&outcome, &format!("[pong] ping {n} from badge 1"));
        assert_line(
            &outcome,
            &format!("[ping] pong answered {} to ping {n}", n * 10),
        );
    }
    // A service error travels as the protocol's typed error.
    assert_line(&outcome, "[pong] ping 0 from badge 1");
    assert_line(&outcome, "[ping] ping 0: Err(Service(Zero))");
    // A client that expects another pong instance is told, and pong's handler never sees the
    // request: "ping 1" reached it exactly once.
    assert_line(
        &outcome,
        "[ping] stale generation: Err(Call(ServerRestarted(Generation(1))))",
    );
    assert_eq!(
        outcome.console.matches("[pong] ping 1 from badge").count(),
        1,
        "{}",
        outcome.console
    );
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
    // A frame mapped beyond the IPA space (kernel/src/object/frame.rs).
    assert_line(
        &outcome,
        "[ping] map outside the address space: Some(BadAddress)",
    );
    // Kind 3 is a notification, kind 6 a frame; they land in pong's receive window.
    assert_line(
        &outcome,
        "[pong] received a capability of kind 3 in slot 400",
    );
    assert_line(
        &outcome,
        "[ping] notification word 0x5 after pong signalled 0x5",
    );
    assert_line(
        &outcome,
        "[pong] received a capability of kind 6 in slot 401",
    );
    assert_line(&outcome, "[pong] mapped the frame and wrote to it");
    assert_line(&outcome, "[ping] shared frame holds 0x12345678");
    // A capability in a reply: typed `Transferred<Notification>`, kind checked on both sides.
    assert_line(&outcome, "[ping] pong granted a notification in slot 940");
    assert_line(&outcome, "[ping] signal after revoke: Some(EmptySlot)");
    // Destroyed and re-created in the same slot: the derived copy went with the old object and
    // the new one starts empty (the old word held 0x9).
    assert_line(
        &outcome,
        "[ping] derived copy after re-create: Some(EmptySlot)",
    );
    assert_line(&outcome, "[ping] re-created notification word 0x0");
    assert_line(&outcome, "[pong] signal after revoke: Some(EmptySlot)");
    // Revoking the frame removed pong's mapping: its next read is a level-3 translation fault.
    // (The ISS's register field depends on code generation, so only the decoded fault is fixed.)
    let fault = outcome
        .console
        .lines()
        .find(|line| line.starts_with("capvisor: service 'pong' faulted and was stopped: "))
        .unwrap_or_else(|| panic!("pong did not fault:\n{}", outcome.console));
    assert!(
        fault.contains("EC=0x24 (data abort from a lower EL) IL=1 ISS=")
            && fault.contains("DFSC=0x07 translation fault, level 3; read")
            && fault.ends_with("far=0x100000000"),
        "{fault}"
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
    assert_exited_ok(&outcome);
}

#[test]
fn ipc_ping_pong_on_cortex_a57() {
    ping_pong("cortex-a57");
}

#[test]
fn ipc_ping_pong_on_max() {
    ping_pong("max");
}

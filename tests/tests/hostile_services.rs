//! Hostile clients of the system services (issue 13, finding 7, the service-level part): each
//! image runs an attacker (`tests/hostile/*`) beside a bystander, and the test checks that the
//! attack is refused with its typed error or survived, and that the bystander is still served
//! afterwards. Every test runs on `cortex-a57` (ARMv8.0, no FWB) and `max`.

use capvisor_tests::{assert_exited_ok, assert_line, boot, build};

/// svc-s2walk: a client that squats VM ids, revokes the frames it lent while the walker uses
/// them, and lends until refused, stops neither the walker nor its service to another client.
fn s2walk_survives_a_revoking_client(cpu: &str) {
    let image = build("tests/images/hostile-s2walk.toml");
    let outcome = boot(&image.path, cpu, 1);
    for line in [
        "[revoker] revoker: nested VM 1 and VM 2; a third: Err(Service(Quota))",
        "[revoker] revoker: page read before revoking: Ok(pa 0x80000123 level 3)",
        // The level-1 table's page is gone: a synchronous external abort on the walk, level 1.
        "[revoker] revoker: page read after revoking the level-1 table: Ok(fault fsc 0x15 level 1 external)",
        "[revoker] revoker: 40 rounds of lend, walk, revoke, walk: 40 ended in the external abort",
        "[revoker] revoker: the level-1 table lent again: Ok(()); page read: Ok(pa 0x80000123 level 3)",
        // 3 table pages and 29 more: the quota of 32.
        "[revoker] revoker: lent 29 more pages, then: Some(Service(Quota))",
        "[revoker] revoker: after revoking them all, one more lend: Ok(())",
        "[revoker] revoker: done",
        // The bystander uses VM id 1, which the attacker nested first.
        "[bystander] all 17 walks agree with the reference",
    ] {
        assert_line(&outcome, line);
    }
    assert!(
        outcome
            .console
            .contains("[s2walk] s2walk: a lent frame was revoked while lent"),
        "{}",
        outcome.console
    );
    assert!(!outcome.console.contains("DIFFERS"), "{}", outcome.console);
    assert!(
        !outcome.console.contains("service 's2walk' faulted"),
        "{}",
        outcome.console
    );
    assert_exited_ok(&outcome);
}

#[test]
fn s2walk_survives_a_revoking_client_on_cortex_a57() {
    s2walk_survives_a_revoking_client("cortex-a57");
}

#[test]
fn s2walk_survives_a_revoking_client_on_max() {
    s2walk_survives_a_revoking_client("max");
}

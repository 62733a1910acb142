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

/// svc-devbroker: a client that grants and releases a region over and over leaves it grantable
/// (the broker resets the region's untyped and reuses its slots), a release takes back every
/// copy of the capability, and a bystander is granted the region afterwards.
fn devbroker_regions_can_be_granted_again(cpu: &str) {
    let image = build("tests/images/hostile-devbroker.toml");
    let outcome = boot(&image.path, cpu, 1);
    for line in [
        "[cycler] cycler: 300 of 300 grants of the RTC, each released; PrimeCell ID 0xb105f00d through the first, 0xb105f00d through the last",
        "[cycler] cycler: the copy kept across the last release: Err(EmptySlot)",
        "[cycler] cycler: done",
        "[device-client] device-client: private grant of the RTC refused: PrivateDeviceMapping",
        "[device-client] device-client: RTC PrimeCell ID 0xb105f00d through the shared grant",
        "[device-client] device-client: released the RTC; PASS",
    ] {
        assert_line(&outcome, line);
    }
    assert_exited_ok(&outcome);
}

#[test]
fn devbroker_regions_can_be_granted_again_on_cortex_a57() {
    devbroker_regions_can_be_granted_again("cortex-a57");
}

#[test]
fn devbroker_regions_can_be_granted_again_on_max() {
    devbroker_regions_can_be_granted_again("max");
}

/// svc-memmgr: a guest that maps all of its RAM first, when the memory manager holds less than
/// both guests' RAM, is refused beyond its fair share (`Quota`, its VMM stops it), and the other
/// guest gets all it was promised.
fn memmgr_keeps_each_guests_share(cpu: &str) {
    let image = build("tests/images/hostile-memmgr.toml");
    let outcome = boot(&image.path, cpu, 1);
    for line in [
        "[memmgr] memmgr: pool of 32 MiB: 16 x 2 MiB for blocks, 0 x 4 KiB for pages",
        "[memmgr] memmgr: guest greedy: quota 8 x 2 MiB and 0 x 4 KiB from the pool, 16 frames (a fair share: the memory manager holds less than its guests' RAM)",
        "[memmgr] memmgr: guest bystander: quota 8 x 2 MiB and 0 x 4 KiB from the pool, 8 frames",
        // Its kernel and device tree took two blocks at load; it reads six more.
        "[vmm-greedy] guest greedy: 12 MiB of RAM in use",
        "[vmm-greedy] vmm: guest greedy: RAM at 0x40e00000 not mapped: Service(Quota)",
        "[vmm-bystander] guest isolation: PASS",
    ] {
        assert_line(&outcome, line);
    }
    assert!(
        !outcome
            .console
            .contains("guest greedy: read all of its RAM"),
        "{}",
        outcome.console
    );
    assert_exited_ok(&outcome);
}

#[test]
fn memmgr_keeps_each_guests_share_on_cortex_a57() {
    memmgr_keeps_each_guests_share("cortex-a57");
}

#[test]
fn memmgr_keeps_each_guests_share_on_max() {
    memmgr_keeps_each_guests_share("max");
}

//! The nested stage-2 walker as an EL0 service: a client service lends it the guest pages of a
//! stage-2 table tree as frame capabilities, asks for one walk per outcome through the SDK's typed
//! client, and compares each answer with the walker library's reference model reading the same
//! pages. The expected results (output addresses, levels, ESR fault status codes) are the
//! hand-derived ones of `services/s2walk-svc/src/sample.rs`.

use capvisor_tests::{assert_exited_ok, assert_line, boot, build};

/// Each case's line, as the client prints it.
const RESULTS: [&str; 17] = [
    "page read: pa 0x80000123 level 3 size 0x1000 s2ap 3 xn 0 memattr 0xf",
    "page write: pa 0x80000128 level 3 size 0x1000 s2ap 3 xn 0 memattr 0xf",
    "1G block fetch: pa 0x40005678 level 1 size 0x40000000 s2ap 3 xn 0 memattr 0xf",
    "2M block read: pa 0x80200010 level 2 size 0x200000 s2ap 1 xn 2 memattr 0xf",
    // Permission faults at level 2: S2AP read-only, then XN.
    "2M block write: fault fsc 0x0e level 2",
    "2M block fetch: fault fsc 0x0e level 2",
    // A table page the client did not lend: a synchronous external abort on the walk, level 2.
    "table not lent: fault fsc 0x16 level 2 external",
    // Address size faults: a table above the 40-bit output size (level 1), a page's output
    // address above it (level 3), a VTTBR base above it (level 0, whatever the start level).
    "table above PS: fault fsc 0x01 level 1",
    "output above PS: fault fsc 0x03 level 3",
    "VTTBR above PS: fault fsc 0x00 level 0",
    // Translation faults: invalid descriptors, a reserved level-3 encoding, an IPA above T0SZ.
    "invalid at level 1: fault fsc 0x05 level 1",
    "invalid at level 2: fault fsc 0x06 level 2",
    "invalid at level 3: fault fsc 0x07 level 3",
    "reserved at level 3: fault fsc 0x07 level 3",
    "IPA out of range: fault fsc 0x04 level 0",
    // Access flag (HA clear), and a fetch from Device memory (a permission fault).
    "access flag: fault fsc 0x0b level 3",
    "fetch from device: fault fsc 0x0f level 3",
];

fn walks_agree(cpu: &str) {
    let image = build("tests/images/s2walk-service.toml");
    let outcome = boot(&image.path, cpu, 1);
    for result in RESULTS {
        assert_line(&outcome, &format!("[client] {result}, as the reference"));
    }
    assert_line(&outcome, "[client] all 17 walks agree with the reference");
    assert!(!outcome.console.contains("DIFFERS"), "{}", outcome.console);
    assert_exited_ok(&outcome);
}

#[test]
fn s2walk_service_walks_as_the_reference_on_cortex_a57() {
    walks_agree("cortex-a57");
}

#[test]
fn s2walk_service_walks_as_the_reference_on_max() {
    walks_agree("max");
}

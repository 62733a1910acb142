//! Property test: the fast walker and the literal pseudocode transcription agree on random
//! configurations, table trees, PA sizes and accesses.
//!
//! The number of cases comes from `S2WALK_PROPTEST_CASES` (default 20,000, quick in a debug
//! build); CI runs a million in release:
//! `S2WALK_PROPTEST_CASES=1000000 cargo test --release -p s2walk --test proptest_reference`.

mod common;

use proptest::prelude::*;
use s2walk::{S2Config, reference};

fn cases() -> u32 {
    std::env::var("S2WALK_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

fn check(seed: u64) -> Result<(), TestCaseError> {
    let s = common::scenario(seed);
    let config = S2Config::new(&s.machine, s.vtcr, s.vttbr);
    for &(ipa, access) in &s.walks {
        let fast = config.and_then(|c| c.walk(&s.mem, ipa, access));
        let slow = reference::s2_translate(&s.machine, s.vtcr, s.vttbr, &s.mem, ipa, access);
        prop_assert_eq!(
            fast,
            slow,
            "seed {:#x}: {:?} vtcr {:#x} vttbr {:#x} ipa {:#x} {:?}",
            seed,
            s.machine,
            s.vtcr.get(),
            s.vttbr.get(),
            ipa.get(),
            access
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn fast_walk_matches_reference(seed in any::<u64>()) {
        check(seed)?;
    }
}

/// The generator must reach every outcome, or the comparison above proves little.
#[test]
fn scenarios_reach_every_outcome() {
    use s2walk::FaultKind::*;
    use std::collections::HashSet;
    let mut seen = HashSet::new();
    for seed in 0..20_000u64 {
        let s = common::scenario(seed);
        for &(ipa, access) in &s.walks {
            let r = s2walk::walk(&s.machine, s.vtcr, s.vttbr, &s.mem, ipa, access);
            seen.insert(match r {
                Ok(t) => (None, t.level),
                Err(f) => (Some(f.kind), f.level),
            });
        }
    }
    let mut missing = Vec::new();
    for level in 0..=3i8 {
        for kind in [Translation, AddressSize, ExternalAbortOnWalk] {
            if !seen.contains(&(Some(kind), level)) {
                missing.push((Some(kind), level));
            }
        }
    }
    for level in 1..=3i8 {
        for kind in [None, Some(AccessFlag), Some(Permission)] {
            if !seen.contains(&(kind, level)) {
                missing.push((kind, level));
            }
        }
    }
    for key in [
        (Some(ExternalAbortOnWalk), -1),
        (Some(Translation), -1),
        (None, 0),
    ] {
        if !seen.contains(&key) {
            missing.push(key);
        }
    }
    assert!(missing.is_empty(), "outcomes never generated: {missing:?}");
}

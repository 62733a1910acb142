//! Property test: a shadow entry is exactly the composition of the two stages as the reference
//! model walks them, and every fault is attributed to the stage that raised it.
//!
//! The guest hypervisor's stage 2 is a random scenario (as in `proptest_reference`); the L1
//! guest's own stage 2 is a 64KB, 52-bit identity map of 4TB level 1 blocks with random
//! permissions, memory types and Access flags. Cases: `S2WALK_PROPTEST_CASES` (default 20,000).

mod common;

use proptest::prelude::*;
use s2walk::shadow::{ShadowFault, combine_memattr, compose};
use s2walk::{
    Ipa, Machine, OutputAddr, PaBits, S2Config, Vmid, Vtcr, Vttbr, WordMemory, reference,
};

/// VTCR_EL2: T0SZ 12 (52-bit IPA), SL0 0b10 (level 1), TG0 64KB, PS 52 bits.
const HOST_VTCR: u64 = 12 | (0b10 << 6) | (0b01 << 14) | (0b110 << 16);

fn cases() -> u32 {
    std::env::var("S2WALK_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

/// 1024 level 1 descriptors mapping L1 IPA block i (4TB) to PA block i.
fn host_table(rng: &mut common::Rng) -> Vec<u64> {
    (0..1024u64)
        .map(|i| {
            let oa = i << 42;
            let attrs = rng.next() & ((0b1111 << 2) | (0b11 << 6) | (0b11 << 53));
            let af = if rng.chance(95) { 1 << 10 } else { 0 };
            (oa & 0x0000_ffff_ffff_0000) | (((oa >> 48) & 0xf) << 12) | attrs | af | 0b01
        })
        .collect()
}

fn check(seed: u64) -> Result<(), TestCaseError> {
    let s = common::scenario(seed);
    let mut rng = common::Rng::new(seed ^ 0x5eed);
    let words = host_table(&mut rng);
    let host_mem = WordMemory::new(OutputAddr::new(0), &words);
    let host_machine = Machine::new(PaBits::Bits52);
    let (host_vtcr, host_vttbr) = (Vtcr::new(HOST_VTCR), Vttbr::new(0));
    let host = S2Config::new(&host_machine, host_vtcr, host_vttbr).expect("valid host stage 2");
    let Ok(nested) = S2Config::new(&s.machine, s.vtcr, s.vttbr) else {
        return Ok(()); // no walk happens: the guest hypervisor's configuration itself faults
    };
    for &(ipa, access) in &s.walks {
        let got = compose(
            (&nested, &s.mem),
            (&host, &host_mem),
            Vmid::new(1),
            ipa,
            access,
        );
        let first = reference::s2_translate(&s.machine, s.vtcr, s.vttbr, &s.mem, ipa, access);
        let first = match (first, got) {
            (Err(f), got) => {
                prop_assert_eq!(got, Err(ShadowFault::Nested(f)), "seed {:#x}", seed);
                continue;
            }
            (Ok(first), _) => first,
        };
        let l1 = Ipa::new(first.oa.get());
        let second =
            reference::s2_translate(&host_machine, host_vtcr, host_vttbr, &host_mem, l1, access);
        let second = match (second, got) {
            (Err(fault), got) => {
                prop_assert_eq!(
                    got,
                    Err(ShadowFault::Host { l1_ipa: l1, fault }),
                    "seed {:#x}",
                    seed
                );
                continue;
            }
            (Ok(second), _) => second,
        };
        let Ok(entry) = got else {
            return Err(TestCaseError::fail(format!(
                "seed {seed:#x}: both stages map, got {got:?}"
            )));
        };
        prop_assert_eq!(entry.size_bits, first.size_bits.min(second.size_bits));
        prop_assert_eq!(entry.pa_of(ipa.get()), second.oa.get(), "seed {:#x}", seed);
        prop_assert_eq!(
            entry.memattr,
            combine_memattr(first.memattr, second.memattr)
        );
        prop_assert!(
            entry.perms.allow(access),
            "seed {seed:#x}: the access that built it"
        );
        prop_assert_eq!(entry.perms.read, first.perms.read && second.perms.read);
        prop_assert_eq!(entry.perms.write, first.perms.write && second.perms.write);
        // Every address of the entry translates the same way through the reference stages.
        let other = Ipa::new(entry.l2_ipa | (rng.next() & ((1u64 << entry.size_bits) - 1)));
        let via1 = reference::s2_translate(&s.machine, s.vtcr, s.vttbr, &s.mem, other, access);
        let via1 = via1.map_err(|f| TestCaseError::fail(format!("seed {seed:#x}: {f:?}")))?;
        let via2 = reference::s2_translate(
            &host_machine,
            host_vtcr,
            host_vttbr,
            &host_mem,
            Ipa::new(via1.oa.get()),
            access,
        );
        let via2 = via2.map_err(|f| TestCaseError::fail(format!("seed {seed:#x}: {f:?}")))?;
        prop_assert_eq!(entry.pa_of(other.get()), via2.oa.get(), "seed {:#x}", seed);
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
    fn shadow_entries_compose_the_reference_walks(seed in any::<u64>()) {
        check(seed)?;
    }
}

/// The generated pairs must produce entries as well as faults of both owners.
#[test]
fn compositions_reach_every_outcome() {
    let (mut entries, mut nested, mut host) = (0, 0, 0);
    let host_machine = Machine::new(PaBits::Bits52);
    for seed in 0..5_000u64 {
        let s = common::scenario(seed);
        let words = host_table(&mut common::Rng::new(seed ^ 0x5eed));
        let host_mem = WordMemory::new(OutputAddr::new(0), &words);
        let host_cfg =
            S2Config::new(&host_machine, Vtcr::new(HOST_VTCR), Vttbr::new(0)).expect("valid");
        let Ok(cfg) = S2Config::new(&s.machine, s.vtcr, s.vttbr) else {
            continue;
        };
        for &(ipa, access) in &s.walks {
            match compose(
                (&cfg, &s.mem),
                (&host_cfg, &host_mem),
                Vmid::new(1),
                ipa,
                access,
            ) {
                Ok(_) => entries += 1,
                Err(ShadowFault::Nested(_)) => nested += 1,
                Err(ShadowFault::Host { .. }) => host += 1,
            }
        }
    }
    assert!(
        entries > 200 && nested > 500 && host > 100,
        "entries {entries}, nested {nested}, host {host}"
    );
}

//! Tests of shadow stage-2 composition and invalidation.

use super::*;
use crate::FaultKind;
use crate::regs::{Machine, PaBits, Vtcr, Vttbr};
use std::collections::HashMap;

/// Physical memory: words at PAs, inside the listed pages.
#[derive(Default)]
struct Phys {
    pages: Vec<u64>,
    words: HashMap<u64, u64>,
}

impl Phys {
    fn put(&mut self, pa: u64, value: u64) {
        if !self.pages.contains(&(pa >> 12)) {
            self.pages.push(pa >> 12);
        }
        self.words.insert(pa, value);
    }
}

impl GuestMemory for Phys {
    fn read_u64(&self, addr: OutputAddr) -> Result<u64, ReadError> {
        if !self.pages.contains(&(addr.get() >> 12)) {
            return Err(ReadError::Unbacked);
        }
        Ok(self.words.get(&addr.get()).copied().unwrap_or(0))
    }
}

const AF: u64 = 1 << 10;
const RW: u64 = 0b11 << 6;
const RO: u64 = 0b01 << 6;
const WB: u64 = 0xf << 2;
const DEVICE_NGNRE: u64 = 0x1 << 2;
const TABLE: u64 = 0b11;
const BLOCK: u64 = 0b01;
const PAGE: u64 = 0b11;
/// 4KB granule, 39-bit IPA from level 1, 40-bit PS.
const VTCR: u64 = 25 | (0b01 << 6) | (0b010 << 16);
const GUEST_VMID: Vmid = Vmid::new(7);

/// The L1 guest's own stage 2 (host tables at PA 0x10_0000..) and the guest hypervisor's
/// stage 2 (its tables at L1 IPA 0x1000.., which the host maps to PA 0x9000_1000..).
fn setup() -> (S2Config, S2Config, Phys) {
    let machine = Machine::new(PaBits::Bits40);
    let mut phys = Phys::default();
    // Host: L1[0] -> L2 at 0x10_1000; L1[1] (L1 IPA 1GB..2GB) -> PA 0xC000_0000 device block.
    phys.put(0x10_0000, 0x10_1000 | TABLE);
    phys.put(0x10_0008, 0xc000_0000 | AF | RW | DEVICE_NGNRE | BLOCK);
    // L2[0] (L1 IPA 0..2MB) -> PA 0x9000_0000, RW; L2[1] (2MB..4MB) -> pages at 0x10_2000.
    phys.put(0x10_1000, 0x9000_0000 | AF | RW | WB | BLOCK);
    phys.put(0x10_1008, 0x10_2000 | TABLE);
    phys.put(0x10_2000, 0xa000_0000 | AF | RO | WB | PAGE); // L1 IPA 0x20_0000, read-only
    // Guest hypervisor's tables at L1 IPAs 0x1000 (L1), 0x2000 (L2), 0x3000 (L3).
    let at = |l1_ipa: u64| 0x9000_0000 | l1_ipa;
    phys.put(at(0x1000), 0x2000 | TABLE);
    phys.put(at(0x1008), 0x4000_0000 | AF | RW | WB | BLOCK); // L2 IPA 1GB -> L1 IPA 1GB
    phys.put(at(0x1010), 0x7000 | TABLE); // L2 IPA 2GB..: a table the host does not map
    phys.put(at(0x1018), 0x8000_0000 | AF | RW | WB | BLOCK); // -> L1 IPA 2GB: host has nothing
    phys.put(at(0x2000), 0x3000 | TABLE);
    phys.put(at(0x2008), 0x4020_0000 | AF | RW | WB | BLOCK); // L2 IPA 2MB -> L1 IPA 1GB+2MB
    phys.put(at(0x3000), 0x4000_5000 | AF | RW | WB | PAGE); // L2 IPA 0 -> L1 IPA 1GB+20KB
    phys.put(at(0x3008), 0x20_0000 | AF | RW | WB | PAGE); // L2 IPA 4KB -> the read-only page
    let host = S2Config::new(&machine, Vtcr::new(VTCR), Vttbr::new(0x10_0000)).expect("valid");
    let nested = S2Config::new(&machine, Vtcr::new(VTCR), Vttbr::new(0x1000)).expect("valid");
    (nested, host, phys)
}

fn run(l2_ipa: u64, access: Access) -> Result<ShadowEntry, ShadowFault> {
    let (nested, host, phys) = setup();
    let through = ThroughStage2::new(&host, &phys);
    compose(
        (&nested, &through),
        (&host, &phys),
        GUEST_VMID,
        Ipa::new(l2_ipa),
        access,
    )
}

#[test]
fn composes_both_stages_at_the_smaller_size() {
    let e = run(0x234, Access::Read).expect("maps");
    assert_eq!(
        (e.l2_ipa, e.l1_ipa, e.pa, e.size_bits),
        (0, 0x4000_5000, 0xc000_5000, 12)
    );
    assert_eq!(
        e.memattr, 0x1,
        "the host's Device-nGnRE wins over the guest's Write-Back"
    );
    assert_eq!(e.pa_of(0x234), 0xc000_5234);
    let e = run(0x20_1234, Access::Write).expect("maps");
    assert_eq!(
        (e.l2_ipa, e.l1_ipa, e.pa, e.size_bits),
        (0x20_0000, 0x4020_0000, 0xc020_0000, 21)
    );
    let e = run(0x4123_4567, Access::Read).expect("maps");
    assert_eq!(
        (e.l2_ipa, e.pa, e.size_bits),
        (0x4000_0000, 0xc000_0000, 30)
    );
}

#[test]
fn permissions_are_what_both_stages_allow() {
    let e = run(0x1000, Access::Read).expect("read allowed by both");
    assert!(e.perms.read && !e.perms.write);
    assert_eq!(
        run(0x1000, Access::Write),
        Err(ShadowFault::Host {
            l1_ipa: Ipa::new(0x20_0000),
            fault: Fault::new(FaultKind::Permission, 3)
        })
    );
}

#[test]
fn faults_go_to_their_owner() {
    // Nothing at L2 IPA 0x2000 in the guest hypervisor's level 3 table: its fault.
    assert_eq!(
        run(0x2000, Access::Read),
        Err(ShadowFault::Nested(Fault::new(FaultKind::Translation, 3)))
    );
    // Its level 2 table for 2GB.. is at L1 IPA 0x7000, which the L1 guest's stage 2 maps to PA
    // 0x9000_7000, a page that is not memory: an External abort on its walk.
    assert_eq!(
        run(0x8000_0000, Access::Read),
        Err(ShadowFault::Nested(Fault::new(
            FaultKind::ExternalAbortOnWalk,
            2
        )))
    );
    // It maps 3GB.. to L1 IPA 2GB, which the L1 guest's own stage 2 does not map: capvisor's.
    assert_eq!(
        run(0xc000_0000, Access::Read),
        Err(ShadowFault::Host {
            l1_ipa: Ipa::new(0x8000_0000),
            fault: Fault::new(FaultKind::Translation, 1)
        })
    );
}

#[test]
fn cache_fills_hits_and_invalidates() {
    let (nested, host, phys) = setup();
    let through = ThroughStage2::new(&host, &phys);
    let mut cache = ShadowCache::<4>::new();
    let fill = |cache: &mut ShadowCache<4>, ipa: u64| {
        cache.fill(
            (&nested, &through),
            (&host, &phys),
            GUEST_VMID,
            Ipa::new(ipa),
            Access::Read,
        )
    };
    fill(&mut cache, 0x234).expect("maps");
    fill(&mut cache, 0x20_0000).expect("maps");
    fill(&mut cache, 0x4000_0000).expect("maps");
    assert_eq!(cache.len(), 3);
    assert!(cache.lookup(GUEST_VMID, Ipa::new(0xfff)).is_some());
    assert!(cache.lookup(GUEST_VMID, Ipa::new(0x1000)).is_none());
    assert!(
        cache.lookup(Vmid::new(8), Ipa::new(0x234)).is_none(),
        "other VMIDs miss"
    );
    // TLBI IPAS2E1 for L2 IPA 0x3f_f000 (inside the 2MB entry only).
    assert_eq!(
        cache.invalidate_l2_range(GUEST_VMID, Ipa::new(0x3f_f000), 0x1000),
        1
    );
    assert!(cache.lookup(GUEST_VMID, Ipa::new(0x20_0000)).is_none());
    // The guest hypervisor writes its level 3 table page (L1 IPA 0x3000): the entry for L2 IPA
    // 0 walked through it; the 1GB block entry (read at levels 1 only) did not.
    assert_eq!(cache.invalidate_l1_range(Ipa::new(0x3000), 0x1000), 1);
    assert!(cache.lookup(GUEST_VMID, Ipa::new(0x4000_0000)).is_some());
    // The L1 guest's own stage 2 changes at L1 IPA 1GB+4KB: the 1GB entry maps there.
    assert_eq!(cache.invalidate_l1_range(Ipa::new(0x4000_1000), 0x1000), 1);
    assert!(cache.is_empty());
    for ipa in [0x0, 0x1000, 0x20_0000, 0x4000_0000, 0x4800_0000] {
        fill(&mut cache, ipa).expect("maps");
    }
    assert_eq!(cache.len(), 4, "0x4800_0000 hits the 1GB entry");
    assert_eq!(cache.invalidate_vmid(Vmid::new(8)), 0);
    assert_eq!(cache.invalidate_vmid(GUEST_VMID), 4);
    fill(&mut cache, 0x0).expect("maps");
    assert_eq!(cache.invalidate_all(), 1);
    // Refilling the same range does not duplicate it.
    fill(&mut cache, 0x0).expect("maps");
    fill(&mut cache, 0x10).expect("maps");
    assert_eq!(cache.len(), 1);
}

#[test]
fn capacity_bounds_the_cache_round_robin() {
    let (nested, host, phys) = setup();
    let through = ThroughStage2::new(&host, &phys);
    let mut cache = ShadowCache::<2>::new();
    for ipa in [0x0, 0x20_0000, 0x4000_0000] {
        cache
            .fill(
                (&nested, &through),
                (&host, &phys),
                GUEST_VMID,
                Ipa::new(ipa),
                Access::Read,
            )
            .expect("maps");
    }
    assert_eq!(cache.len(), 2);
    assert!(
        cache.lookup(GUEST_VMID, Ipa::new(0x0)).is_none(),
        "the oldest was replaced"
    );
    assert!(cache.lookup(GUEST_VMID, Ipa::new(0x4000_0000)).is_some());
}

#[test]
fn memattr_combination_is_the_stricter() {
    // Device types: nGnRnE (0b0000) < nGnRE (0b0001) < nGRE (0b0010) < GRE (0b0011).
    assert_eq!(combine_memattr(0b0001, 0b0010), 0b0001);
    assert_eq!(combine_memattr(0b0011, 0b1111), 0b0011);
    assert_eq!(combine_memattr(0b1111, 0b0000), 0b0000);
    // Normal: outer and inner cacheability each the lesser (NC 01 < WT 10 < WB 11).
    assert_eq!(combine_memattr(0b1111, 0b0110), 0b0110);
    assert_eq!(combine_memattr(0b1101, 0b1011), 0b1001);
    assert_eq!(
        combine_memattr(0b1100, 0b1111),
        0b1101,
        "reserved inner 00 read as NC"
    );
}

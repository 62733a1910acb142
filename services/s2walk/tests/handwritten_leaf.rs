//! Hand-written walks, continued: permission faults, external aborts on the walk, FEAT_LPA2
//! (level -1), every granule, FEAT_XNX, DBM and the Contiguous bit. Each cites the Arm ARM
//! pseudocode (DDI 0487 L.a, J1.1.5) it checks, and runs on both the fast and reference walks.

mod common;

use common::SparseMemory;
use s2walk::{Access, Fault, FaultKind, Ipa, Machine, PaBits, Translation, Vtcr, Vttbr, reference};

const AF: u64 = 1 << 10;
const RW: u64 = 0b11 << 6;
const RO: u64 = 0b01 << 6;
const WO: u64 = 0b10 << 6;
const TABLE: u64 = 0b11;
const PAGE: u64 = 0b11;
const BLOCK: u64 = 0b01;
const XN0: u64 = 1 << 53;
const XN1: u64 = 1 << 54;
/// MemAttr 0b1111: Normal, Write-Back (instruction fetches from Device memory always fault).
const WB: u64 = 0xf << 2;

fn vtcr(t0sz: u64, sl0: u64, tg0: u64, ps: u64) -> u64 {
    t0sz | (sl0 << 6) | (tg0 << 14) | (ps << 16)
}

fn machine(pa: u32) -> Machine {
    Machine::new(PaBits::from_bits(pa).expect("a PARange value"))
}

fn both(
    m: &Machine,
    vtcr: u64,
    vttbr: u64,
    mem: &SparseMemory,
    ipa: u64,
    access: Access,
) -> Result<Translation, Fault> {
    let (v, t, i) = (Vtcr::new(vtcr), Vttbr::new(vttbr), Ipa::new(ipa));
    let fast = s2walk::walk(m, v, t, mem, i, access);
    assert_eq!(
        fast,
        reference::s2_translate(m, v, t, mem, i, access),
        "fast and reference disagree"
    );
    fast
}

fn fault(kind: FaultKind, level: i8) -> Result<Translation, Fault> {
    Err(Fault::new(kind, level))
}

/// 4KB, 39-bit IPA from level 1, PS 40: L1 table at 0x1000, L2 at 0x2000, L3 at 0x3000, for
/// IPA (1 << 30) | (2 << 21) | (3 << 12) | 0x45.
const V39: u64 = 25 | (0b01 << 6) | (0b010 << 16);
const IPA39: u64 = (1 << 30) | (2 << 21) | (3 << 12) | 0x45;

fn tree(level: i8, leaf: u64) -> SparseMemory {
    let mut mem = SparseMemory::default();
    match level {
        1 => mem.put(0x1008, leaf),
        2 => {
            mem.put(0x1008, 0x2000 | TABLE);
            mem.put(0x2010, leaf);
        }
        _ => {
            mem.put(0x1008, 0x2000 | TABLE);
            mem.put(0x2010, 0x3000 | TABLE);
            mem.put(0x3018, leaf);
        }
    }
    mem
}

/// AArch64.S2CheckPermissions: data reads need S2AP[0], writes S2AP[1]; instruction fetches
/// check only execute-never (XN[1:0] with FEAT_XNX). The fault is at the leaf's level.
#[test]
fn permission_fault_at_each_leaf_level() {
    let m = machine(48);
    for level in 1..=3i8 {
        let kind = if level == 3 { PAGE } else { BLOCK };
        let ro = tree(level, 0x4000_0000 | AF | RO | kind);
        assert_eq!(
            both(&m, V39, 0x1000, &ro, IPA39, Access::Write),
            fault(FaultKind::Permission, level)
        );
        assert!(both(&m, V39, 0x1000, &ro, IPA39, Access::Read).is_ok());
        let wo = tree(level, 0x4000_0000 | AF | WO | kind);
        assert_eq!(
            both(&m, V39, 0x1000, &wo, IPA39, Access::Read),
            fault(FaultKind::Permission, level)
        );
        let none = tree(level, 0x4000_0000 | AF | WB | kind);
        assert!(
            both(&m, V39, 0x1000, &none, IPA39, Access::ExecEl1).is_ok(),
            "fetch ignores S2AP"
        );
        let xn = tree(level, 0x4000_0000 | AF | RW | WB | XN1 | kind);
        assert_eq!(
            both(&m, V39, 0x1000, &xn, IPA39, Access::ExecEl1),
            fault(FaultKind::Permission, level)
        );
        assert_eq!(
            both(&m, V39, 0x1000, &xn, IPA39, Access::ExecEl0),
            fault(FaultKind::Permission, level)
        );
    }
}

/// FEAT_XNX, AArch64.S2CheckPermissions: XN[1:0] = 0b01 forbids EL1 only, 0b11 EL0 only;
/// without FEAT_XNX, XN[0] is ignored.
#[test]
fn xnx_splits_el1_and_el0() {
    let m = machine(48);
    let el1_only_forbidden = tree(3, 0x4000_0000 | AF | RW | WB | XN0 | PAGE);
    let t =
        both(&m, V39, 0x1000, &el1_only_forbidden, IPA39, Access::ExecEl0).expect("EL0 may run");
    assert!(!t.perms.exec_el1 && t.perms.exec_el0);
    assert_eq!(
        both(&m, V39, 0x1000, &el1_only_forbidden, IPA39, Access::ExecEl1),
        fault(FaultKind::Permission, 3)
    );
    let el0_forbidden = tree(3, 0x4000_0000 | AF | RW | WB | XN0 | XN1 | PAGE);
    let t = both(&m, V39, 0x1000, &el0_forbidden, IPA39, Access::ExecEl1).expect("EL1 may run");
    assert!(t.perms.exec_el1 && !t.perms.exec_el0);
    let mut no_xnx = m;
    no_xnx.xnx = false;
    let t = both(
        &no_xnx,
        V39,
        0x1000,
        &el1_only_forbidden,
        IPA39,
        Access::ExecEl1,
    )
    .expect("XN[0] ignored");
    assert!(t.perms.exec_el1 && t.perms.exec_el0);
}

/// AArch64.S2CheckPermissions: an instruction fetch from memory stage 2 makes Device
/// (MemAttr[3:2] = 0b00) is a Permission fault even where XN allows execution; data accesses
/// are unaffected.
#[test]
fn fetch_from_device_memory_is_a_permission_fault() {
    let m = machine(48);
    for memattr in [0b0000, 0b0001, 0b0011] {
        let mem = tree(2, 0x4000_0000 | AF | RW | (memattr << 2) | BLOCK);
        assert_eq!(
            both(&m, V39, 0x1000, &mem, IPA39, Access::ExecEl1),
            fault(FaultKind::Permission, 2)
        );
        assert_eq!(
            both(&m, V39, 0x1000, &mem, IPA39, Access::ExecEl0),
            fault(FaultKind::Permission, 2)
        );
        let t = both(&m, V39, 0x1000, &mem, IPA39, Access::Read).expect("data reads are fine");
        assert_eq!(t.memattr, memattr as u8);
    }
    let normal_nc = tree(2, 0x4000_0000 | AF | RW | (0b0101 << 2) | BLOCK);
    assert!(both(&m, V39, 0x1000, &normal_nc, IPA39, Access::ExecEl1).is_ok());
}

/// AArch64.S2ApplyOutputPerms: with VTCR_EL2.{HA,HD} = {1,1}, DBM = 1 makes S2AP[1] effectively
/// set (hardware dirty-state management), so a write to a "read-only" page does not fault.
#[test]
fn dbm_with_hardware_dirty_state_allows_writes() {
    let m = machine(48);
    let mem = tree(3, 0x4000_0000 | AF | RO | (1 << 51) | PAGE);
    assert_eq!(
        both(&m, V39, 0x1000, &mem, IPA39, Access::Write),
        fault(FaultKind::Permission, 3)
    );
    let hd_only = V39 | (1 << 22);
    assert_eq!(
        both(&m, hd_only, 0x1000, &mem, IPA39, Access::Write),
        fault(FaultKind::Permission, 3)
    );
    let ha_hd = V39 | (1 << 21) | (1 << 22);
    assert!(
        both(&m, ha_hd, 0x1000, &mem, IPA39, Access::Write)
            .expect("dirty")
            .perms
            .write
    );
}

/// FetchDescriptor: a descriptor read the memory system cannot satisfy is a synchronous
/// External abort on the translation table walk, at the level of that read (FSC 0b0101LL).
#[test]
fn external_abort_at_each_level() {
    let m = machine(48);
    let v48 = vtcr(16, 0b10, 0, 0b101);
    let ipa = (1u64 << 39) | (2 << 30) | (3 << 21) | (4 << 12);
    let mut mem = SparseMemory::default();
    assert_eq!(
        both(&m, v48, 0x1000, &mem, ipa, Access::Read),
        fault(FaultKind::ExternalAbortOnWalk, 0)
    );
    mem.put(0x1008, 0x2000 | TABLE);
    assert_eq!(
        both(&m, v48, 0x1000, &mem, ipa, Access::Read),
        fault(FaultKind::ExternalAbortOnWalk, 1)
    );
    mem.put(0x2010, 0x3000 | TABLE);
    assert_eq!(
        both(&m, v48, 0x1000, &mem, ipa, Access::Read),
        fault(FaultKind::ExternalAbortOnWalk, 2)
    );
    mem.put(0x3018, 0x4000 | TABLE);
    assert_eq!(
        both(&m, v48, 0x1000, &mem, ipa, Access::Read),
        fault(FaultKind::ExternalAbortOnWalk, 3)
    );
    assert_eq!(Fault::new(FaultKind::ExternalAbortOnWalk, 3).fsc(), 0x17);
}

/// FEAT_LPA2, 4KB: VTCR_EL2.{DS,SL2,SL0} = {1,1,0b00} starts at level -1 (AArch64.S2StartLevel),
/// valid only with 52-bit PAMax (AArch64.S2InvalidSL); faults there use the level -1 codes.
#[test]
fn lpa2_level_minus_one() {
    let m = machine(52);
    let v = vtcr(12, 0b00, 0, 0b110) | (1 << 32) | (1 << 33); // 52-bit IPA, 52-bit PS
    let ipa = (0x5u64 << 48) | (1 << 39) | 0x123;
    let mut mem = SparseMemory::default();
    assert_eq!(
        both(&m, v, 0x10000, &mem, ipa, Access::Read),
        fault(FaultKind::ExternalAbortOnWalk, -1)
    );
    assert_eq!(Fault::new(FaultKind::ExternalAbortOnWalk, -1).fsc(), 0x13);
    mem.map(0x10000, 0x1000);
    assert_eq!(
        both(&m, v, 0x10000, &mem, ipa, Access::Read),
        fault(FaultKind::Translation, -1)
    );
    // A block is not allowed at level -1.
    mem.write(0x10028, AF | RW | BLOCK);
    assert_eq!(
        both(&m, v, 0x10000, &mem, ipa, Access::Read),
        fault(FaultKind::Translation, -1)
    );
    // A level -1 table above a 48-bit PS: OA[51:50] live in descriptor bits [9:8] with DS.
    let v48ps = (v & !(0b111 << 16)) | (0b101 << 16);
    mem.write(0x10028, 0x20000 | (0b01 << 8) | TABLE);
    assert_eq!(
        both(&m, v48ps, 0x10000, &mem, ipa, Access::Read),
        fault(FaultKind::AddressSize, -1)
    );
    assert_eq!(Fault::new(FaultKind::AddressSize, -1).fsc(), 0x29);
    // Down to a level 0 block (allowed with DS) mapping a 512GB range above 2^50.
    mem.write(0x10028, 0x20000 | TABLE);
    mem.put(0x20008, (0x3 << 39) | (0b10 << 8) | AF | RW | BLOCK);
    let t = both(&m, v, 0x10000, &mem, ipa, Access::Read).expect("level 0 block");
    assert_eq!(
        (t.level, t.size(), t.oa.get()),
        (0, 1 << 39, (0b10 << 50) | (0x3 << 39) | 0x123)
    );
    // The same registers on a 48-bit machine: SL2 is invalid (and T0SZ 12 too small).
    assert_eq!(
        both(&machine(48), v, 0x10000, &mem, ipa, Access::Read),
        fault(FaultKind::Translation, 0)
    );
    // Without FEAT_LPA2, DS and SL2 are RES0: SL0 = 0 then means level 2, inconsistent.
    let mut no_lpa2 = m;
    no_lpa2.lpa2 = false;
    assert_eq!(
        both(&no_lpa2, v, 0x10000, &mem, ipa, Access::Read),
        fault(FaultKind::Translation, 0)
    );
}

/// Successful walks for each granule at each leaf level they allow (AArch64.BlockDescSupported).
#[test]
fn every_granule_maps() {
    let m = machine(48);
    // 16KB, 36-bit IPA from level 2 (SL0 0b01): L2 index ipa[35:25], L3 ipa[24:14].
    let v16 = vtcr(28, 0b01, 0b10, 0b101);
    let ipa16 = (3u64 << 25) | (5 << 14) | 0x1234;
    let mut mem = SparseMemory::default();
    mem.put(0x4000 + 3 * 8, 0x8000 | TABLE);
    mem.put(0x8000 + 5 * 8, 0x7700_0000 | AF | RW | PAGE);
    let t = both(&m, v16, 0x4000, &mem, ipa16, Access::Read).expect("16KB page");
    assert_eq!((t.oa.get(), t.level, t.size()), (0x7700_1234, 3, 0x4000));
    mem.write(0x4000 + 3 * 8, 0x6000_0000 | AF | RW | BLOCK);
    let t = both(&m, v16, 0x4000, &mem, ipa16, Access::Read).expect("16KB block");
    assert_eq!(
        (t.oa.get(), t.level, t.size()),
        (0x6000_0000 | (5 << 14) | 0x1234, 2, 1 << 25)
    );
    // 64KB, 42-bit IPA from level 2 (SL0 0b01): L2 index ipa[41:29], L3 ipa[28:16].
    let v64 = vtcr(22, 0b01, 0b01, 0b101);
    let ipa64 = (7u64 << 29) | (9 << 16) | 0xabc;
    let mut mem = SparseMemory::default();
    mem.put(0x10000 + 7 * 8, 0x20000 | TABLE);
    mem.put(0x20000 + 9 * 8, 0x5_0000_0000 | AF | RW | PAGE);
    let t = both(&m, v64, 0x10000, &mem, ipa64, Access::Read).expect("64KB page");
    assert_eq!((t.oa.get(), t.level, t.size()), (0x5_0000_0abc, 3, 0x10000));
    mem.write(0x10000 + 7 * 8, 0x4000_0000 | AF | RW | BLOCK);
    let t = both(&m, v64, 0x10000, &mem, ipa64, Access::Read).expect("64KB block");
    assert_eq!((t.level, t.size()), (2, 1 << 29));
    // 4KB level 1 (1GB) and level 2 (2MB) blocks.
    let t = both(
        &m,
        V39,
        0x1000,
        &tree(1, 0x8000_0000 | AF | RW | BLOCK),
        IPA39,
        Access::Read,
    )
    .expect("1GB");
    assert_eq!(
        (t.oa.get(), t.size()),
        (0x8000_0000 | (IPA39 & 0x3fff_ffff), 1 << 30)
    );
    let t = both(
        &m,
        V39,
        0x1000,
        &tree(2, 0x8000_0000 | AF | RW | BLOCK),
        IPA39,
        Access::Read,
    )
    .expect("2MB");
    assert_eq!(
        (t.oa.get(), t.size()),
        (0x8000_0000 | (IPA39 & 0x1f_ffff), 1 << 21)
    );
}

/// StageOA: with the Contiguous bit, the output address takes the IPA's bits below the
/// contiguous span (16 entries with 4KB), not the descriptor's.
#[test]
fn contiguous_bit_takes_low_bits_from_the_ipa() {
    let m = machine(48);
    let misaligned = 0x4000_5000 | AF | RW | (1 << 52) | PAGE;
    let t = both(&m, V39, 0x1000, &tree(3, misaligned), IPA39, Access::Read).expect("maps");
    assert_eq!(t.oa.get(), 0x4000_0000 | (IPA39 & 0xffff));
    assert_eq!(t.size(), 0x1000);
}

//! Hand-written walks: every fault kind at every level it can occur, and a success per granule,
//! each citing the Arm ARM pseudocode (DDI 0487 L.a, J1.1.5 aarch64/translation) it checks.
//!
//! Every case is checked against both the fast walker and the reference transcription.

mod common;

use common::SparseMemory;
use s2walk::{Access, Fault, FaultKind, Ipa, Machine, PaBits, Translation, Vtcr, Vttbr, reference};

const AF: u64 = 1 << 10;
const RW: u64 = 0b11 << 6;
const WB: u64 = 0xf << 2;
const PAGE: u64 = 0b11;
const BLOCK: u64 = 0b01;
const TABLE: u64 = 0b11;

/// VTCR_EL2 from its fields: T0SZ, SL0, TG0, PS.
fn vtcr(t0sz: u64, sl0: u64, tg0: u64, ps: u64) -> u64 {
    t0sz | (sl0 << 6) | (tg0 << 14) | (ps << 16)
}

/// 4KB granule, 48-bit IPA, start at level 0, 48-bit PS.
const V4K_L0: u64 = 16 | (0b10 << 6) | (0b101 << 16);
/// 48-bit IPA = (1 << 39) | (2 << 30) | (3 << 21) | (4 << 12) | 0x567: indices 1, 2, 3, 4.
const IPA: u64 = 0x80_8060_4567;

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
    let slow = reference::s2_translate(m, v, t, mem, i, access);
    assert_eq!(fast, slow, "fast and reference disagree");
    fast
}

fn fault(kind: FaultKind, level: i8) -> Result<Translation, Fault> {
    Err(Fault::new(kind, level))
}

/// The 4-level 4KB tree for IPA: tables at 0x1000 (L0), 0x2000, 0x3000, 0x4000 (L3).
fn tree_4k(leaf: u64) -> SparseMemory {
    let mut mem = SparseMemory::default();
    mem.put(0x1008, 0x2000 | TABLE);
    mem.put(0x2010, 0x3000 | TABLE);
    mem.put(0x3018, 0x4000 | TABLE);
    mem.put(0x4020, leaf);
    mem
}

#[test]
fn four_level_4k_page() {
    let mem = tree_4k(0x1234_5000 | AF | RW | WB | PAGE);
    let t = both(&machine(48), V4K_L0, 0x1000, &mem, IPA, Access::Read).expect("maps");
    assert_eq!(
        (t.oa.get(), t.level, t.size(), t.memattr),
        (0x1234_5567, 3, 0x1000, 0xf)
    );
    assert!(t.perms.read && t.perms.write && t.perms.exec_el1 && t.perms.exec_el0);
}

/// AArch64.S2Walk: a DescriptorType_Invalid descriptor is a Translation fault at the level it
/// was read (fault.level = walkstate.level); AArch64.DecodeDescriptorType: bit 0 clear.
#[test]
fn translation_fault_at_each_level() {
    let m = machine(48);
    let leaf = 0x1234_5000 | AF | RW | PAGE;
    for (level, addr) in [(0, 0x1008), (1, 0x2010), (2, 0x3018), (3, 0x4020)] {
        let mut mem = tree_4k(leaf);
        mem.write(addr, 0x2000 | 0b10); // bit 0 clear: invalid whatever else is set
        assert_eq!(
            both(&m, V4K_L0, 0x1000, &mem, IPA, Access::Read),
            fault(FaultKind::Translation, level)
        );
    }
}

/// AArch64.BlockDescSupported: 0b01 is reserved at level 3 for every granule, at level 0 for
/// 4KB without DS, at level 1 for 16KB without DS and for 64KB below 52-bit PAMax; such a
/// descriptor decodes as DescriptorType_Invalid, a Translation fault.
#[test]
fn reserved_block_encodings_are_translation_faults() {
    let m = machine(48);
    let mem = tree_4k(0x1234_5000 | AF | RW | BLOCK);
    assert_eq!(
        both(&m, V4K_L0, 0x1000, &mem, IPA, Access::Read),
        fault(FaultKind::Translation, 3)
    );
    let mut mem = SparseMemory::default();
    mem.put(0x1008, AF | RW | BLOCK);
    assert_eq!(
        both(&m, V4K_L0, 0x1000, &mem, IPA, Access::Read),
        fault(FaultKind::Translation, 0)
    );
    // 16KB, 47-bit IPA (T0SZ 17), start level 1 (SL0 0b10): index ipa[46:36].
    let mut mem = SparseMemory::default();
    mem.put(0x4000, AF | RW | BLOCK);
    let v16 = vtcr(17, 0b10, 0b10, 0b101);
    assert_eq!(
        both(&m, v16, 0x4000, &mem, 0x123, Access::Read),
        fault(FaultKind::Translation, 1)
    );
    // 64KB, 48-bit IPA (T0SZ 16), start level 1 (SL0 0b10): index ipa[47:42].
    let v64 = vtcr(16, 0b10, 0b01, 0b101);
    let mut mem = SparseMemory::default();
    mem.put(0x10000, AF | RW | BLOCK);
    assert_eq!(
        both(&m, v64, 0x10000, &mem, 0x123, Access::Read),
        fault(FaultKind::Translation, 1)
    );
    // With 52-bit PAMax (FEAT_LPA) the same 64KB level 1 block is a 4TB leaf.
    let t = both(&machine(52), v64, 0x10000, &mem, 0x123, Access::Read).expect("4TB block");
    assert_eq!((t.level, t.size()), (1, 1 << 42));
}

/// AArch64.S2Translate: the configuration checks report `fault.level = 0` —
/// AArch64.S2TxSZFaults, AArch64.S2InvalidSL, AArch64.S2InconsistentSL, AArch64.IPAIsOutOfRange.
#[test]
fn configuration_faults_are_level_0() {
    let mem = tree_4k(0x1234_5000 | AF | RW | PAGE);
    let tr0 = fault(FaultKind::Translation, 0);
    // S2InvalidSL: a level 0 start with 4KB needs PAMax >= 44, whatever T0SZ says (seed 001:
    // the limit is the implemented PA size, not the input size). 40-bit IPA, SL0 = 0b10.
    let v = vtcr(24, 0b10, 0, 0b010);
    assert_eq!(
        both(&machine(40), v, 0x1000, &mem, 0x1000, Access::Read),
        tr0
    );
    // The same registers on a 44-bit machine are valid: the walk reaches the tables.
    assert_eq!(
        both(&machine(44), v, 0x1000, &mem, 0x1000, Access::Read),
        fault(FaultKind::Translation, 0),
        "level 0 entry 0 is empty"
    );
    let mut one = SparseMemory::default();
    one.put(0x1000, 0x2000 | TABLE);
    assert_eq!(
        both(&machine(44), v, 0x1000, &one, 0x1000, Access::Read),
        fault(FaultKind::ExternalAbortOnWalk, 1),
        "walked past level 0"
    );
    // S2InconsistentSL: 39-bit IPA cannot start at level 0 (needs at least 40 bits).
    let v = vtcr(25, 0b10, 0, 0b101);
    assert_eq!(
        both(&machine(48), v, 0x1000, &mem, 0x1000, Access::Read),
        tr0
    );
    // S2InconsistentSL: 48-bit IPA cannot start at level 2 (at most 21 + 12 + 8 + 4 = 42 bits).
    let v = vtcr(16, 0b00, 0, 0b101);
    assert_eq!(
        both(&machine(48), v, 0x1000, &mem, 0x1000, Access::Read),
        tr0
    );
    // S2TxSZFaults: a 48-bit IPA on a 40-bit machine is below the minimum T0SZ (S2MinTxSZ).
    let v = vtcr(16, 0b10, 0, 0b010);
    assert_eq!(
        both(&machine(40), v, 0x1000, &mem, 0x1000, Access::Read),
        tr0
    );
    // S2InvalidSL: SL0 = 0b11 with 4KB needs FEAT_TTST.
    let mut no_ttst = machine(48);
    no_ttst.ttst = false;
    let v = vtcr(48, 0b11, 0, 0b101);
    assert_eq!(both(&no_ttst, v, 0x1000, &mem, 0x1000, Access::Read), tr0);
    // IPAIsOutOfRange: an IPA bit at or above the input size.
    assert_eq!(
        both(&machine(48), V4K_L0, 0x1000, &mem, 1 << 48, Access::Read),
        tr0
    );
    assert_eq!(
        both(&machine(48), V4K_L0, 0x1000, &mem, 1 << 63, Access::Read),
        tr0
    );
}

/// AArch64.S2Walk, "Detect Address Size Fault by Descriptor Address": a VTTBR_EL2 base above
/// the output size is an Address size fault reported at level 0, whatever the start level
/// (R_BFHQH states this for stage 1; seed 001).
#[test]
fn base_address_size_fault_is_level_0() {
    let mem = tree_4k(0x1234_5000 | AF | RW | PAGE);
    // 39-bit IPA from level 1, PS = 40 bits, base at bit 40.
    let v = vtcr(25, 0b01, 0, 0b010);
    assert_eq!(
        both(&machine(48), v, 1 << 40, &mem, 0x1000, Access::Read),
        fault(FaultKind::AddressSize, 0)
    );
    // PS asks for 48 bits but PAMax is 40: the output size is 40 (AArch64.PhysicalAddressSize).
    let v = vtcr(25, 0b01, 0, 0b101);
    assert_eq!(
        both(&machine(40), v, 1 << 40, &mem, 0x1000, Access::Read),
        fault(FaultKind::AddressSize, 0)
    );
    // VTTBR_EL2.VMID (bits [63:48]) and CnP are not address bits.
    let mut mem = SparseMemory::default();
    mem.put(0x2000, 0x4000_0000 | AF | RW | BLOCK);
    let t = both(
        &machine(40),
        v,
        0xabcd_0000_0000_2001,
        &mem,
        0x1234,
        Access::Read,
    )
    .expect("maps");
    assert_eq!(t.oa.get(), 0x4000_1234);
}

/// AArch64.S2Walk, "Detect Address Size Fault by table descriptor" (at the table's level) and
/// "by final output" (AArch64.S2OAOutOfRange on StageOA, at the leaf's level).
#[test]
fn address_size_fault_at_each_level() {
    let m = machine(40);
    let v = vtcr(24, 0b01, 0, 0b010); // 40-bit IPA from level 1 (2 concatenated tables), PS 40
    let ipa = (1 << 30) | (2 << 21) | (3 << 12);
    let base = |mem: &mut SparseMemory| mem.put(0x10008, 0x2000 | TABLE);
    let high = 1u64 << 41;
    let mut mem = SparseMemory::default();
    mem.put(0x10008, high | TABLE);
    assert_eq!(
        both(&m, v, 0x10000, &mem, ipa, Access::Read),
        fault(FaultKind::AddressSize, 1)
    );
    let mut mem = SparseMemory::default();
    mem.put(0x10008, high | AF | RW | BLOCK);
    assert_eq!(
        both(&m, v, 0x10000, &mem, ipa, Access::Read),
        fault(FaultKind::AddressSize, 1)
    );
    let mut mem = SparseMemory::default();
    base(&mut mem);
    mem.put(0x2010, high | TABLE);
    assert_eq!(
        both(&m, v, 0x10000, &mem, ipa, Access::Read),
        fault(FaultKind::AddressSize, 2)
    );
    let mut mem = SparseMemory::default();
    base(&mut mem);
    mem.put(0x2010, high | AF | RW | BLOCK);
    assert_eq!(
        both(&m, v, 0x10000, &mem, ipa, Access::Read),
        fault(FaultKind::AddressSize, 2)
    );
    let mut mem = SparseMemory::default();
    base(&mut mem);
    mem.put(0x2010, 0x3000 | TABLE);
    mem.put(0x3018, high | AF | RW | PAGE);
    assert_eq!(
        both(&m, v, 0x10000, &mem, ipa, Access::Read),
        fault(FaultKind::AddressSize, 3)
    );
    // Level 0: 4KB 48-bit tree whose level 0 table descriptor points above 40-bit PS.
    let mut mem = tree_4k(AF | RW | PAGE);
    mem.write(0x1008, high | TABLE);
    let v48 = vtcr(16, 0b10, 0, 0b010);
    assert_eq!(
        both(&machine(48), v48, 0x1000, &mem, IPA, Access::Read),
        fault(FaultKind::AddressSize, 0)
    );
    // 64KB: descriptor bits [15:12] are OA[51:48]; below 52-bit output they are out of range.
    let v64 = vtcr(22, 0b01, 0b01, 0b101); // 42-bit IPA from level 2
    let mut mem = SparseMemory::default();
    mem.put(0x10000, 0x2000_0000 | (1 << 12) | AF | RW | BLOCK);
    assert_eq!(
        both(&machine(48), v64, 0x10000, &mem, 0x42, Access::Read),
        fault(FaultKind::AddressSize, 2)
    );
    let t = both(
        &machine(52),
        vtcr(22, 0b01, 0b01, 0b110),
        0x10000,
        &mem,
        0x42,
        Access::Read,
    )
    .expect("52-bit OA");
    assert_eq!(t.oa.get(), (1 << 48) | 0x2000_0042);
}

/// AArch64.S2Walk, "Check descriptor AF bit": AF = 0 with VTCR_EL2.HA = 0 is an Access flag
/// fault at the leaf's level; with HA = 1 (FEAT_HAFDBS) hardware sets AF and the walk succeeds.
#[test]
fn access_flag_fault_at_each_leaf_level() {
    let m = machine(48);
    let mut mem = SparseMemory::default();
    mem.put(0x1008, 0x2000 | TABLE);
    mem.put(0x2010, 0x4000_0000 | RW | BLOCK);
    assert_eq!(
        both(&m, V4K_L0, 0x1000, &mem, IPA, Access::Read),
        fault(FaultKind::AccessFlag, 1)
    );
    mem.write(0x2010, 0x3000 | TABLE);
    mem.put(0x3018, 0x4000_0000 | RW | BLOCK);
    assert_eq!(
        both(&m, V4K_L0, 0x1000, &mem, IPA, Access::Read),
        fault(FaultKind::AccessFlag, 2)
    );
    let mem = tree_4k(0x1234_5000 | RW | PAGE);
    assert_eq!(
        both(&m, V4K_L0, 0x1000, &mem, IPA, Access::Write),
        fault(FaultKind::AccessFlag, 3)
    );
    let with_ha = V4K_L0 | (1 << 21);
    assert!(both(&m, with_ha, 0x1000, &mem, IPA, Access::Write).is_ok());
    // Without FEAT_HAFDBS, HA is RES0 (AArch64.NSS2TTWParams).
    let mut old = m;
    old.hafdbs = false;
    assert_eq!(
        both(&old, with_ha, 0x1000, &mem, IPA, Access::Write),
        fault(FaultKind::AccessFlag, 3)
    );
}

//! A small guest stage-2 table tree and the walks that reach each outcome over it, for the
//! service's tests, the QEMU test's client and the `s2walk-client` example: one tree, every fault
//! kind, the expected ESR fault status codes derived by hand from the Arm ARM (DDI 0487 L.a,
//! D24.2 ESR_EL2 DFSC/IFSC encodings; the walk rules are cited in `docs/s2walk.md`).
//!
//! The machine: PAMax 40 bits. VTCR_EL2: T0SZ 25 (39-bit IPA), SL0 1 (start at level 1), 4KB
//! granule, PS 0b010 (40-bit output), HA clear (Access flag faults). The tables live in four guest
//! pages, [`PAGES`]; the walker may read nothing else of the guest.

use capvisor_ipc::types::Access;

/// The PA size the walks emulate.
pub const PA_BITS: u8 = 40;
/// VTCR_EL2: PS 0b010 (bits 18:16), TG0 4KB (0), SL0 1 (bits 7:6), T0SZ 25.
pub const VTCR: u64 = (0b010 << 16) | (1 << 6) | 25;
/// VTTBR_EL2: the level-1 table at guest address 0x1000, VMID 0.
pub const VTTBR: u64 = 0x1000;
/// A VTTBR_EL2 whose base has bit 40 set: above the 40-bit output size.
pub const VTTBR_TOO_HIGH: u64 = 1 << 40;

/// The guest pages that hold the tables: level 1, level 2, level 3. (0x9000, which a level-1
/// entry points at, is deliberately not one of them.)
pub const PAGES: [u64; 3] = [0x1000, 0x2000, 0x3000];

const VALID_TABLE: u64 = 0b11;
const BLOCK: u64 = 0b01;
const PAGE: u64 = 0b11;
const AF: u64 = 1 << 10;
const INNER_SHAREABLE: u64 = 0b11 << 8;
/// S2AP read/write and read-only (bits 7:6).
const RW: u64 = 0b11 << 6;
const RO: u64 = 0b01 << 6;
/// MemAttr Normal write-back (0b1111) and Device-nGnRE (0b0001), bits 5:2.
const NORMAL: u64 = 0b1111 << 2;
const DEVICE: u64 = 0b0001 << 2;
/// XN 0b10 (bits 54:53): no execution at EL1 or EL0 (FEAT_XNX).
const XN_NONE: u64 = 0b10 << 53;

/// Word `index` (0 to 511) of table page `base` (one of [`PAGES`]); 0 (invalid) elsewhere.
#[must_use]
pub const fn word(base: u64, index: usize) -> u64 {
    let leaf = AF | INNER_SHAREABLE;
    match (base, index) {
        // Level 1: 1 GiB per entry.
        (0x1000, 0) => 0x2000 | VALID_TABLE,
        (0x1000, 1) => 0x4000_0000 | leaf | RW | NORMAL | BLOCK,
        (0x1000, 2) => 0x9000 | VALID_TABLE,
        (0x1000, 3) => (1 << 40) | VALID_TABLE,
        // Level 2: 2 MiB per entry.
        (0x2000, 0) => 0x3000 | VALID_TABLE,
        (0x2000, 1) => 0x8020_0000 | leaf | RO | NORMAL | XN_NONE | BLOCK,
        // Level 3: 4 KiB pages.
        (0x3000, 0) => 0x8000_0000 | leaf | RW | NORMAL | PAGE,
        (0x3000, 1) => 0x8000_1000 | INNER_SHAREABLE | RW | NORMAL | PAGE,
        (0x3000, 2) => 0x0900_0000 | leaf | RW | DEVICE | PAGE,
        (0x3000, 3) => (1 << 41) | leaf | RW | NORMAL | PAGE,
        (0x3000, 5) => 0x8000_5000 | leaf | RW | NORMAL | BLOCK,
        _ => 0,
    }
}

/// What a walk must give: a translation to `pa` at a level, or a fault status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Translated to this output address by a leaf at this level.
    Ok {
        /// The output address.
        pa: u64,
        /// The leaf's level.
        level: u8,
    },
    /// The ESR fault status code.
    Fault(u8),
}

/// One walk of the sample tree and its hand-derived result.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    /// What it shows.
    pub name: &'static str,
    /// VTTBR_EL2.
    pub vttbr: u64,
    /// The input address.
    pub ipa: u64,
    /// The access.
    pub access: Access,
    /// The result.
    pub expect: Expect,
}

const fn ok(pa: u64, level: u8) -> Expect {
    Expect::Ok { pa, level }
}

const fn case(name: &'static str, ipa: u64, access: Access, expect: Expect) -> Case {
    Case {
        name,
        vttbr: VTTBR,
        ipa,
        access,
        expect,
    }
}

/// Every outcome of the sample tree.
pub const CASES: [Case; 17] = [
    case("page read", 0x123, Access::Read, ok(0x8000_0123, 3)),
    case("page write", 0x128, Access::Write, ok(0x8000_0128, 3)),
    case(
        "1G block fetch",
        0x4000_5678,
        Access::Execute,
        ok(0x4000_5678, 1),
    ),
    case("2M block read", 0x20_0010, Access::Read, ok(0x8020_0010, 2)),
    // Permission fault at level 2 (0b0011LL): S2AP read-only.
    case(
        "2M block write",
        0x20_0010,
        Access::Write,
        Expect::Fault(0x0e),
    ),
    // Permission fault at level 2: XN 0b10.
    case(
        "2M block fetch",
        0x20_0010,
        Access::Execute,
        Expect::Fault(0x0e),
    ),
    // Synchronous external abort on the walk at level 2 (0b0101LL): 0x9000 was not lent.
    case(
        "table not lent",
        0x8000_0000,
        Access::Read,
        Expect::Fault(0x16),
    ),
    // Address size fault at level 1 (0b0000LL): the table descriptor points above 40 bits.
    case(
        "table above PS",
        0xc000_0000,
        Access::Read,
        Expect::Fault(0x01),
    ),
    // Translation faults (0b0001LL) at levels 1, 2, 3: invalid descriptors.
    case(
        "invalid at level 1",
        0x1_0000_0000,
        Access::Read,
        Expect::Fault(0x05),
    ),
    case(
        "invalid at level 2",
        0x40_0000,
        Access::Read,
        Expect::Fault(0x06),
    ),
    case(
        "invalid at level 3",
        0x4000,
        Access::Read,
        Expect::Fault(0x07),
    ),
    // Level 3 has no blocks: 0b01 there is a reserved encoding, a translation fault.
    case(
        "reserved at level 3",
        0x5000,
        Access::Read,
        Expect::Fault(0x07),
    ),
    // Access flag fault at level 3 (0b0010LL): AF clear, HA clear.
    case("access flag", 0x1000, Access::Read, Expect::Fault(0x0b)),
    // Permission fault at level 3: an instruction fetch from Device memory.
    case(
        "fetch from device",
        0x2000,
        Access::Execute,
        Expect::Fault(0x0f),
    ),
    // Address size fault at level 3: the page's output address has bit 41 set.
    case("output above PS", 0x3000, Access::Read, Expect::Fault(0x03)),
    // Translation fault at level 0: the IPA is above the 39-bit input size.
    case(
        "IPA out of range",
        1 << 39,
        Access::Read,
        Expect::Fault(0x04),
    ),
    // Address size fault at level 0: the VTTBR base is above the output size.
    Case {
        name: "VTTBR above PS",
        vttbr: VTTBR_TOO_HIGH,
        ipa: 0x123,
        access: Access::Read,
        expect: Expect::Fault(0x00),
    },
];

/// The sample tree as guest memory: [`word`] in [`PAGES`], nothing anywhere else (for walks on
/// the caller's side, e.g. the reference model's).
#[derive(Debug, Clone, Copy, Default)]
pub struct SampleMemory;

impl s2walk::GuestMemory for SampleMemory {
    fn read_u64(&self, addr: s2walk::OutputAddr) -> Result<u64, s2walk::ReadError> {
        let addr = addr.get();
        let base = addr & !0xfff;
        if !addr.is_multiple_of(8) || !PAGES.contains(&base) {
            return Err(s2walk::ReadError::Unbacked);
        }
        Ok(word(base, ((addr - base) / 8) as usize))
    }
}

//! Stage-2 descriptor and VTCR_EL2 encodings (pure: the arch layer writes them).
//!
//! From the Arm ARM (DDI 0487 L.a): D8.3 "Translation table descriptor formats" (stage 2 block
//! and page descriptors: MemAttr [5:2], S2AP [7:6], SH [9:8], AF [10], XN [54:53] with
//! FEAT_XNX); D8.6.5 "Stage 2 memory type and Cacheability attributes when FEAT_S2FWB is
//! disabled / enabled"; D24.2.210 "VTCR_EL2".

use capvisor_ipc::memory::MemoryType;

/// What a stage-2 mapping allows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct S2Access {
    /// Readable.
    pub read: bool,
    /// Writable.
    pub write: bool,
    /// Executable (at EL1 and EL0).
    pub exec: bool,
}

/// A valid page descriptor (level 3) has bits [1:0] = 0b11; a block (levels 1-2) 0b01.
pub const PAGE: u64 = 0b11;
/// Block descriptor type bits.
pub const BLOCK: u64 = 0b01;
/// Table descriptor type bits.
pub const TABLE: u64 = 0b11;
/// Bits [47:12] of an output address (48-bit OA, 4K granule).
pub const OA_MASK: u64 = 0x0000_ffff_ffff_f000;

/// The attribute bits of a stage-2 leaf descriptor (everything but the type bits and output
/// address).
///
/// Without FEAT_S2FWB, MemAttr combines with stage 1 (Arm ARM D8.6.5): 0b1111 Normal WB, 0b0101
/// Normal NC, 0b0001 Device-nGnRE. With FWB (`fwb` set, HCR_EL2.FWB = 1), MemAttr[2] = 0 means
/// Device/NC by MemAttr[1:0] and MemAttr = 0b0110 forces Normal write-back whatever stage 1
/// says, so a guest cannot downgrade its RAM (seed 000, DESIGN rule 1).
#[must_use]
pub fn leaf_attributes(access: S2Access, memtype: MemoryType, fwb: bool) -> u64 {
    let memattr: u64 = match (memtype, fwb) {
        (MemoryType::NormalWriteBack, false) => 0b1111,
        (MemoryType::NormalNonCacheable, false) => 0b0101,
        (MemoryType::DeviceNgnre, false) => 0b0001,
        (MemoryType::NormalWriteBack, true) => 0b0110,
        (MemoryType::NormalNonCacheable, true) => 0b0101,
        (MemoryType::DeviceNgnre, true) => 0b0001,
    };
    let s2ap = u64::from(access.read) | (u64::from(access.write) << 1);
    // Device memory is not shareable-attributed (SH is ignored for Device); RAM is inner
    // shareable so all CPUs see one coherent view.
    let sh: u64 = if memtype == MemoryType::DeviceNgnre {
        0
    } else {
        0b11
    };
    // XN[1:0] = 0b10: not executable at EL1 or EL0 (0b00: executable at both).
    let xn: u64 = if access.exec { 0 } else { 0b10 };
    (memattr << 2) | (s2ap << 6) | (sh << 8) | (1 << 10) | (xn << 53)
}

/// VTCR_EL2 for a stage-2 input size of `ipa_bits` (4K granule, start level chosen to fit), with
/// output size `ps` (PARange encoding), table walks inner/outer write-back inner shareable,
/// and 16-bit VMIDs when `vmid16`.
///
/// Returns `None` for an input size the 4K granule cannot start at level 0 or 1 for (Arm ARM
/// D8.2.8, "Stage 2 translation table walk starting level"): 25..=48 bits are supported here.
#[must_use]
pub fn vtcr(ipa_bits: u32, ps: u64, vmid16: bool) -> Option<u64> {
    if !(25..=48).contains(&ipa_bits) {
        return None;
    }
    let t0sz = u64::from(64 - ipa_bits);
    // SL0 for 4K: 0b01 start at level 1 (covers up to 39 bits with one table), 0b10 level 0.
    let sl0: u64 = if ipa_bits <= 39 { 0b01 } else { 0b10 };
    const IRGN0_WBWA: u64 = 1 << 8;
    const ORGN0_WBWA: u64 = 1 << 10;
    const SH0_INNER: u64 = 3 << 12;
    const RES1: u64 = 1 << 31;
    Some(
        t0sz | (sl0 << 6)
            | IRGN0_WBWA
            | ORGN0_WBWA
            | SH0_INNER
            | ((ps & 7) << 16)
            | (u64::from(vmid16) << 19)
            | RES1,
    )
}

/// The level the walk starts at for `ipa_bits` (4K granule), as [`vtcr`] programs it.
#[must_use]
pub fn start_level(ipa_bits: u32) -> u8 {
    if ipa_bits <= 39 { 1 } else { 0 }
}

/// The index of `ipa` in a level-`level` table (4K granule: 9 bits a level, level 3 at bit 12).
#[must_use]
pub fn table_index(ipa: u64, level: u8) -> usize {
    ((ipa >> (12 + 9 * (3 - u32::from(level)))) & 0x1ff) as usize
}

/// VTTBR_EL2 for a root table at `root` and VMID `vmid` (VMID in bits [63:48]; with 8-bit
/// VMIDs bits [63:56] are RES0, so `vmid` must then be below 256).
#[must_use]
pub fn vttbr(root: u64, vmid: u16) -> u64 {
    (u64::from(vmid) << 48) | (root & OA_MASK)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RW: S2Access = S2Access {
        read: true,
        write: true,
        exec: false,
    };

    #[test]
    fn ram_without_fwb_is_normal_wb_inner_shareable() {
        let d = leaf_attributes(RW, MemoryType::NormalWriteBack, false);
        assert_eq!((d >> 2) & 0xf, 0b1111);
        assert_eq!((d >> 6) & 3, 0b11);
        assert_eq!((d >> 8) & 3, 0b11);
        assert_eq!((d >> 10) & 1, 1, "AF set: no access flag faults");
        assert_eq!((d >> 53) & 3, 0b10, "not executable");
    }

    #[test]
    fn fwb_forces_write_back() {
        let d = leaf_attributes(RW, MemoryType::NormalWriteBack, true);
        assert_eq!((d >> 2) & 0xf, 0b0110);
    }

    #[test]
    fn device_is_ngnre_and_not_shareable_attributed() {
        let d = leaf_attributes(RW, MemoryType::DeviceNgnre, false);
        assert_eq!((d >> 2) & 0xf, 0b0001);
        assert_eq!((d >> 8) & 3, 0);
    }

    #[test]
    fn exec_and_read_only() {
        let d = leaf_attributes(
            S2Access {
                read: true,
                write: false,
                exec: true,
            },
            MemoryType::NormalWriteBack,
            false,
        );
        assert_eq!((d >> 6) & 3, 0b01);
        assert_eq!((d >> 53) & 3, 0);
    }

    #[test]
    fn vtcr_fields() {
        let v = vtcr(39, 2, true).unwrap();
        assert_eq!(v & 0x3f, 25);
        assert_eq!((v >> 6) & 3, 1);
        assert_eq!((v >> 16) & 7, 2);
        assert_eq!((v >> 19) & 1, 1);
        assert_eq!(v >> 31 & 1, 1);
        assert_eq!((vtcr(40, 5, false).unwrap() >> 6) & 3, 2);
        assert_eq!(vtcr(24, 5, false), None);
        assert_eq!(vtcr(49, 5, false), None);
    }

    #[test]
    fn indices_and_vttbr() {
        let ipa = (3 << 30) | (5 << 21) | (7 << 12) | 0x123;
        assert_eq!(table_index(ipa, 1), 3);
        assert_eq!(table_index(ipa, 2), 5);
        assert_eq!(table_index(ipa, 3), 7);
        assert_eq!(vttbr(0x4000_1000, 0x12), 0x0012_0000_4000_1000);
    }
}

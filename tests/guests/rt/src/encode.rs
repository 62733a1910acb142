//! Instruction and register-field encodings the guests build at run time, pure and host-tested.

/// `movz x0, #imm` (A64 "MOVZ", 64-bit, shift 0).
#[must_use]
pub const fn movz_x0(imm: u16) -> u32 {
    0xD280_0000 | ((imm as u32) << 5)
}

/// `ret` (to x30).
pub const RET: u32 = 0xD65F_03C0;

/// The smallest data and instruction cache line sizes in bytes from CTR_EL0 (DminLine bits
/// [19:16] and IminLine bits [3:0], each log2 of a number of 4-byte words).
#[must_use]
pub const fn cache_lines(ctr: u64) -> (u64, u64) {
    let dline = 4 << ((ctr >> 16) & 0xf);
    let iline = 4 << (ctr & 0xf);
    (dline, iline)
}

/// CTR_EL0.IDC, bit 28: cleaning the data cache to PoU is not needed for instruction-to-data
/// coherence.
#[must_use]
pub const fn ctr_idc(ctr: u64) -> bool {
    ctr & (1 << 28) != 0
}

/// CTR_EL0.DIC, bit 29: invalidating the instruction cache to PoU is not needed.
#[must_use]
pub const fn ctr_dic(ctr: u64) -> bool {
    ctr & (1 << 29) != 0
}

/// The word a test pattern has at byte offset `offset` of page `page`, in round `round`: distinct
/// per page, word and round, never zero.
#[must_use]
pub const fn pattern(page: u64, offset: u64, round: u64) -> u64 {
    let mixed = (page << 32) ^ offset ^ (round.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    mixed | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions() {
        // Reference encodings as an assembler gives them.
        assert_eq!(movz_x0(0), 0xD280_0000);
        assert_eq!(movz_x0(0x2a), 0xD280_0540);
        assert_eq!(movz_x0(0xffff), 0xD29F_FFE0);
        assert_eq!(RET, 0xD65F_03C0);
    }

    #[test]
    fn ctr_fields() {
        // QEMU's -cpu max: CTR_EL0 = 0xb444c004 (DIC, IDC, 64-byte lines).
        let ctr = 0xb444_c004;
        assert_eq!(cache_lines(ctr), (64, 64));
        assert!(ctr_dic(ctr) && ctr_idc(ctr));
        // Cortex-A57: 0x8444c004, neither.
        assert!(!ctr_dic(0x8444_c004) && !ctr_idc(0x8444_c004));
    }

    #[test]
    fn patterns_differ() {
        assert_ne!(pattern(1, 0, 0), pattern(2, 0, 0));
        assert_ne!(pattern(1, 8, 0), pattern(1, 0, 0));
        assert_ne!(pattern(1, 0, 1), pattern(1, 0, 2));
        assert_ne!(pattern(0, 0, 0), 0);
    }
}

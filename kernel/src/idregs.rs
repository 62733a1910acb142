//! The ID registers a guest reads: with HCR_EL2.TID3 set (`arch/aarch64/vcpu.rs::HCR_GUEST`),
//! every EL1 read of the AArch64 and AArch32 feature ID registers (op0 3, op1 0, CRn 0, CRm 1–7;
//! Arm ARM D24.2.48, HCR_EL2.TID3) traps to EL2, and the kernel answers with the hardware's value
//! less the features whose state its world switch does not switch, so a guest never turns them
//! on: SVE and SME (the vector and matrix registers beyond the FP/SIMD Q registers), pointer
//! authentication (its keys), MTE (tags and tag-check state), the activity monitors, MPAM, the
//! statistical profiling extension, trace and the trace buffer, the PMU, RAS error records,
//! FPMR, LS64, MOPS, 128-bit system registers and the ID_AA64MMFR3 extensions (TCR2, SCTLR2,
//! permission indirection and overlays). The physical address size is clamped to the VM's IPA
//! space. Which features a guest may have is mechanism here, not policy: what the kernel cannot
//! switch would leak or corrupt state between vCPUs and services. (The same state is also
//! trapped at EL2 — CPTR_EL2, MDCR_EL2 — in case a guest uses it regardless.)

/// A feature field: `width` bits from bit `shift`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Field {
    shift: u32,
    width: u32,
}

const fn field(shift: u32) -> Field {
    Field { shift, width: 4 }
}

/// A whole register.
const ALL: Field = Field {
    shift: 0,
    width: 64,
};

/// The ID register at (CRm, op2), and the fields cleared in it.
const HIDDEN: &[((u8, u8), &[Field])] = &[
    // ID_AA64PFR0_EL1 (D24.2.74): RAS [31:28], SVE [35:32], MPAM [43:40], AMU [47:44].
    ((4, 0), &[field(28), field(32), field(40), field(44)]),
    // ID_AA64PFR1_EL1 (D24.2.75): MTE [11:8], DF2 [15:12], MPAM_frac [19:16], SME [27:24],
    // NMI [39:36], MTE_frac [43:40], GCS [47:44], THE [51:48], MTEX [55:52], PFAR [63:60].
    (
        (4, 1),
        &[
            field(8),
            field(12),
            field(16),
            field(24),
            field(36),
            field(40),
            field(44),
            field(48),
            field(52),
            field(60),
        ],
    ),
    // ID_AA64PFR2_EL1: MTE store-only/permission/FAR and FPMR, all.
    ((4, 2), &[ALL]),
    // ID_AA64ZFR0_EL1: SVE's features, all.
    ((4, 4), &[ALL]),
    // ID_AA64SMFR0_EL1: SME's features, all.
    ((4, 5), &[ALL]),
    // ID_AA64FPFR0_EL1: FP8 formats (FPMR), all.
    ((4, 7), &[ALL]),
    // ID_AA64DFR0_EL1 (D24.2.60): TraceVer [7:4], PMUVer [11:8], PMSVer (SPE) [35:32],
    // TraceFilt [43:40], TraceBuffer [47:44], BRBE [55:52].
    (
        (5, 0),
        &[
            field(4),
            field(8),
            field(32),
            field(40),
            field(44),
            field(52),
        ],
    ),
    // ID_AA64ISAR1_EL1 (D24.2.68): APA [7:4], API [11:8], GPA [27:24], GPI [31:28],
    // LS64 [63:60].
    (
        (6, 1),
        &[field(4), field(8), field(24), field(28), field(60)],
    ),
    // ID_AA64ISAR2_EL1 (D24.2.69): GPA3 [11:8], APA3 [15:12], MOPS [19:16], SYSREG_128 [35:32].
    ((6, 2), &[field(8), field(12), field(16), field(32)]),
    // ID_AA64MMFR3_EL1: TCRX, SCTLRX, S1PIE, S2PIE, S1POE, AIE, D128, …, all.
    ((7, 3), &[ALL]),
];

/// ID_AA64MMFR0_EL1's PARange [3:0] encodings and the physical address sizes they mean
/// (D24.2.71).
const PA_RANGES: [(u64, u32); 7] = [
    (0, 32),
    (1, 36),
    (2, 40),
    (3, 42),
    (4, 44),
    (5, 48),
    (6, 52),
];

/// Whether a trapped system-register access (its ISS fields) is a read of a feature ID register
/// that the kernel answers itself.
#[must_use]
pub const fn is_id_register(op0: u8, op1: u8, crn: u8, crm: u8, read: bool) -> bool {
    read && op0 == 3 && op1 == 0 && crn == 0 && crm >= 1 && crm <= 7
}

/// What a guest whose VM translates `ipa_bits` of IPA reads from the ID register at (CRm, op2)
/// whose hardware value is `value`.
#[must_use]
pub fn sanitize(crm: u8, op2: u8, value: u64, ipa_bits: u32) -> u64 {
    if (crm, op2) == (7, 0) {
        // ID_AA64MMFR0_EL1.PARange: no more than the VM's IPA space (the largest size that fits).
        let fits = PA_RANGES
            .iter()
            .filter(|(_, bits)| *bits <= ipa_bits)
            .map(|(code, _)| *code)
            .max()
            .unwrap_or(0);
        return (value & !0xf) | (value & 0xf).min(fits);
    }
    let Some((_, fields)) = HIDDEN.iter().find(|(at, _)| *at == (crm, op2)) else {
        return value;
    };
    fields.iter().fold(value, |value, f| {
        let mask = if f.width >= 64 {
            u64::MAX
        } else {
            ((1u64 << f.width) - 1) << f.shift
        };
        value & !mask
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_feature_id_register_reads_are_answered() {
        assert!(is_id_register(3, 0, 0, 4, true));
        assert!(is_id_register(3, 0, 0, 1, true) && is_id_register(3, 0, 0, 7, true));
        assert!(!is_id_register(3, 0, 0, 4, false));
        // MIDR_EL1 (CRm 0) and others are not trapped by TID3.
        assert!(!is_id_register(3, 0, 0, 0, true));
        assert!(!is_id_register(3, 0, 1, 4, true));
        assert!(!is_id_register(3, 3, 0, 4, true));
    }

    #[test]
    fn the_features_the_world_switch_does_not_switch_are_hidden() {
        // QEMU 10 `max`'s ID_AA64PFR0_EL1 has SVE = 1 in [35:32] and RAS in [31:28]; the rest
        // of the low word stays.
        let pfr0 = 0x1111_1111_2111_1111_u64;
        let seen = sanitize(4, 0, pfr0, 39);
        assert_eq!((seen >> 28) & 0xff, 0);
        assert_eq!(seen & 0x0fff_ffff, pfr0 & 0x0fff_ffff);
        // Pointer authentication: APA, API, GPA, GPI gone; DPB [3:0], JSCVT [15:12] stay.
        let isar1 = 0x0000_0000_1111_1111_u64;
        assert_eq!(sanitize(6, 1, isar1, 39), 0x0000_0000_0011_1001);
        assert_eq!(sanitize(6, 2, 0xf_ffff, 39), 0x0_00ff);
        // SVE's, SME's, FP8's and MMFR3's registers read as zero.
        for op2 in [2, 4, 5, 7] {
            assert_eq!(sanitize(4, op2, u64::MAX, 39), 0);
        }
        assert_eq!(sanitize(7, 3, u64::MAX, 39), 0);
        // MTE and SME in PFR1; BT [3:0] and SSBS [7:4] stay.
        assert_eq!(sanitize(4, 1, 0x0000_0000_0f0f_0f21, 39), 0x21);
        // PMU, trace and BRBE in DFR0; debug [3:0] and the breakpoints [15:12] stay.
        assert_eq!(
            sanitize(5, 0, 0x00f0_0000_0000_f6f6, 39),
            0x0000_0000_0000_f006
        );
        // The physical address size: 52 bits (6) becomes 36 (1) for a 39-bit IPA space, 40 (2)
        // for a 40-bit one; a smaller one stays.
        assert_eq!(sanitize(7, 0, 0x1234_5676, 39), 0x1234_5671);
        assert_eq!(sanitize(7, 0, 0x1234_5676, 40), 0x1234_5672);
        assert_eq!(sanitize(7, 0, 0x1234_5670, 48), 0x1234_5670);
        // Registers without hidden fields read as the hardware's.
        assert_eq!(sanitize(7, 1, 0x1234, 39), 0x1234);
        assert_eq!(sanitize(6, 0, u64::MAX, 39), u64::MAX);
    }
}

//! The ID registers a guest reads: with HCR_EL2.TID3 set (`arch/aarch64/vcpu.rs::HCR_GUEST`),
//! every EL1 read of the AArch64 and AArch32 feature ID registers (op0 3, op1 0, CRn 0, CRm 1–7;
//! Arm ARM D24.2.48, HCR_EL2.TID3) traps to EL2, and the kernel answers with the hardware's value
//! less the features whose state its world switch does not switch, so a guest never turns them
//! on: SVE and SME (the vector and matrix registers beyond the FP/SIMD Q registers), pointer
//! authentication (its keys), MTE (tags and tag-check state), the activity monitors, MPAM, the
//! statistical profiling extension and the trace buffer (their EL1 controls). Which features a
//! guest may have is mechanism here, not policy: what the kernel cannot switch would leak or
//! corrupt state between vCPUs and services.

/// A feature field: `width` bits from bit `shift`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Field {
    shift: u32,
    width: u32,
}

const fn field(shift: u32) -> Field {
    Field { shift, width: 4 }
}

/// The ID register at (CRm, op2), and the fields cleared in it.
const HIDDEN: &[((u8, u8), &[Field])] = &[
    // ID_AA64PFR0_EL1 (D24.2.74): SVE [35:32], MPAM [43:40], AMU [47:44].
    ((4, 0), &[field(32), field(40), field(44)]),
    // ID_AA64PFR1_EL1 (D24.2.75): MTE [11:8], SME [27:24], MPAM_frac [19:16], NMI [39:36],
    // GCS [47:44], MTE_frac [43:40], MTEX [55:52].
    (
        (4, 1),
        &[
            field(8),
            field(16),
            field(24),
            field(36),
            field(40),
            field(44),
            field(52),
        ],
    ),
    // ID_AA64ZFR0_EL1: SVE's features, all.
    (
        (4, 4),
        &[Field {
            shift: 0,
            width: 64,
        }],
    ),
    // ID_AA64SMFR0_EL1: SME's features, all.
    (
        (4, 5),
        &[Field {
            shift: 0,
            width: 64,
        }],
    ),
    // ID_AA64DFR0_EL1 (D24.2.60): PMSVer (SPE) [35:32], TraceFilt [43:40], TraceBuffer [47:44].
    ((5, 0), &[field(32), field(40), field(44)]),
    // ID_AA64ISAR1_EL1 (D24.2.68): APA [7:4], API [11:8], GPA [27:24], GPI [31:28].
    ((6, 1), &[field(4), field(8), field(24), field(28)]),
    // ID_AA64ISAR2_EL1 (D24.2.69): GPA3 [11:8], APA3 [15:12].
    ((6, 2), &[field(8), field(12)]),
];

/// Whether a trapped system-register access (its ISS fields) is a read of a feature ID register
/// that the kernel answers itself.
#[must_use]
pub const fn is_id_register(op0: u8, op1: u8, crn: u8, crm: u8, read: bool) -> bool {
    read && op0 == 3 && op1 == 0 && crn == 0 && crm >= 1 && crm <= 7
}

/// What a guest reads from the ID register at (CRm, op2) whose hardware value is `value`.
#[must_use]
pub fn sanitize(crm: u8, op2: u8, value: u64) -> u64 {
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
        // QEMU 10 `max`'s ID_AA64PFR0_EL1 has SVE = 1 in [35:32]; the rest stays.
        let pfr0 = 0x1111_1111_2111_1111_u64;
        let seen = sanitize(4, 0, pfr0);
        assert_eq!((seen >> 32) & 0xf, 0);
        assert_eq!(seen & 0xffff_ffff, pfr0 & 0xffff_ffff);
        // Pointer authentication: APA, API, GPA, GPI gone; DPB [3:0], JSCVT [15:12] stay.
        let isar1 = 0x0000_0000_1111_1111_u64;
        assert_eq!(sanitize(6, 1, isar1), 0x0000_0000_0011_1001);
        assert_eq!(sanitize(6, 2, 0xffff), 0x00ff);
        // SVE's and SME's own ID registers read as zero.
        assert_eq!(sanitize(4, 4, u64::MAX), 0);
        assert_eq!(sanitize(4, 5, u64::MAX), 0);
        // MTE and SME in PFR1; BT [3:0] and SSBS [7:4] stay.
        assert_eq!(sanitize(4, 1, 0x0000_0000_0f0f_0f21), 0x21);
        // Registers without hidden fields read as the hardware's.
        assert_eq!(sanitize(7, 0, 0x1234), 0x1234);
        assert_eq!(sanitize(6, 0, u64::MAX), u64::MAX);
    }
}

//! The ID registers a guest reads. With HCR_EL2.TID3 set (`arch/aarch64/vcpu.rs`), every EL1 read
//! of the AArch64 and AArch32 feature ID registers (op0 3, op1 0, CRn 0, CRm 1–7; Arm ARM
//! D24.2.48, HCR_EL2.TID3) traps to EL2, and the kernel answers from an **allowlist**: each
//! field a guest may see is listed with its rule, and every bit not listed reads as zero — for
//! an ID field, "not implemented" (Arm's convention for new fields, D19.1.3). So a feature whose
//! state the world switch does not switch, or whose traps no one handles, is hidden until
//! capvisor supports it, whatever a future CPU adds (KVM keeps the same kind of table).
//!
//! What is shown: the EL0/EL1 execution states (EL1 AArch64 only; no EL2, EL3), FP and Advanced
//! SIMD, the GICv3 system-register interface, the instruction-set extensions that add no state
//! beyond the switched registers, the debug architecture (breakpoints and watchpoints are
//! switched per vCPU; DebugVer capped at Armv8.8, whose registers capvisor emulates), the memory
//! model of stage 1, PAN, and the truthful Spectre/Meltdown statements (CSV2 capped at 1 while
//! SCXTNUM is not switched). What is hidden: SVE, SME, MTE, pointer authentication, the PMU,
//! statistical profiling, trace, the activity monitors, RAS, MPAM, LORegions, nested
//! virtualization, FGT, HCX, WFxT, MOPS, LS64, 128-bit system registers and all of
//! ID_AA64MMFR3/MMFR4, ISAR3, PFR2, ZFR0, SMFR0, FPFR0, DFR1 and the auxiliary registers. The
//! physical address size is clamped to the VM's IPA space. The AArch32 ID registers read as zero
//! when the guest has no AArch32 EL0, else as the hardware's without virtualization, security,
//! RAS, activity monitors, performance monitors and trace.

/// How a field is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rule {
    /// The hardware's value.
    Pass,
    /// The hardware's value, at most this (an unsigned field whose larger values add what
    /// capvisor does not provide).
    Cap(u8),
    /// Always this value.
    Fixed(u8),
}

/// A 4-bit field at `shift` with its rule.
type Field = (u32, Rule);

const fn pass(shift: u32) -> Field {
    (shift, Rule::Pass)
}

/// Pass every field in `shifts`.
macro_rules! passing {
    ($($shift:literal),* $(,)?) => { &[$(pass($shift)),*] };
}

/// The allowed fields of the AArch64 ID register at (CRm, op2); a register not listed reads as
/// zero.
const ALLOWED: &[((u8, u8), &[Field])] = &[
    // ID_AA64PFR0_EL1 (D24.2.74): EL0 [3:0] (AArch32 EL0 is handled: UNDEF for what traps),
    // EL1 [7:4] AArch64 only (HCR_EL2.RW), EL2/EL3 absent, FP [19:16], AdvSIMD [23:20], GIC
    // [27:24] the system-register interface, DIT [51:48] (PSTATE), CSV2 [59:56] at most 1
    // (SCXTNUM is not switched), CSV3 [63:60].
    (
        (4, 0),
        &[
            (0, Rule::Cap(2)),
            (4, Rule::Fixed(1)),
            pass(16),
            pass(20),
            (24, Rule::Fixed(1)),
            pass(48),
            (56, Rule::Cap(1)),
            pass(60),
        ],
    ),
    // ID_AA64PFR1_EL1 (D24.2.75): BT [3:0] and SSBS [7:4], whose state is in SCTLR_EL1/PSTATE.
    ((4, 1), passing![0, 4]),
    // ID_AA64DFR0_EL1 (D24.2.60): DebugVer [3:0] at most Armv8.8, BRPs [15:12], WRPs [23:20],
    // CTX_CMPs [31:28] (switched per vCPU); DoubleLock [39:36] = 0xF, not implemented.
    (
        (5, 0),
        &[
            (0, Rule::Cap(0xa)),
            pass(12),
            pass(20),
            pass(28),
            (36, Rule::Fixed(0xf)),
        ],
    ),
    // ID_AA64ISAR0_EL1 (D24.2.67): every field but TME [27:24] (and [3:0], reserved).
    (
        (6, 0),
        passing![4, 8, 12, 16, 20, 28, 32, 36, 40, 44, 48, 52, 56, 60],
    ),
    // ID_AA64ISAR1_EL1 (D24.2.68): DPB, JSCVT, FCMA, LRCPC, FRINTTS, SB, SPECRES, BF16, DGH,
    // I8MM, XS; not APA/API/GPA/GPI (keys not switched) nor LS64.
    ((6, 1), passing![0, 12, 16, 20, 32, 36, 40, 44, 48, 52, 56]),
    // ID_AA64ISAR2_EL1 (D24.2.69): RPRES [7:4], BC [23:20], CLRBHB [31:28], PRFMSLC [43:40],
    // RPRFM [51:48], CSSC [55:52], LUT [59:56], ATS1A [63:60]; not WFxT (its timeout is not
    // honoured), GPA3/APA3, MOPS, PAC_frac, SYSREG_128, SYSINSTR_128.
    ((6, 2), passing![4, 20, 28, 40, 48, 52, 56, 60]),
    // ID_AA64MMFR0_EL1 (D24.2.71): PARange [3:0] clamped per VM (`sanitize`), ASIDBits, BigEnd,
    // SNSMem, BigEndEL0, TGran16/64/4, TGran*_2 = 1 (no stage 2 for the guest), ExS; ECV at most
    // 1 (CNTPOFF is EL2's); not FGT.
    (
        (7, 0),
        &[
            pass(0),
            pass(4),
            pass(8),
            pass(12),
            pass(16),
            pass(20),
            pass(24),
            pass(28),
            (32, Rule::Fixed(1)),
            (36, Rule::Fixed(1)),
            (40, Rule::Fixed(1)),
            pass(44),
            (60, Rule::Cap(1)),
        ],
    ),
    // ID_AA64MMFR1_EL1 (D24.2.72): HAFDBS, HPDS, PAN, SpecSEI, TWED, ETS, AFP, nTLBPA, TIDCP1,
    // CMOW, ECBHB; not VMIDBits, VH, LO (LORegions not switched), XNX, HCX.
    ((7, 1), passing![0, 12, 20, 24, 32, 36, 44, 48, 52, 56, 60]),
    // ID_AA64MMFR2_EL1 (D24.2.73): CnP, UAO, LSM, IESB, VARange, CCIDX, ST, AT, IDS, TTL, BBM,
    // E0PD; not NV, FWB, EVT.
    (
        (7, 2),
        passing![0, 4, 8, 12, 16, 20, 28, 32, 36, 48, 52, 60],
    ),
];

/// The AArch32 ID registers (CRm 1–3) and the fields hidden in them: virtualization and
/// security (no AArch32 EL1/EL2/EL3), RAS, the activity monitors, performance monitors, trace
/// and the memory-mapped debug interface.
const AARCH32_HIDDEN: &[((u8, u8), &[u32])] = &[
    // ID_PFR0: AMU [23:20], RAS [31:28]; CSV2 [19:16] is capped like the AArch64 field.
    ((1, 0), &[20, 28]),
    // ID_PFR1: Security [7:4], Virtualization [15:12], Virt_frac [23:20], Sec_frac [27:24].
    ((1, 1), &[4, 12, 20, 24]),
    // ID_DFR0: MMapDbg [11:8], CopTrc [15:12], MMapTrc [19:16], MProfDbg [23:20], PerfMon
    // [27:24], TraceFilt [31:28]; CopDbg and CopSDbg stay.
    ((1, 2), &[8, 12, 16, 20, 24, 28]),
    // ID_AFR0: implementation defined.
    ((1, 3), &[0, 4, 8, 12]),
    // ID_PFR2: CSV3 [3:0] stays; SSBS [7:4] stays; RAS_frac [11:8].
    ((3, 4), &[8]),
];

/// AArch32 ID registers that read as zero even with AArch32 EL0: ID_DFR1 (3, 5), and the
/// reserved (3, 3), (3, 7).
const AARCH32_ZERO: &[(u8, u8)] = &[(3, 3), (3, 5), (3, 7)];

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

/// The 4-bit field at `shift` of `value`.
const fn nibble(value: u64, shift: u32) -> u64 {
    (value >> shift) & 0xf
}

/// What a guest whose VM translates `ipa_bits` of IPA reads from the ID register at (CRm, op2)
/// whose hardware value is `value`. For an AArch32 ID register (CRm 1–3) `value` is the
/// hardware's and `aarch32_el0` whether the guest is shown AArch32 EL0
/// (ID_AA64PFR0_EL1.EL0 = 2, see [`guest_has_aarch32_el0`]).
#[must_use]
pub fn sanitize(crm: u8, op2: u8, value: u64, ipa_bits: u32) -> u64 {
    match crm {
        4..=7 => aarch64(crm, op2, value, ipa_bits),
        _ => 0,
    }
}

/// As [`sanitize`], for the AArch32 ID registers too: `pfr0` is the hardware's
/// ID_AA64PFR0_EL1, which says whether AArch32 EL0 exists.
#[must_use]
pub fn sanitize_with(crm: u8, op2: u8, value: u64, ipa_bits: u32, pfr0: u64) -> u64 {
    match crm {
        1..=3 if guest_has_aarch32_el0(pfr0) => aarch32(crm, op2, value),
        _ => sanitize(crm, op2, value, ipa_bits),
    }
}

/// Whether a guest on hardware with ID_AA64PFR0_EL1 `pfr0` has AArch32 at EL0.
#[must_use]
pub const fn guest_has_aarch32_el0(pfr0: u64) -> bool {
    nibble(pfr0, 0) >= 2
}

fn aarch64(crm: u8, op2: u8, value: u64, ipa_bits: u32) -> u64 {
    let Some((_, fields)) = ALLOWED.iter().find(|(at, _)| *at == (crm, op2)) else {
        return 0;
    };
    let mut shown = fields.iter().fold(0, |shown, &(shift, rule)| {
        let hardware = nibble(value, shift);
        let field = match rule {
            Rule::Pass => hardware,
            Rule::Cap(cap) => hardware.min(u64::from(cap)),
            Rule::Fixed(fixed) => u64::from(fixed),
        };
        shown | (field << shift)
    });
    if (crm, op2) == (7, 0) {
        // PARange: no more than the VM's IPA space (the largest size that fits).
        let fits = PA_RANGES
            .iter()
            .filter(|(_, bits)| *bits <= ipa_bits)
            .map(|(code, _)| *code)
            .max()
            .unwrap_or(0);
        shown = (shown & !0xf) | nibble(value, 0).min(fits);
    }
    shown
}

fn aarch32(crm: u8, op2: u8, value: u64) -> u64 {
    if AARCH32_ZERO.contains(&(crm, op2)) {
        return 0;
    }
    // The AArch32 ID registers are 32 bits.
    let mut shown = value & 0xffff_ffff;
    if let Some((_, hidden)) = AARCH32_HIDDEN.iter().find(|(at, _)| *at == (crm, op2)) {
        for shift in *hidden {
            shown &= !(0xf << shift);
        }
    }
    if (crm, op2) == (1, 0) {
        // ID_PFR0.CSV2 [19:16] at most 1, as in ID_AA64PFR0_EL1.
        let csv2 = nibble(shown, 16).min(1);
        shown = (shown & !(0xf << 16)) | (csv2 << 16);
    }
    shown
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
    }

    /// Every bit set in the hardware: exactly the allowed fields (at their caps) remain.
    #[test]
    fn an_all_ones_register_shows_only_the_allowed_fields() {
        // PFR0: EL0 2, EL1 1, FP F, AdvSIMD F, GIC 1, DIT F, CSV2 1, CSV3 F.
        assert_eq!(sanitize(4, 0, u64::MAX, 48), 0xf10f_0000_01ff_0012);
        assert_eq!(sanitize(4, 1, u64::MAX, 48), 0xff);
        // DFR0: DebugVer A, BRPs F, WRPs F, CTX_CMPs F, DoubleLock F.
        assert_eq!(sanitize(5, 0, u64::MAX, 48), 0x0000_00f0_f0f0_f00a);
        assert_eq!(sanitize(6, 0, u64::MAX, 48), 0xffff_ffff_f0ff_fff0);
        assert_eq!(sanitize(6, 1, u64::MAX, 48), 0x0fff_ffff_00ff_f00f);
        assert_eq!(sanitize(6, 2, u64::MAX, 48), 0xffff_0f00_f0f0_00f0);
        // MMFR0: PARange clamped to 48 bits (5), TGran*_2 = 1, ECV 1, no FGT.
        assert_eq!(sanitize(7, 0, u64::MAX, 48), 0x1000_f111_ffff_fff5);
        assert_eq!(sanitize(7, 1, u64::MAX, 48), 0xffff_f0ff_0ff0_f00f);
        assert_eq!(sanitize(7, 2, u64::MAX, 48), 0xf0ff_00ff_f0ff_ffff);
        // Registers of hidden features, the auxiliary ones and the reserved encodings: zero.
        for (crm, op2) in [
            (4, 2),
            (4, 3),
            (4, 4),
            (4, 5),
            (4, 6),
            (4, 7),
            (5, 1),
            (5, 4),
        ] {
            assert_eq!(sanitize(crm, op2, u64::MAX, 48), 0, "({crm}, {op2})");
        }
        for op2 in 3..8 {
            assert_eq!(sanitize(6, op2, u64::MAX, 48), 0);
            assert_eq!(sanitize(7, op2, u64::MAX, 48), 0);
        }
    }

    /// The values QEMU 10.0.2's models report (measured at EL2, `/work/notes` probe) become what
    /// a guest may rely on.
    #[test]
    fn qemu_models_show_what_capvisor_switches() {
        // cortex-a57 ID_AA64PFR0_EL1 = 0x0100_0222: EL0 and EL1 both AArch32-capable; the guest
        // sees EL1 AArch64-only and no EL2.
        assert_eq!(sanitize(4, 0, 0x0100_0222, 40), 0x0100_0012);
        // max ID_AA64PFR0_EL1 = 0x1301_0011_2111_0222: RAS (bits 31:28 = 2), SVE, AMU hidden,
        // CSV2 3 capped to 1.
        assert_eq!(
            sanitize(4, 0, 0x1301_0011_2111_0222, 40),
            0x1101_0000_0111_0012
        );
        // The physical address size: 52 bits (6) becomes 36 (1) for a 39-bit IPA space, 40 (2)
        // for a 40-bit one; a smaller one stays.
        assert_eq!(sanitize(7, 0, 0x6, 39) & 0xf, 1);
        assert_eq!(sanitize(7, 0, 0x6, 40) & 0xf, 2);
        assert_eq!(sanitize(7, 0, 0x0, 48) & 0xf, 0);
    }

    #[test]
    fn aarch32_id_registers_follow_aarch32_el0() {
        let el0_64_only = 0x11;
        let el0_32 = 0x12;
        assert_eq!(sanitize_with(1, 0, 0xffff_ffff, 40, el0_64_only), 0);
        // ID_PFR0 with AArch32 EL0: AMU and RAS hidden, CSV2 capped.
        assert_eq!(sanitize_with(1, 0, 0xffff_ffff, 40, el0_32), 0x0f01_ffff);
        // ID_PFR1: no security or virtualization.
        assert_eq!(sanitize_with(1, 1, 0xffff_ffff, 40, el0_32), 0xf00f_0f0f);
        // ID_DFR0: CopDbg and CopSDbg only.
        assert_eq!(sanitize_with(1, 2, 0xffff_ffff, 40, el0_32), 0xff);
        assert_eq!(sanitize_with(3, 5, 0xffff_ffff, 40, el0_32), 0);
        // ISAR and MVFR pass, 32 bits.
        assert_eq!(sanitize_with(2, 0, u64::MAX, 40, el0_32), 0xffff_ffff);
        // AArch64 registers are unaffected by the AArch32 rules.
        assert_eq!(
            sanitize_with(4, 1, u64::MAX, 40, el0_32),
            sanitize(4, 1, u64::MAX, 40)
        );
    }
}

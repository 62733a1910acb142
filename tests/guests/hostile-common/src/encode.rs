//! Syndromes, register fields and instruction encodings the hostile guests build or compare
//! with: pure, tested on the host.
//!
//! References: Arm ARM DDI 0487 (L.a), D24.2.40 "ESR_EL1" (exception classes and ISS layouts),
//! C5 "The A64 System Instruction Class" (system-register encodings); GIC Architecture
//! Specification IHI 0069H (GICv3 register maps).

/// ESR exception classes (ESR_ELx.EC, bits [31:26]).
pub mod ec {
    /// Unknown reason: an Undefined Instruction exception.
    pub const UNKNOWN: u64 = 0x00;
    /// Trapped MCR or MRC access with coproc == 0b1111 (CP15).
    pub const CP15_MCR_MRC: u64 = 0x03;
    /// Trapped MCR or MRC access with coproc == 0b1110 (CP14).
    pub const CP14_MCR_MRC: u64 = 0x05;
    /// SVC from AArch32.
    pub const SVC32: u64 = 0x11;
    /// SVC from AArch64.
    pub const SVC64: u64 = 0x15;
    /// Trapped MSR, MRS or System instruction (AArch64).
    pub const SYSREG: u64 = 0x18;
    /// Data abort taken without a change in exception level.
    pub const DATA_ABORT_SAME_EL: u64 = 0x25;
    /// Breakpoint from a lower EL.
    pub const BREAKPOINT_LOWER: u64 = 0x30;
    /// Breakpoint without a change in exception level.
    pub const BREAKPOINT_SAME: u64 = 0x31;
    /// Software Step from a lower EL.
    pub const STEP_LOWER: u64 = 0x32;
    /// Software Step without a change in exception level.
    pub const STEP_SAME: u64 = 0x33;
    /// Watchpoint from a lower EL.
    pub const WATCHPOINT_LOWER: u64 = 0x34;
    /// Watchpoint without a change in exception level.
    pub const WATCHPOINT_SAME: u64 = 0x35;
    /// BRK instruction (AArch64).
    pub const BRK: u64 = 0x3c;
}

/// ESR.IL, bit 25: a 32-bit instruction (or a class for which IL is always 1).
pub const IL: u64 = 1 << 25;
/// An Undefined Instruction exception's whole ESR: EC 0x00, IL = 1, ISS 0 (D24.2.40: IL is 1
/// for EC 0x00).
pub const ESR_UNDEF: u64 = IL;
/// Data abort DFSC values (ISS [5:0]).
pub const DFSC_SYNC_EXTERNAL: u64 = 0x10;
/// DFSC: alignment fault.
pub const DFSC_ALIGNMENT: u64 = 0x21;
/// Data abort ISS.ISV, bit 24: the syndrome holds a valid instruction description.
pub const ISS_ISV: u64 = 1 << 24;
/// Data abort ISS.WnR, bit 6: a write.
pub const ISS_WNR: u64 = 1 << 6;

/// The exception class of `esr`.
#[must_use]
pub const fn class(esr: u64) -> u64 {
    (esr >> 26) & 0x3f
}

/// The ISS (bits [24:0]) of `esr`.
#[must_use]
pub const fn iss(esr: u64) -> u64 {
    esr & 0x1ff_ffff
}

/// The ISS of a trapped MRS/MSR (EC 0x18): Op0 [21:20], Op2 [19:17], Op1 [16:14], CRn
/// [13:10], Rt [9:5], CRm [4:1], Direction [0] (1 = read).
#[must_use]
pub const fn sysreg_iss(
    op0: u64,
    op1: u64,
    crn: u64,
    crm: u64,
    op2: u64,
    rt: u64,
    read: bool,
) -> u64 {
    (op0 << 20) | (op2 << 17) | (op1 << 14) | (crn << 10) | (rt << 5) | (crm << 1) | read as u64
}

/// ICC_SGI1R_EL1 for SGI `intid` to the Aff0 values in `targets` of affinity 0.0.0 (IHI 0069H
/// 12.2.21: INTID [27:24], TargetList [15:0]).
#[must_use]
pub const fn sgi1r(intid: u64, targets: u16) -> u64 {
    ((intid & 0xf) << 24) | targets as u64
}

/// Field `[shift + width - 1 : shift]` of `value`.
#[must_use]
pub const fn field(value: u64, shift: u32, width: u32) -> u64 {
    (value >> shift) & ((1 << width) - 1)
}

/// A 4-bit ID register field.
#[must_use]
pub const fn nibble(value: u64, shift: u32) -> u64 {
    field(value, shift, 4)
}

/// A32 `MRC p<coproc>, <opc1>, r<rt>, c<crn>, c<crm>, <opc2>` (condition AL): cond 1110,
/// 1110, opc1 [23:21], L = 1 [20], CRn [19:16], Rt [15:12], coproc [11:8], opc2 [7:5], 1 [4],
/// CRm [3:0] (Arm ARM F5.1.108 MRC).
#[must_use]
pub const fn a32_mrc(coproc: u32, opc1: u32, rt: u32, crn: u32, crm: u32, opc2: u32) -> u32 {
    0xee10_0010 | (opc1 << 21) | (crn << 16) | (rt << 12) | (coproc << 8) | (opc2 << 5) | crm
}

/// A32 `SVC #imm24` (condition AL).
#[must_use]
pub const fn a32_svc(imm: u32) -> u32 {
    0xef00_0000 | (imm & 0xff_ffff)
}

/// T32 16-bit `SVC #imm8`.
#[must_use]
pub const fn t32_svc(imm: u8) -> u16 {
    0xdf00 | imm as u16
}

/// T32 16-bit `WFI`.
pub const T32_WFI: u16 = 0xbf30;

/// GICv3 register offsets (IHI 0069H 12.9 distributor, 12.10/12.11 redistributor).
pub mod gic {
    /// The distributor (QEMU `virt`, the guest contract).
    pub const GICD: u64 = 0x0800_0000;
    /// vCPU 0's redistributor: RD_base; SGI_base is 64 KiB above.
    pub const GICR: u64 = 0x080a_0000;
    /// vCPU 0's SGI_base frame.
    pub const SGI_BASE: u64 = GICR + 0x1_0000;
    /// GICD_CTLR.
    pub const GICD_CTLR: u64 = 0x0000;
    /// GICD_IGROUPR<n>, GICD_ISENABLER<n>, GICD_ISPENDR<n>, GICD_ICPENDR<n>, GICD_ISACTIVER<n>,
    /// GICD_ICACTIVER<n>: one bit per INTID, word n covers INTIDs 32n to 32n + 31.
    pub const IGROUPR: u64 = 0x0080;
    /// Set-enable.
    pub const ISENABLER: u64 = 0x0100;
    /// Clear-enable.
    pub const ICENABLER: u64 = 0x0180;
    /// Set-pending.
    pub const ISPENDR: u64 = 0x0200;
    /// Clear-pending.
    pub const ICPENDR: u64 = 0x0280;
    /// Set-active.
    pub const ISACTIVER: u64 = 0x0300;
    /// Clear-active.
    pub const ICACTIVER: u64 = 0x0380;
    /// Priority bytes, one per INTID.
    pub const IPRIORITYR: u64 = 0x0400;
    /// GICD_IROUTER<n>, 8 bytes per SPI n (from 0x6100 for INTID 32).
    pub const IROUTER: u64 = 0x6000;

    /// The word offset and bit of `intid` in a one-bit-per-INTID register bank.
    #[must_use]
    pub const fn bit(intid: u64) -> (u64, u32) {
        ((intid / 32) * 4, (intid % 32) as u32)
    }
}

/// The top half of every secret a hostile guest writes into a register (the EL0 witness
/// service recognises the same tag).
pub const SECRET_TAG: u64 = 0x5ec2_e700;

/// A secret with tag [`SECRET_TAG`] and number `n`.
#[must_use]
pub const fn secret(n: u32) -> u64 {
    (SECRET_TAG << 32) | n as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysreg_syndromes_match_the_arm_arm_layout() {
        // MRS x0, CNTP_CTL_EL0 (op0 3, op1 3, CRn 14, CRm 2, op2 1), a read: as hardware
        // reports it in ESR_EL1 = 0x6232f805.
        let iss = sysreg_iss(3, 3, 14, 2, 1, 0, true);
        assert_eq!(iss, 0x32_f805);
        assert_eq!((ec::SYSREG << 26) | IL | iss, 0x6232_f805);
        // MRS x0, CNTVCT_EL0 (op2 2): 0x6234f801.
        assert_eq!(sysreg_iss(3, 3, 14, 0, 2, 0, true), 0x34_f801);
    }

    #[test]
    fn aarch32_encodings_match_an_assembler() {
        // mrc p14, 0, r0, c0, c0, 0 (DBGDIDR) and mrc p15, 0, r0, c9, c12, 0 (PMCR), bit by
        // bit from the A1 encoding (and as disassemblers show them: ee100e10, ee190f1c).
        assert_eq!(a32_mrc(14, 0, 0, 0, 0, 0), 0xee10_0e10);
        assert_eq!(a32_mrc(15, 0, 0, 9, 12, 0), 0xee19_0f1c);
        assert_eq!(a32_svc(0x11), 0xef00_0011);
        assert_eq!(t32_svc(1), 0xdf01);
        assert_eq!(T32_WFI, 0xbf30);
    }

    #[test]
    fn fields_and_bits() {
        assert_eq!(nibble(0x0100_0222, 0), 2);
        assert_eq!(nibble(0x0100_0222, 24), 1);
        assert_eq!(field(0xf0, 4, 2), 3);
        assert_eq!(gic::bit(30), (0, 30));
        assert_eq!(gic::bit(40), (4, 8));
        assert_eq!(sgi1r(5, 1), 0x0500_0001);
        assert_eq!(class(0x9600_0010), ec::DATA_ABORT_SAME_EL);
        assert_eq!(iss(0x9600_0010), 0x10);
        assert_eq!(secret(1) >> 32, SECRET_TAG);
    }
}

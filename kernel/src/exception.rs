//! What the hardware would do to a guest's PSTATE and PC, done by the kernel: stepping past an
//! instruction it emulated, and taking a synchronous exception to the guest's EL1 (an Undefined
//! Instruction for a trapped access the machine does not implement, an abort its VMM asks for).
//! Pure functions of the saved context and EL1 state, so the host tests check them against the
//! Arm ARM's pseudocode: `AArch64.TakeException` (J1.1) for exception entry, D24.2.40 (ESR_ELx.IL)
//! and the AArch32 IT state (`AArch32.ITAdvance`, J1.2) for stepping.

use crate::context::{El1State, ThreadContext, sys};
use crate::esr;

/// SPSR.M[4]: the interrupted state was AArch32.
const M_AARCH32: u64 = 1 << 4;
/// SPSR.SS (bit 21): software step.
const SS: u64 = 1 << 21;
/// SPSR.IL (bit 20): illegal execution state.
const IL: u64 = 1 << 20;
/// SPSR.BTYPE [11:10] (AArch64 only).
const BTYPE: u64 = 0b11 << 10;
/// SPSR.T (bit 5, AArch32): T32.
const T32: u64 = 1 << 5;
/// SPSR IT[1:0] at [26:25] and IT[7:2] at [15:10] (AArch32).
const IT_LOW: u64 = 0b11 << 25;
const IT_HIGH: u64 = 0x3f << 10;
/// PSTATE bits of AArch64 EL1h with D, A, I and F masked.
const EL1H_MASKED: u64 = 0x3c5;
/// PSTATE.PAN (bit 22), UAO (bit 23), SSBS (bit 12), DIT (bit 24), TCO (bit 25), NZCV [31:28].
const PAN: u64 = 1 << 22;
const SSBS: u64 = 1 << 12;
const DIT: u64 = 1 << 24;
const NZCV: u64 = 0xf << 28;
/// SCTLR_EL1.SPAN (bit 23): 0 means PAN is set on exception entry to EL1.
const SCTLR_SPAN: u64 = 1 << 23;
/// SCTLR_EL1.DSSBS (bit 44): the value PSTATE.SSBS takes on exception entry to EL1.
const SCTLR_DSSBS: u64 = 1 << 44;

/// Features of the processor that change exception entry (Arm ARM `AArch64.TakeException`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EntryFeatures {
    /// FEAT_PAN (ID_AA64MMFR1_EL1.PAN ≥ 1).
    pub pan: bool,
    /// FEAT_SSBS (ID_AA64PFR1_EL1.SSBS ≥ 1).
    pub ssbs: bool,
    /// FEAT_DIT (ID_AA64PFR0_EL1.DIT ≥ 1).
    pub dit: bool,
}

/// The length of the instruction an exit trapped: 2 for a 16-bit T32 instruction, else 4
/// (ESR_ELx.IL, Arm ARM D24.2.40).
#[must_use]
pub const fn instruction_length(esr: u64) -> u64 {
    if esr & (1 << 25) != 0 { 4 } else { 2 }
}

/// Whether an AArch32 condition code holds for the flags in `spsr` (`ConditionHolds`, J1.3).
#[must_use]
pub const fn condition_holds(cond: u64, spsr: u64) -> bool {
    let (n, z, c, v) = (
        spsr & (1 << 31) != 0,
        spsr & (1 << 30) != 0,
        spsr & (1 << 29) != 0,
        spsr & (1 << 28) != 0,
    );
    let result = match (cond >> 1) & 0b111 {
        0b000 => z,
        0b001 => c,
        0b010 => n,
        0b011 => v,
        0b100 => c && !z,
        0b101 => n == v,
        0b110 => n == v && !z,
        _ => true,
    };
    // Condition 0b1111 is "always" too (an unconditional instruction's encoding).
    if cond & 1 == 1 && cond != 0b1111 {
        !result
    } else {
        result
    }
}

/// Whether a trapped AArch32 instruction would execute: its ISS says whether the condition is
/// valid (CV, bit 24) and what it is (COND [23:20]); an instruction that fails its condition
/// is stepped over without its effect (Arm ARM D24.2.40, "ISS encoding for an exception from an
/// MCR or MRC access": CV and COND). Always true for AArch64.
#[must_use]
pub const fn passes_condition(esr: u64, spsr: u64) -> bool {
    if spsr & M_AARCH32 == 0 {
        return true;
    }
    let iss = esr & 0x1ff_ffff;
    if iss & (1 << 24) == 0 {
        // CV = 0: only for T32 outside an IT block, where the instruction is unconditional.
        return true;
    }
    condition_holds((iss >> 20) & 0xf, spsr)
}

/// Steps the guest past the instruction an exit with syndrome `esr` trapped, as completing it
/// would: PC advanced by its length; SS and (AArch64) BTYPE cleared — the step of a software
/// step completes, the next instruction is not a branch target (D2.12.5); in AArch32 T32 state
/// the IT block advances (`AArch32.ITAdvance`).
pub fn step(context: &mut ThreadContext, esr: u64) {
    let length = instruction_length(esr);
    if context.spsr & M_AARCH32 != 0 {
        context.pc = (context.pc + length) & 0xffff_ffff;
        if context.spsr & T32 != 0 {
            context.spsr = advance_it(context.spsr);
        }
        context.spsr &= !SS;
    } else {
        context.pc = context.pc.wrapping_add(length);
        context.spsr &= !(SS | BTYPE);
    }
}

/// The IT state after one instruction of an IT block (`AArch32.ITAdvance`): IT[7:0] is
/// SPSR[15:10]:SPSR[26:25]; when IT[2:0] is zero the block ends, else IT[4:0] shifts left.
#[must_use]
pub const fn advance_it(spsr: u64) -> u64 {
    let it = ((spsr >> 10) & 0x3f) << 2 | ((spsr >> 25) & 0b11);
    let next = if it & 0b111 == 0 {
        0
    } else {
        (it & 0xe0) | ((it << 1) & 0x1f)
    };
    (spsr & !(IT_LOW | IT_HIGH)) | ((next >> 2) << 10) | ((next & 0b11) << 25)
}

/// The vector offset of a synchronous exception to EL1 from the state in `spsr`: 0x000 from
/// EL1t, 0x200 from EL1h, 0x400 from AArch64 EL0, 0x600 from AArch32 EL0 (Table D1-7); `None`
/// for a state an exception cannot come from to EL1 (EL2, an AArch32 mode other than User).
#[must_use]
pub const fn sync_vector_offset(spsr: u64) -> Option<u64> {
    match spsr & 0x1f {
        0b00101 => Some(0x200),
        0b00100 => Some(0x000),
        0b00000 => Some(0x400),
        0b10000 => Some(0x600),
        _ => None,
    }
}

/// Takes a synchronous exception with syndrome `esr` and fault address `far` to the guest's EL1,
/// as `AArch64.TakeException` does: ELR_EL1 = the interrupted PC, SPSR_EL1 = the interrupted
/// PSTATE, ESR_EL1 and FAR_EL1 as given; PSTATE = AArch64 EL1h with D, A, I, F masked, SS, IL
/// and BTYPE clear, NZCV and DIT kept, PAN set if SCTLR_EL1.SPAN is 0 (else kept), SSBS =
/// SCTLR_EL1.DSSBS; PC = VBAR_EL1 + the vector offset. `el1` must be the vCPU's current EL1
/// state. Returns `false` (nothing changed) when the interrupted state cannot take an exception
/// to EL1.
pub fn take_exception(
    context: &mut ThreadContext,
    el1: &mut El1State,
    features: EntryFeatures,
    esr: u64,
    far: u64,
) -> bool {
    let Some(offset) = sync_vector_offset(context.spsr) else {
        return false;
    };
    let old = context.spsr;
    let sctlr = el1.sys[sys::SCTLR];
    let mut pstate = EL1H_MASKED;
    if old & M_AARCH32 == 0 {
        pstate |= old & NZCV;
        if features.dit {
            pstate |= old & DIT;
        }
        if features.pan {
            pstate |= old & PAN;
        }
    } else {
        // From AArch32 the flags are the same bits; DIT is bit 21 there (with FEAT_DIT), PAN is
        // bit 22 (AArch32 PAN exists only with an AArch32 EL1, which guests do not have).
        pstate |= old & NZCV;
        if features.dit && old & (1 << 21) != 0 {
            pstate |= DIT;
        }
    }
    if features.pan && sctlr & SCTLR_SPAN == 0 {
        pstate |= PAN;
    }
    if features.ssbs && sctlr & SCTLR_DSSBS != 0 {
        pstate |= SSBS;
    }
    el1.sys[sys::ESR] = esr;
    el1.sys[sys::FAR] = far;
    el1.sys[sys::ELR] = context.pc;
    el1.sys[sys::SPSR] = old & !IL;
    context.spsr = pstate;
    context.pc = (el1.sys[sys::VBAR] & !0x7ff) | offset;
    true
}

/// ESR_EL1 of an Undefined Instruction exception: EC 0x00 with IL = 1 (required for EC 0x00,
/// D24.2.40) and ISS 0.
pub const UNDEFINED_ESR: u64 = (esr::ec::UNKNOWN as u64) << 26 | 1 << 25;

/// Makes the trapped instruction UNDEFINED for the guest: an Undefined Instruction exception to
/// its EL1 at that instruction (`false` when it cannot take one; see [`take_exception`]).
pub fn undefined(context: &mut ThreadContext, el1: &mut El1State, features: EntryFeatures) -> bool {
    take_exception(context, el1, features, UNDEFINED_ESR, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el1(vbar: u64, sctlr: u64) -> El1State {
        let mut s = El1State::RESET;
        s.sys[sys::VBAR] = vbar;
        s.sys[sys::SCTLR] = sctlr;
        s
    }

    const ALL: EntryFeatures = EntryFeatures {
        pan: true,
        ssbs: true,
        dit: true,
    };

    #[test]
    fn an_undefined_instruction_enters_el1_as_the_arm_arm_says() {
        // From EL1h with NZCV = 0b1010, PAN set, DIT set, SS set, BTYPE 0b11, interrupts unmasked.
        let old = 0xa000_0000 | PAN | DIT | SS | BTYPE | 0b00101;
        let mut c = ThreadContext {
            pc: 0x4020_1000,
            spsr: old,
            ..ThreadContext::ZERO
        };
        // SPAN = 1 keeps PAN; DSSBS = 1 sets SSBS.
        let mut s = el1(0x4000_0800, SCTLR_SPAN | SCTLR_DSSBS);
        assert!(undefined(&mut c, &mut s, ALL));
        assert_eq!(c.pc, 0x4000_0800 + 0x200);
        assert_eq!(c.spsr, 0xa000_0000 | PAN | DIT | SSBS | 0x3c5);
        assert_eq!(s.sys[sys::ESR], 0x0200_0000);
        assert_eq!(s.sys[sys::ELR], 0x4020_1000);
        assert_eq!(s.sys[sys::SPSR], old);
        // SPAN = 0 sets PAN; without the features nothing but NZCV survives.
        let mut c = ThreadContext {
            pc: 0x1000,
            spsr: 0x6000_0000,
            ..ThreadContext::ZERO
        };
        let mut s = el1(0x8000, 0);
        assert!(take_exception(&mut c, &mut s, ALL, 0x9200_0010, 0x1234));
        assert_eq!(c.spsr, 0x6000_0000 | PAN | 0x3c5);
        assert_eq!((c.pc, s.sys[sys::FAR]), (0x8400, 0x1234));
        let mut c = ThreadContext {
            spsr: 0x6000_0000 | PAN | DIT,
            ..ThreadContext::ZERO
        };
        assert!(undefined(&mut c, &mut s, EntryFeatures::default()));
        assert_eq!(c.spsr, 0x6000_0000 | 0x3c5);
    }

    #[test]
    fn vectors_follow_the_interrupted_state() {
        for (mode, offset) in [(0b00100, 0), (0b00101, 0x200), (0, 0x400), (0b10000, 0x600)] {
            let mut c = ThreadContext {
                spsr: mode,
                ..ThreadContext::ZERO
            };
            let mut s = el1(0x10_0000, 0);
            assert!(undefined(&mut c, &mut s, ALL));
            assert_eq!(c.pc, 0x10_0000 + offset, "mode {mode:#x}");
        }
        // EL2 or an AArch32 mode other than User: refused, nothing changed.
        for mode in [0b01001, 0b10011, 0b11111] {
            let mut c = ThreadContext {
                spsr: mode,
                pc: 7,
                ..ThreadContext::ZERO
            };
            let mut s = el1(0x10_0000, 0);
            assert!(!undefined(&mut c, &mut s, ALL));
            assert_eq!((c.pc, c.spsr), (7, mode));
        }
    }

    #[test]
    fn stepping_uses_the_instruction_length_and_the_it_state() {
        // AArch64: 4 bytes, SS and BTYPE cleared.
        let mut c = ThreadContext {
            pc: 0x1000,
            spsr: SS | BTYPE | 0b00101,
            ..ThreadContext::ZERO
        };
        step(&mut c, 1 << 25);
        assert_eq!((c.pc, c.spsr), (0x1004, 0b00101));
        // A 16-bit T32 WFI from AArch32 User: IL = 0, 2 bytes.
        let user_t32 = M_AARCH32 | T32;
        let mut c = ThreadContext {
            pc: 0x8000,
            spsr: user_t32,
            ..ThreadContext::ZERO
        };
        step(&mut c, 0x0400_0000);
        assert_eq!((c.pc, c.spsr), (0x8002, user_t32));
        // Inside an IT block: ITTE EQ (IT = 0b0000_0110 after the first instruction).
        let it = 0b0000_0110u64;
        let spsr = user_t32 | ((it >> 2) << 10) | ((it & 0b11) << 25);
        let next = advance_it(spsr);
        let it_next = ((next >> 10) & 0x3f) << 2 | ((next >> 25) & 0b11);
        assert_eq!(it_next, 0b0000_1100);
        // The last instruction of a block ends it.
        let last = user_t32 | ((0b0000_1000u64 >> 2) << 10);
        assert_eq!(advance_it(last), user_t32);
    }

    #[test]
    fn conditions_are_evaluated_from_the_flags() {
        let z = 1 << 30;
        assert!(condition_holds(0b0000, z)); // EQ
        assert!(!condition_holds(0b0001, z)); // NE
        assert!(condition_holds(0b1110, 0)); // AL
        assert!(condition_holds(0b1111, 0));
        let n = 1 << 31;
        assert!(condition_holds(0b1011, n)); // LT: N != V
        assert!(!condition_holds(0b1010, n)); // GE
        // CV = 1, COND = NE, with Z set: the instruction is skipped.
        let esr = (0x03 << 26) | (1 << 25) | (1 << 24) | (0b0001 << 20);
        assert!(!passes_condition(esr, M_AARCH32 | z));
        assert!(passes_condition(esr, M_AARCH32));
        assert!(passes_condition(esr, z), "AArch64 has no condition");
    }
}

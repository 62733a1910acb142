//! Debug register values and the syndromes debug exceptions report (Arm ARM DDI 0487 L.a: D2
//! "AArch64 Self-hosted Debug", D24.3 DBGBCR<n>_EL1 / DBGWCR<n>_EL1 / MDSCR_EL1, D24.2.40
//! ESR_EL1 ISS encodings for breakpoint, watchpoint and software step exceptions): pure, tested
//! on the host.

#![cfg_attr(not(target_os = "none"), allow(dead_code))]

use hostile_guest_common::encode::{IL, ISS_WNR, ec};

/// MDSCR_EL1.SS (bit 0): software step enabled.
pub const MDSCR_SS: u64 = 1 << 0;
/// MDSCR_EL1.KDE (bit 13): debug exceptions at the debug target EL itself (when PSTATE.D = 0).
pub const MDSCR_KDE: u64 = 1 << 13;
/// MDSCR_EL1.MDE (bit 15): breakpoint and watchpoint exceptions enabled.
pub const MDSCR_MDE: u64 = 1 << 15;

/// Privilege mode control (DBGBCR.PMC, DBGWCR.PAC, bits [2:1], with HMC = 0 and SSC = 0b00):
/// match at EL1 only, EL0 only, or both.
pub const AT_EL1: u64 = 0b01;
/// Match at EL0 only.
pub const AT_EL0: u64 = 0b10;
/// Match at EL1 and EL0.
pub const AT_EL1_EL0: u64 = 0b11;

/// DBGBCR<n>_EL1 for an address-match breakpoint on an A64 instruction: BAS = 0b1111 (bits
/// [8:5]), PMC, E (bit 0).
#[must_use]
pub const fn bcr(pmc: u64) -> u64 {
    (0b1111 << 5) | (pmc << 1) | 1
}

/// DBGWCR<n>_EL1 for a watchpoint on loads and stores (LSC = 0b11, bits [4:3]) of the bytes BAS
/// selects (bits [12:5]) of the doubleword at DBGWVR, or, with `mask` (bits [28:24]), of the
/// 2^mask bytes there; PAC, E.
#[must_use]
pub const fn wcr(pac: u64, bas: u64, mask: u64) -> u64 {
    (mask << 24) | (bas << 5) | (0b11 << 3) | (pac << 1) | 1
}

/// The fault status code of every debug exception (ISS [5:0]: 0b100010, "Debug exception").
pub const DEBUG_FSC: u64 = 0x22;
/// ISS.ISV (bit 24) of a software step exception: ISS.EX is valid.
pub const STEP_ISV: u64 = 1 << 24;

/// ESR_EL1 of a breakpoint taken at EL1 from EL1.
pub const ESR_BREAKPOINT_EL1: u64 = (ec::BREAKPOINT_SAME << 26) | IL | DEBUG_FSC;
/// ESR_EL1 of a watchpoint taken at EL1 from EL1 on a store (WnR).
pub const ESR_WATCHPOINT_STORE_EL1: u64 = (ec::WATCHPOINT_SAME << 26) | IL | ISS_WNR | DEBUG_FSC;
/// ESR_EL1 of a software step from EL0 after an instruction that was not a load-exclusive
/// (ISV = 1, EX = 0).
pub const ESR_STEP_FROM_EL0: u64 = (ec::STEP_LOWER << 26) | IL | STEP_ISV | DEBUG_FSC;

/// OSLSR_EL1 with the OS lock implemented (OSLM = 0b10: bit 3 set, bit 0 clear) and OSLK (bit
/// 1) as given.
#[must_use]
pub const fn oslsr(locked: bool) -> u64 {
    0b1000 | ((locked as u64) << 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_registers() {
        // Linux's hw_breakpoint for an EL1 execute breakpoint: 0x1e3 (BAS 0xf, PMC EL1, E).
        assert_eq!(bcr(AT_EL1), 0x1e3);
        assert_eq!(bcr(AT_EL1_EL0), 0x1e7);
        // An 8-byte load/store watchpoint at EL1 and EL0: BAS 0xff, LSC 3, PAC 3, E.
        assert_eq!(wcr(AT_EL1_EL0, 0xff, 0), 0x1fff);
        assert_eq!(wcr(AT_EL0, 0xff, 31) >> 24, 31);
    }

    #[test]
    fn syndromes() {
        assert_eq!(ESR_BREAKPOINT_EL1, 0xc600_0022);
        assert_eq!(ESR_WATCHPOINT_STORE_EL1, 0xd600_0062);
        assert_eq!(ESR_STEP_FROM_EL0, 0xcb00_0022);
        assert_eq!(oslsr(true), 0xa);
        assert_eq!(oslsr(false), 0x8);
    }
}

//! A guest's trapped system-register accesses that the kernel answers itself, because the answer
//! is a fact about the machine the guest is given, not a policy of its VMM:
//!
//! - **feature ID registers** (HCR_EL2.TID3): the allowlist of [`crate::idregs`];
//! - **the debug registers** (MDCR_EL2.{TDA, TDOSA, TDRA}): breakpoints, watchpoints, MDSCR_EL1
//!   and the OS Lock are kept per vCPU here and loaded into the hardware only while that vCPU
//!   runs with debug enabled (the glue), so debugging works inside a guest and never reaches
//!   another guest or a service; the rest of the debug interface (DCC, claim tags, OS double
//!   lock, power control, the ROM address) reads as zero and ignores writes;
//! - **the EL1 physical timer** (CNTHCTL_EL2.EL1PCEN = 0): CNTP_CTL/CVAL/TVAL_EL0 are emulated per
//!   vCPU against the physical count; the glue delivers its interrupt (PPI 30) when its level is
//!   high;
//! - **ACTLR_EL1** (HCR_EL2.TACR): implementation defined, not switched: reads as zero, writes
//!   are ignored;
//! - **what the guest is told is absent** is UNDEFINED, as on a CPU without it: the PMU
//!   (MDCR_EL2.TPM/TPMCR), statistical profiling (TPMS), trace (CPTR_EL2.TTA, MDCR_EL2.TTRF),
//!   the activity monitors (CPTR_EL2.TAM), RAS error records (HCR_EL2.TERR), LORegions
//!   (HCR_EL2.TLOR), pointer-authentication keys (HCR_EL2.APK), SCXTNUM (HCR_EL2.EnSCXT = 0),
//!   implementation-defined registers (HCR_EL2.TIDCP), and every encoding not listed here.
//!
//! Three kinds go to the VMM: writes of the SGI generation registers (ICC_SGI0R/SGI1R/ASGI1R_EL1,
//! its virtual GIC's business), set/way cache maintenance (HCR_EL2.TSW), and a guest's
//! ICC_DIR_EL1 write (ICH_HCR_EL2.TDIR) for an interrupt no list register holds — the glue
//! deactivates one they hold before it gets here.
//!
//! From AArch32 EL0 the same rules hold: the physical timer's CP15 encodings are emulated, every
//! other trapped CP14/CP15 access is UNDEFINED.

use crate::idregs;
use capvisor_ipc::protocols::fault::SysRegAccess;

/// The most breakpoints and watchpoints a vCPU has (ID_AA64DFR0_EL1.BRPs/WRPs + 1, at most 16
/// with DebugVer up to Armv8.8; the allowlist caps DebugVer there).
pub const MAX_POINTS: usize = 16;

/// MDSCR_EL1 bits kept per vCPU: SS (0), TDCC (12), KDE (13), MDE (15). The others are read-only
/// status of the DCC or halting debug, which capvisor does not provide (read as zero).
pub const MDSCR_KEPT: u64 = (1 << 0) | (1 << 12) | (1 << 13) | (1 << 15);
/// MDSCR_EL1.SS, KDE and MDE: what makes debug exceptions fire.
const MDSCR_DEBUG: u64 = (1 << 0) | (1 << 13) | (1 << 15);
/// DBGBCR<n>_EL1 bits a guest may set: BT [23:20], LBN [19:16], BAS [8:5], PMC [2:1], E [0].
/// HMC [13] and SSC [15:14] stay zero: matching at EL2 or in another security state is not the
/// guest's (Arm ARM D24.3.2, DBGBCR<n>_EL1).
const BCR_KEPT: u64 = (0xf << 20) | (0xf << 16) | (0xf << 5) | (0b11 << 1) | 1;
/// DBGBCR<n>_EL1.BT values a guest may use: unlinked and linked address match, unlinked and
/// linked context-ID match (0b0000–0b0011). The VMID-matching types belong to EL2; a write of
/// another type stores type 0.
const BT_MAX: u64 = 0b0011;
/// DBGWCR<n>_EL1 bits a guest may set: MASK [28:24], WT [20], LBN [19:16], BAS [12:5],
/// LSC [4:3], PAC [2:1], E [0] (HMC and SSC as for breakpoints; D24.3.12).
const WCR_KEPT: u64 =
    (0x1f << 24) | (1 << 20) | (0xf << 16) | (0xff << 5) | (0b11 << 3) | (0b11 << 1) | 1;
/// OSLSR_EL1: OSLM = 0b10 (the OS Lock is implemented, bit 3) and OSLK (bit 1).
const OSLSR_OSLM: u64 = 1 << 3;

/// One vCPU's emulated debug state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DebugState {
    /// DBGBCR<n>_EL1.
    pub bcr: [u64; MAX_POINTS],
    /// DBGBVR<n>_EL1.
    pub bvr: [u64; MAX_POINTS],
    /// DBGWCR<n>_EL1.
    pub wcr: [u64; MAX_POINTS],
    /// DBGWVR<n>_EL1.
    pub wvr: [u64; MAX_POINTS],
    /// MDSCR_EL1 (only [`MDSCR_KEPT`]).
    pub mdscr: u64,
    /// MDCCINT_EL1.
    pub mdccint: u64,
    /// The OS Lock (OSLAR_EL1 writes it, OSLSR_EL1.OSLK reads it; clear at reset, as KVM
    /// chooses: a guest kernel unlocks it at boot either way).
    pub oslk: bool,
    /// A breakpoint or watchpoint register changed since the glue last loaded them.
    pub changed: bool,
}

impl DebugState {
    /// At reset: nothing armed.
    pub const RESET: Self = Self {
        bcr: [0; MAX_POINTS],
        bvr: [0; MAX_POINTS],
        wcr: [0; MAX_POINTS],
        wvr: [0; MAX_POINTS],
        mdscr: 0,
        mdccint: 0,
        oslk: false,
        changed: false,
    };

    /// The MDSCR_EL1 the hardware holds while the vCPU runs: its own, but with the OS Lock set no
    /// debug exception fires (`AArch64.GenerateDebugExceptionsFrom`), which the kernel obtains by
    /// clearing SS, KDE and MDE (the hardware's OS Lock stays clear for everyone else).
    #[must_use]
    pub const fn hardware_mdscr(&self) -> u64 {
        if self.oslk {
            self.mdscr & !MDSCR_DEBUG
        } else {
            self.mdscr
        }
    }

    /// Whether the vCPU can take breakpoint or watchpoint exceptions (so its registers must be
    /// in the hardware while it runs).
    #[must_use]
    pub const fn armed(&self) -> bool {
        self.hardware_mdscr() & ((1 << 13) | (1 << 15)) != 0
    }
}

/// One vCPU's emulated EL1 physical timer (CNTP_*_EL0, Arm ARM D11.2 "The AArch64 view of the
/// Generic Timer"): its compare value against the physical count, ENABLE and IMASK.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PhysicalTimer {
    /// CNTP_CTL_EL0.{ENABLE, IMASK} (bits 0 and 1).
    pub ctl: u64,
    /// CNTP_CVAL_EL0.
    pub cval: u64,
}

impl PhysicalTimer {
    /// At reset: disabled.
    pub const RESET: Self = Self { ctl: 0, cval: 0 };

    /// ISTATUS: the condition is met (UNKNOWN while disabled: zero here).
    #[must_use]
    pub const fn condition(&self, now: u64) -> bool {
        self.ctl & 1 == 1 && now >= self.cval
    }

    /// The interrupt's level: enabled, not masked, condition met.
    #[must_use]
    pub const fn level(&self, now: u64) -> bool {
        self.ctl & 0b11 == 0b01 && now >= self.cval
    }

    /// When its interrupt will be asserted, if it is armed (physical count).
    #[must_use]
    pub const fn deadline(&self) -> Option<u64> {
        if self.ctl & 0b11 == 0b01 {
            Some(self.cval)
        } else {
            None
        }
    }

    /// CNTP_CTL_EL0 as read.
    #[must_use]
    pub const fn read_ctl(&self, now: u64) -> u64 {
        (self.ctl & 0b11) | ((self.condition(now) as u64) << 2)
    }

    /// CNTP_TVAL_EL0 as read: the signed 32-bit distance to the compare value; bits [63:32] are
    /// RES0.
    #[must_use]
    pub const fn read_tval(&self, now: u64) -> u64 {
        self.cval.wrapping_sub(now) & 0xffff_ffff
    }

    /// A write of CNTP_TVAL_EL0: the compare value becomes now + the sign-extended low word.
    pub const fn write_tval(&mut self, now: u64, value: u64) {
        self.cval = now.wrapping_add(value as u32 as i32 as i64 as u64);
    }
}

/// Everything the kernel emulates for one vCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Emulated {
    /// Debug registers.
    pub debug: DebugState,
    /// The EL1 physical timer.
    pub ptimer: PhysicalTimer,
}

impl Emulated {
    /// At vCPU reset.
    pub const RESET: Self = Self {
        debug: DebugState::RESET,
        ptimer: PhysicalTimer::RESET,
    };
}

/// What the hardware has, for the emulation (read once at boot).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hardware {
    /// Breakpoints implemented (ID_AA64DFR0_EL1.BRPs + 1, at most [`MAX_POINTS`]).
    pub breakpoints: usize,
    /// Watchpoints implemented (WRPs + 1, at most [`MAX_POINTS`]).
    pub watchpoints: usize,
    /// DBGAUTHSTATUS_EL1 (read-only, passed through).
    pub authstatus: u64,
    /// The VM's IPA size, for ID_AA64MMFR0_EL1.PARange.
    pub ipa_bits: u32,
}

impl Hardware {
    /// From the hardware's ID_AA64DFR0_EL1 and DBGAUTHSTATUS_EL1.
    #[must_use]
    pub const fn new(dfr0: u64, authstatus: u64, ipa_bits: u32) -> Self {
        const fn count(dfr0: u64, shift: u32) -> usize {
            let n = ((dfr0 >> shift) & 0xf) as usize + 1;
            if n > MAX_POINTS { MAX_POINTS } else { n }
        }
        Self {
            breakpoints: count(dfr0, 12),
            watchpoints: count(dfr0, 20),
            authstatus,
            ipa_bits,
        }
    }
}

/// What the glue does with a trapped access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A read: this value goes to the target register (nothing to an XZR target); step past.
    Read(u64),
    /// An AArch32 64-bit read (MRRC): the low word to Rt, the high word to Rt2; step past.
    ReadPair(u64, u64),
    /// A write the kernel took (or ignored); step past.
    Written,
    /// An Undefined Instruction exception to the guest's EL1.
    Undefined,
    /// The VMM decides (delivered as a guest fault).
    Vmm,
}

/// Answers a trapped AArch64 MRS/MSR/SYS (ESR_EL2.EC 0x18) of a vCPU: `written` is the source
/// register's value for a write, `now` the physical count, `id_register(crm, op2)` the
/// hardware's feature ID register.
pub fn emulate(
    access: &SysRegAccess,
    written: u64,
    vcpu: &mut Emulated,
    hardware: &Hardware,
    now: u64,
    id_register: impl Fn(u8, u8) -> u64,
) -> Outcome {
    let SysRegAccess {
        op0,
        op1,
        crn,
        crm,
        op2,
        write,
        ..
    } = *access;
    match (op0, op1, crn, crm, op2) {
        // The feature ID registers (read-only).
        (3, 0, 0, 1..=7, _) if !write => Outcome::Read(idregs::sanitize_with(
            crm,
            op2,
            id_register(crm, op2),
            hardware.ipa_bits,
            id_register(4, 0),
        )),
        // ACTLR_EL1: RAZ/WI.
        (3, 0, 1, 0, 1) => read_zero_or_ignore(write),
        // ICC_DIR_EL1 (of an interrupt no list register holds: the glue deactivates the others),
        // ICC_SGI1R_EL1, ICC_ASGI1R_EL1, ICC_SGI0R_EL1: write-only, the VMM's virtual GIC.
        (3, 0, 12, 11, 1 | 5..=7) if write => Outcome::Vmm,
        // CNTP_TVAL_EL0, CNTP_CTL_EL0, CNTP_CVAL_EL0.
        (3, 3, 14, 2, 0..=2) => physical_timer(op2, write, written, &mut vcpu.ptimer, now),
        // DC ISW, DC CSW, DC CISW: set/way maintenance (HCR_EL2.TSW).
        (1, 0, 7, 6 | 10 | 14, 2) => Outcome::Vmm,
        (2, 0, ..) | (2, 3, 0, ..) => debug(crn, crm, op2, op1, write, written, vcpu, hardware),
        _ => Outcome::Undefined,
    }
}

fn read_zero_or_ignore(write: bool) -> Outcome {
    if write {
        Outcome::Written
    } else {
        Outcome::Read(0)
    }
}

/// CNTP_TVAL (op2 0), CNTP_CTL (1), CNTP_CVAL (2).
fn physical_timer(
    op2: u8,
    write: bool,
    written: u64,
    timer: &mut PhysicalTimer,
    now: u64,
) -> Outcome {
    match (op2, write) {
        (0, false) => Outcome::Read(timer.read_tval(now)),
        (0, true) => {
            timer.write_tval(now, written);
            Outcome::Written
        }
        (1, false) => Outcome::Read(timer.read_ctl(now)),
        (1, true) => {
            timer.ctl = written & 0b11;
            Outcome::Written
        }
        (_, false) => Outcome::Read(timer.cval),
        (_, true) => {
            timer.cval = written;
            Outcome::Written
        }
    }
}

/// The debug registers (op0 2): op1 0 the EL1 ones, op1 3 the DCC at EL0.
#[allow(
    clippy::too_many_arguments,
    reason = "the decoded fields of one access"
)]
fn debug(
    crn: u8,
    crm: u8,
    op2: u8,
    op1: u8,
    write: bool,
    written: u64,
    vcpu: &mut Emulated,
    hardware: &Hardware,
) -> Outcome {
    let d = &mut vcpu.debug;
    let n = usize::from(crm);
    match (op1, crn, op2) {
        // DBGBVR<n>, DBGBCR<n>, DBGWVR<n>, DBGWCR<n>.
        (0, 0, 4..=7) => {
            let (array, count) = match op2 {
                4 => (&mut d.bvr, hardware.breakpoints),
                5 => (&mut d.bcr, hardware.breakpoints),
                6 => (&mut d.wvr, hardware.watchpoints),
                _ => (&mut d.wcr, hardware.watchpoints),
            };
            if n >= count {
                return Outcome::Undefined;
            }
            if !write {
                return Outcome::Read(array[n]);
            }
            array[n] = match op2 {
                4 | 6 => written & !0b11,
                5 => {
                    let value = written & BCR_KEPT;
                    if (value >> 20) & 0xf > BT_MAX {
                        value & !(0xf << 20)
                    } else {
                        value
                    }
                }
                _ => written & WCR_KEPT,
            };
            d.changed = true;
            Outcome::Written
        }
        // MDSCR_EL1.
        (0, 0, 2) if crm == 2 => {
            if write {
                d.mdscr = written & MDSCR_KEPT;
                Outcome::Written
            } else {
                Outcome::Read(d.mdscr)
            }
        }
        // MDCCINT_EL1.
        (0, 0, 0) if crm == 2 => {
            if write {
                d.mdccint = written & ((1 << 29) | (1 << 30));
                Outcome::Written
            } else {
                Outcome::Read(d.mdccint)
            }
        }
        // OSDTRRX_EL1 (CRm 0), OSDTRTX_EL1 (CRm 3), OSECCR_EL1 (CRm 6): RAZ/WI.
        (0, 0, 2) if matches!(crm, 0 | 3 | 6) => read_zero_or_ignore(write),
        // OSLAR_EL1 (write-only).
        (0, 1, 4) if crm == 0 && write => {
            d.oslk = written & 1 == 1;
            Outcome::Written
        }
        // OSLSR_EL1 (read-only).
        (0, 1, 4) if crm == 1 && !write => Outcome::Read(OSLSR_OSLM | (u64::from(d.oslk) << 1)),
        // OSDLR_EL1 (DoubleLock is not implemented), DBGPRCR_EL1: RAZ/WI.
        (0, 1, 4) if matches!(crm, 3 | 4) => read_zero_or_ignore(write),
        // MDRAR_EL1 (read-only): no memory-mapped debug.
        (0, 1, 0) if crm == 0 && !write => Outcome::Read(0),
        // DBGCLAIMSET_EL1, DBGCLAIMCLR_EL1: RAZ/WI.
        (0, 7, 6) if matches!(crm, 8 | 9) => read_zero_or_ignore(write),
        // DBGAUTHSTATUS_EL1 (read-only).
        (0, 7, 6) if crm == 14 && !write => Outcome::Read(hardware.authstatus),
        // MDCCSR_EL0 (read-only), DBGDTR_EL0, DBGDTRRX/TX_EL0: no DCC, RAZ/WI.
        (3, 0, 0) if crm == 1 && !write => Outcome::Read(0),
        (3, 0, 0) if matches!(crm, 4 | 5) => read_zero_or_ignore(write),
        _ => Outcome::Undefined,
    }
}

/// Answers a trapped AArch32 EL0 coprocessor access (ESR_EL2.EC 0x03, 0x04, 0x05, 0x06, 0x0C;
/// its ISS in `iss`): the physical timer's CP15 encodings are emulated, everything else is
/// UNDEFINED. `written` is Rt's value (and Rt2's in the high word for MCRR).
pub fn emulate_aarch32(
    class: u8,
    iss: u32,
    written: u64,
    vcpu: &mut Emulated,
    now: u64,
) -> Outcome {
    let read = iss & 1 == 1;
    let crm = (iss >> 1) & 0xf;
    match class {
        // MCR/MRC p15: CNTP_TVAL (opc1 0, c14, c2, 0) and CNTP_CTL (opc1 0, c14, c2, 1).
        0x03 => {
            let (opc2, opc1, crn) = ((iss >> 17) & 0b111, (iss >> 14) & 0b111, (iss >> 10) & 0xf);
            if (opc1, crn, crm) == (0, 14, 2) && opc2 <= 1 {
                let op2 = opc2 as u8;
                match physical_timer(op2, !read, written & 0xffff_ffff, &mut vcpu.ptimer, now) {
                    Outcome::Read(value) => Outcome::Read(value & 0xffff_ffff),
                    other => other,
                }
            } else {
                Outcome::Undefined
            }
        }
        // MCRR/MRRC p15: CNTP_CVAL (opc1 2, c14).
        0x04 => {
            let opc1 = (iss >> 16) & 0xf;
            if (opc1, crm) == (2, 14) {
                if read {
                    let cval = vcpu.ptimer.cval;
                    Outcome::ReadPair(cval & 0xffff_ffff, cval >> 32)
                } else {
                    vcpu.ptimer.cval = written;
                    Outcome::Written
                }
            } else {
                Outcome::Undefined
            }
        }
        _ => Outcome::Undefined,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use capvisor_ipc::protocols::fault::GpRegister;

    const HW: Hardware = Hardware {
        breakpoints: 6,
        watchpoints: 4,
        authstatus: 0xaa,
        ipa_bits: 40,
    };

    fn access(op0: u8, op1: u8, crn: u8, crm: u8, op2: u8, write: bool) -> SysRegAccess {
        SysRegAccess {
            op0,
            op1,
            crn,
            crm,
            op2,
            register: GpRegister::XZR,
            write,
        }
    }

    fn run(a: SysRegAccess, written: u64, v: &mut Emulated, now: u64) -> Outcome {
        emulate(&a, written, v, &HW, now, |_, _| u64::MAX)
    }

    #[test]
    fn absent_features_are_undefined_and_actlr_is_raz_wi() {
        let mut v = Emulated::RESET;
        let undefined = [
            (3, 0, 10, 4, 7), // LORID_EL1
            (3, 0, 10, 4, 0), // LORSA_EL1
            (3, 0, 5, 3, 0),  // ERRIDR_EL1
            (3, 0, 5, 4, 2),  // ERXSTATUS_EL1
            (3, 3, 9, 12, 0), // PMCR_EL0
            (3, 3, 9, 13, 0), // PMCCNTR_EL0
            (3, 0, 9, 14, 1), // PMINTENSET_EL1
            (3, 0, 9, 9, 0),  // PMSCR_EL1
            (3, 0, 9, 10, 0), // PMBLIMITR_EL1
            (3, 0, 1, 2, 1),  // TRFCR_EL1
            (3, 3, 13, 2, 0), // AMCR_EL0
            (3, 0, 2, 1, 0),  // APIAKeyLo_EL1
            (3, 0, 13, 0, 7), // SCXTNUM_EL1
            (3, 0, 15, 0, 0), // implementation defined
            (2, 1, 0, 0, 0),  // a trace register
        ];
        for (op0, op1, crn, crm, op2) in undefined {
            for write in [false, true] {
                assert_eq!(
                    run(access(op0, op1, crn, crm, op2, write), 1, &mut v, 0),
                    Outcome::Undefined,
                    "{op0} {op1} {crn} {crm} {op2} write={write}"
                );
            }
        }
        assert_eq!(
            run(access(3, 0, 1, 0, 1, false), 0, &mut v, 0),
            Outcome::Read(0)
        );
        assert_eq!(
            run(access(3, 0, 1, 0, 1, true), 5, &mut v, 0),
            Outcome::Written
        );
        // An ID register read is answered from the allowlist; a write is UNDEFINED.
        assert!(matches!(
            run(access(3, 0, 0, 4, 0, false), 0, &mut v, 0),
            Outcome::Read(_)
        ));
        assert_eq!(
            run(access(3, 0, 0, 4, 0, true), 0, &mut v, 0),
            Outcome::Undefined
        );
        // SGI generation and set/way maintenance go to the VMM.
        assert_eq!(
            run(access(3, 0, 12, 11, 5, true), 0, &mut v, 0),
            Outcome::Vmm
        );
        assert_eq!(
            run(access(1, 0, 7, 14, 2, true), 0, &mut v, 0),
            Outcome::Vmm
        );
        assert_eq!(
            run(access(3, 0, 12, 11, 5, false), 0, &mut v, 0),
            Outcome::Undefined
        );
    }

    #[test]
    fn the_physical_timer_counts_against_the_physical_count() {
        let mut v = Emulated::RESET;
        // TVAL = 100 at now = 1000: CVAL 1100; read back 100, then 40 later 60.
        assert_eq!(
            run(access(3, 3, 14, 2, 0, true), 100, &mut v, 1000),
            Outcome::Written
        );
        assert_eq!(
            run(access(3, 3, 14, 2, 2, false), 0, &mut v, 1000),
            Outcome::Read(1100)
        );
        assert_eq!(
            run(access(3, 3, 14, 2, 0, false), 0, &mut v, 1040),
            Outcome::Read(60)
        );
        // A negative TVAL (a compare value in the past) reads back as its low word.
        run(access(3, 3, 14, 2, 0, true), 0xffff_fff6, &mut v, 1000);
        assert_eq!(v.ptimer.cval, 990);
        assert_eq!(
            run(access(3, 3, 14, 2, 0, false), 0, &mut v, 1000),
            Outcome::Read(0xffff_fff6)
        );
        // Disabled: ISTATUS reads 0 and there is no level; enabled: ISTATUS once CVAL passed.
        assert_eq!(
            run(access(3, 3, 14, 2, 1, false), 0, &mut v, 2000),
            Outcome::Read(0)
        );
        run(access(3, 3, 14, 2, 2, true), 1500, &mut v, 1000);
        run(access(3, 3, 14, 2, 1, true), 0xff, &mut v, 1000);
        assert_eq!(v.ptimer.ctl, 0b11, "only ENABLE and IMASK are kept");
        assert_eq!(
            run(access(3, 3, 14, 2, 1, false), 0, &mut v, 1600),
            Outcome::Read(0b111)
        );
        assert!(!v.ptimer.level(1600), "masked");
        assert_eq!(v.ptimer.deadline(), None);
        run(access(3, 3, 14, 2, 1, true), 1, &mut v, 1000);
        assert!(!v.ptimer.level(1499) && v.ptimer.level(1500));
        assert_eq!(v.ptimer.deadline(), Some(1500));
    }

    #[test]
    fn debug_registers_are_kept_per_vcpu_within_the_hardware_counts() {
        let mut v = Emulated::RESET;
        // DBGBVR5 exists (6 breakpoints), DBGBVR6 does not; DBGWCR3 exists, DBGWCR4 does not.
        assert_eq!(
            run(access(2, 0, 0, 5, 4, true), 0x4020_0003, &mut v, 0),
            Outcome::Written
        );
        assert_eq!(v.debug.bvr[5], 0x4020_0000);
        assert!(v.debug.changed);
        assert_eq!(
            run(access(2, 0, 0, 6, 4, true), 1, &mut v, 0),
            Outcome::Undefined
        );
        assert_eq!(
            run(access(2, 0, 0, 3, 7, false), 0, &mut v, 0),
            Outcome::Read(0)
        );
        assert_eq!(
            run(access(2, 0, 0, 4, 7, false), 0, &mut v, 0),
            Outcome::Undefined
        );
        // HMC and SSC are cleared, VMID-matching types become type 0.
        run(
            access(2, 0, 0, 0, 5, true),
            (0b1010 << 20) | (1 << 13) | (0b11 << 14) | 0x1e7,
            &mut v,
            0,
        );
        assert_eq!(v.debug.bcr[0], 0x1e7);
        run(access(2, 0, 0, 0, 7, true), u64::MAX, &mut v, 0);
        assert_eq!(v.debug.wcr[0] & ((1 << 13) | (0b11 << 14)), 0);
        // MDSCR_EL1 keeps SS, TDCC, KDE, MDE.
        run(access(2, 0, 0, 2, 2, true), u64::MAX, &mut v, 0);
        assert_eq!(
            run(access(2, 0, 0, 2, 2, false), 0, &mut v, 0),
            Outcome::Read(MDSCR_KEPT)
        );
        assert!(v.debug.armed());
        // The OS Lock masks debug exceptions in the hardware's MDSCR.
        run(access(2, 0, 1, 0, 4, true), 1, &mut v, 0);
        assert_eq!(
            run(access(2, 0, 1, 1, 4, false), 0, &mut v, 0),
            Outcome::Read(0b1010)
        );
        assert_eq!(v.debug.hardware_mdscr(), 1 << 12);
        assert!(!v.debug.armed());
        run(access(2, 0, 1, 0, 4, true), 0, &mut v, 0);
        assert_eq!(
            run(access(2, 0, 1, 1, 4, false), 0, &mut v, 0),
            Outcome::Read(0b1000)
        );
        // The rest of the debug interface.
        assert_eq!(
            run(access(2, 0, 7, 14, 6, false), 0, &mut v, 0),
            Outcome::Read(0xaa)
        );
        assert_eq!(
            run(access(2, 0, 1, 3, 4, true), 1, &mut v, 0),
            Outcome::Written
        );
        assert_eq!(
            run(access(2, 0, 1, 0, 0, false), 0, &mut v, 0),
            Outcome::Read(0)
        );
        assert_eq!(
            run(access(2, 3, 0, 1, 0, false), 0, &mut v, 0),
            Outcome::Read(0)
        );
        assert_eq!(
            run(access(2, 0, 1, 1, 4, true), 0, &mut v, 0),
            Outcome::Undefined
        );
    }

    #[test]
    fn aarch32_el0_reaches_the_physical_timer_and_nothing_else() {
        let mut v = Emulated::RESET;
        // MCR p15, 0, r1, c14, c2, 1 (CNTP_CTL = 1): opc1 0, CRn 14, CRm 2, opc2 1, write.
        let ctl = (1 << 17) | (14 << 10) | (1 << 5) | (2 << 1);
        assert_eq!(emulate_aarch32(0x03, ctl, 1, &mut v, 0), Outcome::Written);
        assert_eq!(v.ptimer.ctl, 1);
        // MRRC p15, 2, r0, r1, c14 (CNTP_CVAL).
        v.ptimer.cval = 0x1_2345_6789;
        let cval = (2 << 16) | (1 << 10) | (14 << 1) | 1;
        assert_eq!(
            emulate_aarch32(0x04, cval, 0, &mut v, 0),
            Outcome::ReadPair(0x2345_6789, 1)
        );
        // MRC p14, 0, r0, c0, c0, 0 (DBGDIDR) and a CP15 PMU register: UNDEFINED.
        assert_eq!(emulate_aarch32(0x05, 1, 0, &mut v, 0), Outcome::Undefined);
        let pmcr = (9 << 10) | (12 << 1) | 1;
        assert_eq!(
            emulate_aarch32(0x03, pmcr, 0, &mut v, 0),
            Outcome::Undefined
        );
        assert_eq!(emulate_aarch32(0x0c, 1, 0, &mut v, 0), Outcome::Undefined);
    }
}

//! Probes: run one instruction that may take a synchronous exception at EL1 and learn whether it
//! did, with what syndrome, at which vector and return address, then go on after it. For system
//! register sweeps (UNDEF or not), BRK, SVC, aborts: [`probe!`](crate::probe) arms the probe,
//! the instruction runs, and [`Trap`] says what happened.

use core::sync::atomic::{AtomicU64, Ordering};

/// What a probed instruction's exception reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trap {
    /// The vector entry taken (0–15: offset / 0x80 from VBAR_EL1; 4 is "current EL with SPx,
    /// synchronous", offset 0x200).
    pub vector: u64,
    /// ESR_EL1.
    pub esr: u64,
    /// FAR_EL1.
    pub far: u64,
    /// ELR_EL1 as the exception left it.
    pub elr: u64,
    /// The probed instruction's address.
    pub pc: u64,
}

impl Trap {
    /// The exception class, ESR bits [31:26].
    #[must_use]
    pub const fn class(&self) -> u64 {
        (self.esr >> 26) & 0x3f
    }

    /// ESR.IL, bit 25.
    #[must_use]
    pub const fn il(&self) -> bool {
        self.esr & (1 << 25) != 0
    }

    /// ESR bits [24:0].
    #[must_use]
    pub const fn iss(&self) -> u64 {
        self.esr & 0x1ff_ffff
    }

    /// An Undefined Instruction exception taken from EL1 to EL1 as the Arm ARM describes it
    /// (DDI 0487, D24.2.40 ESR_EL1: EC 0x00 "Unknown reason", IL = 1 for EC 0x00, ISS 0): at the
    /// current-EL SPx synchronous vector, VBAR_EL1 + 0x200, returning to the instruction.
    #[must_use]
    pub const fn is_el1_undef(&self) -> bool {
        self.esr == 1 << 25 && self.vector == 4 && self.elr == self.pc
    }
}

/// The armed probe: the instruction's address and where to resume (0: none armed).
static ARMED: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
/// The last probe's trap: vector + 1 (0: none), ESR, FAR, ELR, PC.
static TAKEN: [AtomicU64; 5] = [const { AtomicU64::new(0) }; 5];

/// The two words a probe's assembly fills before the instruction: its address and the resume
/// address.
#[doc(hidden)]
#[must_use]
pub fn slot() -> *const AtomicU64 {
    TAKEN[0].store(0, Ordering::Relaxed);
    ARMED.as_ptr()
}

/// The result of the probe just run, and disarms it.
#[doc(hidden)]
#[must_use]
pub fn finish() -> Option<Trap> {
    ARMED[0].store(0, Ordering::Relaxed);
    ARMED[1].store(0, Ordering::Relaxed);
    let vector = TAKEN[0].swap(0, Ordering::Relaxed);
    (vector != 0).then(|| Trap {
        vector: vector - 1,
        esr: TAKEN[1].load(Ordering::Relaxed),
        far: TAKEN[2].load(Ordering::Relaxed),
        elr: TAKEN[3].load(Ordering::Relaxed),
        pc: TAKEN[4].load(Ordering::Relaxed),
    })
}

/// Called by the exception dispatcher for a synchronous exception from EL1: if a probe is armed
/// and the exception returns to its instruction (an UNDEF, abort, BRK, …) or just after it (an
/// SVC), records it and resumes after the instruction. `elr` is updated.
pub(super) fn catch(vector: u64, esr: u64, far: u64, elr: &mut u64) -> bool {
    let pc = ARMED[0].load(Ordering::Relaxed);
    let resume = ARMED[1].load(Ordering::Relaxed);
    if pc == 0 || (*elr != pc && *elr != resume) {
        return false;
    }
    TAKEN[1].store(esr, Ordering::Relaxed);
    TAKEN[2].store(far, Ordering::Relaxed);
    TAKEN[3].store(*elr, Ordering::Relaxed);
    TAKEN[4].store(pc, Ordering::Relaxed);
    TAKEN[0].store(vector + 1, Ordering::Relaxed);
    ARMED[0].store(0, Ordering::Relaxed);
    *elr = resume;
    true
}

/// Runs one instruction at EL1 and returns `Option<Trap>`: `None` if it completed without a
/// synchronous exception at EL1 (a trap to EL2 that the hypervisor answered is invisible here),
/// else what the exception reported; execution goes on after the instruction either way.
///
/// The first argument is the instruction's assembly text; the rest are `asm!` operands for it
/// (x16 and x17 are the probe's own). Example:
/// `let (value, trap) = { let v: u64; let t = probe!("mrs {v}, S3_0_C10_C4_3", v = out(reg) v); (v, t) };`
/// An output operand keeps its old value when the instruction trapped: initialise it.
#[macro_export]
macro_rules! probe {
    ($instruction:expr $(, $($operands:tt)*)?) => {{
        let slot = $crate::probe::slot();
        // SAFETY: the probe words are statics; the instruction is the caller's, who answers for
        // its effects. If it traps, the dispatcher resumes at label 22 with every register as
        // the exception left it.
        unsafe {
            core::arch::asm!(
                "adr x16, 21f",
                "adr x17, 22f",
                "stp x16, x17, [{slot}]",
                "dsb nsh",
                concat!("21: ", $instruction),
                "22:",
                slot = in(reg) slot,
                out("x16") _,
                out("x17") _,
                $($($operands)*)?
            );
        }
        $crate::probe::finish()
    }};
}

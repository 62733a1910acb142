//! What the debugger and the victim share: the EL0 code both run (at the same address in both,
//! as the same image), the data it touches, and the debug-exception hook.

use capvisor_guest_rt::el0::{self, Entry, SPSR_DAIF, SPSR_EL0T};
use capvisor_guest_rt::{ExceptionFrame, Fault};
use core::arch::global_asm;
use core::sync::atomic::{AtomicU64, Ordering};
use hostile_guest_common::write_sysreg;

global_asm!(
    r#"
    .section .text.debug_el0, "ax"
    .balign 4
    // EL0: load, store and load again the word x1 points at, then SVC back to EL1.
    .global __debug_el0_code
__debug_el0_code:
    ldr     x0, [x1]
    add     x0, x0, #1
    str     x0, [x1]
    ldr     x2, [x1]
    svc     #0
    // EL1: an empty function to put a breakpoint on.
    .balign 4
    .global __debug_el1_target
__debug_el1_target:
    ret
"#
);

unsafe extern "C" {
    static __debug_el0_code: u8;
    static __debug_el1_target: u8;
}

/// The services' entry point (`sdk/rt/service.ld` links every service at 0x200000): the
/// debugger's breakpoint 0 when it leaves.
pub const SERVICE_ENTRY: u64 = 0x20_0000;

/// The EL0 code's address.
#[must_use]
pub fn el0_code() -> u64 {
    // SAFETY: only the address is taken.
    core::ptr::from_ref(unsafe { &__debug_el0_code }) as u64
}

/// The EL1 breakpoint target's address.
#[must_use]
pub fn el1_target() -> u64 {
    // SAFETY: only the address is taken.
    core::ptr::from_ref(unsafe { &__debug_el1_target }) as u64
}

/// Calls the EL1 breakpoint target.
pub fn call_el1_target() {
    // SAFETY: the target is a bare `ret`.
    unsafe {
        core::arch::asm!("blr {t}", t = in(reg) el1_target(), out("x30") _, options(nostack))
    };
}

/// The word the EL0 code works on (and the watchpoints watch).
#[repr(C, align(8))]
pub struct Word(pub AtomicU64);

/// The EL0 code's word.
pub static EL0_WORD: Word = Word(AtomicU64::new(0));

/// EL0's stack (the code does not use it).
#[repr(C, align(16))]
struct Stack([u8; 1024]);

static mut STACK: Stack = Stack([0; 1024]);

/// Runs the EL0 code on its word with extra SPSR bits `spsr` (e.g. SS).
pub fn run_el0_code(spsr: u64) -> el0::Exit {
    let mut entry = Entry {
        pc: el0_code(),
        spsr: SPSR_EL0T | SPSR_DAIF | spsr,
        sp: (&raw mut STACK) as u64 + 1024,
        x: [0; 16],
    };
    entry.x[1] = core::ptr::from_ref(&EL0_WORD) as u64;
    // SAFETY: the EL0 code touches only its word, then takes an SVC back to EL1.
    unsafe { el0::run(&entry) }
}

/// The last debug exception taken at EL1 from EL1: vector + 1 (0: none), ESR, ELR, FAR.
static DEBUG_TAKEN: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

/// A debug exception from EL1 (EC 0x31 breakpoint, 0x33 step, 0x35 watchpoint): recorded, then
/// every breakpoint and watchpoint 0 is disabled and the instruction runs again.
pub fn hook(vector: u64, fault: &Fault, frame: &mut ExceptionFrame) -> bool {
    let class = (fault.esr >> 26) & 0x3f;
    if vector >= 8 || !matches!(class, 0x31 | 0x33 | 0x35) {
        return false;
    }
    DEBUG_TAKEN[1].store(fault.esr, Ordering::Relaxed);
    DEBUG_TAKEN[2].store(frame.elr, Ordering::Relaxed);
    DEBUG_TAKEN[3].store(fault.far, Ordering::Relaxed);
    DEBUG_TAKEN[0].store(vector + 1, Ordering::Relaxed);
    write_sysreg!("dbgbcr0_el1", 0);
    write_sysreg!("dbgwcr0_el1", 0);
    true
}

/// The debug exception [`hook`] took since the last call: (vector, ESR, ELR, FAR).
pub fn taken() -> Option<(u64, u64, u64, u64)> {
    let vector = DEBUG_TAKEN[0].swap(0, Ordering::Relaxed);
    (vector != 0).then(|| {
        (
            vector - 1,
            DEBUG_TAKEN[1].load(Ordering::Relaxed),
            DEBUG_TAKEN[2].load(Ordering::Relaxed),
            DEBUG_TAKEN[3].load(Ordering::Relaxed),
        )
    })
}

//! EL2 exception vectors and the handler for exceptions the kernel does not expect.
//!
//! The vector table layout is the Arm ARM's (DDI 0487 L.a, D1.3.1 "Exception vectors"): sixteen
//! 128-byte entries, four for each of current EL with SP_EL0, current EL with SP_ELx, lower EL
//! in AArch64, lower EL in AArch32, each for synchronous, IRQ, FIQ and SError. For now every
//! exception is unexpected: the kernel prints a decoded register dump and stops with a failure
//! status. Guest and service traps get their own paths with the work that introduces them.

use crate::{console, exit};
use capvisor_kernel::esr;
use core::arch::global_asm;

/// The registers saved on entry, in the order the vector code stores them.
#[repr(C)]
#[derive(Debug)]
pub struct TrapFrame {
    /// x0 to x30.
    pub x: [u64; 31],
    /// The stack pointer before the exception.
    pub sp: u64,
    /// ELR_EL2.
    pub elr: u64,
    /// SPSR_EL2.
    pub spsr: u64,
    /// ESR_EL2.
    pub esr: u64,
    /// FAR_EL2.
    pub far: u64,
}

const FRAME_SIZE: usize = size_of::<TrapFrame>();
const _: () = assert!(FRAME_SIZE == 36 * 8 && FRAME_SIZE.is_multiple_of(16));

global_asm!(
    r#"
.macro VECTOR kind
    .balign 0x80
    sub     sp, sp, #{frame}
    stp     x0, x1, [sp, #0]
    mov     x0, #\kind
    b       exception_common
.endm

/* From a thread at EL0: its registers go to its own context, not the stack (see el0.rs). */
.macro LOWER kind
    .balign 0x80
    stp     x0, x1, [sp, #-16]!
    mov     x1, #\kind
    b       lower_common
.endm

    .section .text.vectors, "ax"
    .balign 0x800
    .global exception_vectors
exception_vectors:
    VECTOR 0
    VECTOR 1
    VECTOR 2
    VECTOR 3
    VECTOR 4
    VECTOR 5
    VECTOR 6
    /* An SError at EL2: inside lower_common's SError window it belongs to the context that just
       exited — its syndrome goes to x4 and the kernel goes on at the window's end with SErrors
       masked; anywhere else it is unexpected. */
    .balign 0x80
    stp     x0, x1, [sp, #-16]!
    mrs     x0, elr_el2
    adr     x1, serror_window
    cmp     x0, x1
    b.lo    6f
    adr     x1, serror_window_end
    cmp     x0, x1
    b.hs    6f
    mrs     x4, esr_el2
    msr     elr_el2, x1
    mrs     x0, spsr_el2
    orr     x0, x0, #(1 << 8)
    msr     spsr_el2, x0
    ldp     x0, x1, [sp], #16
    eret
6:  ldp     x0, x1, [sp], #16
    sub     sp, sp, #{frame}
    stp     x0, x1, [sp, #0]
    mov     x0, #7
    b       exception_common
    LOWER 8
    LOWER 9
    LOWER 10
    LOWER 11
    VECTOR 12
    VECTOR 13
    VECTOR 14
    VECTOR 15

exception_common:
    stp     x2, x3, [sp, #16]
    stp     x4, x5, [sp, #32]
    stp     x6, x7, [sp, #48]
    stp     x8, x9, [sp, #64]
    stp     x10, x11, [sp, #80]
    stp     x12, x13, [sp, #96]
    stp     x14, x15, [sp, #112]
    stp     x16, x17, [sp, #128]
    stp     x18, x19, [sp, #144]
    stp     x20, x21, [sp, #160]
    stp     x22, x23, [sp, #176]
    stp     x24, x25, [sp, #192]
    stp     x26, x27, [sp, #208]
    stp     x28, x29, [sp, #224]
    add     x1, sp, #{frame}
    stp     x30, x1, [sp, #240]
    mrs     x1, elr_el2
    mrs     x2, spsr_el2
    stp     x1, x2, [sp, #256]
    mrs     x1, esr_el2
    mrs     x2, far_el2
    stp     x1, x2, [sp, #272]
    mov     x1, sp
    bl      unexpected_exception
    b       .
"#,
    frame = const FRAME_SIZE,
);

const VECTOR_NAMES: [&str; 4] = [
    "current EL with SP_EL0",
    "current EL with SP_ELx",
    "lower EL, AArch64",
    "lower EL, AArch32",
];
const KIND_NAMES: [&str; 4] = ["synchronous", "IRQ", "FIQ", "SError"];

/// Prints everything known about an exception the kernel did not expect, then stops.
#[unsafe(no_mangle)]
extern "C" fn unexpected_exception(vector: u64, frame: &TrapFrame) -> ! {
    let vector = vector as usize & 15;
    let base = crate::load_base();
    console::print_raw(format_args!(
        "\ncapvisor: UNEXPECTED EXCEPTION on cpu {}: {} from {}\n",
        crate::smp::this_cpu(),
        KIND_NAMES[vector % 4],
        VECTOR_NAMES[vector / 4]
    ));
    console::print_raw(format_args!(
        "  ESR_EL2=0x{:016x}  {}\n  FAR_EL2=0x{:016x}\n  ELR_EL2=0x{:016x} (kernel+{:#x})  SPSR_EL2=0x{:016x}  SP=0x{:016x}\n",
        frame.esr,
        esr::Decoded(frame.esr),
        frame.far,
        frame.elr,
        frame.elr.wrapping_sub(base),
        frame.spsr,
        frame.sp
    ));
    for row in 0..8 {
        console::print_raw(format_args!("  "));
        for col in 0..4 {
            let n = row * 4 + col;
            if n < 31 {
                console::print_raw(format_args!("x{:<2}=0x{:016x} ", n, frame.x[n]));
            }
        }
        console::print_raw(format_args!("\n"));
    }
    exit::fail(exit::Status::KernelFault)
}

//! Entry: the arm64 Image header, self-relocation, and the primary and secondary CPUs' first
//! instructions.
//!
//! The boot protocol is Linux's (Documentation/arch/arm64/booting.rst): entered at EL2 (or EL1,
//! which capvisor refuses) with the MMU off, x0 = physical address of the device tree. Secondary
//! CPUs arrive through PSCI CPU_ON (PSCI 1.1, DEN0022D, 5.6) with the MMU off and x0 = the
//! context we passed, a [`super::smp::SecondaryBoot`] record.

use core::arch::global_asm;

/// Bytes of stack per CPU.
pub const STACK_SIZE: usize = 64 * 1024;
/// CPUs capvisor brings up at most.
pub const MAX_CPUS: usize = 8;

/// The CPUs' boot stacks; CPU n uses `STACKS[n]`, growing down from its end.
#[repr(C, align(4096))]
pub struct Stacks(pub [[u8; STACK_SIZE]; MAX_CPUS]);

/// The boot stacks (zero-initialised data, so the image file does not grow).
#[unsafe(no_mangle)]
pub static mut BOOT_STACKS: Stacks = Stacks([[0; STACK_SIZE]; MAX_CPUS]);

/// The lowest bytes of each stack, which a healthy kernel never reaches: still all zero (as the
/// boot code left them) unless the stack grew into them, or past them.
pub const STACK_RED_ZONE: usize = 4096;

/// CPUs whose stack reached its red zone: there is no guard page (a fault there would recurse on
/// the same stack), so this is how an overflow is noticed instead of silently corrupting the
/// data below the stacks. Returns a bit per CPU.
pub fn overflowed_stacks() -> u32 {
    let mut mask = 0;
    for cpu in 0..MAX_CPUS {
        // SAFETY: reads of the zone's words (no reference to the static is formed); a CPU
        // writing its own stack concurrently can only make a word non-zero, which is what is
        // looked for.
        let dirty = (0..STACK_RED_ZONE / 8).any(|word| unsafe {
            let base = (&raw const BOOT_STACKS.0[cpu]).cast::<u64>();
            base.add(word).read_volatile() != 0
        });
        if dirty {
            mask |= 1 << cpu;
        }
    }
    mask
}

global_asm!(
    r#"
    .section .text.head, "ax"
    .global _start
_start:
    /* arm64 Image header; the SDK fills in image_size, flags and the capvisor header. */
    b       primary_entry           /* code0 */
    nop                             /* code1 */
    .quad   0                       /* text_offset */
    .quad   0                       /* image_size */
    .quad   0                       /* flags */
    .quad   0, 0, 0                 /* res2..res4 */
    .word   0x644d5241              /* magic, "ARM\x64" */
    .word   0                       /* res5 */
    .ascii  "CAPVISOR"              /* capvisor header, 64 bytes in all */
    .space  56

    .text
primary_entry:
    mov     x19, x0                 /* device tree address */
    adr     x20, _start             /* where we were loaded */
    mrs     x1, CurrentEL
    cmp     x1, #(2 << 2)
    b.ne    .Lnot_el2

    /* Apply R_AARCH64_RELATIVE relocations: *(base + offset) = base + addend. The SDK refuses
       a kernel with any other dynamic relocation, so others cannot occur here. */
    adrp    x1, __rela_start
    add     x1, x1, :lo12:__rela_start
    adrp    x2, __rela_end
    add     x2, x2, :lo12:__rela_end
1:  cmp     x1, x2
    b.hs    2f
    ldp     x3, x4, [x1], #16       /* r_offset, r_info */
    ldr     x5, [x1], #8            /* r_addend */
    cmp     w4, #1027               /* R_AARCH64_RELATIVE */
    b.ne    1b
    add     x5, x5, x20
    str     x5, [x20, x3]
    b       1b
2:
    /* Zero the zero-initialised data. */
    adrp    x1, __bss_start
    add     x1, x1, :lo12:__bss_start
    adrp    x2, __bss_end
    add     x2, x2, :lo12:__bss_end
3:  cmp     x1, x2
    b.hs    4f
    stp     xzr, xzr, [x1], #16
    b       3b
4:
    /* CPU 0's stack is the top of BOOT_STACKS[0]. */
    adrp    x1, BOOT_STACKS
    add     x1, x1, :lo12:BOOT_STACKS
    add     x1, x1, #{stack_size}
    mov     sp, x1
    adrp    x1, exception_vectors
    add     x1, x1, :lo12:exception_vectors
    msr     vbar_el2, x1
    isb
    mov     x0, x19
    mov     x1, x20
    bl      primary_main
    b       .Lhang

.Lnot_el2:
    /* Entered at EL1 or EL3: there is no console yet to say so, and nothing capvisor can do. */
.Lhang:
    wfe
    b       .Lhang

    /* A secondary CPU, from PSCI CPU_ON; x0 = its SecondaryBoot record (physical address,
       cleaned to the point of coherency by the primary). MMU and caches are off. */
    .global secondary_entry
secondary_entry:
    ldr     x1, [x0, #0]            /* stack top */
    mov     sp, x1
    adrp    x1, exception_vectors
    add     x1, x1, :lo12:exception_vectors
    msr     vbar_el2, x1
    ldr     x1, [x0, #8]
    msr     mair_el2, x1
    ldr     x1, [x0, #16]
    msr     tcr_el2, x1
    ldr     x1, [x0, #24]
    msr     ttbr0_el2, x1
    isb
    /* Nothing from before this CPU joined may be left in its TLB (TLB contents at reset are
       IMPLEMENTATION DEFINED: Arm ARM DDI 0487 L.a, D8.16.1 "TLB behavior at reset"). This is
       tlb.rs's invalidate_el2_local, written out here: it runs before the CPU's MMU is on. */
    tlbi    alle2
    dsb     nsh
    isb
    ldr     x1, [x0, #32]
    msr     sctlr_el2, x1
    isb
    bl      secondary_main
    b       .Lhang
"#,
    stack_size = const STACK_SIZE,
);

/// The physical address of `secondary_entry`, where PSCI CPU_ON starts a secondary CPU (the
/// kernel is identity mapped, so the address the code runs at).
#[must_use]
pub fn secondary_entry_address() -> u64 {
    let addr: u64;
    // SAFETY: ADR computes an address; it reads and writes nothing.
    unsafe {
        core::arch::asm!(
            "adr {}, secondary_entry",
            out(reg) addr,
            options(nomem, nostack, preserves_flags)
        )
    };
    addr
}

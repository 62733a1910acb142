// The arm64 Image header (Linux Documentation/arch/arm64/booting.rst) and the entry at EL1h with
// the MMU off, x0 = the device tree's IPA: mask interrupts, allow FP/SIMD (CPACR_EL1.FPEN), apply
// the relocations for the address the image runs at (guest.ld links it at 0), set the stack,
// zero .bss, install the vectors, then run Rust.
.section .text.head, "ax"
.global _start
_start:
    b       __capvisor_guest_start      // code0
    nop                                 // code1
    .quad   0x200000                    // text_offset (contract::TEXT_OFFSET)
    .quad   __image_size                // image_size, .bss and stack included
    .quad   0x2                         // flags: little-endian, 4K pages, 2 MiB aligned base
    .quad   0, 0, 0                     // res2..res4
    .word   0x644d5241                  // magic "ARM\x64"
    .word   0                           // res5

__capvisor_guest_start:
    msr     daifset, #0xf
    mov     x19, x0
    mov     x1, #(3 << 20)
    msr     cpacr_el1, x1
    isb
    // R_AARCH64_RELATIVE relocations: *(base + offset) = base + addend, base = where the image
    // runs (the SDK refuses a guest with any other dynamic relocation). All are 8-byte aligned
    // words, as the MMU-off (Device) accesses here need.
    adrp    x20, __image_start
    adrp    x1, __rela_start
    add     x1, x1, :lo12:__rela_start
    adrp    x2, __rela_end
    add     x2, x2, :lo12:__rela_end
4:  cmp     x1, x2
    b.hs    5f
    ldp     x3, x4, [x1], #16           // r_offset, r_info
    ldr     x5, [x1], #8                // r_addend
    cmp     w4, #1027                   // R_AARCH64_RELATIVE
    b.ne    4b
    add     x5, x5, x20
    str     x5, [x20, x3]
    b       4b
5:  adrp    x1, __stack_top
    add     x1, x1, :lo12:__stack_top
    mov     sp, x1
    adrp    x1, __bss_start
    add     x1, x1, :lo12:__bss_start
    adrp    x2, __bss_end
    add     x2, x2, :lo12:__bss_end
1:  cmp     x1, x2
    b.hs    2f
    str     xzr, [x1], #8
    b       1b
2:  adrp    x1, __capvisor_guest_vectors
    add     x1, x1, :lo12:__capvisor_guest_vectors
    msr     vbar_el1, x1
    isb
    mov     x0, x19
    bl      __capvisor_guest_rust_start
3:  wfi
    b       3b

// The EL1 vector table (Arm ARM DDI 0487 K.a, D1.3.1 "Exception vectors"): every entry saves the
// interrupted registers as an ExceptionFrame and calls __capvisor_guest_exception(frame, entry).
.macro vector entry
    .balign 0x80
    sub     sp, sp, #272
    stp     x0, x1, [sp, #0]
    mov     x1, #\entry
    b       __capvisor_guest_vector_common
.endm

.section .text.vectors, "ax"
.balign 0x800
.global __capvisor_guest_vectors
__capvisor_guest_vectors:
    vector 0
    vector 1
    vector 2
    vector 3
    vector 4
    vector 5
    vector 6
    vector 7
    vector 8
    vector 9
    vector 10
    vector 11
    vector 12
    vector 13
    vector 14
    vector 15

__capvisor_guest_vector_common:
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
    mrs     x2, elr_el1
    stp     x30, x2, [sp, #240]
    mrs     x2, spsr_el1
    str     x2, [sp, #256]
    mov     x0, sp
    bl      __capvisor_guest_exception
    ldr     x2, [sp, #256]
    msr     spsr_el1, x2
    ldp     x30, x2, [sp, #240]
    msr     elr_el1, x2
    ldp     x28, x29, [sp, #224]
    ldp     x26, x27, [sp, #208]
    ldp     x24, x25, [sp, #192]
    ldp     x22, x23, [sp, #176]
    ldp     x20, x21, [sp, #160]
    ldp     x18, x19, [sp, #144]
    ldp     x16, x17, [sp, #128]
    ldp     x14, x15, [sp, #112]
    ldp     x12, x13, [sp, #96]
    ldp     x10, x11, [sp, #80]
    ldp     x8, x9, [sp, #64]
    ldp     x6, x7, [sp, #48]
    ldp     x4, x5, [sp, #32]
    ldp     x2, x3, [sp, #16]
    ldp     x0, x1, [sp, #0]
    add     sp, sp, #272
    eret

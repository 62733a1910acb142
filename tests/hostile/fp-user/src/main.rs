//! An FP/SIMD user among services (`docs/hostile-guests.md`, item A): services are built
//! soft-float, so an FP/SIMD instruction in one is a bug or an attack — and while a guest's
//! FP/SIMD registers are loaded in the CPU (the world switch is lazy) it would read them. This
//! service runs right after a hostile guest filled Q0–Q31 with secrets and executes one
//! `FMOV X0, D0`. The kernel must stop it (CPTR_EL2.TFP traps it: ESR EC 0x07, Arm ARM DDI 0487
//! D24.2.32) and report it by name; it must never print what it read.
#![cfg_attr(target_os = "none", no_std, no_main)]

capvisor_rt::service!(run);

#[cfg(target_os = "none")]
fn run() -> u64 {
    capvisor_rt::println!("fp: executing FMOV X0, D0");
    let low: u64;
    // SAFETY: reads the low half of Q0 into x0 (FMOV <Xd>, <Dn>, encoded by hand: the service
    // target is soft-float, so the assembler would refuse the mnemonic); no memory effects.
    unsafe { core::arch::asm!(".inst 0x9e660000", out("x0") low, options(nomem, nostack)) };
    capvisor_rt::println!("fp: read Q0[63:0] = {low:#x}");
    1
}

/// Without the kernel there is nothing to do: the host program does nothing.
#[cfg(not(target_os = "none"))]
fn run() -> u64 {
    0
}

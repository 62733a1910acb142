//! Item B, exception classes from EL1: an HVC and SMC fuzz (SMCCC DEN0028: an unknown function
//! identifier returns NOT_SUPPORTED, -1, in W0), BRK and SVC taken by the guest's own EL1
//! (ESR_EL1 EC 0x3C and 0x15 with the immediate as ISS; BRK returns to itself, SVC after
//! itself), WFE completing, cache maintenance by VA and TLB invalidation working at EL1.

use crate::show::Taken;
use capvisor_guest_rt::{println, probe};

/// Calls per conduit.
const CALLS: u32 = 2000;
/// NOT_SUPPORTED in W0.
const NOT_SUPPORTED: u32 = 0xffff_ffff;

/// xorshift64*: reproducible pseudo-random words.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A function identifier no VMM implements: any word whose owning entity (W0 bits
    /// [29:24]) is neither the Arm architecture (0: SMCCC_VERSION, ARCH_FEATURES, …) nor
    /// standard secure services (4: PSCI), with random upper 32 bits (ignored, SMCCC 2.5).
    fn unknown_function(&mut self) -> u64 {
        loop {
            let x0 = self.next();
            let owner = (x0 >> 24) & 0x3f;
            if owner != 0 && owner != 4 {
                return x0;
            }
        }
    }
}

pub fn run() {
    fuzz(false);
    fuzz(true);
    other_immediates();
    brk_and_svc();
    wfe();
    maintenance();
}

/// One HVC #0 (or SMC #0) with x0–x7, returning x0.
fn call(smc: bool, x: [u64; 8]) -> u64 {
    let mut x0 = x[0];
    // SAFETY: a hypervisor call with unknown function identifiers changes no guest memory;
    // x1–x17 are marked clobbered whatever SMCCC version the VMM follows.
    unsafe {
        if smc {
            core::arch::asm!("smc #0", inout("x0") x0, inout("x1") x[1] => _,
                inout("x2") x[2] => _, inout("x3") x[3] => _, inout("x4") x[4] => _,
                inout("x5") x[5] => _, inout("x6") x[6] => _, inout("x7") x[7] => _,
                out("x8") _, out("x9") _, out("x10") _, out("x11") _, out("x12") _,
                out("x13") _, out("x14") _, out("x15") _, out("x16") _, out("x17") _,
                options(nostack));
        } else {
            core::arch::asm!("hvc #0", inout("x0") x0, inout("x1") x[1] => _,
                inout("x2") x[2] => _, inout("x3") x[3] => _, inout("x4") x[4] => _,
                inout("x5") x[5] => _, inout("x6") x[6] => _, inout("x7") x[7] => _,
                out("x8") _, out("x9") _, out("x10") _, out("x11") _, out("x12") _,
                out("x13") _, out("x14") _, out("x15") _, out("x16") _, out("x17") _,
                options(nostack));
        }
    }
    x0
}

fn fuzz(smc: bool) {
    let name = if smc { "SMC" } else { "HVC" };
    let mut random = Random(if smc {
        0x5eed_0014_5c00
    } else {
        0x5eed_0014_4c00
    });
    let mut not_supported = 0;
    let mut first_other = None;
    for n in 0..CALLS {
        let mut x = [0u64; 8];
        x[0] = random.unknown_function();
        for word in &mut x[1..] {
            *word = random.next();
        }
        let result = call(smc, x);
        if result as u32 == NOT_SUPPORTED {
            not_supported += 1;
        } else if first_other.is_none() {
            first_other = Some((n, x[0], result));
        }
    }
    if let Some((n, function, result)) = first_other {
        println!("{name} fuzz: call {n} with x0 {function:#x} answered {result:#x}");
    }
    println!(
        "{name} fuzz: {CALLS} calls with unknown function IDs and random x1-x7: {not_supported} \
         answered NOT_SUPPORTED"
    );
}

/// HVC and SMC with immediates other than 0 and an unknown function identifier.
fn other_immediates() {
    let function = 0xc300_dead_u64;
    let mut results = [0u64; 3];
    for (slot, which) in results.iter_mut().zip(0..) {
        let mut x0 = function;
        // SAFETY: as for `call`.
        unsafe {
            match which {
                0 => core::arch::asm!("hvc #1", inout("x0") x0, out("x1") _, out("x2") _,
                    out("x3") _, out("x4") _, out("x5") _, out("x6") _, out("x7") _,
                    out("x8") _, out("x9") _, out("x10") _, out("x11") _, out("x12") _,
                    out("x13") _, out("x14") _, out("x15") _, out("x16") _, out("x17") _,
                    options(nostack)),
                1 => core::arch::asm!("hvc #0xffff", inout("x0") x0, out("x1") _, out("x2") _,
                    out("x3") _, out("x4") _, out("x5") _, out("x6") _, out("x7") _,
                    out("x8") _, out("x9") _, out("x10") _, out("x11") _, out("x12") _,
                    out("x13") _, out("x14") _, out("x15") _, out("x16") _, out("x17") _,
                    options(nostack)),
                _ => core::arch::asm!("smc #0x1234", inout("x0") x0, out("x1") _, out("x2") _,
                    out("x3") _, out("x4") _, out("x5") _, out("x6") _, out("x7") _,
                    out("x8") _, out("x9") _, out("x10") _, out("x11") _, out("x12") _,
                    out("x13") _, out("x14") _, out("x15") _, out("x16") _, out("x17") _,
                    options(nostack)),
            }
        }
        *slot = x0;
    }
    println!(
        "HVC #1, HVC #0xffff, SMC #0x1234 with function {function:#x}: {:#x} {:#x} {:#x}",
        results[0] as u32, results[1] as u32, results[2] as u32
    );
}

fn show(what: &str, trap: Option<capvisor_guest_rt::probe::Trap>) {
    match trap {
        Some(t) => {
            let taken = Taken {
                vector: t.vector,
                esr: t.esr,
                elr: t.elr,
                pc: t.pc,
            };
            println!("{what}: {taken}");
        }
        None => println!("{what}: no exception at EL1"),
    }
}

fn brk_and_svc() {
    show("BRK #0x1234", probe!("brk #0x1234"));
    show("SVC #0x4321 at EL1", probe!("svc #0x4321"));
}

fn wfe() {
    // SEV first, so the WFE has an event and completes even on bare QEMU.
    let trap = probe!("sevl\nwfe");
    match trap {
        None => println!("WFE: completed"),
        Some(_) => show("WFE", trap),
    }
}

#[repr(C, align(4096))]
struct Page([u8; 4096]);

static mut SCRATCH: Page = Page([0xa5; 4096]);

/// DC and IC by VA, and TLBI, at EL1: they must neither trap to the guest nor stop it.
fn maintenance() {
    let page = (&raw mut SCRATCH) as u64;
    let mut traps = 0;
    for (what, trap) in [
        ("DC CVAC", probe!("dc cvac, {a}", a = in(reg) page)),
        ("DC CIVAC", probe!("dc civac, {a}", a = in(reg) page)),
        ("DC IVAC", probe!("dc ivac, {a}", a = in(reg) page)),
        ("DC CVAU", probe!("dc cvau, {a}", a = in(reg) page)),
        ("DC ZVA", probe!("dc zva, {a}", a = in(reg) page + 2048)),
        ("IC IVAU", probe!("ic ivau, {a}", a = in(reg) page)),
        ("IC IALLU", probe!("ic iallu")),
        ("IC IALLUIS", probe!("ic ialluis")),
    ] {
        if trap.is_some() {
            show(what, trap);
            traps += 1;
        }
    }
    // SAFETY: barriers only.
    unsafe { core::arch::asm!("dsb sy", "isb", options(nostack)) };
    let dczid = hostile_guest_common::read_sysreg!("dczid_el0");
    let block = 4usize << (dczid & 0xf);
    // SAFETY: the block DC ZVA zeroed lies inside SCRATCH (2 KiB in, at most 2 KiB long).
    let zeroed =
        (0..block).all(|i| unsafe { ((page + 2048) as *const u8).add(i).read_volatile() } == 0);
    println!(
        "DC CVAC, CIVAC, IVAC, CVAU, ZVA and IC IVAU, IALLU, IALLUIS at EL1: {traps} exception(s); \
         DC ZVA zeroed {block} bytes: {zeroed}"
    );
    let mut traps = 0;
    for (what, trap) in [
        ("TLBI VMALLE1", probe!("tlbi vmalle1")),
        ("TLBI VMALLE1IS", probe!("tlbi vmalle1is")),
        (
            "TLBI VAE1IS",
            probe!("tlbi vae1is, {a}", a = in(reg) page >> 12),
        ),
        (
            "TLBI ASIDE1IS",
            probe!("tlbi aside1is, {a}", a = in(reg) 0u64),
        ),
        (
            "TLBI VAALE1IS",
            probe!("tlbi vaale1is, {a}", a = in(reg) page >> 12),
        ),
    ] {
        if trap.is_some() {
            show(what, trap);
            traps += 1;
        }
    }
    // SAFETY: barriers only.
    unsafe { core::arch::asm!("dsb sy", "isb", options(nostack)) };
    println!("TLBI VMALLE1, VMALLE1IS, VAE1IS, ASIDE1IS, VAALE1IS at EL1: {traps} exception(s)");
}

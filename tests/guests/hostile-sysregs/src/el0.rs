//! Item C: what the guest's own EL0 gets. AArch64 EL0 reads the counter and the physical timer
//! as the guest's CNTKCTL_EL1 allows, else traps to the guest's EL1 (Arm ARM DDI 0487, D12.6
//! "Accessing the timer and counter registers at EL0", and the CNTVCT_EL0 / CNTP_CTL_EL0
//! accessibility pseudocode: `AArch64.SystemAccessTrap(EL1, 0x18)`); EL1-only registers, hidden
//! PMU registers, HVC and SMC are UNDEFINED at EL0. AArch32 EL0, where ID_AA64PFR0_EL1.EL0 = 2:
//! a 16-bit T32 WFI completes and execution goes on 2 bytes later; CP15 PMU and CP14 debug
//! accesses are Undefined Instruction exceptions taken to EL1 from AArch32 (VBAR_EL1 + 0x600,
//! ESR_EL1 EC 0x00, IL = 1).

use crate::show::Taken;
use capvisor_guest_rt::el0::{self, Entry, SPSR_AARCH32_USER, SPSR_DAIF, SPSR_EL0T, SPSR_T32};
use capvisor_guest_rt::{Outcome, counter, println};
use core::arch::global_asm;
use hostile_guest_common::encode::nibble;
use hostile_guest_common::{
    cpu_interface, distributor, read_sysreg, redistributor, timer, write_sysreg,
};

global_asm!(
    r#"
    .section .text.el0_stubs, "ax"
    .balign 4
    .global __sysregs_el0_cntvct
__sysregs_el0_cntvct:
    mrs     x0, cntvct_el0
    svc     #0
    .global __sysregs_el0_cntp_ctl
__sysregs_el0_cntp_ctl:
    mrs     x0, cntp_ctl_el0
    svc     #0
    .global __sysregs_el0_pmcr
__sysregs_el0_pmcr:
    mrs     x0, S3_3_C9_C12_0
    svc     #0
    .global __sysregs_el0_sctlr
__sysregs_el0_sctlr:
    mrs     x0, sctlr_el1
    svc     #0
    .global __sysregs_el0_hvc
__sysregs_el0_hvc:
    hvc     #0
    svc     #0
    .global __sysregs_el0_smc
__sysregs_el0_smc:
    smc     #0
    svc     #0
    // T32: WFI, then SVC #1, #2, #3 (16-bit each).
    .balign 4
    .global __sysregs_t32_wfi
__sysregs_t32_wfi:
    .hword  0xbf30, 0xdf01, 0xdf02, 0xdf03
    // A32: MRC p15, 0, r0, c9, c12, 0 (PMCR), SVC #1; MRC p14, 0, r0, c0, c0, 0 (DBGDIDR), SVC #1.
    .balign 4
    .global __sysregs_a32_pmcr
__sysregs_a32_pmcr:
    .word   0xee190f1c, 0xef000001
    .global __sysregs_a32_dbgdidr
__sysregs_a32_dbgdidr:
    .word   0xee100e10, 0xef000001
"#
);

unsafe extern "C" {
    static __sysregs_el0_cntvct: u8;
    static __sysregs_el0_cntp_ctl: u8;
    static __sysregs_el0_pmcr: u8;
    static __sysregs_el0_sctlr: u8;
    static __sysregs_el0_hvc: u8;
    static __sysregs_el0_smc: u8;
    static __sysregs_t32_wfi: u8;
    static __sysregs_a32_pmcr: u8;
    static __sysregs_a32_dbgdidr: u8;
}

/// CNTKCTL_EL1.EL0VCTEN (bit 1) and EL0PTEN (bit 9).
const EL0VCTEN: u64 = 1 << 1;
const EL0PTEN: u64 = 1 << 9;
/// SCTLR_EL1.nTWI (bit 16): EL0 WFI not trapped to EL1.
const SCTLR_NTWI: u64 = 1 << 16;
/// ESR_EL1.EC of an SVC from AArch64.
const EC_SVC64: u64 = 0x15;

/// EL0's own stack (AArch64 stubs do not use it; AArch32 code gets it as r13).
#[repr(C, align(16))]
struct Stack([u8; 4096]);

static mut STACK: Stack = Stack([0; 4096]);

/// One trip to EL0 at `pc` with PSTATE `spsr` (interrupts masked).
fn trip(pc: u64, spsr: u64) -> el0::Exit {
    let sp = (&raw mut STACK) as u64 + 4096;
    let mut entry = Entry {
        pc,
        spsr: spsr | SPSR_DAIF,
        sp,
        x: [0; 16],
    };
    entry.x[13] = sp;
    // SAFETY: the stubs above touch only registers, then take an exception back to EL1.
    unsafe { el0::run(&entry) }
}

/// The line for a trip: its exception as seen from the stub at `pc`.
fn taken(exit: &el0::Exit, pc: u64) -> Taken {
    Taken {
        vector: exit.vector,
        esr: exit.esr,
        elr: exit.elr,
        pc,
    }
}

/// A stub that should end in its own SVC (EC 0x15) after the first instruction, reading x0.
fn read_at_el0(what: &str, pc: u64) -> Option<u64> {
    let exit = trip(pc, SPSR_EL0T);
    if exit.class() == EC_SVC64 && exit.elr == pc + 8 {
        return Some(exit.x[0]);
    }
    println!("{what}: {}", taken(&exit, pc));
    None
}

pub fn run() -> Outcome {
    aarch64();
    let pfr0 = read_sysreg!("id_aa64pfr0_el1");
    let el0 = nibble(pfr0, 0);
    println!("ID_AA64PFR0_EL1.EL0 {el0}");
    if el0 == 2 {
        aarch32();
    } else {
        println!("AArch32 EL0 not implemented: AArch32 checks not run");
    }
    Outcome::Pass
}

fn address(symbol: &u8) -> u64 {
    core::ptr::from_ref(symbol) as u64
}

fn aarch64() {
    // SAFETY: only the addresses of the stubs are taken.
    let (cntvct, cntp, pmcr, sctlr, hvc, smc) = unsafe {
        (
            address(&__sysregs_el0_cntvct),
            address(&__sysregs_el0_cntp_ctl),
            address(&__sysregs_el0_pmcr),
            address(&__sysregs_el0_sctlr),
            address(&__sysregs_el0_hvc),
            address(&__sysregs_el0_smc),
        )
    };
    write_sysreg!("cntkctl_el1", EL0VCTEN);
    let before = counter();
    let read = read_at_el0("EL0 CNTVCT_EL0 with CNTKCTL_EL1.EL0VCTEN=1", cntvct);
    let after = counter();
    if let Some(value) = read {
        println!(
            "EL0 CNTVCT_EL0 with CNTKCTL_EL1.EL0VCTEN=1: read, between the EL1 reads around it: {}",
            before <= value && value <= after
        );
    }
    write_sysreg!("cntkctl_el1", 0);
    println!(
        "EL0 CNTVCT_EL0 with CNTKCTL_EL1=0: {}",
        taken(&trip(cntvct, SPSR_EL0T), cntvct)
    );
    println!(
        "EL0 CNTP_CTL_EL0 with CNTKCTL_EL1.EL0PTEN=0: {}",
        taken(&trip(cntp, SPSR_EL0T), cntp)
    );
    write_sysreg!("cntkctl_el1", EL0PTEN);
    timer::set_physical_ctl(timer::IMASK);
    let el1 = timer::physical_ctl();
    if let Some(value) = read_at_el0("EL0 CNTP_CTL_EL0 with CNTKCTL_EL1.EL0PTEN=1", cntp) {
        println!(
            "EL0 CNTP_CTL_EL0 with CNTKCTL_EL1.EL0PTEN=1: read, the value EL1 reads: {}",
            value == el1
        );
    }
    timer::set_physical_ctl(0);
    write_sysreg!("cntkctl_el1", 0);
    for (what, pc) in [
        ("EL0 PMCR_EL0", pmcr),
        ("EL0 SCTLR_EL1", sctlr),
        ("EL0 HVC #0", hvc),
        ("EL0 SMC #0", smc),
    ] {
        println!("{what}: {}", taken(&trip(pc, SPSR_EL0T), pc));
    }
}

fn aarch32() {
    // SAFETY: only the addresses of the stubs are taken.
    let (wfi, pmcr, dbgdidr) = unsafe {
        (
            address(&__sysregs_t32_wfi),
            address(&__sysregs_a32_pmcr),
            address(&__sysregs_a32_dbgdidr),
        )
    };
    // A 16-bit T32 WFI that reaches EL2 (nTWI = 1), woken by the virtual timer, already
    // expired: its interrupt is signalled (GIC CPU interface on, priority mask open) though
    // masked at PSTATE, which still ends a WFI (Arm ARM D1.6.2) — so the vCPU never sleeps and
    // lower priorities do not run in between. Then the interrupt is taken at EL1 by hand.
    distributor::enable_group1();
    cpu_interface::enable(0xff);
    redistributor::enable(timer::VIRTUAL_PPI, 0xa0);
    let sctlr = read_sysreg!("sctlr_el1");
    write_sysreg!("sctlr_el1", sctlr | SCTLR_NTWI);
    timer::arm_virtual(counter());
    let exit = trip(wfi, SPSR_AARCH32_USER | SPSR_T32);
    timer::stop_virtual();
    let intid = cpu_interface::ack();
    if intid != 1023 {
        cpu_interface::eoi(intid);
    }
    write_sysreg!("sctlr_el1", sctlr);
    println!(
        "AArch32 EL0 T32 WFI, then SVC #1 at +2: {}",
        taken(&exit, wfi)
    );
    println!(
        "AArch32 EL0 MRC p15 PMCR: {}",
        taken(&trip(pmcr, SPSR_AARCH32_USER), pmcr)
    );
    println!(
        "AArch32 EL0 MRC p14 DBGDIDR: {}",
        taken(&trip(dbgdidr, SPSR_AARCH32_USER), dbgdidr)
    );
}

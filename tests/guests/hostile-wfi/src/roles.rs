//! The sleepers and the MMIO checks.

use capvisor_guest_rt::probe::Trap;
use capvisor_guest_rt::{
    Outcome, counter, disable_mmu, enable_mmu, image_range, println, probe, system_off,
};
use hostile_guest_common::encode::{
    DFSC_ALIGNMENT, DFSC_SYNC_EXTERNAL, ISS_ISV, ISS_WNR, class, ec, gic::GICD, iss,
};
use hostile_guest_common::{
    cpu_interface, distributor, frequency, mask_irqs, redistributor, timer, wfi,
};

/// WFIs returned before a sleeper concludes it is spinning and powers off.
const SPIN_LIMIT: u64 = 100_000;

pub fn sleeper(masked: bool) -> Outcome {
    let name = if masked { "sleeper-masked" } else { "sleeper" };
    mask_irqs();
    if masked {
        // Everything enabled but the priority mask, which no priority passes.
        distributor::enable_group1();
        redistributor::enable(timer::VIRTUAL_PPI, 0xa0);
        cpu_interface::enable(0);
        timer::arm_virtual(counter() + frequency() / 1000);
        println!("{name}: virtual timer armed 1 ms ahead, ICC_PMR_EL1 0: waiting in WFI forever");
    } else {
        println!("{name}: nothing armed: waiting in WFI forever");
    }
    for _ in 0..SPIN_LIMIT {
        wfi();
    }
    println!("{name}: WFI returned {SPIN_LIMIT} times with nothing to wake it");
    system_off()
}

/// `EC … DFSC … IL … ISV … WnR … at +…, ELR …, FAR …` for a data abort the probe caught.
fn describe(what: &str, trap: Option<Trap>, address: u64) {
    let Some(trap) = trap else {
        println!("mmio: {what}: completed, no exception");
        return;
    };
    let syndrome = iss(trap.esr);
    let elr = if trap.elr == trap.pc {
        "at the instruction"
    } else {
        "elsewhere"
    };
    let far = if trap.far == address {
        "the address"
    } else {
        "elsewhere"
    };
    println!(
        "mmio: {what}: EC {:#x} DFSC {:#x} IL {} ISV {} WnR {} at +{:#x}, ELR {elr}, FAR {far} \
         (ESR {:#x})",
        class(trap.esr),
        syndrome & 0x3f,
        u8::from(trap.il()),
        u8::from(syndrome & ISS_ISV != 0),
        u8::from(syndrome & ISS_WNR != 0),
        trap.vector * 0x80,
        trap.esr
    );
}

#[repr(C, align(16))]
struct Buffer([u8; 64]);

static BUFFER: Buffer = Buffer([0x5a; 64]);

pub fn mmio() -> Outcome {
    let ldp = probe!("ldp {a}, {b}, [{g}]", a = out(reg) _, b = out(reg) _, g = in(reg) GICD);
    describe("LDP from the GIC distributor", ldp, GICD);
    let stp = probe!("stp xzr, xzr, [{g}]", g = in(reg) GICD);
    describe("STP to the GIC distributor", stp, GICD);
    let device = GICD + 2;
    let unaligned_off = probe!("ldr {v:w}, [{a}]", v = out(reg) _, a = in(reg) device);
    describe(
        "unaligned LDR from the GIC distributor, MMU off",
        unaligned_off,
        device,
    );
    // SAFETY: the MMU is off; the identity map keeps the guest's code and data where they are.
    unsafe { enable_mmu() };
    let unaligned_on = probe!("ldr {v:w}, [{a}]", v = out(reg) _, a = in(reg) device);
    let (start, end) = image_range();
    // SAFETY: turned on just above; nothing the guest needs lies outside its image.
    unsafe { disable_mmu(start, end) };
    describe(
        "unaligned LDR from the GIC distributor, MMU on",
        unaligned_on,
        device,
    );
    // Informational: with the MMU off, RAM is Device at stage 1, but what the access sees is
    // the combination with stage 2 (Normal write-back, forced so with FEAT_S2FWB), and QEMU does
    // not raise this alignment fault once stage 2 is on (docs/hostile-guests.md).
    let ram = core::ptr::from_ref(&BUFFER) as u64 + 1;
    let unaligned_ram = probe!("ldr {v}, [{a}]", v = out(reg) _, a = in(reg) ram);
    describe(
        "unaligned LDR from RAM, MMU off (not asserted)",
        unaligned_ram,
        ram,
    );
    let external = |t: Option<Trap>| {
        t.is_some_and(|t| {
            class(t.esr) == ec::DATA_ABORT_SAME_EL && iss(t.esr) & 0x3f == DFSC_SYNC_EXTERNAL
        })
    };
    let alignment = |t: Option<Trap>| {
        t.is_some_and(|t| {
            class(t.esr) == ec::DATA_ABORT_SAME_EL && iss(t.esr) & 0x3f == DFSC_ALIGNMENT
        })
    };
    if external(ldp) && external(stp) && alignment(unaligned_off) && alignment(unaligned_on) {
        Outcome::Pass
    } else {
        Outcome::Fail("an MMIO access did not get the Arm ARM's answer")
    }
}

//! A vCPU's GICv3 virtual CPU interface (GIC Architecture Specification IHI 0069H, 11
//! "Virtualization" and 12.5 "The virtual CPU interface" / ICH_* registers): its list registers,
//! active-priority registers and ICH_VMCR_EL2, switched with the vCPU's EL1 state.
//!
//! With HCR_EL2.IMO/FMO set (`vcpu::HCR_GUEST`) the guest's ICC_* system-register accesses go to
//! the virtual CPU interface (ICV_*), which presents the interrupts the list registers hold:
//! acknowledging, ending and deactivating them needs no exit. ICH_HCR_EL2.En enables it for the
//! loaded vCPU; while EL0 services run (TGE = 1) no virtual interrupt is signalled, so the state
//! stays loaded lazily like the EL1 registers.
//!
//! The list registers' encoding and the injection rule are `capvisor_kernel::vgic`.

use aarch64_cpu::registers::{ICH_HCR_EL2, ICH_VTR_EL2};
use capvisor_kernel::vgic::{self, MAX_AP, MAX_LIST_REGISTERS, VgicState};
use core::arch::asm;
use core::sync::atomic::{AtomicUsize, Ordering};

/// ICH_HCR_EL2.En: the virtual CPU interface is enabled.
const ICH_HCR_EN: u64 = ICH_HCR_EL2::En::SET.value;
/// ICH_HCR_EL2.UIE: a maintenance interrupt while at most one list register holds an
/// interrupt (ICH_MISR_EL2.U).
const ICH_HCR_UIE: u64 = ICH_HCR_EL2::UIE::SET.value;
/// ICH_HCR_EL2.NPIE: a maintenance interrupt while no list register holds a pending interrupt
/// (ICH_MISR_EL2.NP).
const ICH_HCR_NPIE: u64 = ICH_HCR_EL2::NPIE::SET.value;
/// ICH_HCR_EL2.TDIR: EL1 writes of ICC_DIR_EL1 trap to EL2, so a guest's deactivation of an
/// interrupt that is no longer in a list register reaches its VMM.
const ICH_HCR_TDIR: u64 = ICH_HCR_EL2::TDIR::SET.value;
/// ICH_HCR_EL2 while a vCPU is loaded (TDIR where the interface has it: ICH_VTR_EL2.TDS).
static ICH_HCR: AtomicUsize = AtomicUsize::new(ICH_HCR_EN as usize);

/// ICH_HCR_EL2 for a vCPU with list registers `lrs`, whose VMM waits (`overflow`) for room in
/// them: the maintenance interrupt comes when the guest has taken every pending interrupt
/// (NPIE), or — none pending, all active — when it has deactivated all but one (UIE). Either
/// armed while its condition already holds would interrupt the guest at once, again and again,
/// so neither is then: NPIE needs a pending register, UIE two that hold an interrupt.
fn ich_hcr(overflow: bool, lrs: impl Iterator<Item = u64>) -> u64 {
    let base = ICH_HCR.load(Ordering::Relaxed) as u64;
    if !overflow {
        return base;
    }
    let (mut pending, mut held) = (false, 0);
    for lr in lrs {
        pending |= lr & vgic::PENDING != 0;
        held += usize::from(lr & vgic::STATE != 0);
    }
    base | match (pending, held) {
        (true, _) => ICH_HCR_NPIE,
        (false, 2..) => ICH_HCR_UIE,
        (false, _) => 0,
    }
}

/// Arms (or disarms) the loaded vCPU's maintenance interrupt for room in its list registers.
pub fn arm_drained(overflow: bool) {
    let value = ich_hcr(overflow, (0..list_registers()).map(read_lr));
    // SAFETY: ICH_HCR_EL2 of the loaded vCPU's virtual CPU interface; the ISB makes it take
    // effect before the guest runs again.
    unsafe { asm!("msr ich_hcr_el2, {}", "isb", in(reg) value, options(nostack, preserves_flags)) };
}

/// Whether the virtual CPU interface traps a guest's ICC_DIR_EL1 writes (ICH_VTR_EL2.TDS): a
/// VMM may then keep a guest's active interrupts outside the list registers.
pub fn traps_deactivation() -> bool {
    ICH_HCR.load(Ordering::Relaxed) as u64 & ICH_HCR_TDIR != 0
}

/// Deactivates software interrupt `intid` in the loaded vCPU's list registers (its trapped
/// ICC_DIR_EL1 write, EOImode 1); a hardware-linked one's physical interrupt is deactivated
/// too. `false` when no list register holds it active.
pub fn deactivate_loaded(intid: u32) -> bool {
    for n in 0..list_registers() {
        let value = read_lr(n);
        if value & vgic::ACTIVE != 0 && vgic::intid(value) == intid {
            let rest = value & !vgic::ACTIVE;
            write_lr(n, if rest & vgic::STATE == 0 { 0 } else { rest });
            if value & vgic::HW != 0 {
                super::gic::deactivate(((value >> 32) & 0x3ff) as u32);
            }
            // SAFETY: a barrier so the list register is written before the guest runs.
            unsafe { asm!("isb", options(nostack, preserves_flags)) };
            return true;
        }
    }
    false
}

/// Implemented list registers (0 until [`init`]: no GIC virtualization).
static LIST_REGISTERS: AtomicUsize = AtomicUsize::new(0);
/// Implemented active-priority registers per group.
static AP_REGISTERS: AtomicUsize = AtomicUsize::new(0);

/// The number of list registers.
pub fn list_registers() -> usize {
    LIST_REGISTERS.load(Ordering::Relaxed)
}

/// Reads ICH_VTR_EL2 (IHI 0069H 12.5.25): ListRegs [4:0] is the count minus one, PREbits
/// [28:26] the preemption bits minus one (5, 6 or 7 bits: 1, 2 or 4 active-priority registers).
pub fn init() {
    let vtr: u64;
    // SAFETY: reading an ID register.
    unsafe { asm!("mrs {}, ich_vtr_el2", out(reg) vtr, options(nomem, nostack, preserves_flags)) };
    let lrs = (ICH_VTR_EL2::ListRegs.read(vtr) as usize + 1).min(MAX_LIST_REGISTERS);
    let pre_bits = ICH_VTR_EL2::PREbits.read(vtr) as usize + 1;
    let ap = (1usize << pre_bits.saturating_sub(5)).min(MAX_AP);
    LIST_REGISTERS.store(lrs, Ordering::Relaxed);
    AP_REGISTERS.store(ap, Ordering::Relaxed);
    PRE_BITS.store(pre_bits, Ordering::Relaxed);
    // ICH_VTR_EL2.TDS (bit 19, not among `aarch64-cpu`'s fields): ICH_HCR_EL2.TDIR exists.
    let tds = vtr & (1 << 19) != 0;
    let hcr = ICH_HCR_EN | if tds { ICH_HCR_TDIR } else { 0 };
    ICH_HCR.store(hcr as usize, Ordering::Relaxed);
}

/// The virtual CPU interface's preemption bits (ICH_VTR_EL2.PREbits + 1).
static PRE_BITS: AtomicUsize = AtomicUsize::new(5);

/// The preemption bits of the virtual CPU interface (5 to 7).
pub fn pre_bits() -> u32 {
    PRE_BITS.load(Ordering::Relaxed) as u32
}

/// `read_lr(n)` and `write_lr(n, value)`: ICH_LR<n>_EL2 has one instruction encoding per `n`.
macro_rules! list_register_accessors {
    ($($n:literal => $reg:literal),* $(,)?) => {
        fn read_lr(n: usize) -> u64 {
            let value: u64;
            match n {
                // SAFETY: reading an implemented list register (`n` < `list_registers()`).
                $($n => unsafe {
                    asm!(concat!("mrs {}, ", $reg), out(reg) value,
                         options(nomem, nostack, preserves_flags))
                },)*
                _ => value = 0,
            }
            value
        }

        fn write_lr(n: usize, value: u64) {
            match n {
                // SAFETY: writing an implemented list register of the loaded vCPU.
                $($n => unsafe {
                    asm!(concat!("msr ", $reg, ", {}"), in(reg) value,
                         options(nostack, preserves_flags))
                },)*
                _ => {}
            }
        }
    };
}

list_register_accessors!(
    0 => "ich_lr0_el2", 1 => "ich_lr1_el2", 2 => "ich_lr2_el2", 3 => "ich_lr3_el2",
    4 => "ich_lr4_el2", 5 => "ich_lr5_el2", 6 => "ich_lr6_el2", 7 => "ich_lr7_el2",
    8 => "ich_lr8_el2", 9 => "ich_lr9_el2", 10 => "ich_lr10_el2", 11 => "ich_lr11_el2",
    12 => "ich_lr12_el2", 13 => "ich_lr13_el2", 14 => "ich_lr14_el2", 15 => "ich_lr15_el2",
);

fn read_ap(group1: bool, n: usize) -> u64 {
    let value: u64;
    // SAFETY: reading an implemented active-priority register (`n` < AP_REGISTERS).
    unsafe {
        match (group1, n) {
            (false, 0) => asm!("mrs {}, ich_ap0r0_el2", out(reg) value, options(nomem, nostack)),
            (false, 1) => asm!("mrs {}, ich_ap0r1_el2", out(reg) value, options(nomem, nostack)),
            (false, 2) => asm!("mrs {}, ich_ap0r2_el2", out(reg) value, options(nomem, nostack)),
            (false, _) => asm!("mrs {}, ich_ap0r3_el2", out(reg) value, options(nomem, nostack)),
            (true, 0) => asm!("mrs {}, ich_ap1r0_el2", out(reg) value, options(nomem, nostack)),
            (true, 1) => asm!("mrs {}, ich_ap1r1_el2", out(reg) value, options(nomem, nostack)),
            (true, 2) => asm!("mrs {}, ich_ap1r2_el2", out(reg) value, options(nomem, nostack)),
            (true, _) => asm!("mrs {}, ich_ap1r3_el2", out(reg) value, options(nomem, nostack)),
        }
    }
    value
}

fn write_ap(group1: bool, n: usize, value: u64) {
    // SAFETY: writing an implemented active-priority register of the loaded vCPU.
    unsafe {
        match (group1, n) {
            (false, 0) => asm!("msr ich_ap0r0_el2, {}", in(reg) value, options(nostack)),
            (false, 1) => asm!("msr ich_ap0r1_el2, {}", in(reg) value, options(nostack)),
            (false, 2) => asm!("msr ich_ap0r2_el2, {}", in(reg) value, options(nostack)),
            (false, _) => asm!("msr ich_ap0r3_el2, {}", in(reg) value, options(nostack)),
            (true, 0) => asm!("msr ich_ap1r0_el2, {}", in(reg) value, options(nostack)),
            (true, 1) => asm!("msr ich_ap1r1_el2, {}", in(reg) value, options(nostack)),
            (true, 2) => asm!("msr ich_ap1r2_el2, {}", in(reg) value, options(nostack)),
            (true, _) => asm!("msr ich_ap1r3_el2, {}", in(reg) value, options(nostack)),
        }
    }
}

/// Saves the loaded vCPU's virtual CPU interface into `state` and disables it.
pub fn save(state: &mut VgicState) {
    for n in 0..list_registers() {
        state.lr[n] = read_lr(n);
        write_lr(n, 0);
    }
    for n in 0..AP_REGISTERS.load(Ordering::Relaxed) {
        state.ap0r[n] = read_ap(false, n);
        state.ap1r[n] = read_ap(true, n);
    }
    // SAFETY: reading and writing the virtual CPU interface's control registers at EL2.
    unsafe {
        asm!("mrs {}, ich_vmcr_el2", out(reg) state.vmcr, options(nomem, nostack, preserves_flags));
        asm!(
            "msr ich_hcr_el2, xzr",
            "isb",
            options(nostack, preserves_flags)
        );
    }
}

/// Loads `state` into the virtual CPU interface and enables it.
pub fn restore(state: &VgicState) {
    if list_registers() == 0 {
        return;
    }
    for n in 0..list_registers() {
        write_lr(n, state.lr[n]);
    }
    for n in 0..AP_REGISTERS.load(Ordering::Relaxed) {
        write_ap(false, n, state.ap0r[n]);
        write_ap(true, n, state.ap1r[n]);
    }
    let hcr = ich_hcr(state.overflow, state.lr[..list_registers()].iter().copied());
    // SAFETY: as in `save`; the ISB makes the interface's new state take effect before the guest
    // is entered.
    unsafe {
        asm!("msr ich_vmcr_el2, {}", in(reg) state.vmcr, options(nostack, preserves_flags));
        asm!("msr ich_hcr_el2, {}", "isb", in(reg) hcr, options(nostack, preserves_flags));
    }
}

/// Puts virtual interrupt `intid`, linked to physical `physical`, in a free list register among
/// the first `usable` of the loaded vCPU (its state is in the hardware). `Err(())` when none is
/// free.
pub fn inject_loaded(
    usable: usize,
    intid: u32,
    priority: u8,
    physical: Option<u32>,
) -> Result<(), ()> {
    let elrsr: u64;
    // SAFETY: reading ICH_ELRSR_EL2, the empty list registers (IHI 0069H 12.5.7).
    unsafe {
        asm!("mrs {}, ich_elrsr_el2", out(reg) elrsr, options(nomem, nostack, preserves_flags))
    };
    let free = (0..list_registers().min(usable))
        .find(|n| elrsr & (1 << n) != 0)
        .ok_or(())?;
    write_lr(free, vgic::pending(intid, priority, physical));
    // SAFETY: a barrier so that the list register is written before the guest is entered.
    unsafe { asm!("isb", options(nostack, preserves_flags)) };
    Ok(())
}

/// Whether a list register of the loaded vCPU holds software interrupt `intid` (pending or
/// active).
pub fn holds_loaded(intid: u32) -> bool {
    (0..list_registers()).any(|n| {
        let value = read_lr(n);
        value & vgic::STATE != 0 && value & vgic::HW == 0 && vgic::intid(value) == intid
    })
}

/// Withdraws the pending state of software interrupt `intid` from the loaded vCPU's list
/// registers (its level-sensitive source fell before the guest took it); an active one stays.
pub fn withdraw_pending_loaded(intid: u32) {
    for n in 0..list_registers() {
        let value = read_lr(n);
        if value & vgic::PENDING != 0 && value & vgic::HW == 0 && vgic::intid(value) == intid {
            let rest = value & !vgic::PENDING;
            write_lr(n, if rest & vgic::STATE == 0 { 0 } else { rest });
        }
    }
    // SAFETY: a barrier so that the list register is written before the guest is entered.
    unsafe { asm!("isb", options(nostack, preserves_flags)) };
}

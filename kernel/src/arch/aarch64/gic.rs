//! The physical GICv3 (through `arm-gic`) and the EL2 physical timer that gives threads their
//! time slices.
//!
//! Interrupts are group 1 non-secure. The kernel itself runs with IRQs masked (PSTATE.I is set on
//! every exception entry), so an interrupt is taken only from EL0, where services run with IRQs
//! unmasked and HCR_EL2.TGE routes them to EL2. The timer is the EL2 physical timer
//! (CNTHP_*_EL2, PPI 26 on QEMU `virt`; the device tree's fourth timer interrupt), GIC
//! Architecture Specification v3/v4 (IHI 0069H), 12 "System register interface".

use arm_gic::gicv3::registers::{Gicd, GicrSgi};
use arm_gic::gicv3::{GicCpuInterface, GicV3};
use arm_gic::{IntId, InterruptGroup, UniqueMmioPointer};
use core::arch::asm;
use core::ptr::NonNull;
use spin::Mutex;

static GIC: Mutex<Option<GicV3<'static>>> = Mutex::new(None);
static mut SLICE_TICKS: u64 = 0;

/// The hypervisor physical timer's interrupt.
pub const HYP_TIMER: IntId = IntId::ppi(10);

/// Why the GIC could not be set up.
#[derive(Clone, Copy, Debug)]
pub struct GicError;

/// Sets up the distributor, CPU 0's redistributor and CPU interface, and enables the hypervisor
/// timer's interrupt with a slice of `slice_us` microseconds.
///
/// # Safety
///
/// `gicd` and `gicr` must be the GICv3 distributor and redistributor regions, mapped as Device
/// memory and used by nothing else.
pub unsafe fn init(gicd: usize, gicr: usize, cpus: usize, slice_us: u64) -> Result<(), GicError> {
    let gicd = NonNull::new(gicd as *mut Gicd).ok_or(GicError)?;
    let gicr = NonNull::new(gicr as *mut GicrSgi).ok_or(GicError)?;
    // SAFETY: the caller promises these are the GIC's registers, mapped and exclusively ours.
    let mut gic =
        unsafe { GicV3::new(UniqueMmioPointer::new(gicd), gicr, cpus) }.map_err(|_| GicError)?;
    // EL2 uses the system-register interface; lower ELs may too (guests, later).
    GicCpuInterface::enable_system_register_el2(true);
    gic.setup(0);
    gic.set_interrupt_priority(HYP_TIMER, Some(0), 0x80)
        .map_err(|_| GicError)?;
    gic.enable_interrupt(HYP_TIMER, Some(0), true)
        .map_err(|_| GicError)?;
    GicCpuInterface::set_priority_mask(0xff);
    *GIC.lock() = Some(gic);
    let freq: u64;
    // SAFETY: reading the counter frequency has no side effects.
    unsafe { asm!("mrs {}, cntfrq_el0", out(reg) freq, options(nomem, nostack, preserves_flags)) };
    // SAFETY: written once here, on CPU 0, before any interrupt can fire.
    unsafe { SLICE_TICKS = (freq * slice_us / 1_000_000).max(1) };
    Ok(())
}

/// Starts a new time slice: the timer fires after one slice from now.
pub fn start_slice() {
    // SAFETY: CNTHP_TVAL_EL2/CNTHP_CTL_EL2 are the kernel's own timer; ENABLE set, IMASK clear.
    unsafe {
        asm!(
            "msr cnthp_tval_el2, {ticks}",
            "msr cnthp_ctl_el2, {ctl}",
            "isb",
            ticks = in(reg) SLICE_TICKS,
            ctl = in(reg) 1u64,
            options(nostack, preserves_flags)
        );
    }
}

/// Unmasks (`enabled`) or masks an SGI, PPI or SPI on CPU 0, the CPU that runs threads: the glue
/// masks an interrupt it hands to the object model until its handler acknowledges it.
pub fn set_enabled(intid: u32, enabled: bool) {
    let id = match intid {
        0..16 => IntId::sgi(intid),
        16..32 => IntId::ppi(intid - 16),
        32..1020 => IntId::spi(intid - 32),
        _ => return,
    };
    if let Some(gic) = GIC.lock().as_mut() {
        // An interrupt ID the GIC does not implement is left alone: there is nothing to mask.
        let _ = gic.enable_interrupt(id, Some(0), enabled);
    }
}

/// An interrupt that was pending, acknowledged and ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interrupt {
    /// The time slice ended.
    Tick,
    /// Another interrupt (not routed anywhere yet).
    Other(u32),
    /// Nothing was pending (spurious).
    None,
}

/// Acknowledges the highest-priority pending interrupt and ends it.
pub fn take() -> Interrupt {
    let Some(intid) = GicCpuInterface::get_and_acknowledge_interrupt(InterruptGroup::Group1) else {
        return Interrupt::None;
    };
    GicCpuInterface::end_interrupt(intid, InterruptGroup::Group1);
    if intid == HYP_TIMER {
        Interrupt::Tick
    } else {
        Interrupt::Other(u32::from(intid))
    }
}

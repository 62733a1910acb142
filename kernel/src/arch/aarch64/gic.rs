//! The physical GICv3 (through `arm-gic`) and the EL2 physical timer that gives threads their
//! time slices.
//!
//! The CPU interface runs with ICC_CTLR_EL1.EOImode = 1 (IHI 0069H, 12.2.6): an EOI only drops
//! the running priority, and a separate ICC_DIR_EL1 write deactivates. Every interrupt the kernel
//! handles itself is deactivated at once; the virtual timer's PPI is left active and handed to the
//! loaded vCPU through a hardware list register (`vgic.rs`), so the guest's own deactivation of
//! the virtual interrupt deactivates the physical one (IHI 0069H, 11.1 "Interrupts in a
//! virtualized environment", ICH_LR<n>_EL2.HW) and the level-sensitive timer cannot fire again
//! before the guest has handled it.
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
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use spin::Mutex;

static GIC: Mutex<Option<GicV3<'static>>> = Mutex::new(None);
static mut SLICE_TICKS: u64 = 0;
/// The virtual timer's PPI (INTID), from the device tree.
static VTIMER: AtomicU32 = AtomicU32::new(27);
/// CPU 0's redistributor SGI/PPI frame (its RD frame + 64 KiB).
static GICR_SGI: AtomicUsize = AtomicUsize::new(0);

/// The hypervisor physical timer's interrupt.
pub const HYP_TIMER: IntId = IntId::ppi(10);
/// GICR_ISACTIVER0 and GICR_ICACTIVER0 in the SGI/PPI frame (IHI 0069H, 12.11.x).
const GICR_ISACTIVER0: usize = 0x0300;
const GICR_ICACTIVER0: usize = 0x0380;
/// ICC_CTLR_EL1.EOImode.
const EOI_MODE: u64 = 1 << 1;

/// Why the GIC could not be set up.
#[derive(Clone, Copy, Debug)]
pub struct GicError;

/// Sets up the distributor, CPU 0's redistributor and CPU interface, and enables the hypervisor
/// timer's interrupt with a slice of `slice_us` microseconds, and the virtual timer's (`vtimer`,
/// a PPI's INTID) for the guests.
///
/// # Safety
///
/// `gicd` and `gicr` must be the GICv3 distributor and redistributor regions, mapped as Device
/// memory and used by nothing else.
pub unsafe fn init(
    gicd: usize,
    gicr: usize,
    cpus: usize,
    (slice_us, vtimer): (u64, u32),
) -> Result<(), GicError> {
    GICR_SGI.store(gicr + 0x1_0000, Ordering::Relaxed);
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
    let maintenance = IntId::ppi(MAINTENANCE - 16);
    gic.set_interrupt_priority(maintenance, Some(0), 0x80)
        .map_err(|_| GicError)?;
    gic.enable_interrupt(maintenance, Some(0), true)
        .map_err(|_| GicError)?;
    if (16..32).contains(&vtimer) {
        VTIMER.store(vtimer, Ordering::Relaxed);
        let id = IntId::ppi(vtimer - 16);
        gic.set_interrupt_priority(id, Some(0), 0x80)
            .map_err(|_| GicError)?;
        gic.enable_interrupt(id, Some(0), true)
            .map_err(|_| GicError)?;
    }
    // SAFETY: EOImode = 1 splits priority drop (EOIR) from deactivation (DIR); `take` and
    // `deactivate` follow it for every interrupt.
    unsafe {
        asm!("msr icc_ctlr_el1, {}", "isb", in(reg) EOI_MODE, options(nostack, preserves_flags))
    };
    GicCpuInterface::set_priority_mask(0xff);
    *GIC.lock() = Some(gic);
    let freq: u64;
    // SAFETY: reading the counter frequency has no side effects.
    unsafe { asm!("mrs {}, cntfrq_el0", out(reg) freq, options(nomem, nostack, preserves_flags)) };
    // SAFETY: written once here, on CPU 0, before any interrupt can fire.
    unsafe { SLICE_TICKS = (freq * slice_us / 1_000_000).max(1) };
    Ok(())
}

/// The physical count at which the current slice ends (the kernel's timer may fire earlier for
/// a deadline, `fire_by`).
static SLICE_END: AtomicU64 = AtomicU64::new(0);

/// Makes the kernel's timer fire at physical count `deadline` if that is before it would (a
/// sleeping vCPU's timer is due before the next tick, or a running one's emulated timer).
pub fn fire_by(deadline: u64) {
    let current: u64;
    // SAFETY: reading the kernel's own timer's compare value has no side effects.
    unsafe {
        asm!("mrs {}, cnthp_cval_el2", out(reg) current, options(nomem, nostack, preserves_flags))
    };
    if deadline < current {
        // SAFETY: the kernel's own timer, enabled and unmasked as `start_slice` leaves it.
        unsafe {
            asm!(
                "msr cnthp_cval_el2, {}",
                "isb",
                in(reg) deadline,
                options(nostack, preserves_flags)
            )
        };
    }
}

/// Whether the current slice has ended (the timer did not fire early for a deadline).
#[must_use]
// Inlined, as LLVM chose before the boot builder left the kernel: out of line it costs the
// guest exit and interrupt paths instructions (`docs/benchmarks.md`, issue 15).
#[inline]
pub fn slice_over() -> bool {
    super::cpu::physical_counter() >= SLICE_END.load(Ordering::Relaxed)
}

/// The timer fired early for a deadline: it fires again at the slice's end.
// Inlined, as LLVM chose before the boot builder left the kernel: out of line it costs the
// guest exit and interrupt paths instructions (`docs/benchmarks.md`, issue 15).
#[inline]
pub fn resume_slice() {
    let end = SLICE_END.load(Ordering::Relaxed);
    // SAFETY: the kernel's own timer, enabled and unmasked as `start_slice` leaves it.
    unsafe {
        asm!("msr cnthp_cval_el2, {}", "isb", in(reg) end, options(nostack, preserves_flags))
    };
}

/// Starts a new time slice: the timer fires after one slice from now.
pub fn start_slice() {
    // SAFETY: written once in `init`, before any interrupt can fire.
    let ticks = unsafe { SLICE_TICKS };
    let end = super::cpu::physical_counter().wrapping_add(ticks);
    SLICE_END.store(end, Ordering::Relaxed);
    // SAFETY: CNTHP_CVAL_EL2/CNTHP_CTL_EL2 are the kernel's own timer; ENABLE set, IMASK clear.
    unsafe {
        asm!(
            "msr cnthp_cval_el2, {end}",
            "msr cnthp_ctl_el2, {ctl}",
            "isb",
            end = in(reg) end,
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

/// An interrupt that was pending and acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interrupt {
    /// The time slice ended (deactivated).
    Tick,
    /// The virtual CPU interface's maintenance interrupt (deactivated): the loaded vCPU took
    /// every pending interrupt of its list registers while its VMM had more.
    Maintenance,
    /// The loaded vCPU's virtual timer (its PPI): still active, for the vCPU to deactivate
    /// through a hardware list register, or for [`deactivate`].
    VirtualTimer(u32),
    /// Another interrupt (still active: forwarded to a vCPU, or deactivated by the caller and
    /// handed to its handler's notification).
    Other(u32),
    /// Nothing was pending (spurious).
    None,
}

/// Acknowledges the highest-priority pending interrupt and drops the running priority; the time
/// slice's is deactivated too, the others are left active for the caller.
// Inlined, as LLVM chose before the boot builder left the kernel: out of line it costs the
// guest exit and interrupt paths instructions (`docs/benchmarks.md`, issue 15).
#[inline]
pub fn take() -> Interrupt {
    let Some(intid) = GicCpuInterface::get_and_acknowledge_interrupt(InterruptGroup::Group1) else {
        return Interrupt::None;
    };
    GicCpuInterface::end_interrupt(intid, InterruptGroup::Group1);
    let raw = u32::from(intid);
    if raw == VTIMER.load(Ordering::Relaxed) {
        return Interrupt::VirtualTimer(raw);
    }
    if intid == HYP_TIMER {
        deactivate(raw);
        Interrupt::Tick
    } else if raw == MAINTENANCE {
        deactivate(raw);
        Interrupt::Maintenance
    } else {
        Interrupt::Other(raw)
    }
}

/// The virtual CPU interface's maintenance interrupt: PPI 9, INTID 25 (the GIC binding's
/// and QEMU `virt`'s).
const MAINTENANCE: u32 = 25;

/// Deactivates interrupt `intid` (ICC_DIR_EL1, IHI 0069H 12.2.10).
pub fn deactivate(intid: u32) {
    // SAFETY: deactivating an interrupt this CPU acknowledged; no memory effects.
    unsafe {
        asm!("msr icc_dir_el1, {}", "isb", in(reg) u64::from(intid), options(nostack, preserves_flags));
    }
}

/// The virtual timer's PPI.
pub fn vtimer() -> u32 {
    VTIMER.load(Ordering::Relaxed)
}

/// Whether the virtual timer's PPI is active on CPU 0, and makes it inactive: for a vCPU whose
/// state leaves the CPU with its timer interrupt not yet deactivated (KVM does the same on
/// `vcpu_put`), so that the next vCPU's timer can fire.
pub fn take_vtimer_active() -> bool {
    let bit = 1u32 << (vtimer() % 32);
    let frame = GICR_SGI.load(Ordering::Relaxed);
    if frame == 0 {
        return false;
    }
    // SAFETY: CPU 0's redistributor SGI frame, mapped as Device memory by `init`'s caller; the
    // active registers are read and set/clear-by-bit.
    unsafe {
        let active = core::ptr::read_volatile((frame + GICR_ISACTIVER0) as *const u32) & bit != 0;
        if active {
            core::ptr::write_volatile((frame + GICR_ICACTIVER0) as *mut u32, bit);
        }
        active
    }
}

/// Makes the virtual timer's PPI active again on CPU 0, for a vCPU whose saved list register
/// still holds it (the counterpart of [`take_vtimer_active`]).
pub fn set_vtimer_active() {
    let bit = 1u32 << (vtimer() % 32);
    let frame = GICR_SGI.load(Ordering::Relaxed);
    if frame != 0 {
        // SAFETY: as in `take_vtimer_active`; the read back makes the (posted) write complete
        // before the caller goes on.
        unsafe {
            core::ptr::write_volatile((frame + GICR_ISACTIVER0) as *mut u32, bit);
            let _ = core::ptr::read_volatile((frame + GICR_ISACTIVER0) as *const u32);
        }
    }
}

//! The bare-metal half: the guest's role, system registers, the GIC CPU interface and the GIC
//! registers the VMM emulates, and the generic timers (Arm ARM DDI 0487 D12 "The Generic Timer
//! in AArch64 state"; GIC IHI 0069H).

use crate::encode::gic::{self, SGI_BASE};
use core::arch::asm;

/// Reads a system register by name (or `S<op0>_<op1>_C<n>_C<m>_<op2>`).
#[macro_export]
macro_rules! read_sysreg {
    ($name:literal) => {{
        let value: u64;
        // SAFETY: reading a system register the guest may read at EL1; no memory effects.
        unsafe { core::arch::asm!(concat!("mrs {}, ", $name), out(reg) value, options(nomem, nostack)) };
        value
    }};
}

/// Writes a system register by name, followed by an ISB.
#[macro_export]
macro_rules! write_sysreg {
    ($name:literal, $value:expr) => {{
        let value: u64 = $value;
        // SAFETY: the caller writes a register of its own EL1 state, for a test; the ISB makes
        // it take effect.
        unsafe {
            core::arch::asm!(concat!("msr ", $name, ", {}"), "isb", in(reg) value,
                options(nomem, nostack))
        };
    }};
}

/// The guest's role: the first word of its command line (`""` without one).
pub fn role(buffer: &mut [u8; 64]) -> &str {
    crate::first_word(capvisor_guest_rt::bootargs(buffer))
}

/// Reads the 32-bit device register at `address`.
#[must_use]
pub fn read32(address: u64) -> u32 {
    let value: u32;
    // SAFETY: `address` is an emulated device register (GIC) the caller names; a single aligned
    // `ldr w` has ISV = 1, so the VMM can emulate it.
    unsafe { asm!("ldr {v:w}, [{a}]", v = out(reg) value, a = in(reg) address, options(nostack)) };
    value
}

/// Writes the 32-bit device register at `address`.
pub fn write32(address: u64, value: u32) {
    // SAFETY: as for `read32`, a single aligned `str w`.
    unsafe { asm!("str {v:w}, [{a}]", v = in(reg) value, a = in(reg) address, options(nostack)) };
}

/// Masks IRQs at PSTATE.
pub fn mask_irqs() {
    // SAFETY: changes only this vCPU's interrupt mask.
    unsafe { asm!("msr daifset, #2", options(nomem, nostack)) };
}

/// Unmasks IRQs at PSTATE (a pending one is taken right after the ISB).
pub fn unmask_irqs() {
    // SAFETY: as above; the IRQ hook handles what arrives.
    unsafe { asm!("msr daifclr, #2", "isb", options(nomem, nostack)) };
}

/// One WFI.
pub fn wfi() {
    // SAFETY: waiting for an interrupt has no effect on memory.
    unsafe { asm!("dsb sy", "wfi", options(nomem, nostack)) };
}

/// The counter frequency, CNTFRQ_EL0.
#[must_use]
pub fn frequency() -> u64 {
    read_sysreg!("cntfrq_el0")
}

/// Waits with WFI until `done()` or until the virtual count passes `deadline`, with IRQs masked
/// while checking (a pending interrupt still ends the WFI, Arm ARM D1.6.2) and unmasked after
/// each WFI so the IRQ hook takes it. Something must wake the WFI at `deadline`: arm a timer.
/// Returns whether `done()` became true.
pub fn wait_until(done: impl Fn() -> bool, deadline: u64) -> bool {
    loop {
        mask_irqs();
        if done() {
            unmask_irqs();
            return true;
        }
        if capvisor_guest_rt::counter() >= deadline {
            unmask_irqs();
            return false;
        }
        wfi();
        unmask_irqs();
    }
}

/// The GICv3 CPU interface by its system registers (virtual ones under a hypervisor).
pub mod cpu_interface {
    /// Enables the system-register interface, priority mask `pmr`, binary point 0 and group 1;
    /// returns whether ICC_SRE_EL1.SRE stuck.
    pub fn enable(pmr: u64) -> bool {
        let sre = read_sysreg!("icc_sre_el1");
        write_sysreg!("icc_sre_el1", sre | 1);
        let stuck = read_sysreg!("icc_sre_el1") & 1 != 0;
        write_sysreg!("icc_pmr_el1", pmr);
        write_sysreg!("icc_bpr1_el1", 0);
        write_sysreg!("icc_igrpen1_el1", 1);
        stuck
    }

    /// ICC_CTLR_EL1.EOImode (bit 1): with `split`, EOIR only drops the priority and DIR
    /// deactivates.
    pub fn split_eoi(split: bool) {
        let ctlr = read_sysreg!("icc_ctlr_el1");
        let ctlr = if split { ctlr | 2 } else { ctlr & !2 };
        write_sysreg!("icc_ctlr_el1", ctlr);
    }

    /// Acknowledges the highest-priority pending interrupt (ICC_IAR1_EL1; 1023 = none).
    #[must_use]
    pub fn ack() -> u64 {
        read_sysreg!("icc_iar1_el1")
    }

    /// Ends `intid` (ICC_EOIR1_EL1).
    pub fn eoi(intid: u64) {
        write_sysreg!("icc_eoir1_el1", intid);
    }

    /// Deactivates `intid` (ICC_DIR_EL1, with split EOI).
    pub fn deactivate(intid: u64) {
        write_sysreg!("icc_dir_el1", intid);
    }

    /// Sends SGI `intid` to this vCPU (vCPU 0: Aff0 0).
    pub fn sgi_to_self(intid: u64) {
        write_sysreg!("icc_sgi1r_el1", crate::encode::sgi1r(intid, 1));
    }

    /// The running priority, ICC_RPR_EL1.
    #[must_use]
    pub fn running_priority() -> u64 {
        read_sysreg!("icc_rpr_el1")
    }
}

/// vCPU 0's redistributor, SGI_base frame: one bit per SGI or PPI (IHI 0069H 12.11).
pub mod redistributor {
    use super::*;

    /// Reads the register at `offset` of the SGI_base frame (ISPENDR0 0x200, …).
    #[must_use]
    pub fn read(offset: u64) -> u32 {
        read32(SGI_BASE + offset)
    }

    /// Writes the register at `offset` of the SGI_base frame.
    pub fn write(offset: u64, value: u32) {
        write32(SGI_BASE + offset, value);
    }

    /// Enables SGI or PPI `intid` (GICR_ISENABLER0) at `priority` (GICR_IPRIORITYR, one byte
    /// each, written as the word that holds it) in group 1 (GICR_IGROUPR0).
    pub fn enable(intid: u64, priority: u8) {
        let word = gic::IPRIORITYR + (intid & !3);
        let shift = (intid & 3) * 8;
        let old = read(word) & !(0xff << shift);
        write(word, old | (u32::from(priority) << shift));
        write(gic::IGROUPR, read(gic::IGROUPR) | 1 << intid);
        write(gic::ISENABLER, 1 << intid);
    }
}

/// The distributor (IHI 0069H 12.9).
pub mod distributor {
    use super::*;

    /// Reads the distributor register at `offset`.
    #[must_use]
    pub fn read(offset: u64) -> u32 {
        read32(gic::GICD + offset)
    }

    /// Writes the distributor register at `offset`.
    pub fn write(offset: u64, value: u32) {
        write32(gic::GICD + offset, value);
    }

    /// Enables affinity routing and group 1 (GICD_CTLR.ARE_NS bit 4, EnableGrp1NS bit 1): a
    /// group 1 interrupt, SGIs and PPIs included, is forwarded only with it (IHI 0069H 12.9.4).
    pub fn enable_group1() {
        write(gic::GICD_CTLR, read(gic::GICD_CTLR) | (1 << 4) | (1 << 1));
    }

    /// [`enable_group1`], and SPI `intid` at `priority` in group 1, routed to vCPU 0
    /// (GICD_IROUTER<n> = 0).
    pub fn enable_spi(intid: u64, priority: u8) {
        enable_group1();
        let word = gic::IPRIORITYR + (intid & !3);
        let shift = (intid & 3) * 8;
        let old = read(word) & !(0xff << shift);
        write(word, old | (u32::from(priority) << shift));
        let (group, bit) = gic::bit(intid);
        write(gic::IGROUPR + group, read(gic::IGROUPR + group) | 1 << bit);
        write(gic::IROUTER + intid * 8, 0);
        write(gic::IROUTER + intid * 8 + 4, 0);
        write(gic::ISENABLER + group, 1 << bit);
    }

    /// Whether `intid`'s bit is set in the bank at `base` (ISPENDR, ISACTIVER, …).
    #[must_use]
    pub fn bit(base: u64, intid: u64) -> bool {
        let (word, bit) = gic::bit(intid);
        read(base + word) & (1 << bit) != 0
    }

    /// Writes `intid`'s bit alone to the bank at `base` (ISPENDR, ICPENDR, …).
    pub fn set_bit(base: u64, intid: u64) {
        let (word, bit) = gic::bit(intid);
        write(base + word, 1 << bit);
    }
}

/// The EL1 virtual timer (CNTV_*) and physical timer (CNTP_*), Arm ARM D12.8 and D12.10.
pub mod timer {
    /// CNTx_CTL_EL0.ENABLE.
    pub const ENABLE: u64 = 1;
    /// CNTx_CTL_EL0.IMASK.
    pub const IMASK: u64 = 2;
    /// CNTx_CTL_EL0.ISTATUS (read-only).
    pub const ISTATUS: u64 = 4;
    /// The virtual timer's PPI on QEMU `virt`.
    pub const VIRTUAL_PPI: u64 = 27;
    /// The EL1 physical timer's PPI (non-secure) on QEMU `virt`.
    pub const PHYSICAL_PPI: u64 = 30;

    /// Arms the virtual timer to fire at virtual count `deadline`, interrupt unmasked.
    pub fn arm_virtual(deadline: u64) {
        write_sysreg!("cntv_cval_el0", deadline);
        write_sysreg!("cntv_ctl_el0", ENABLE);
    }

    /// Stops the virtual timer.
    pub fn stop_virtual() {
        write_sysreg!("cntv_ctl_el0", 0);
    }

    /// The virtual timer's control register.
    #[must_use]
    pub fn virtual_ctl() -> u64 {
        read_sysreg!("cntv_ctl_el0")
    }

    /// The physical count, CNTPCT_EL0 (after an ISB).
    #[must_use]
    pub fn physical_count() -> u64 {
        // SAFETY: a barrier only.
        unsafe { core::arch::asm!("isb", options(nomem, nostack)) };
        read_sysreg!("cntpct_el0")
    }

    /// CNTP_CTL_EL0.
    #[must_use]
    pub fn physical_ctl() -> u64 {
        read_sysreg!("cntp_ctl_el0")
    }

    /// Writes CNTP_CTL_EL0.
    pub fn set_physical_ctl(value: u64) {
        write_sysreg!("cntp_ctl_el0", value);
    }

    /// CNTP_CVAL_EL0.
    #[must_use]
    pub fn physical_cval() -> u64 {
        read_sysreg!("cntp_cval_el0")
    }

    /// Writes CNTP_CVAL_EL0.
    pub fn set_physical_cval(value: u64) {
        write_sysreg!("cntp_cval_el0", value);
    }

    /// Writes CNTP_TVAL_EL0 (CVAL = now + the signed 32-bit value).
    pub fn set_physical_tval(value: u32) {
        write_sysreg!("cntp_tval_el0", u64::from(value));
    }

    /// CNTP_TVAL_EL0.
    #[must_use]
    pub fn physical_tval() -> u64 {
        read_sysreg!("cntp_tval_el0")
    }
}

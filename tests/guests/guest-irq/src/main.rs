//! Test guest `irq`: interrupts reach a guest through the GICv3 virtual CPU interface (GIC
//! Architecture Specification IHI 0069H, 11 "Virtualization"), which the guest drives with the
//! ordinary ICC_* system registers (the hardware redirects them to ICV_* while HCR_EL2.IMO is
//! set):
//! 1. it enables the system-register interface (ICC_SRE_EL1.SRE), a priority mask and group 1;
//! 2. **the virtual timer**: five times it arms CNTV for 1 ms ahead and waits (WFI) with IRQs
//!    unmasked; each IRQ must acknowledge as the virtual timer's PPI (INTID 27) no earlier than
//!    its deadline; the handler disables the timer and ends the interrupt (EOImode 0: priority
//!    drop and deactivation, which also deactivates the physical PPI the kernel linked);
//! 3. **an SGI to itself**: a write of ICC_SGI1R_EL1 (INTID 5, target list Aff0 = 0, its own
//!    MPIDR) traps to EL2; the VMM makes SGI 5 pending for this vCPU, and the guest takes it.
//!
//! Without a VMM (bare QEMU, boot count 0) nothing would deliver interrupts: it skips.
#![cfg_attr(target_os = "none", no_std, no_main)]

capvisor_guest_rt::guest!("irq", run);

/// The virtual timer's PPI on QEMU `virt` (the device tree's third timer interrupt).
#[cfg(target_os = "none")]
const VTIMER: u64 = 27;
/// The SGI the guest sends itself.
#[cfg(any(target_os = "none", test))]
const SGI: u64 = 5;
/// Timer interrupts to take.
#[cfg(target_os = "none")]
const TICKS: u64 = 5;
/// INTID 1023: no pending interrupt (a spurious acknowledge).
#[cfg(target_os = "none")]
const SPURIOUS: u64 = 1023;

/// ICC_SGI1R_EL1 for SGI `intid` to Aff0 values `targets` in affinity 0.0.0 (IHI 0069H
/// 12.2.21: INTID [27:24], TargetList [15:0]).
#[cfg(any(target_os = "none", test))]
const fn sgi1r(intid: u64, targets: u16) -> u64 {
    (intid & 0xf) << 24 | targets as u64
}

#[cfg(target_os = "none")]
mod run_on_target {
    use core::arch::asm;
    use core::sync::atomic::{AtomicU64, Ordering};

    use capvisor_guest_rt::{ExceptionFrame, Outcome, boot_count, counter, println};

    use super::{SGI, SPURIOUS, TICKS, VTIMER, sgi1r};

    static TIMER_IRQS: AtomicU64 = AtomicU64::new(0);
    static EARLY: AtomicU64 = AtomicU64::new(0);
    static SGIS: AtomicU64 = AtomicU64::new(0);
    static OTHER: AtomicU64 = AtomicU64::new(0);

    fn on_irq(_frame: &mut ExceptionFrame) {
        let intid: u64;
        // SAFETY: acknowledging the highest-priority pending interrupt of the (virtual) CPU
        // interface.
        unsafe { asm!("mrs {}, icc_iar1_el1", out(reg) intid, options(nomem, nostack)) };
        match intid {
            VTIMER => {
                let (now, deadline): (u64, u64);
                // SAFETY: reading the virtual counter and the timer's compare value, then
                // disabling the timer (its interrupt line drops).
                unsafe {
                    asm!("isb", "mrs {}, cntvct_el0", out(reg) now, options(nomem, nostack));
                    asm!("mrs {}, cntv_cval_el0", out(reg) deadline, options(nomem, nostack));
                    asm!("msr cntv_ctl_el0, xzr", "isb", options(nomem, nostack));
                }
                if now < deadline {
                    EARLY.fetch_add(1, Ordering::Relaxed);
                }
                TIMER_IRQS.fetch_add(1, Ordering::Relaxed);
            }
            SGI => {
                SGIS.fetch_add(1, Ordering::Relaxed);
            }
            SPURIOUS => return,
            _ => {
                OTHER.fetch_add(1, Ordering::Relaxed);
            }
        }
        // SAFETY: ending (and, EOImode 0, deactivating) the interrupt acknowledged above.
        unsafe { asm!("msr icc_eoir1_el1, {}", "isb", in(reg) intid, options(nomem, nostack)) };
    }

    /// Waits with IRQs unmasked until `counter` reaches `value`, at most a second.
    fn wait_for(counter_of: &AtomicU64, value: u64) -> bool {
        let start = counter();
        while counter_of.load(Ordering::Relaxed) < value {
            if counter() - start > 62_500_000 {
                return false;
            }
            // IRQs masked while checking and waiting (a pending interrupt still ends a WFI,
            // Arm ARM D1.6.2), then unmasked so it is taken: checking with IRQs unmasked and
            // then waiting would sleep through an interrupt taken in between.
            // SAFETY: masking IRQs at EL1, waiting, unmasking.
            unsafe { asm!("msr daifset, #2", options(nomem, nostack)) };
            if counter_of.load(Ordering::Relaxed) < value {
                // SAFETY: waiting for an interrupt has no effect on memory.
                unsafe { asm!("wfi", options(nomem, nostack)) };
            }
            // SAFETY: as above.
            unsafe { asm!("msr daifclr, #2", "isb", options(nomem, nostack)) };
        }
        true
    }

    pub fn run() -> Outcome {
        if boot_count() == 0 {
            return Outcome::Skip("no VMM (boot count 0): nothing delivers interrupts");
        }
        capvisor_guest_rt::set_irq_hook(on_irq);
        let sre: u64;
        // SAFETY: the GIC CPU interface's system registers (virtual ones under a hypervisor):
        // system-register access, priority mask, binary point and group 1 enabled; then IRQs
        // unmasked at EL1.
        unsafe {
            asm!(
                "mrs {t}, icc_sre_el1",
                "orr {t}, {t}, #1",
                "msr icc_sre_el1, {t}",
                "isb",
                "mrs {t}, icc_sre_el1",
                t = out(reg) sre,
                options(nomem, nostack)
            );
            asm!(
                "msr icc_pmr_el1, {pmr}",
                "msr icc_bpr1_el1, xzr",
                "msr icc_igrpen1_el1, {one}",
                "isb",
                "msr daifclr, #2",
                pmr = in(reg) 0xf0u64,
                one = in(reg) 1u64,
                options(nomem, nostack)
            );
        }
        if sre & 1 == 0 {
            return Outcome::Fail("ICC_SRE_EL1.SRE does not stick: no system-register interface");
        }
        let frequency: u64;
        // SAFETY: reading the counter frequency.
        unsafe { asm!("mrs {}, cntfrq_el0", out(reg) frequency, options(nomem, nostack)) };
        for tick in 1..=TICKS {
            // SAFETY: arming the guest's own virtual timer 1 ms ahead, interrupt unmasked.
            unsafe {
                asm!(
                    "isb",
                    "mrs {t}, cntvct_el0",
                    "add {t}, {t}, {delta}",
                    "msr cntv_cval_el0, {t}",
                    "msr cntv_ctl_el0, {one}",
                    "isb",
                    t = out(reg) _,
                    delta = in(reg) frequency / 1000,
                    one = in(reg) 1u64,
                    options(nomem, nostack)
                );
            }
            if !wait_for(&TIMER_IRQS, tick) {
                println!("timer interrupt {tick} did not come");
                return Outcome::Fail("the virtual timer's interrupt did not come");
            }
        }
        println!(
            "{} virtual timer interrupts (INTID {VTIMER}), none before its deadline: {}",
            TIMER_IRQS.load(Ordering::Relaxed),
            EARLY.load(Ordering::Relaxed) == 0
        );
        // SAFETY: sending SGI 5 to this vCPU (Aff0 0): the write traps to the VMM.
        unsafe {
            asm!("msr icc_sgi1r_el1, {}", "isb", in(reg) sgi1r(SGI, 1), options(nomem, nostack));
        }
        if !wait_for(&SGIS, 1) {
            return Outcome::Fail("the SGI sent to itself did not come");
        }
        // SAFETY: masking IRQs again.
        unsafe { asm!("msr daifset, #2", options(nomem, nostack)) };
        println!("SGI {SGI} sent to itself through ICC_SGI1R_EL1 and taken");
        if EARLY.load(Ordering::Relaxed) != 0 {
            return Outcome::Fail("a timer interrupt came before its deadline");
        }
        if OTHER.load(Ordering::Relaxed) != 0 || SGIS.load(Ordering::Relaxed) != 1 {
            return Outcome::Fail("an interrupt came that nobody sent");
        }
        Outcome::Pass
    }
}

#[cfg(target_os = "none")]
use run_on_target::run;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sgi1r_puts_the_intid_and_target_list_where_the_gic_reads_them() {
        assert_eq!(sgi1r(SGI, 1), 0x0500_0001);
        assert_eq!(sgi1r(15, 0xffff), 0x0f00_ffff);
    }
}

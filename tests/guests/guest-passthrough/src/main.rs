//! Test guest `passthrough`: drives devices the device broker passed through (docs/guests.md,
//! `DESIGN.md` stage-2 rules 3–8), polling them (their interrupts are forwarded to the vCPU, but
//! this guest leaves its GIC CPU interface off; `guest-dma` takes a device's interrupt):
//! 1. the PL031 real-time clock of QEMU `virt` at IPA = PA 0x0901_0000 (Device-nGnRE): its
//!    PrimeCell identification registers (PL031 TRM, DDI 0224, 3.3.10–3.3.17) and RTCDR, which
//!    must read a non-zero time that never goes backwards;
//! 2. an instruction fetch from the RTC page (Device-nGnRE) and from the GPIO page (Normal
//!    non-cacheable) must be an abort (rule 7: device memory is never mapped executable; the
//!    VMM injects a synchronous external instruction abort), never execution;
//! 3. the cacheable carve-out at 0x7000_0000 (2 MiB, a cacheable PFNMAP): the guest cannot ask
//!    whether it was granted, so it reads it; where the broker refused the grant (no FEAT_S2FWB
//!    or no CTR_EL0.DIC: rule 4) the IPA is unmapped and the access is an injected external data
//!    abort, reported as `cacheable region not granted`; where it was granted, the guest writes
//!    and reads the whole region back with its MMU and caches on (Normal write-back at stage 1
//!    and 2), then turns them off, which cleans the region to PoC, and checks it again.
#![cfg_attr(target_os = "none", no_std, no_main)]

capvisor_guest_rt::guest!("passthrough", run);

/// The PL031 on QEMU `virt`.
#[cfg(any(target_os = "none", test))]
const RTC: u64 = 0x0901_0000;
/// PL031 RTCDR: the current time in seconds.
#[cfg(any(target_os = "none", test))]
const RTCDR: u64 = 0x000;
/// The PrimeCell peripheral ID 0–3 and cell ID 0–3 registers' low bytes, at 0xFE0..=0xFFC: part
/// number 0x031, designer 0x41 (Arm), then the PrimeCell cell ID. PeriphID2[7:4] is the revision
/// (QEMU's PL031 says 1), so it is masked off by [`PRIMECELL_ID_MASK`].
#[cfg(any(target_os = "none", test))]
const PRIMECELL_ID: [u32; 8] = [0x31, 0x10, 0x04, 0x00, 0x0d, 0xf0, 0x05, 0xb1];
/// The bits of each ID byte that identify the part (all but PeriphID2's revision).
#[cfg(any(target_os = "none", test))]
const PRIMECELL_ID_MASK: [u32; 8] = [0xff, 0xff, 0x0f, 0xff, 0xff, 0xff, 0xff, 0xff];
/// QEMU virt's PL061 GPIO controller, passed through Normal non-cacheable.
#[cfg(target_os = "none")]
const GPIO: u64 = 0x0903_0000;
/// The PL061's PrimeCell ID (PL061 TRM, DDI 0190, 3.3.x): part 0x061, designer 0x41.
#[cfg(target_os = "none")]
const PL061_ID: [u32; 8] = [0x61, 0x10, 0x04, 0x00, 0x0d, 0xf0, 0x05, 0xb1];
/// The cacheable carve-out (tests/images/guest-passthrough.toml).
#[cfg(any(target_os = "none", test))]
const PFNMAP: u64 = 0x7000_0000;
#[cfg(any(target_os = "none", test))]
const PFNMAP_SIZE: u64 = 2 << 20;
/// ESR_EL1.EC of an instruction abort taken without a change in exception level.
#[cfg(any(target_os = "none", test))]
const EC_INSTRUCTION_ABORT_SAME_EL: u64 = 0x21;

/// The value written to the carve-out's word at `address` in pass `pass`.
#[cfg(any(target_os = "none", test))]
const fn pattern(address: u64, pass: u64) -> u64 {
    (address ^ 0x5a5a_0000_0000_0000).rotate_left(pass as u32 * 7) ^ pass
}

#[cfg(target_os = "none")]
mod run_on_target {
    use core::sync::atomic::{AtomicU64, Ordering};

    use capvisor_guest_rt::contract::esr;
    use capvisor_guest_rt::{ExceptionFrame, Fault, Outcome, println};

    use super::*;

    /// The ESR_EL1 and FAR_EL1 of the last synchronous exception (ESR 0: none).
    static SEEN: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

    fn take_fault() -> Option<(u64, u64)> {
        let esr = SEEN[0].swap(0, Ordering::Relaxed);
        (esr != 0).then(|| (esr, SEEN[1].load(Ordering::Relaxed)))
    }

    /// Records the exception and resumes: after a faulting load or store (4-byte A64), or, for
    /// anything at the branch target (an instruction abort, or an instruction that ran there),
    /// at the return address the `blr` left in x30.
    fn on_sync(fault: &Fault, frame: &mut ExceptionFrame) -> bool {
        SEEN[0].store(fault.esr, Ordering::Relaxed);
        SEEN[1].store(fault.far, Ordering::Relaxed);
        if esr::class(fault.esr) == esr::EC_DATA_ABORT_SAME_EL {
            frame.elr += 4;
        } else {
            frame.elr = frame.x[30];
        }
        true
    }

    /// A 32-bit load that the hook may step over (the result is then `u32::MAX`).
    fn load32(address: u64) -> u32 {
        let mut value: u32 = u32::MAX;
        // SAFETY: a device register read or a faulting load the hook steps over; no memory of
        // the program is touched.
        unsafe {
            core::arch::asm!("ldr {v:w}, [{a}]", v = inout(reg) value, a = in(reg) address,
                options(nostack, readonly));
        }
        value
    }

    fn check_rtc() -> Result<u32, &'static str> {
        let mut id = [0u32; 8];
        for (index, value) in id.iter_mut().enumerate() {
            *value = load32(RTC + 0xfe0 + 4 * index as u64) & 0xff;
            if let Some((syndrome, far)) = take_fault() {
                println!("rtc: load from {far:#x} aborted, ESR_EL1={syndrome:#x}");
                return Err("the RTC is not passed through (its registers abort)");
            }
        }
        println!("rtc: PrimeCell ID {id:02x?}");
        let part = core::array::from_fn::<u32, 8, _>(|i| id[i] & PRIMECELL_ID_MASK[i]);
        if part != PRIMECELL_ID {
            return Err("the RTC's PrimeCell ID is not the PL031's");
        }
        let first = load32(RTC + RTCDR);
        // Wait a while in counter ticks, then read again: the time must not go backwards.
        let start = capvisor_guest_rt::counter();
        while capvisor_guest_rt::counter() - start < 1_000_000 {
            core::hint::spin_loop();
        }
        let second = load32(RTC + RTCDR);
        println!("rtc: RTCDR {first} then {second}");
        if first == 0 || second < first {
            return Err("the RTC's time is zero or went backwards");
        }
        Ok(second)
    }

    /// Reads the GPIO controller's ID through its Normal non-cacheable mapping.
    fn check_gpio() -> Result<(), &'static str> {
        let mut id = [0u32; 8];
        for (index, value) in id.iter_mut().enumerate() {
            *value = load32(GPIO + 0xfe0 + 4 * index as u64) & 0xff;
            if let Some((syndrome, far)) = take_fault() {
                println!("gpio: load from {far:#x} aborted, ESR_EL1={syndrome:#x}");
                return Err("the GPIO controller is not passed through (its registers abort)");
            }
        }
        println!("gpio: PrimeCell ID {id:02x?} (mapped Normal non-cacheable)");
        let part = core::array::from_fn::<u32, 8, _>(|i| id[i] & PRIMECELL_ID_MASK[i]);
        if part != PL061_ID {
            return Err("the GPIO controller's PrimeCell ID is not the PL061's");
        }
        Ok(())
    }

    /// Branches to the device page at `page`: an abort must come back, never execution.
    fn execute_from_device(page: u64) -> Result<(), &'static str> {
        // SAFETY: the branch faults (or, were the page executable, runs whatever the register
        // reads as); either way the hook resumes at the return address in x30. Every register
        // the called code could change is declared clobbered.
        unsafe {
            core::arch::asm!("blr {t}", t = in(reg) page, clobber_abi("C"), out("x30") _);
        }
        let Some((syndrome, far)) = take_fault() else {
            return Err("a branch to device memory returned without an exception");
        };
        println!(
            "execute from {page:#x}: ESR_EL1={syndrome:#x} (EC {:#x}, IFSC {:#x}) FAR_EL1={far:#x}",
            esr::class(syndrome),
            esr::dfsc(syndrome)
        );
        if esr::class(syndrome) != EC_INSTRUCTION_ABORT_SAME_EL
            || esr::dfsc(syndrome) != esr::DFSC_SYNC_EXTERNAL
            || far != page
        {
            return Err("executing from device memory was not an instruction abort at the page");
        }
        Ok(())
    }

    /// Writes and checks the carve-out with the MMU and caches on; `Ok(false)` if not granted.
    fn cacheable_region() -> Result<bool, &'static str> {
        // SAFETY: the MMU is off; nothing was cached yet.
        unsafe { capvisor_guest_rt::enable_mmu() };
        let _ = load32(PFNMAP);
        if let Some((syndrome, far)) = take_fault() {
            let (start, end) = capvisor_guest_rt::image_range();
            // SAFETY: the MMU is on with enable_mmu's map; nothing but the image was written.
            unsafe { capvisor_guest_rt::disable_mmu(start, end) };
            println!("cacheable region not granted: ESR_EL1={syndrome:#x} FAR_EL1={far:#x}");
            if esr::class(syndrome) != esr::EC_DATA_ABORT_SAME_EL
                || esr::dfsc(syndrome) != esr::DFSC_SYNC_EXTERNAL
            {
                return Err("an ungranted region gave another exception than an external abort");
            }
            return Ok(false);
        }
        for pass in 1..=2 {
            for address in (PFNMAP..PFNMAP + PFNMAP_SIZE).step_by(8) {
                // SAFETY: the carve-out is mapped read/write and nothing else uses it.
                unsafe { capvisor_guest_rt::write64(address, pattern(address, pass)) };
            }
            let bad = (PFNMAP..PFNMAP + PFNMAP_SIZE).step_by(8).find(|&address| {
                // SAFETY: as above.
                unsafe { capvisor_guest_rt::read64(address) != pattern(address, pass) }
            });
            if bad.is_some() || take_fault().is_some() {
                return Err("the cacheable region did not read back what was written");
            }
        }
        // The carve-out is cleaned here, by itself: `disable_mmu` cleans one range spanning the
        // image and its argument, and the IPAs between guest RAM and the carve-out are unmapped.
        capvisor_guest_rt::clean_invalidate_to_poc(PFNMAP, PFNMAP_SIZE);
        let (start, end) = capvisor_guest_rt::image_range();
        // SAFETY: the MMU is on with enable_mmu's map; the data the guest needs lies in the image
        // and the carve-out, just cleaned to PoC, and nothing stores to it before the MMU is off.
        unsafe { capvisor_guest_rt::disable_mmu(start, end) };
        let bad = (PFNMAP..PFNMAP + PFNMAP_SIZE).step_by(8).find(|&address| {
            // SAFETY: as above, now with the MMU off.
            unsafe { capvisor_guest_rt::read64(address) != pattern(address, 2) }
        });
        if bad.is_some() {
            return Err("the cacheable region lost data when the caches were turned off");
        }
        println!(
            "cacheable region granted: {PFNMAP:#x}..{:#x} written and read back with the MMU \
             and caches on, and again after cleaning them off",
            PFNMAP + PFNMAP_SIZE
        );
        Ok(true)
    }

    pub fn run() -> Outcome {
        if capvisor_guest_rt::boot_count() == 0 {
            // Bare QEMU: no stage 2 stops an instruction fetch from the RTC page.
            return Outcome::Skip("no VMM (boot count 0): passthrough needs capvisor's broker");
        }
        capvisor_guest_rt::set_sync_hook(on_sync);
        if let Err(reason) = check_rtc() {
            return Outcome::Fail(reason);
        }
        if let Err(reason) = check_gpio() {
            return Outcome::Fail(reason);
        }
        // Rule 7 for both uncached types: the RTC's Device-nGnRE page and the GPIO's Normal
        // non-cacheable one.
        for page in [RTC, GPIO] {
            if let Err(reason) = execute_from_device(page) {
                return Outcome::Fail(reason);
            }
        }
        match cacheable_region() {
            Ok(_) => Outcome::Pass,
            Err(reason) => Outcome::Fail(reason),
        }
    }
}

#[cfg(target_os = "none")]
use run_on_target::run;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_differ_between_passes_and_words() {
        assert_ne!(pattern(PFNMAP, 1), pattern(PFNMAP, 2));
        assert_ne!(pattern(PFNMAP, 1), pattern(PFNMAP + 8, 1));
        // QEMU's PL031 (revision 1) identifies as a PL031.
        let qemu = [0x31, 0x10, 0x14, 0x00, 0x0d, 0xf0, 0x05, 0xb1];
        let part: Vec<u32> = (0..8).map(|i| qemu[i] & PRIMECELL_ID_MASK[i]).collect();
        assert_eq!(part, PRIMECELL_ID);
        assert_eq!((RTC + RTCDR) % 4096, 0);
        assert_eq!(EC_INSTRUCTION_ABORT_SAME_EL, 0x21);
        assert!(PFNMAP_SIZE.is_power_of_two());
    }
}

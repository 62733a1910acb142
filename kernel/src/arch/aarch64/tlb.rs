//! TLB maintenance: every TLBI the kernel issues, each in the sequence that completes it.
//!
//! Stage-2 invalidation is always for a given VMID, never only "the loaded one": TLBI IPAS2E1IS
//! and TLBI VMALLE1IS/VMALLS12E1IS act on the VMID in VTTBR_EL2, so each sequence loads the
//! target's VTTBR_EL2, invalidates, and puts the previous value back. That is safe while the
//! kernel runs: VTTBR_EL2 governs only the EL1&0 regime, which is not executing, and the kernel
//! runs with interrupts masked (nothing runs at EL1 or EL0 before the value is restored).
//!
//! The rules relied on (Arm ARM DDI 0487 L.a, D8.17 "TLB maintenance"):
//! - R_RVZZVZ: TLBI IPAS2E1IS removes the stage-2-only entries for the IPA and the current VMID,
//!   and is not required to remove entries that combine stage 1 and stage 2 — so
//! - D8.17.6.1 "Invalidating TLB entries from stage 2 translations" (I_CKZGP): invalidating the
//!   stage-2 translation of an IPA takes `TLBI IPAS2E1IS, Xt; DSB; TLBI VMALLE1IS` (the broadcast
//!   forms here), even with stage 1 off, as it is for services (HCR_EL2.DC);
//! - R_TGVWD: the effects of two TLB maintenance instructions can be observed in any order unless
//!   a DSB separates them (why the DSB sits between the IPA invalidations and VMALLE1IS);
//! - R_PSMWS: DSB ISH completes TLB maintenance for the Inner Shareable domain;
//! - R_BLDZX: for the issuing PE, completion also needs a Context synchronization event (the ISB
//!   after VTTBR_EL2 is restored).
//!
//! Break-before-make (D8.17.1, R_DDMVT) is the caller's: the entries are invalid and a DSB has
//! made that visible (`stage2.rs`) before any of these runs.

use core::arch::asm;

/// IPA page numbers TLBI IPAS2E1IS takes: Xt[35:0] = IPA[47:12] (4K granule; IPA[51:48] in
/// Xt[39:36] only with 52-bit IPAs, which capvisor does not use).
pub const IPA_PAGE_LIMIT: u64 = 1 << 36;

/// Loads `vttbr` into VTTBR_EL2 (synchronised), runs `maintain`, and puts the previous value
/// back (synchronised) before returning.
#[inline(always)]
fn with_vmid(vttbr: u64, maintain: impl FnOnce()) {
    let saved: u64;
    // SAFETY: VTTBR_EL2 only affects the EL1&0 regime, which does not run while the kernel does
    // (module comment); the ISB makes the TLBIs that follow use the target's VMID.
    unsafe {
        asm!(
            "mrs {saved}, vttbr_el2",
            "msr vttbr_el2, {target}",
            "isb",
            saved = out(reg) saved,
            target = in(reg) vttbr,
            options(nostack, preserves_flags)
        );
    }
    maintain();
    // SAFETY: the value VTTBR_EL2 held before; the ISB is the Context synchronization event
    // after which this PE's own translations no longer use what was invalidated (R_BLDZX), and
    // after which the restored VMID is the one in force.
    unsafe {
        asm!(
            "msr vttbr_el2, {saved}",
            "isb",
            saved = in(reg) saved,
            options(nostack, preserves_flags)
        );
    }
}

/// Invalidates, for the VMID in `vttbr`, the stage-2 translations of the `pages` 4 KiB pages
/// from IPA page number `first` (`IPA >> 12`), and the combined stage-1+2 entries that may hold
/// them: VTTBR_EL2 switched once, one TLBI IPAS2E1IS per page, one DSB ISH, one TLBI VMALLE1IS,
/// one DSB ISH (D8.17.6.1). A page inside a block mapping invalidates the block's entry.
///
/// The caller bounds `pages` (the work is one instruction per page) and keeps
/// `first + pages <= IPA_PAGE_LIMIT`.
pub fn invalidate_ipa_pages(vttbr: u64, first: u64, pages: u64) {
    debug_assert!(first + pages <= IPA_PAGE_LIMIT);
    with_vmid(vttbr, || {
        for page in first..first + pages {
            // SAFETY: TLB maintenance for the VMID now in VTTBR_EL2; changes no memory.
            unsafe { asm!("tlbi ipas2e1is, {}", in(reg) page, options(nostack, preserves_flags)) };
        }
        // SAFETY: barriers and TLB maintenance change no memory. The first DSB ISH completes the
        // stage-2 invalidations on every PE of the domain before VMALLE1IS (R_TGVWD), so no
        // combined entry can be rebuilt from a stale stage-2 entry after VMALLE1IS removed it;
        // the second completes VMALLE1IS (R_PSMWS).
        unsafe {
            asm!(
                "dsb ish",
                "tlbi vmalle1is",
                "dsb ish",
                options(nostack, preserves_flags)
            );
        }
    });
}

/// Invalidates every TLB entry of the VMID in `vttbr` — stage 1, stage 2 and combined — on every
/// PE of the Inner Shareable domain (TLBI VMALLS12E1IS, DSB ISH), for a range too long to walk
/// page by page or a space being destroyed (its VMID may be reused at once). ISB, then
/// VTTBR_EL2 restored.
pub fn invalidate_vmid(vttbr: u64) {
    with_vmid(vttbr, || {
        // SAFETY: TLB maintenance and barriers change no memory; the DSB ISH completes the
        // invalidation on every PE of the domain (R_PSMWS), and the ISB on this PE (R_BLDZX)
        // before VTTBR_EL2 changes back.
        unsafe {
            asm!(
                "tlbi vmalls12e1is",
                "dsb ish",
                "isb",
                options(nostack, preserves_flags)
            );
        }
    });
}

/// Invalidates every EL1&0 TLB entry of every VMID on every PE of the domain (TLBI ALLE1IS, DSB
/// ISH, ISB): a VMID generation rolls over (`glue/effects.rs`).
pub fn invalidate_all_vmids() {
    // SAFETY: TLB maintenance and barriers change no memory; no EL1&0 code runs meanwhile. The
    // DSB completes the invalidation in the domain (R_PSMWS), the ISB on this PE (R_BLDZX).
    unsafe {
        asm!(
            "tlbi alle1is",
            "dsb ish",
            "isb",
            options(nostack, preserves_flags)
        );
    }
}

/// Invalidates this PE's EL2 TLB entries (TLBI ALLE2, DSB NSH, ISB), before its MMU is turned
/// on: entries left by firmware must not be used (TLB contents after reset are IMPLEMENTATION
/// DEFINED: D8.16.1 "TLB behavior at reset"). The secondary CPUs' entry (`boot.rs`) has the same
/// three instructions, before their MMU is on.
pub fn invalidate_el2_local() {
    // SAFETY: TLB maintenance and barriers change no memory. DSB NSH completes a local TLBI
    // (R_PSMWS); the ISB makes the following SCTLR_EL2 write see it.
    unsafe {
        asm!(
            "tlbi alle2",
            "dsb nsh",
            "isb",
            options(nostack, preserves_flags)
        );
    }
}

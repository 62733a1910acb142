//! Test guest `reset`: after a PSCI `SYSTEM_RESET`, the VMM reloads the guest and writes boot
//! count 2, and the guest, starting again with its MMU off, sees that memory and not lines it
//! left dirty in the caches before the reset (DESIGN.md, vCPU reset rule: host writes to guest
//! memory while the guest is stopped are visible to a guest that restarts with its MMU off).
#![cfg_attr(target_os = "none", no_std, no_main)]

capvisor_guest_rt::guest!("reset", run);

/// Initialised data the image holds; boot 1 overwrites it through the cache.
#[cfg(target_os = "none")]
static mut MARKER: u64 = 0x0123_4567_89ab_cdef;

/// Code whose first instructions boot 1 overwrites through the data cache.
#[cfg(target_os = "none")]
#[inline(never)]
extern "C" fn probe() -> u64 {
    0x600d
}

/// Memory outside the image boot 1 dirties.
#[cfg(target_os = "none")]
const SCRATCH: (u64, u64) = (0x4040_0000, 64 * 4096);

#[cfg(target_os = "none")]
fn run() -> capvisor_guest_rt::Outcome {
    use capvisor_guest_rt::{Outcome, boot_count, println};
    match boot_count() {
        0 => {
            println!("boot count 0 at 0x40100000: no VMM, nothing reloads the guest");
            Outcome::Skip("no VMM (boot count 0)")
        }
        1 => boot1(),
        2 => boot2(),
        other => {
            println!("boot count {other}");
            Outcome::Fail("unexpected boot count, expected 1 or 2")
        }
    }
}

#[cfg(target_os = "none")]
fn boot1() -> capvisor_guest_rt::Outcome {
    use capvisor_guest_rt::encode::{RET, movz_x0};
    use capvisor_guest_rt::{enable_mmu, println, system_reset, write64};
    if probe() != 0x600d {
        return capvisor_guest_rt::Outcome::Fail("boot 1: the image is not as built");
    }
    // SAFETY: the MMU is off and the caches have never been on.
    unsafe { enable_mmu() };
    for offset in (0..SCRATCH.1).step_by(64) {
        // SAFETY: scratch RAM outside the image, used by nothing else.
        unsafe { write64(SCRATCH.0 + offset, 0xdead_0000_0000 | offset) };
    }
    let bad_code = (u64::from(movz_x0(0xbad)) | (u64::from(RET) << 32)).to_le();
    // SAFETY: nothing runs `probe` again in this boot; the write is deliberately left dirty in
    // the data cache, for the reset to discard.
    unsafe { write64(probe as extern "C" fn() -> u64 as usize as u64, bad_code) };
    // SAFETY: single-threaded; a volatile store so that it reaches the (cacheable) memory system.
    unsafe { core::ptr::write_volatile(&raw mut MARKER, 0xdead_beef) };
    println!("boot 1");
    system_reset()
}

#[cfg(target_os = "none")]
fn boot2() -> capvisor_guest_rt::Outcome {
    use capvisor_guest_rt::{Outcome, println};
    // SAFETY: single-threaded read of initialised data.
    let marker = unsafe { core::ptr::read_volatile(&raw const MARKER) };
    if marker != 0x0123_4567_89ab_cdef {
        println!("data marker is {marker:#x}");
        return Outcome::Fail("boot 2: initialised data is what boot 1 wrote, not the image's");
    }
    let code = probe();
    if code != 0x600d {
        println!("probe() returned {code:#x}");
        return Outcome::Fail("boot 2: the text is what boot 1 wrote, not the image's");
    }
    println!("boot 2: boot count 2, text and data as built");
    Outcome::Pass
}

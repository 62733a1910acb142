//! Test guest `icache`: instructions the guest writes at run time into pages it never touched,
//! after its own maintenance (Arm ARM DDI 0487 K.a, B2.4.4), execute as written — also when it
//! rewrites a page it already executed (DESIGN.md stage-2 rule 2: a page is mapped executable only
//! after the instruction cache is invalidated to PoU, unless CTR_EL0.DIC).
#![cfg_attr(target_os = "none", no_std, no_main)]

capvisor_guest_rt::guest!("icache", run);

/// Fresh pages for code, each in its own 64K so that no two share a stage-2 page or block.
#[cfg(target_os = "none")]
const CODE: u64 = 0x4080_0000;

/// Writes `movz x0, #value; ret` at `address`, makes it executable and runs it.
#[cfg(target_os = "none")]
fn write_and_call(address: u64, value: u16) -> u64 {
    use capvisor_guest_rt::encode::{RET, movz_x0};
    let words = (u64::from(movz_x0(value)) | (u64::from(RET) << 32)).to_le();
    // SAFETY: the code pages are guest RAM outside the image, used by nothing else.
    unsafe { capvisor_guest_rt::write64(address, words) };
    capvisor_guest_rt::sync_instructions(address, 8);
    // SAFETY: `address` now holds a complete function (`movz x0; ret`) following the C ABI,
    // made visible to instruction fetch by `sync_instructions`.
    let function = unsafe { core::mem::transmute::<u64, extern "C" fn() -> u64>(address) };
    function()
}

#[cfg(target_os = "none")]
fn check(address: u64, value: u16) -> bool {
    let got = write_and_call(address, value);
    if got != u64::from(value) {
        capvisor_guest_rt::println!("code at {address:#x} returned {got:#x}, expected {value:#x}");
    }
    got == u64::from(value)
}

#[cfg(target_os = "none")]
fn run() -> capvisor_guest_rt::Outcome {
    use capvisor_guest_rt::{Outcome, enable_mmu, println};
    if !check(CODE + 0xf_0000, 0x1111) {
        return Outcome::Fail("MMU off: a fresh code page did not run as written");
    }
    // SAFETY: the MMU is off and the caches have never been on.
    unsafe { enable_mmu() };
    let pages = 4u64;
    for page in 0..pages {
        if !check(CODE + page * 0x1_0000, 0x2000 + page as u16) {
            return Outcome::Fail("MMU on: a fresh code page did not run as written");
        }
    }
    println!("{} fresh pages ran the code written into them", pages + 1);
    for round in 0..3u16 {
        if !check(CODE, 0x3000 + round) {
            return Outcome::Fail("rewritten code page ran stale instructions");
        }
        if !check(CODE + 0x800, 0x3100 + round) {
            return Outcome::Fail("rewritten code page ran stale instructions");
        }
    }
    println!("a page rewritten 6 times ran the new code each time");
    Outcome::Pass
}

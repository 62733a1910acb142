//! The attack, at EL0.

use capvisor_ipc::abi::KernelError;
use capvisor_rt::{CPtr, Rights, println, sys};
use hostile_common::abi::{PAGE, PAGE_BITS, SCRATCH_IPA, kind};
use hostile_common::invoke;
use hostile_common::scan::Inventory;

/// F's pattern, and G's.
const F_PATTERN: u64 = 0xf0f0_5a5a_0000_0005;
const G_PATTERN: u64 = 0x6060_a5a5_0000_0005;
/// Where F and G are mapped.
const F_IPA: u64 = SCRATCH_IPA;
const G_IPA: u64 = SCRATCH_IPA + PAGE;

fn say<T: core::fmt::Debug>(what: &str, result: Result<T, KernelError>) -> Result<T, KernelError> {
    println!("memory: {what}: {result:?}");
    result
}

/// Writes `value` to the first word of the page mapped read/write at `ipa`.
fn write(ipa: u64, value: u64) {
    // SAFETY: callers pass F_IPA or G_IPA right after mapping a frame there read/write in this
    // service's own space; nothing else uses those pages.
    unsafe { (ipa as *mut u64).write_volatile(value) }
}

/// The first word of the page mapped at `ipa`.
fn read(ipa: u64) -> u64 {
    // SAFETY: as in `write`; F stays mapped while its capability exists (checked by the caller).
    unsafe { (ipa as *const u64).read_volatile() }
}

/// The sequence, each step printed, then the outcome.
pub fn run() -> u64 {
    let mut caps = Inventory::scan();
    let cnode = CPtr::new(caps.cnode);
    let space = CPtr::new(caps.space);
    let (Some(u), Some(u2), Some(c), Some(f), Some(g)) = (
        caps.untyped.first(),
        caps.slot(),
        caps.slot(),
        caps.slot(),
        caps.slot(),
    ) else {
        println!("memory: no untyped or no free slots");
        return 1;
    };
    let setup = say(
        "copy U to U'",
        sys::copy(cnode, u2, CPtr::new(u), Rights::ALL),
    )
    .and_then(|()| {
        say(
            "retype a child untyped C from U",
            invoke::retype(u, kind::UNTYPED, PAGE_BITS, c),
        )
    })
    .and_then(|()| {
        say(
            "retype a frame F from C",
            invoke::retype(c, kind::FRAME, PAGE_BITS, f),
        )
    })
    .and_then(|()| say("map F", sys::map(CPtr::new(f), space, F_IPA, 0b011, 0)));
    if setup.is_err() {
        println!("memory: outcome: the set-up failed");
        return 1;
    }
    write(F_IPA, F_PATTERN);
    let _ = say("delete C", sys::delete(cnode, c));
    let _ = say("revoke U'", sys::revoke(cnode, u2));
    let g_made = say(
        "retype a frame G from U",
        invoke::retype(u, kind::FRAME, PAGE_BITS, g),
    )
    .and_then(|()| say("map G", sys::map(CPtr::new(g), space, G_IPA, 0b011, 0)));
    if g_made.is_ok() {
        write(G_IPA, G_PATTERN);
    }
    outcome(f, g_made);
    0
}

/// Reads F again and says whether G aliases it.
fn outcome(f: u64, g_made: Result<(), KernelError>) {
    if invoke::identify(f).is_err() {
        println!("memory: outcome: F went away with C (no alias)");
        return;
    }
    let now = read(F_IPA);
    match (now, g_made) {
        (F_PATTERN, Err(KernelError::NotEnoughMemory)) => {
            println!("memory: outcome: G refused with NotEnoughMemory");
        }
        (F_PATTERN, _) => println!("memory: outcome: F intact (no alias)"),
        (G_PATTERN, _) => println!("memory: outcome: ALIAS: F reads G's pattern {now:#x}"),
        (other, _) => println!("memory: outcome: ALIAS: F reads {other:#x}, not its pattern"),
    }
}

//! The attack, at EL0.

use capvisor_ipc::abi::KernelError;
use capvisor_rt::println;
use hostile_common::abi::{CNODE_MIN_BITS, PAGE_BITS, kind};
use hostile_common::invoke;
use hostile_common::scan::Inventory;

/// log2 of the untyped the attack spends (128 KiB).
const UNTYPED_BITS: u64 = 17;

/// Retypes objects of `kind` from `untyped` until refused; prints how many and why it stopped.
fn exhaust(caps: &mut Inventory, what: &str, untyped: u64, kind: u64, size_bits: u64) {
    let mut made = 0u64;
    loop {
        let Some(slot) = caps.slot() else {
            println!("arena: {what}: {made} created, then no free slot");
            return;
        };
        if let Err(error) = invoke::retype(untyped, kind, size_bits, slot) {
            caps.free.give(slot);
            println!("arena: {what}: {made} created, then Err({error:?})");
            return;
        }
        made += 1;
    }
}

/// The attack: a small untyped, spent on the cheapest objects.
pub fn run() -> u64 {
    let mut caps = Inventory::scan();
    let Some(small) = caps.slot() else {
        println!("arena: no free slot");
        return 1;
    };
    let made: Result<(), KernelError> = caps.retype(kind::UNTYPED, UNTYPED_BITS, small);
    println!("arena: retype a 128 KiB untyped: {made:?}");
    if made.is_err() {
        return 1;
    }
    exhaust(&mut caps, "CNodes", small, kind::CNODE, CNODE_MIN_BITS);
    exhaust(&mut caps, "endpoints", small, kind::ENDPOINT, 0);
    exhaust(&mut caps, "vCPUs", small, kind::VCPU, 0);
    let frame = caps.slot().map_or(Err(KernelError::InvalidSlot), |slot| {
        invoke::retype(small, kind::FRAME, PAGE_BITS, slot)
    });
    println!("arena: a 4 KiB frame from the same untyped: {frame:?}");
    0
}

//! The attack, at EL0.

use capvisor_ipc::abi::CacheOp;
use capvisor_rt::println;
use hostile_common::abi::IPA_BITS;
use hostile_common::invoke;
use hostile_common::scan::Inventory;

/// The requests: operation, its name, first IPA, size and the range as printed.
const REQUESTS: [(CacheOp, &str, u64, &str); 4] = [
    (
        CacheOp::CleanInvalidatePoc,
        "CleanInvalidatePoc",
        2 << 20,
        "[0, 2 MiB)",
    ),
    (
        CacheOp::TlbInvalidateIpa,
        "TlbInvalidateIpa",
        1 << IPA_BITS,
        "[0, 2^39)",
    ),
    (
        CacheOp::CleanInvalidatePoc,
        "CleanInvalidatePoc",
        1 << IPA_BITS,
        "[0, 2^39)",
    ),
    (
        CacheOp::InvalidateIcache,
        "InvalidateIcache",
        1 << IPA_BITS,
        "[0, 2^39)",
    ),
];

/// Each request on its own Vm, its result printed as `maintenance: <op> <range>: <result>`.
pub fn run() -> u64 {
    let mut caps = Inventory::scan();
    let Some(vm) = caps.slot() else {
        println!("maintenance: no free slot");
        return 1;
    };
    let created = caps.retype_space(true, vm);
    println!("maintenance: retype a Vm: {created:?}");
    for (op, name, size, range) in REQUESTS {
        // Printed first, so a console that stops here shows which request never returned.
        println!("maintenance: asking for {name} over {range}");
        let start = capvisor_rt::counter();
        let result = invoke::cache_vm(vm, op, 0, size);
        let ticks = capvisor_rt::counter().wrapping_sub(start);
        println!("maintenance: {name} {range}: {result:?}");
        println!("maintenance: ({ticks} counter ticks)");
    }
    println!("maintenance: done");
    0
}

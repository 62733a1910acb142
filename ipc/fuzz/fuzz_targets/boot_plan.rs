//! Fuzzes `Plan::decode` (the image's boot plan, which init reads as untrusted input): arbitrary
//! bytes and payload sizes are refused with a typed error or decode to a plan whose every step
//! is checked (none dropped), names an owner that exists, and prints, never a panic.
#![no_main]

use capvisor_image::plan::{MAX_ITEMS, MAX_NAMES, MAX_SLOTS, PLAN_MAGIC, PLAN_VERSION, Plan};
use core::fmt::Write;
use libfuzzer_sys::fuzz_target;

/// A sink for `Display`, so printing is exercised without allocating.
struct Sink;

impl Write for Sink {
    fn write_str(&mut self, _: &str) -> core::fmt::Result {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    // The first eight bytes are the payload's size, the rest the plan.
    let Some((size, bytes)) = data.split_first_chunk::<8>() else {
        return;
    };
    let size = u64::from_le_bytes(*size);
    let _ = Plan::decode(bytes, size);
    // The same bytes with the magic and version right, so the fuzzer spends its time on the
    // counts, names, steps and references behind them.
    let mut bytes = bytes.to_vec();
    if bytes.len() < 12 {
        return;
    }
    bytes[..8].copy_from_slice(&PLAN_MAGIC);
    bytes[8..12].copy_from_slice(&PLAN_VERSION.to_le_bytes());
    let Ok(plan) = Plan::decode(&bytes, size) else {
        return;
    };
    assert!(plan.len() <= MAX_ITEMS && plan.names().len() <= MAX_NAMES);
    assert!(plan.header.slot_count <= MAX_SLOTS);
    let mut steps = 0;
    for step in plan.steps() {
        let owner = plan.name(step.owner).expect("a checked step's owner exists");
        write!(Sink, "{owner}: {} ({})", step.op, step.purpose.text()).unwrap();
        steps += 1;
    }
    assert_eq!(steps, plan.len(), "every step of a checked plan decodes");
});

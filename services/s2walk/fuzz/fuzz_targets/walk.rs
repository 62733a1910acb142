//! Fuzz target: arbitrary registers, machine, input address and guest memory. The fast walk and
//! the reference transcription must agree, and neither (nor the tree visitor) may panic or hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use s2walk::{
    Access, Ipa, Machine, OutputAddr, PaBits, S2Config, SliceMemory, Vtcr, Vttbr, reference,
};

fn word(data: &[u8], at: usize) -> u64 {
    let mut raw = [0u8; 8];
    for (i, slot) in raw.iter_mut().enumerate() {
        *slot = data.get(at + i).copied().unwrap_or(0);
    }
    u64::from_le_bytes(raw)
}

fuzz_target!(|data: &[u8]| {
    let (vtcr, mut vttbr, ipa, flags, base) = (
        word(data, 0),
        word(data, 8),
        word(data, 16),
        word(data, 24),
        word(data, 32),
    );
    let bytes = data.get(40..).unwrap_or(&[]);
    let mut machine = Machine::new(PaBits::ALL[(flags % 7) as usize]);
    machine.lpa2 = flags & (1 << 8) != 0;
    machine.ttst = flags & (1 << 9) != 0;
    machine.xnx = flags & (1 << 10) != 0;
    machine.hafdbs = flags & (1 << 11) != 0;
    machine.fault_txsz_below_min = flags & (1 << 12) != 0;
    machine.fault_txsz_above_max = flags & (1 << 13) != 0;
    let access = Access::ALL[((flags >> 16) % 4) as usize];
    // Often put the memory at 0 and the tables in it, so walks get past the first lookup.
    let base = if flags & (1 << 20) != 0 { 0 } else { base };
    if flags & (1 << 21) != 0 {
        vttbr &= 0xffff_0000_0000_0fff;
    }
    let mem = SliceMemory::new(OutputAddr::new(base), bytes);
    let (vtcr, vttbr, ipa) = (Vtcr::new(vtcr), Vttbr::new(vttbr), Ipa::new(ipa));
    let fast = s2walk::walk(&machine, vtcr, vttbr, &mem, ipa, access);
    let slow = reference::s2_translate(&machine, vtcr, vttbr, &mem, ipa, access);
    assert_eq!(fast, slow, "fast walk and reference disagree");
    if let Ok(config) = S2Config::new(&machine, vtcr, vttbr) {
        let mut seen = 0usize;
        config.visit(&mem, 2000, |_| seen += 1);
        assert!(seen <= 2000, "the visitor read past its budget");
    }
});

//! Test support: sparse guest memory and a random stage-2 scenario builder.
#![allow(dead_code)]

use s2walk::{Access, GuestMemory, Ipa, Machine, OutputAddr, PaBits, ReadError, Vtcr, Vttbr};
use std::collections::{HashMap, HashSet};

/// Memory made of present 4KB pages (reading as zero unless written); anything else aborts.
#[derive(Default, Clone, Debug)]
pub struct SparseMemory {
    pages: HashSet<u64>,
    words: HashMap<u64, u64>,
}

impl SparseMemory {
    /// Makes `len` bytes from `addr` present.
    pub fn map(&mut self, addr: u64, len: u64) {
        let first = addr >> 12;
        let last = (addr.saturating_add(len.max(1)) - 1) >> 12;
        for page in first..=last {
            self.pages.insert(page);
        }
    }

    /// Writes a descriptor (the page must be mapped to be readable).
    pub fn write(&mut self, addr: u64, value: u64) {
        self.words.insert(addr, value);
    }

    /// Maps the page holding `addr` and writes `value` there.
    pub fn put(&mut self, addr: u64, value: u64) {
        self.map(addr, 8);
        self.write(addr, value);
    }
}

impl GuestMemory for SparseMemory {
    fn read_u64(&self, addr: OutputAddr) -> Result<u64, ReadError> {
        let a = addr.get();
        if a & 7 != 0 || !self.pages.contains(&(a >> 12)) {
            return Err(ReadError::Unbacked);
        }
        Ok(self.words.get(&a).copied().unwrap_or(0))
    }
}

/// splitmix64: a small deterministic generator, so a failing seed reproduces exactly.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// A value in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    pub fn bits(&mut self, width: u32) -> u64 {
        if width >= 64 {
            self.next()
        } else {
            self.next() & ((1 << width) - 1)
        }
    }
}

/// One random stage 2: a machine, registers, a table tree and the IPAs to walk.
pub struct Scenario {
    pub machine: Machine,
    pub vtcr: Vtcr,
    pub vttbr: Vttbr,
    pub mem: SparseMemory,
    pub walks: Vec<(Ipa, Access)>,
}

fn granule_bits(tg0: u64) -> u32 {
    match tg0 {
        1 => 16,
        2 => 14,
        _ => 12,
    }
}

/// SL0 (and SL2) encoding for a start level, per granule; `None` where none exists.
fn sl_for(tg0: u64, level: i32) -> Option<(u64, u64)> {
    match (granule_bits(tg0), level) {
        (12, -1) => Some((0, 1)),
        (12, 0) => Some((2, 0)),
        (12, 1) => Some((1, 0)),
        (12, 2) => Some((0, 0)),
        (12, 3) => Some((3, 0)),
        (_, l @ 0..=3) => Some(((3 - l) as u64, 0)),
        _ => None,
    }
}

fn random_vtcr(rng: &mut Rng, pa: u32) -> (u64, u32, i32) {
    let tg0 = rng.below(4);
    let g = granule_bits(tg0);
    let stride = g - 3;
    let ds = rng.chance(25) as u64;
    let mut start = rng.below(5) as i32 - 1;
    let mut sl = sl_for(tg0, start);
    if sl.is_none() {
        start = 1;
        sl = sl_for(tg0, 1);
    }
    let (sl0, sl2) = sl.unwrap_or((0, 0));
    let levels = (3 - start) as u32;
    let lo = levels * stride + g + 1;
    let mut iasize = lo + rng.below(u64::from(stride + 4)) as u32;
    if rng.chance(70) {
        iasize = iasize.min(pa).max(16);
    }
    let mut t0sz = 64u64.saturating_sub(u64::from(iasize));
    if rng.chance(8) {
        t0sz = rng.bits(6);
    }
    let sl0 = if rng.chance(8) { rng.bits(2) } else { sl0 };
    let sl2 = if rng.chance(8) { rng.bits(1) } else { sl2 };
    let ps = if rng.chance(70) {
        0b110.min(rng.below(8)).max(pa_code(pa))
    } else {
        rng.below(8)
    };
    let ha = rng.chance(30) as u64;
    let hd = rng.chance(50) as u64;
    let junk = rng.next() & 0xffff_fff0_ff98_3f00; // IRGN/ORGN/SH/VS/... and RES0 bits
    let vtcr = junk
        | (t0sz & 0x3f)
        | (sl0 << 6)
        | (tg0 << 14)
        | (ps << 16)
        | (ha << 21)
        | (hd << 22)
        | (ds << 32)
        | (sl2 << 33);
    (vtcr, 64 - (t0sz as u32).min(63), start)
}

fn pa_code(pa: u32) -> u64 {
    match pa {
        32 => 0,
        36 => 1,
        40 => 2,
        42 => 3,
        44 => 4,
        48 => 5,
        _ => 6,
    }
}

/// Descriptor bits holding output address `oa` (bits above 47 where the format keeps them).
fn encode_oa(oa: u64, g: u32, ds: bool) -> u64 {
    let low = oa & 0x0000_ffff_ffff_ffff & !((1u64 << g) - 1);
    if g == 16 {
        low | (((oa >> 48) & 0xf) << 12)
    } else if ds {
        low | (oa & (0b11 << 48)) | (((oa >> 50) & 0b11) << 8)
    } else {
        low
    }
}

fn random_oa(rng: &mut Rng, pa: u32, align_bits: u32) -> u64 {
    let width = match rng.below(10) {
        0 => 52,
        1 => pa + 1,
        2 => 32,
        _ => pa,
    };
    rng.bits(width.min(52)) & !((1u64 << align_bits) - 1)
}

fn random_machine(rng: &mut Rng) -> Machine {
    let mut machine = Machine::new(PaBits::ALL[rng.below(7) as usize]);
    machine.lpa2 = rng.chance(80);
    machine.ttst = rng.chance(80);
    machine.xnx = rng.chance(80);
    machine.hafdbs = rng.chance(80);
    machine.fault_txsz_below_min = rng.chance(70);
    machine.fault_txsz_above_max = rng.chance(70);
    machine
}

fn random_vttbr(rng: &mut Rng, base: u64, wide: bool) -> u64 {
    let mut v = base & 0x0000_ffff_ffff_fffe;
    if wide {
        v = (v & !0x3c) | (((base >> 48) & 0xf) << 2);
    }
    if rng.chance(20) {
        v |= rng.bits(6) & 0x3f; // misaligned low bits and CnP
    }
    v | (rng.bits(16) << 48)
}

/// Builds a random scenario from `seed`.
pub fn scenario(seed: u64) -> Scenario {
    let mut rng = Rng::new(seed);
    let machine = random_machine(&mut rng);
    let pa = machine.pa_bits.bits();
    let (vtcr, iasize, start) = random_vtcr(&mut rng, pa);
    let g = granule_bits((vtcr >> 14) & 3);
    let stride = g - 3;
    let ds = vtcr & (1 << 32) != 0 && g != 16;
    let mut mem = SparseMemory::default();
    let lsb = |level: i32| g + (3 - level) as u32 * stride;
    let start_bits = iasize.saturating_sub(lsb(start)).min(20);
    let base = random_oa(&mut rng, pa, (start_bits + 3).max(6).min(g));
    let vttbr = random_vttbr(&mut rng, base, ds || g == 16);
    if rng.chance(92) {
        mem.map(base, (8u64 << start_bits).max(1 << g));
    }
    let ipa = if rng.chance(90) {
        rng.bits(iasize)
    } else {
        rng.next()
    };
    let (mut level, mut table) = (start, base);
    while level <= 3 {
        let width = if level == start { start_bits } else { stride };
        let index = (ipa >> lsb(level).min(63)) & ((1u64 << width) - 1);
        let addr = table | (index << 3);
        let roll = rng.below(100);
        if roll < 60 && level < 3 {
            let next = random_oa(&mut rng, pa, g);
            let junk = rng.next() & 0xfff8_0000_0000_0ffc & !(if ds { 0x300 } else { 0 });
            mem.put(addr, encode_oa(next, g, ds) | junk | 0b11);
            if rng.chance(92) {
                mem.map(next, 1 << g);
            }
            level += 1;
            table = next;
            continue;
        }
        let desc = if roll < 88 {
            let oa = random_oa(&mut rng, pa, lsb(level));
            let attrs = rng.next() & 0x007f_8000_0000_0ffc & !(if ds { 0x300 } else { 0 });
            let af = if rng.chance(80) { 1 << 10 } else { 0 };
            let kind = if level == 3 || rng.chance(5) {
                0b11
            } else {
                0b01
            };
            encode_oa(oa, g, ds) | attrs | af | kind
        } else if roll < 94 {
            rng.next() & !1
        } else {
            rng.next()
        };
        mem.put(addr, desc);
        break;
    }
    let mut walks = Vec::new();
    for access in Access::ALL {
        walks.push((Ipa::new(ipa), access));
    }
    let any = |rng: &mut Rng| Access::ALL[rng.below(4) as usize];
    for _ in 0..2 {
        let a = any(&mut rng);
        walks.push((Ipa::new(ipa ^ rng.bits(g + 4)), a));
        let a = any(&mut rng);
        walks.push((Ipa::new(rng.bits(iasize + 1)), a));
    }
    Scenario {
        machine,
        vtcr: Vtcr::new(vtcr),
        vttbr: Vttbr::new(vttbr),
        mem,
        walks,
    }
}

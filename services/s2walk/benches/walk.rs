//! Walks per second: 4-level 4KB page walks, 3-level 64KB page walks, 4KB 2MB-block walks,
//! each with a pre-decoded configuration (as the shadow stage-2 path uses it), plus the cost of
//! decoding VTCR_EL2/VTTBR_EL2 on every walk and the reference model for comparison.
//!
//! Time is this thread's CPU time (CLOCK_THREAD_CPUTIME_ID), so a loaded machine slows the run
//! down without changing the figures much.
//!
//! `cargo bench -p s2walk --bench walk`; figures go to docs/benchmarks.md.

use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{BenchmarkId, Criterion, Throughput, black_box, criterion_group, criterion_main};
use s2walk::{
    Access, Ipa, Machine, OutputAddr, PaBits, S2Config, Vtcr, Vttbr, WordMemory, reference,
};

const AF_RW_WB: u64 = (1 << 10) | (0b11 << 6) | (0xf << 2);
const BATCH: usize = 4096;

/// Nanoseconds of CPU time used by the calling thread.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call, and
    // CLOCK_THREAD_CPUTIME_ID is a clock every Linux supports.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// Criterion measurement: CPU time of the benchmark thread, in nanoseconds.
struct ThreadCpuTime;

struct CpuFormatter;

impl ValueFormatter for CpuFormatter {
    fn scale_values(&self, typical_ns: f64, values: &mut [f64]) -> &'static str {
        let (factor, unit) = match typical_ns {
            t if t < 1e3 => (1.0, "ns cpu"),
            t if t < 1e6 => (1e-3, "us cpu"),
            _ => (1e-6, "ms cpu"),
        };
        values.iter_mut().for_each(|v| *v *= factor);
        unit
    }

    fn scale_throughputs(
        &self,
        _typical: f64,
        throughput: &Throughput,
        values: &mut [f64],
    ) -> &'static str {
        let per = match throughput {
            Throughput::Elements(n) | Throughput::Bytes(n) | Throughput::BytesDecimal(n) => {
                *n as f64
            }
        };
        values.iter_mut().for_each(|v| *v = per * 1e9 / *v / 1e6);
        "Mwalks/s (cpu)"
    }

    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

impl Measurement for ThreadCpuTime {
    type Intermediate = u64;
    type Value = u64;

    fn start(&self) -> u64 {
        thread_cpu_ns()
    }
    fn end(&self, start: u64) -> u64 {
        thread_cpu_ns().saturating_sub(start)
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, value: &u64) -> f64 {
        *value as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &CpuFormatter
    }
}

struct Setup {
    name: &'static str,
    vtcr: Vtcr,
    words: Vec<u64>,
    ipas: Vec<Ipa>,
}

/// 4KB, 48-bit IPA from level 0: tables at 0x0 (L0), 0x1000 (L1), 0x2000 (L2), 0x3000 (L3);
/// the L3 table maps 512 pages, or the L2 table 512 2MB blocks when `blocks`.
fn four_k(blocks: bool) -> Setup {
    let mut words = vec![0u64; 4 * 512];
    words[0] = 0x1000 | 0b11;
    words[512] = 0x2000 | 0b11;
    for i in 0..512u64 {
        if blocks {
            words[1024 + i as usize] = (0x4000_0000 + (i << 21)) | AF_RW_WB | 0b01;
        } else {
            words[1024] = 0x3000 | 0b11;
            words[1536 + i as usize] = (0x4000_0000 + (i << 12)) | AF_RW_WB | 0b11;
        }
    }
    let shift = if blocks { 21 } else { 12 };
    let ipas = (0..BATCH as u64)
        .map(|i| Ipa::new(((i * 97) % 512) << shift | (i & 0xff8)))
        .collect();
    let vtcr = Vtcr::new(16 | (0b10 << 6) | (0b101 << 16));
    Setup {
        name: if blocks {
            "4k_2m_block_3_lookups"
        } else {
            "4k_page_4_levels"
        },
        vtcr,
        words,
        ipas,
    }
}

/// 64KB, 48-bit IPA from level 1: tables at 0x0 (L1), 0x10000 (L2), 0x20000 (L3, 8192 pages).
fn sixty_four_k() -> Setup {
    let mut words = vec![0u64; 3 * 8192];
    words[0] = 0x10000 | 0b11;
    words[8192] = 0x20000 | 0b11;
    for i in 0..8192u64 {
        words[16384 + i as usize] = (0x4000_0000 + (i << 16)) | AF_RW_WB | 0b11;
    }
    let ipas = (0..BATCH as u64)
        .map(|i| Ipa::new(((i * 4099) % 8192) << 16 | (i & 0xfff8)))
        .collect();
    let vtcr = Vtcr::new(16 | (0b10 << 6) | (0b01 << 14) | (0b101 << 16));
    Setup {
        name: "64k_page_3_levels",
        vtcr,
        words,
        ipas,
    }
}

/// What a caller uses of a walk: the output address and permissions, or the fault code.
fn digest(result: Result<s2walk::Translation, s2walk::Fault>) -> u64 {
    match result {
        Ok(t) => t.oa.get() ^ u64::from(t.perms.write),
        Err(f) => u64::from(f.fsc()),
    }
}

fn bench(c: &mut Criterion<ThreadCpuTime>) {
    let machine = Machine::new(PaBits::Bits48);
    let vttbr = Vttbr::new(0);
    let mut group = c.benchmark_group("s2walk");
    group.throughput(Throughput::Elements(BATCH as u64));
    for setup in [four_k(false), sixty_four_k(), four_k(true)] {
        let mem = WordMemory::new(OutputAddr::new(0), &setup.words);
        let config = S2Config::new(&machine, setup.vtcr, vttbr).expect("valid configuration");
        for ipa in &setup.ipas {
            config
                .walk(&mem, *ipa, Access::Read)
                .expect("every benchmark IPA maps");
        }
        // Each walk's result is consumed as a caller would (output address, a permission, or
        // the fault code), and the batch's digest returned for criterion to black-box.
        group.bench_function(BenchmarkId::new("walk", setup.name), |b| {
            b.iter(|| {
                setup.ipas.iter().fold(0, |acc, ipa| {
                    acc ^ digest(config.walk(&mem, black_box(*ipa), Access::Read))
                })
            });
        });
        group.bench_function(BenchmarkId::new("decode_and_walk", setup.name), |b| {
            b.iter(|| {
                setup.ipas.iter().fold(0, |acc, ipa| {
                    let vtcr = black_box(setup.vtcr);
                    acc ^ digest(s2walk::walk(
                        &machine,
                        vtcr,
                        vttbr,
                        &mem,
                        *ipa,
                        Access::Read,
                    ))
                })
            });
        });
        group.bench_function(BenchmarkId::new("reference", setup.name), |b| {
            b.iter(|| {
                setup.ipas.iter().fold(0, |acc, ipa| {
                    let vtcr = black_box(setup.vtcr);
                    let result =
                        reference::s2_translate(&machine, vtcr, vttbr, &mem, *ipa, Access::Read);
                    acc ^ digest(result)
                })
            });
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(ThreadCpuTime);
    targets = bench
}
criterion_main!(benches);

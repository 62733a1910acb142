//! The primary CPU's boot sequence: page tables, console, device tree, image check, platform
//! line, secondary CPUs, requirements, then the image's work.

use crate::arch::aarch64::{cpu, gic, mmu};
use crate::devicetree::{Description, PsciMethod};
use crate::exit::{self, Status};
use crate::{console, glue, println, selftest, smp};
use capvisor_image::{BootConfig, CHECKSUM_START, ImageView, SelfTest};
use capvisor_kernel::bootargs::BootArgs;
use capvisor_kernel::memmap::{MemoryMap, Range};
use capvisor_kernel::platform::{GicVersion, Platform};
use core::sync::atomic::{AtomicU64, Ordering};

unsafe extern "C" {
    static __text_end: u8;
    static __ro_end: u8;
    static __image_end: u8;
}

static LOAD_BASE: AtomicU64 = AtomicU64::new(0);

/// Where the kernel was loaded (its link address is 0).
pub fn load_base() -> u64 {
    LOAD_BASE.load(Ordering::Relaxed)
}

fn symbol(sym: &u8) -> usize {
    core::ptr::from_ref(sym) as usize
}

/// Reads a big-endian u32 the boot loader left in memory (MMU off: byte reads only).
fn read_be32(addr: usize) -> u32 {
    let mut bytes = [0u8; 4];
    for (i, b) in bytes.iter_mut().enumerate() {
        // SAFETY: the caller passes an address inside the device tree blob the loader placed in
        // RAM for us (booting.rst); reading it has no side effects.
        *b = unsafe { core::ptr::read_volatile((addr + i) as *const u8) };
    }
    u32::from_be_bytes(bytes)
}

/// The image's payload range from its capvisor header, relative to the load base.
fn payload_range(base: usize) -> (usize, usize) {
    // SAFETY: the first 128 bytes of the image are its headers, inside our own text.
    let (offset, size) = unsafe {
        (
            core::ptr::read_volatile((base + 64 + 24) as *const u64),
            core::ptr::read_volatile((base + 64 + 32) as *const u64),
        )
    };
    (offset as usize, size as usize)
}

/// The primary CPU's first Rust code (from `boot.rs`), MMU off, relocations applied.
#[unsafe(no_mangle)]
extern "C" fn primary_main(dtb: usize, base: usize) -> ! {
    LOAD_BASE.store(base as u64, Ordering::Relaxed);
    smp::init_primary();
    // SAFETY: the symbols are the linker's; their addresses are where our sections are.
    let (text_end, ro_end, image_end) =
        unsafe { (symbol(&__text_end), symbol(&__ro_end), symbol(&__image_end)) };
    let dtb_size = if read_be32(dtb) == 0xd00d_feed {
        read_be32(dtb + 4) as usize
    } else {
        4096
    };
    let (payload_offset, payload_size) = payload_range(base);
    let platform_regs = cpu::id_registers();
    let ps = Platform::decode(&platform_regs, GicVersion::None).ps_encoding();

    let mut map = mmu::new_map();
    let mappings = [
        (base, text_end, mmu::attrs::CODE),
        (text_end, ro_end, mmu::attrs::RODATA),
        (ro_end, image_end, mmu::attrs::RAM),
        (
            base + payload_offset,
            base + payload_offset + payload_size,
            mmu::attrs::RODATA,
        ),
        (dtb, dtb + dtb_size, mmu::attrs::RODATA),
        (
            console::FALLBACK_UART,
            console::FALLBACK_UART + 4096,
            mmu::attrs::DEVICE,
        ),
    ];
    for (start, end, flags) in mappings {
        if end > start && mmu::identity_map(&mut map, start, end, flags).is_err() {
            // No console yet: stop; `capvisor run` reports a silent exit as a boot failure.
            exit::fail(Status::Refused);
        }
    }
    // SAFETY: caches are off; everything in the image range was written with them off.
    unsafe { crate::arch::aarch64::cache::invalidate_to_poc(base as u64, image_end as u64) };
    // SAFETY: the map covers our code, data, stacks, the device tree and the fallback console,
    // identically; it lives in a static pool and stays active for ever.
    unsafe { mmu::enable(&mut map, ps) };
    let map = alloc_forever(map);

    // SAFETY: the device tree blob was mapped above and is never written.
    let blob = unsafe { core::slice::from_raw_parts(dtb as *const u8, dtb_size) };
    let description = match Description::parse(blob) {
        Ok(d) => d,
        Err(e) => {
            // SAFETY: the fallback UART was mapped as Device memory above.
            unsafe { console::init(console::FALLBACK_UART) };
            println!("capvisor: device tree at {dtb:#x}: {e}");
            exit::fail(Status::Refused);
        }
    };
    boot_with(map, &description, base, dtb, ps)
}

fn alloc_forever(map: mmu::KernelMap) -> &'static mut mmu::KernelMap {
    static mut KERNEL_MAP: Option<mmu::KernelMap> = None;
    // SAFETY: called once, on the primary CPU, before any other CPU runs.
    unsafe { (*(&raw mut KERNEL_MAP)).insert(map) }
}

fn boot_with(
    map: &'static mut mmu::KernelMap,
    dt: &Description,
    base: usize,
    dtb: usize,
    ps: u64,
) -> ! {
    let uart = dt.uart;
    if uart.base != console::FALLBACK_UART
        && mmu::identity_map(map, uart.base, uart.base + uart.size, mmu::attrs::DEVICE).is_err()
    {
        exit::fail(Status::Refused);
    }
    // SAFETY: the PL011 the device tree names is mapped as Device memory and only we use it.
    unsafe { console::init(uart.base) };
    let args = BootArgs::parse(dt.bootargs);
    exit::set_method(args.exit);
    glue::set_trace(args.trace);
    println!(
        "capvisor {}: EL2, loaded at {base:#x}, device tree at {dtb:#x}",
        env!("CARGO_PKG_VERSION")
    );
    describe(dt);
    let platform = Platform::decode(&cpu::id_registers(), dt.gic);
    println!("{platform}");
    let config = check_image(base);
    if dt.psci != PsciMethod::Smc {
        println!("capvisor: PSCI must be called by SMC from EL2; the device tree says HVC");
        exit::fail(Status::Refused);
    }
    let ttbr = map.root_address().0 as u64;
    let cpus = smp::start_secondaries(&dt.cpus, ttbr, ps);
    println!("capvisor: {cpus} cpu(s) online; secondaries parked until the scheduler needs them");
    if let Err(unmet) = platform.check(&config, cpus) {
        println!("capvisor: refusing to start this system: {unmet}");
        exit::fail(Status::Refused);
    }
    selftest::run(SelfTest::from_u32(config.selftest).unwrap_or(SelfTest::None));
    let mut memory = free_memory(dt, base, dtb);
    for range in memory.free() {
        // Free RAM is disjoint from everything mapped so far (the image, the device tree, the
        // console), so this never changes a live mapping.
        if mmu::identity_map(
            map,
            range.start as usize,
            range.end as usize,
            mmu::attrs::RAM,
        )
        .is_err()
        {
            println!(
                "capvisor: cannot map RAM {:#x}..{:#x}",
                range.start, range.end
            );
            exit::fail(Status::Refused);
        }
    }
    let view = image_view(base);
    match glue::load_all(&view, &mut memory, &platform, dt, &config) {
        Ok((0, _)) => {}
        Ok((count, untyped)) => {
            start_interrupts(map, dt, cpus);
            cpu::enable_el0_counter();
            let features = cpu::Features::read();
            cpu::configure_el2(&features);
            cpu::set_mitigations(&features);
            crate::arch::aarch64::vcpu::set_guest_hcr(&features, platform.fwb);
            glue::set_platform(&features);
            println!(
                "capvisor: created init with {} MiB of RAM untyped; it makes the services from \
                 the boot plan",
                untyped >> 20
            );
            if crate::arch::aarch64::boot::overflowed_stacks() != 0 {
                exit::fail(Status::Panic)
            }
            println!("capvisor: boot complete");
            glue::start(ps, platform.vmid_bits == 16, platform.fwb, count)
        }
        Err((name, e)) => {
            println!("capvisor: refusing to start: service '{name}' cannot be set up: {e}");
            exit::fail(Status::Refused)
        }
    }
    println!("capvisor: boot complete");
    exit::success()
}

/// Maps the GIC and sets it up with the time-slice timer; a platform without a GICv3 is refused.
fn start_interrupts(map: &mut mmu::KernelMap, dt: &Description, cpus: u32) {
    let (Some(gicd), Some(gicr)) = (dt.gicd, dt.gicr) else {
        println!(
            "capvisor: services need a GICv3 (distributor and redistributors) for time slices"
        );
        exit::fail(Status::Refused)
    };
    for region in [gicd, gicr] {
        if mmu::identity_map(
            map,
            region.base,
            region.base + region.size,
            mmu::attrs::DEVICE,
        )
        .is_err()
        {
            exit::fail(Status::Refused);
        }
    }
    // The virtual timer is the binding's third interrupt (secure, non-secure, virtual, hyp).
    let vtimer = dt.timer_irqs.get(2).copied().unwrap_or(27);
    // SAFETY: the device tree's GICv3 regions, mapped as Device memory just above; only the
    // kernel uses them.
    if unsafe { gic::init(gicd.base, gicr.base, cpus as usize, (TICK_US, vtimer)) }.is_err() {
        println!("capvisor: the GICv3 at {gicd} could not be set up");
        exit::fail(Status::Refused);
    }
    crate::arch::aarch64::vgic::init();
}

/// A scheduler tick, in microseconds: a time slice is `TIME_SLICE_TICKS` (5) ticks, 10 ms.
const TICK_US: u64 = 2_000;

/// RAM from the device tree, minus the image (with its payload), the device tree, and what the
/// boot loader or firmware reserves (`/memreserve/`, `/reserved-memory`).
fn free_memory(dt: &Description, base: usize, dtb: usize) -> MemoryMap {
    let ram: heapless::Vec<Range, 8> = dt
        .memory
        .iter()
        .map(|r| Range {
            start: r.base as u64,
            end: (r.base + r.size) as u64,
        })
        .collect();
    let mut memory = MemoryMap::new(&ram);
    // SAFETY: the Linux header's image_size field, inside our own read-only text.
    let image_size = unsafe { core::ptr::read_volatile((base + 16) as *const u64) };
    memory.reserve(Range {
        start: base as u64,
        end: base as u64 + image_size,
    });
    let dtb_size = u64::from(read_be32(dtb + 4));
    memory.reserve(Range {
        start: dtb as u64,
        end: dtb as u64 + dtb_size,
    });
    for region in &dt.reserved {
        memory.reserve(Range {
            start: region.base as u64,
            end: (region.base + region.size) as u64,
        });
    }
    memory
}

/// The image, already verified by `check_image`.
fn image_view(base: usize) -> ImageView<'static> {
    let (ro, payload) = image_parts(base);
    ImageView::parse_split(ro, payload).unwrap_or_else(|_| exit::fail(Status::Refused))
}

fn image_parts(base: usize) -> (&'static [u8], &'static [u8]) {
    // SAFETY: the headers are the first bytes of our own text, mapped read-only.
    let ro_size = unsafe { core::ptr::read_volatile((base + 64 + 16) as *const u64) } as usize;
    let (payload_offset, payload_size) = payload_range(base);
    // SAFETY: the read-only part and the payload are mapped read-only and never written; their
    // extents come from the header, which `ImageView::parse_split` checks against each other.
    unsafe {
        (
            core::slice::from_raw_parts(base as *const u8, ro_size.max(CHECKSUM_START)),
            core::slice::from_raw_parts((base + payload_offset) as *const u8, payload_size),
        )
    }
}

fn describe(dt: &Description) {
    for region in &dt.memory {
        println!("capvisor: memory {region}");
    }
    println!("capvisor: console pl011 at {}", dt.uart);
    if let (Some(d), Some(r)) = (dt.gicd, dt.gicr) {
        println!(
            "capvisor: gic {:?} distributor {d} redistributors {r}",
            dt.gic
        );
    }
    println!(
        "capvisor: timer PPIs {:?} at {} Hz; psci via {:?}; {} cpu(s) in the device tree",
        dt.timer_irqs.as_slice(),
        cpu::counter_frequency(),
        dt.psci,
        dt.cpus.len()
    );
}

/// Verifies the image's checksums and reads its boot configuration; a bad image stops here.
fn check_image(base: usize) -> BootConfig {
    let (ro, payload) = image_parts(base);
    match ImageView::parse_split(ro, payload).and_then(|view| view.boot_config()) {
        Ok(config) => {
            println!("capvisor: image verified (kernel and payload checksums match)");
            config
        }
        Err(e) => {
            println!("capvisor: refusing a corrupted image: {e}");
            exit::fail(Status::Refused);
        }
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    match info.location() {
        Some(at) => console::print_raw(format_args!(
            "\ncapvisor: PANIC on cpu {} at {}:{}:{}: {}\n",
            smp::this_cpu(),
            at.file(),
            at.line(),
            at.column(),
            info.message()
        )),
        None => console::print_raw(format_args!("\ncapvisor: PANIC: {}\n", info.message())),
    }
    exit::fail(Status::Panic)
}

//! EL0 services: loading their ELF files from the image into their own stage-2 address spaces,
//! running them, and taking their system calls and faults.
//!
//! Address-space layout of a service (stage 1 is off for EL0, so a virtual address is an IPA):
//! its ELF segments where they are linked (below [`STACK_TOP`] - stack), a stack ending at
//! [`STACK_TOP`], and its IPC buffer page at [`IPC_BUFFER`]. A service starts with x0 = the IPC
//! buffer's address and SP = [`STACK_TOP`].
//!
//! Invariant: this module's state is only touched on CPU 0 (secondaries are parked), so it needs
//! no lock yet; the object-model work replaces it with the big kernel lock.

use crate::arch::aarch64::el0::{self, HCR_SERVICE, SPSR_EL0T, ThreadContext};
use crate::arch::aarch64::gic::{self, Interrupt};
use crate::arch::aarch64::stage2::{AddressSpace, MapError};
use crate::exit::{self, Status};
use crate::{console, println, smp};
use capvisor_image::{EntryKind, ImageView};
use capvisor_ipc::abi::KernelError;
use capvisor_kernel::esr;
use capvisor_kernel::memmap::MemoryMap;
use capvisor_kernel::stage2::{self, MemType, S2Access};
use core::arch::asm;
use core::sync::atomic::{AtomicBool, Ordering};
use elf::ElfBytes;
use elf::abi::{EM_AARCH64, PF_R, PF_W, PF_X, PT_LOAD};
use elf::endian::LittleEndian;
use heapless::Vec;

/// Input address bits of a service's address space (39: one level-1 root table).
pub const IPA_BITS: u32 = 39;
/// The top of a service's stack.
pub const STACK_TOP: u64 = 0x40_0000_0000;
/// Stack pages.
pub const STACK_PAGES: u64 = 16;
/// Where a service's IPC buffer is mapped.
pub const IPC_BUFFER: u64 = 0x40_0010_0000;
/// The most services an image may have.
pub const MAX_SERVICES: usize = 16;
/// The largest segment (memory size) accepted.
const MAX_SEGMENT: u64 = 64 << 20;
const PAGE: u64 = 4096;

/// Syscall numbers of the debug calls (see `docs/ipc.md`): write text, stop the system.
pub const SYS_YIELD: u64 = 11;
/// Write `x1` bytes at `x0` to the console, prefixed by the service's name.
pub const SYS_DEBUG_WRITE: u64 = 12;
/// Stop the system with status `x0` (0: success).
pub const SYS_DEBUG_HALT: u64 = 13;

struct Service {
    name: &'static str,
    space: AddressSpace,
    context: ThreadContext,
    running: bool,
    /// Whether its console output is at the start of a line (where its name prefix goes).
    line_start: bool,
}

static mut SERVICES: Vec<Service, MAX_SERVICES> = Vec::new();
static mut CURRENT: usize = 0;
/// Whether the first time slice was started.
static SLICE_STARTED: AtomicBool = AtomicBool::new(false);
/// HCR_EL2 for services: [`HCR_SERVICE`], plus FWB (bit 46) when the descriptors use the FWB
/// encoding (they must agree: Arm ARM D8.6.5).
static mut HCR: u64 = HCR_SERVICE;

fn services() -> &'static mut Vec<Service, MAX_SERVICES> {
    // SAFETY: only CPU 0 touches the services (module invariant), and never re-entrantly: the
    // exception handler runs with interrupts masked and leaves by `enter_el0`.
    unsafe { &mut *(&raw mut SERVICES) }
}

/// Why a service could not be loaded.
#[derive(Clone, Copy, Debug)]
pub enum LoadError {
    /// The ELF file is malformed.
    Elf(&'static str),
    /// A segment lies where it may not (beyond the address space, over the stack).
    Layout(u64),
    /// Out of memory or address space.
    Map(MapError),
    /// Too many services.
    TooMany,
}

impl From<MapError> for LoadError {
    fn from(e: MapError) -> Self {
        Self::Map(e)
    }
}

/// Loads every service in the image, in image order; returns how many.
///
/// # Errors
///
/// The first service that cannot be loaded, with its name.
pub fn load_all(
    image: &ImageView<'static>,
    memory: &mut MemoryMap,
    fwb: bool,
    coherence: (bool, bool),
) -> Result<usize, (&'static str, LoadError)> {
    for entry in image.entries().filter(|e| e.kind == EntryKind::ServiceElf) {
        let vmid = services().len() as u16 + 1;
        let service = load(entry.name, entry.bytes, vmid, memory, fwb, coherence)
            .map_err(|e| (entry.name, e))?;
        services()
            .push(service)
            .map_err(|_| (entry.name, LoadError::TooMany))?;
    }
    Ok(services().len())
}

fn load(
    name: &'static str,
    bytes: &'static [u8],
    vmid: u16,
    memory: &mut MemoryMap,
    fwb: bool,
    (idc, dic): (bool, bool),
) -> Result<Service, LoadError> {
    let file =
        ElfBytes::<LittleEndian>::minimal_parse(bytes).map_err(|_| LoadError::Elf("header"))?;
    if file.ehdr.e_machine != EM_AARCH64 || file.ehdr.class != elf::file::Class::ELF64 {
        return Err(LoadError::Elf("not an AArch64 ELF64 file"));
    }
    let mut space = AddressSpace::new(vmid, IPA_BITS, memory)?;
    let segments = file
        .segments()
        .ok_or(LoadError::Elf("no program headers"))?;
    for segment in segments.iter().filter(|s| s.p_type == PT_LOAD) {
        let data = file
            .segment_data(&segment)
            .map_err(|_| LoadError::Elf("segment data"))?;
        let (start, memsz) = (segment.p_vaddr, segment.p_memsz);
        let end = start.checked_add(memsz).ok_or(LoadError::Layout(start))?;
        if memsz > MAX_SEGMENT || data.len() as u64 > memsz || end > STACK_TOP - STACK_PAGES * PAGE
        {
            return Err(LoadError::Layout(start));
        }
        let access = S2Access {
            read: segment.p_flags & PF_R != 0,
            write: segment.p_flags & PF_W != 0,
            exec: segment.p_flags & PF_X != 0,
        };
        let mut page = start & !(PAGE - 1);
        while page < end {
            load_page(&mut space, page, access, (start, data), fwb, idc, memory)?;
            page += PAGE;
        }
    }
    map_zeroed(
        &mut space,
        STACK_TOP - STACK_PAGES * PAGE,
        STACK_PAGES,
        fwb,
        memory,
    )?;
    map_zeroed(&mut space, IPC_BUFFER, 1, fwb, memory)?;
    // Code was written through the kernel's data-side mapping: make it visible to instruction
    // fetches (Arm ARM D7.5.2 "Instruction cache maintenance"): cleaned to PoU above unless
    // CTR_EL0.IDC, and the instruction cache invalidated here unless CTR_EL0.DIC.
    // SAFETY: cache maintenance and barriers change no memory contents.
    unsafe {
        if !dic {
            asm!("ic ialluis", options(nostack, preserves_flags));
        }
        asm!("dsb ish", "isb", options(nostack, preserves_flags));
    }
    let mut context = ThreadContext {
        pc: file.ehdr.e_entry,
        sp: STACK_TOP,
        spsr: SPSR_EL0T,
        ..Default::default()
    };
    context.x[0] = IPC_BUFFER;
    Ok(Service {
        name,
        space,
        context,
        running: true,
        line_start: true,
    })
}

/// Loads one page of a segment. Segments may share a page (the end of one, the start of the
/// next): the second fills the same physical page, which is mapped again with both segments'
/// permissions (the space is not live yet, so no break-before-make is needed).
fn load_page(
    space: &mut AddressSpace,
    page: u64,
    access: S2Access,
    (start, data): (u64, &[u8]),
    fwb: bool,
    idc: bool,
    memory: &mut MemoryMap,
) -> Result<(), LoadError> {
    let (pa, access) = match space.translate(page) {
        Some(pa) => {
            let old = space.access(page).unwrap_or(access);
            space.unmap_page(page);
            let merged = S2Access {
                read: old.read || access.read,
                write: old.write || access.write,
                exec: old.exec || access.exec,
            };
            (pa, merged)
        }
        None => {
            let pa = memory
                .alloc(1, PAGE)
                .ok_or(LoadError::Map(MapError::OutOfMemory))?;
            // SAFETY: `pa` was just allocated from free RAM, which the kernel maps read/write.
            unsafe { core::ptr::write_bytes(pa as *mut u8, 0, PAGE as usize) };
            (pa, access)
        }
    };
    fill_page(pa, page, start, data, idc);
    let attributes = stage2::leaf_attributes(access, MemType::NormalWriteBack, fwb);
    space.map_page(page, pa, attributes, memory)?;
    Ok(())
}

/// Copies into the physical page `pa`, which will appear at `page`, the part of the segment
/// (`data` at `start`) that falls in it.
fn fill_page(pa: u64, page: u64, start: u64, data: &[u8], idc: bool) {
    // SAFETY: `pa` is a page this loader allocated from free RAM, which the kernel maps
    // read/write, and nothing runs in the space yet.
    let dest = unsafe { core::slice::from_raw_parts_mut(pa as *mut u8, PAGE as usize) };
    let data_end = start + data.len() as u64;
    let copy_start = page.max(start);
    let copy_end = (page + PAGE).min(data_end);
    if copy_start < copy_end {
        let src = &data[(copy_start - start) as usize..(copy_end - start) as usize];
        dest[(copy_start - page) as usize..(copy_end - page) as usize].copy_from_slice(src);
    }
    if !idc {
        crate::arch::aarch64::mmu::clean_dcache_to_pou(pa as usize, (pa + PAGE) as usize);
    }
}

fn map_zeroed(
    space: &mut AddressSpace,
    ipa: u64,
    pages: u64,
    fwb: bool,
    memory: &mut MemoryMap,
) -> Result<(), LoadError> {
    let rw = S2Access {
        read: true,
        write: true,
        exec: false,
    };
    let attributes = stage2::leaf_attributes(rw, MemType::NormalWriteBack, fwb);
    for i in 0..pages {
        let pa = memory
            .alloc(1, PAGE)
            .ok_or(LoadError::Map(MapError::OutOfMemory))?;
        // SAFETY: a freshly allocated page of free RAM, mapped read/write by the kernel.
        unsafe { core::ptr::write_bytes(pa as *mut u8, 0, PAGE as usize) };
        space.map_page(ipa + i * PAGE, pa, attributes, memory)?;
    }
    Ok(())
}

/// Runs the first service; never returns. `ps` is the PARange encoding for VTCR_EL2.PS; `fwb`
/// must be what `load_all` was given.
pub fn start(ps: u64, vmid16: bool, fwb: bool) -> ! {
    // SAFETY: CPU 0 only (module invariant), before any service runs.
    unsafe { HCR = HCR_SERVICE | (u64::from(fwb) << 46) };
    let Some(vtcr) = stage2::vtcr(IPA_BITS, ps, vmid16) else {
        println!("capvisor: no stage-2 configuration for {IPA_BITS}-bit service address spaces");
        exit::fail(Status::Refused)
    };
    // SAFETY: VTCR_EL2 only affects the EL1&0 regime, which nothing runs in yet; every service
    // space is built for this configuration (4K granule, start level 1).
    unsafe { asm!("msr vtcr_el2, {}", "isb", in(reg) vtcr, options(nostack, preserves_flags)) };
    println!("capvisor: starting {} service(s) at EL0", services().len());
    run_next(0)
}

/// Enters the first running service at or after index `from` (round robin); stops the system
/// when none is left.
fn run_next(from: usize) -> ! {
    let count = services().len();
    for step in 0..count {
        let index = (from + step) % count;
        if services()[index].running {
            return enter(index);
        }
    }
    println!("capvisor: no service left to run");
    exit::success()
}

fn enter(index: usize) -> ! {
    // SAFETY: CPU 0 only (module invariant).
    let previous = unsafe { core::mem::replace(&mut *(&raw mut CURRENT), index) };
    if previous != index || !SLICE_STARTED.swap(true, Ordering::Relaxed) {
        gic::start_slice();
    }
    let service = &mut services()[index];
    let record = smp::per_cpu();
    // SAFETY: the per-CPU record is this CPU's; HCR_EL2 and VTTBR_EL2 are set for the service
    // (VM+TGE+DC, its VMID and tables) before its context is restored by ERET.
    unsafe {
        (*record).current = &raw mut service.context;
        asm!(
            "msr hcr_el2, {hcr}",
            "msr vttbr_el2, {vttbr}",
            "isb",
            hcr = in(reg) HCR,
            vttbr = in(reg) service.space.vttbr(),
            options(nostack, preserves_flags)
        );
        el0::enter_el0(&raw const service.context, (*record).stack_top)
    }
}

fn esr_far() -> (u64, u64) {
    let (esr, far): (u64, u64);
    // SAFETY: reading syndrome registers has no side effects.
    unsafe {
        asm!("mrs {}, esr_el2", "mrs {}, far_el2", out(reg) esr, out(reg) far,
             options(nomem, nostack, preserves_flags));
    }
    (esr, far)
}

/// Every exception from EL0 arrives here (from `lower_common`), with the thread's registers
/// already saved in its context.
#[unsafe(no_mangle)]
extern "C" fn handle_lower_exception(kind: u64, context: &mut ThreadContext) -> ! {
    // SAFETY: CPU 0 only (module invariant).
    let index = unsafe { CURRENT };
    let (esr, far) = esr_far();
    if kind == 8 && esr::class(esr) == 0x15 {
        return syscall(index, context);
    }
    if kind == 9 {
        return match gic::take() {
            // The slice is over: the next service runs (round robin) with a fresh slice.
            Interrupt::Tick => {
                SLICE_STARTED.store(false, Ordering::Relaxed);
                run_next(index + 1)
            }
            Interrupt::Other(_) | Interrupt::None => enter(index),
        };
    }
    let name = services()[index].name;
    console::print(format_args!(
        "capvisor: service '{name}' faulted and was stopped: {}; pc={:#x} far={far:#x}\n",
        esr::Decoded(esr),
        context.pc
    ));
    services()[index].running = false;
    run_next(index + 1)
}

fn syscall(index: usize, context: &mut ThreadContext) -> ! {
    match context.x[7] {
        SYS_DEBUG_WRITE => {
            debug_write(index, context.x[0], context.x[1]);
            context.x[7] = 0;
            enter(index)
        }
        SYS_DEBUG_HALT => {
            let status = context.x[0];
            println!(
                "capvisor: service '{}' halted the system with status {status}",
                services()[index].name
            );
            if status == 0 {
                exit::success()
            }
            exit::fail(Status::ServiceFailure)
        }
        SYS_YIELD => {
            context.x[7] = 0;
            run_next(index + 1)
        }
        _ => {
            context.x[7] = u64::from(KernelError::InvalidSyscall.code());
            enter(index)
        }
    }
}

/// Prints up to 1 KiB of a service's memory, read through its own stage-2 tables (an address
/// it does not map ends the text).
fn debug_write(index: usize, address: u64, length: u64) {
    let service = &mut services()[index];
    let mut line: Vec<u8, 1024> = Vec::new();
    for offset in 0..length.min(1024) {
        let Some(ipa) = address.checked_add(offset) else {
            break;
        };
        let Some(pa) = service.space.translate(ipa) else {
            break;
        };
        // SAFETY: `pa` is RAM the service maps (its own pages); the kernel maps all RAM.
        let byte = unsafe { (pa as *const u8).read_volatile() };
        let _ = line.push(byte);
    }
    let text = core::str::from_utf8(&line).unwrap_or("<not UTF-8>\n");
    for piece in text.split_inclusive('\n') {
        if service.line_start {
            console::print(format_args!("[{}] ", service.name));
        }
        console::print(format_args!("{piece}"));
        service.line_start = piece.ends_with('\n');
    }
}

//! EL0 services on the kernel object model (`capvisor_kernel::object`): the boot that turns the
//! image's services into threads with their own CNodes and address spaces, and the glue that
//! runs them ([`glue`] for the kernel's effects, [`trap`] for exceptions and scheduling).
//!
//! Address-space layout of a service (stage 1 is off for EL0, so a virtual address is an IPA):
//! the segments the SDK laid out from its ELF file (`capvisor_image::service`: the kernel parses
//! no ELF) below its stack, a stack of the manifest's size ending at [`STACK_TOP`], and its IPC
//! buffer page at [`IPC_BUFFER`]. A service starts with x0 = the IPC buffer's address and SP =
//! [`STACK_TOP`] (the runtime's convention, `sdk/rt/src/target.rs`).
//!
//! An image without guests, devices or carve-outs (`BOOT_FLAG_INIT_PLAN`): the kernel creates
//! only init, the image's first service entry, as the root ([`load_init`]); init makes the rest
//! from the boot plan, which the kernel never reads.
//!
//! The other images are still built here: the manifest's first service is the root: the kernel
//! copies its segments into pages taken from the memory map, sets aside a pool for stage-2
//! tables, and gives it every other free RAM range as untyped memory
//! (`Kernel::create_root_thread`). Further services are made from the root's untyped by
//! invocations made in its name ([`spawn`]). An init the SDK added to such an image
//! (`BootConfig::services` says which entries are the manifest's) is not started.
//!
//! # The kernel's place and the lock
//! `Kernel` is over 300 KiB, far more than a 64 KiB boot stack, so it lives in a `static`
//! initialised at build time (`Kernel::new` is `const`); it is never built on a stack. Its
//! features are set once the platform is known (`Kernel::set_features`). Only CPU 0 runs
//! threads and secondaries are parked, so CPU 0's non-reentrant exception path (IRQs masked at
//! EL2) is the big kernel lock: [`state`] hands out the kernel and the glue only there.

mod glue;
mod grants;
mod guest;
pub use guest::set_platform;
mod spawn;
mod supervision;
mod trap;
mod vms;

use crate::arch::aarch64::el0::HCR_SERVICE;
use crate::arch::aarch64::stage2::MapError;
use crate::{exit, println};
use capvisor_image::service::{IPC_BUFFER, STACK_TOP, ServiceImage, ServiceImageError};
use capvisor_image::{BOOT_FLAG_INIT_PLAN, BootConfig, EntryKind, ImageView};
use capvisor_ipc::abi::KernelError;
use capvisor_ipc::memory::MemoryType;
use capvisor_ipc::types::{Ipa, PhysAddr};
use capvisor_kernel::memmap::MemoryMap;
use capvisor_kernel::object::{
    Effects, FrameTable, Kernel, PageInfo, PlatformFeatures, RootBoot, RootLayout, RootRam,
};
use capvisor_kernel::platform::Platform;
use capvisor_kernel::stage2::{self, S2Access};
use glue::Glue;
use heapless::Vec;

/// Input address bits of a service's address space (39: one level-1 root table).
pub const IPA_BITS: u32 = 39;
/// The most services an image may have.
pub const MAX_SERVICES: usize = 16;
const PAGE: u64 = 4096;

static mut KERNEL: Kernel = Kernel::new(PlatformFeatures::UNKNOWN);
static mut GLUE: Glue = Glue::new();
/// HCR_EL2 for services: [`HCR_SERVICE`], plus FWB (bit 46) when the descriptors use the FWB
/// encoding (they must agree: Arm ARM D8.6.5).
static mut HCR: u64 = HCR_SERVICE;

/// The kernel and the glue, under the big kernel lock (see the module doc).
fn state() -> (&'static mut Kernel, &'static mut Glue) {
    // SAFETY: only CPU 0 calls this, at boot or in its exception path, which runs with IRQs
    // masked and leaves by `enter_el0` without returning; no caller keeps the references across
    // another call (each exception path starts afresh).
    unsafe { (&mut *(&raw mut KERNEL), &mut *(&raw mut GLUE)) }
}

/// Why a service could not be loaded.
#[derive(Clone, Copy, Debug)]
pub enum LoadError {
    /// The service entry is malformed.
    Image(ServiceImageError),
    /// Out of memory or address space.
    Map(MapError),
    /// The object model refused an operation.
    Kernel(KernelError),
    /// Too many services or grants.
    TooMany,
    /// The image's grants entry is malformed.
    Grants(capvisor_image::grants::GrantError),
    /// The image's priorities entry does not have one byte per service.
    Priorities,
    /// A guest cannot be set up.
    Guest(vms::GuestError),
}

impl core::fmt::Display for LoadError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Image(error) => write!(f, "{error}"),
            Self::Map(error) => write!(f, "cannot map it: {error:?}"),
            Self::Kernel(error) => write!(f, "the kernel refused: {error:?}"),
            Self::TooMany => f.write_str("too many services or grants"),
            Self::Grants(error) => write!(f, "malformed grants entry: {error:?}"),
            Self::Priorities => f.write_str("the priorities entry does not match the services"),
            Self::Guest(error) => write!(f, "{error}"),
        }
    }
}

impl From<MapError> for LoadError {
    fn from(e: MapError) -> Self {
        Self::Map(e)
    }
}

impl From<ServiceImageError> for LoadError {
    fn from(e: ServiceImageError) -> Self {
        Self::Image(e)
    }
}

impl From<KernelError> for LoadError {
    fn from(e: KernelError) -> Self {
        Self::Kernel(e)
    }
}

/// Creates every service in the image, in image order (the first is the root); returns how many
/// and the RAM given to the root as untyped, in bytes.
///
/// # Errors
///
/// The first service that cannot be loaded, with its name.
pub fn load_all(
    image: &ImageView<'static>,
    memory: &mut MemoryMap,
    platform: &Platform,
    dt: &crate::devicetree::Description,
    config: &BootConfig,
) -> Result<(usize, u64), (&'static str, LoadError)> {
    if config.flags & BOOT_FLAG_INIT_PLAN != 0 {
        return load_init(image, memory, platform, config);
    }
    let supervised = config.flags & capvisor_image::BOOT_FLAG_SUPERVISED != 0;
    let services = config.services as usize;
    // The manifest's services are the last `services` service entries.
    let added = image
        .entries()
        .filter(|e| e.kind == EntryKind::Service)
        .count()
        .saturating_sub(services);
    let mut entries = image
        .entries()
        .filter(|e| e.kind == EntryKind::Service)
        .skip(added);
    let Some(first) = entries.next() else {
        return Ok((0, 0));
    };
    let priorities = priorities(image, services).map_err(|e| (first.name, e))?;
    // Carve-outs leave the RAM map and the boot-info pages are reserved before anything else
    // takes memory; the kernel's notion of RAM it may touch for services is what is left, with
    // the RAM carve-outs and identity-mapped guest RAM (`vms::kernel_ram`).
    let (kernel, glue) = state();
    // The frame table covers every page of RAM, before anything is taken from it.
    set_frame_table(kernel, memory).map_err(|e| (first.name, e))?;
    let free = memory.clone();
    let guests = vms::plan(image, services, memory, (dt, supervised))?;
    glue.fwb = platform.fwb;
    // RAM carve-outs and `ram_identity` RAM leave the map here but stay RAM the kernel maps: the
    // frames retyped from them are zeroed (and cleaned to PoC) like any other.
    glue.ram = vms::kernel_ram(&guests, free);
    let features = PlatformFeatures::for_platform(platform, IPA_BITS as u8);
    kernel
        .set_features(features)
        .map_err(|e| (first.name, e.into()))?;
    let root_image = ServiceImage::decode(first.bytes).map_err(|e| (first.name, e.into()))?;
    let devices = vms::root_devices(&guests);
    let carveouts: Vec<RootRam, { vms::MAX_HELD }> = vms::ram_carveouts(&guests).collect();
    let (layout, untyped) = boot_root(
        kernel,
        glue,
        (&root_image, &devices, &carveouts, RootRam::NONE),
        memory,
        (priorities[0], platform.idc, guests.regions[0].1),
    )
    .map_err(|e| (first.name, e))?;
    if let Ok(t) = kernel.thread_glue(layout.thread) {
        t.name = Some(first.name);
    }
    let mut root = spawn::Root {
        kernel,
        glue,
        layout,
        carveouts: vms::ram_carveouts(&guests).count() as u64,
    };
    let mut count = 1;
    let mut names = [""; MAX_SERVICES];
    names[0] = first.name;
    // Where each spawned service's frames end in its CNode (the rest of it is free).
    let mut frames_end = [0u64; MAX_SERVICES];
    for entry in entries {
        if count >= MAX_SERVICES {
            return Err((entry.name, LoadError::TooMany));
        }
        let base = layout.first_free + 3 * (count as u64 - 1);
        let supervisor = if supervised {
            Some(supervision::fault_endpoint(&mut root, count).map_err(|e| (entry.name, e))?)
        } else {
            None
        };
        let service = ServiceImage::decode(entry.bytes)
            .map_err(LoadError::from)
            .and_then(|image| {
                frames_end[count] =
                    spawn::FIRST_FRAME + image.page_count() + image.stack_pages() + 1;
                root.spawn(base, &image, (priorities[count], platform.idc), supervisor)
            })
            .map_err(|e| (entry.name, e))?;
        names[count] = entry.name;
        if let Ok(t) = root.kernel.thread_glue(service) {
            t.name = Some(entry.name);
        }
        count += 1;
    }
    let entries = (
        manifest_entry(image, capvisor_image::grants::GRANTS_ENTRY),
        manifest_entry(image, capvisor_image::grants::UNTYPED_ENTRY),
    );
    let mut granted = grants::apply(&mut root, entries, count).map_err(|e| (first.name, e))?;
    let supervision = supervised.then_some(&names[..count]);
    vms::create(
        &mut root,
        &guests,
        &mut granted,
        (platform, &priorities, &frames_end),
        supervision,
    )?;
    clear_root_buffer(&mut root).map_err(|e| (first.name, e))?;
    crate::arch::aarch64::cache::sync_instructions(platform.dic);
    Ok((count, untyped))
}

/// Creates only the root, init (the image's first service entry), which carries out the boot
/// plan: every free RAM range becomes one of its untyped, and it gets IrqControl and the payload
/// as read-only 2 MiB frames (`Kernel::create_root_thread`), and names the threads it makes
/// after the image's service entries. Returns 1 and the RAM given as untyped, in bytes.
///
/// # Errors
///
/// Init's name and what went wrong.
fn load_init(
    image: &ImageView<'static>,
    memory: &mut MemoryMap,
    platform: &Platform,
    config: &BootConfig,
) -> Result<(usize, u64), (&'static str, LoadError)> {
    let mut names: Vec<&'static str, { capvisor_kernel::object::MAX_SERVICE_NAMES }> = Vec::new();
    for entry in image.entries().filter(|e| e.kind == EntryKind::Service) {
        names
            .push(entry.name)
            .map_err(|_| (entry.name, LoadError::TooMany))?;
    }
    let Some(&first) = names.first() else {
        return Ok((0, 0));
    };
    let init = image
        .entries()
        .find(|e| e.kind == EntryKind::Service)
        .map(|e| e.bytes)
        .unwrap_or_default();
    let fail = |e: LoadError| (first, e);
    let (kernel, glue) = state();
    set_frame_table(kernel, memory).map_err(fail)?;
    glue.fwb = platform.fwb;
    glue.ram = memory.clone();
    let features = PlatformFeatures::for_platform(platform, IPA_BITS as u8);
    kernel.set_features(features).map_err(|e| fail(e.into()))?;
    kernel
        .set_service_names(&names)
        .map_err(|e| fail(e.into()))?;
    let root_image = ServiceImage::decode(init).map_err(|e| fail(e.into()))?;
    // The payload starts a 2 MiB block and the image's footprint (`image_size`, which the
    // memory map keeps out of RAM) ends one: its blocks hold nothing but the image.
    let block = capvisor_kernel::object::boot::IMAGE_BLOCK;
    let size = (image.payload().len() as u64).next_multiple_of(block);
    if image.header.payload_offset + size > image.linux.image_size {
        return Err(fail(LoadError::Kernel(KernelError::RangeError)));
    }
    let payload = RootRam {
        base: PhysAddr::new(image.payload().as_ptr() as u64),
        size,
    };
    // Its table budget also covers the payload mapped in 2 MiB blocks and a page it fills
    // others' frames through.
    let priority = u8::try_from(config.root_priority).unwrap_or(u8::MAX);
    let (layout, untyped) = boot_root(
        kernel,
        glue,
        (&root_image, &[], &[], payload),
        memory,
        (priority, platform.idc, 1024),
    )
    .map_err(fail)?;
    if let Ok(t) = kernel.thread_glue(layout.thread) {
        t.name = Some(first);
    }
    crate::arch::aarch64::cache::sync_instructions(platform.dic);
    Ok((1, untyped))
}

/// The image's `Manifest` entry named `name`, if it has one.
fn manifest_entry(image: &ImageView<'static>, name: &str) -> Option<&'static [u8]> {
    image
        .entries()
        .find(|e| e.kind == EntryKind::Manifest && e.name == name)
        .map(|e| e.bytes)
}

/// Each service's priority from the manifest (image order); 255 for every service of an image
/// that carries none.
fn priorities(
    image: &ImageView<'static>,
    services: usize,
) -> Result<[u8; MAX_SERVICES], LoadError> {
    let mut priorities = [u8::MAX; MAX_SERVICES];
    if let Some(bytes) = manifest_entry(image, capvisor_image::priorities::PRIORITIES_ENTRY) {
        let decoded = capvisor_image::priorities::decode(bytes, services)
            .map_err(|_| LoadError::Priorities)?;
        for (slot, priority) in priorities.iter_mut().zip(decoded) {
            *slot = *priority;
        }
    }
    Ok(priorities)
}

/// Loads the root's image into pages from `memory`, sets aside the table pool, and creates the
/// root thread with the rest of RAM as untyped; returns its layout and the untyped bytes.
fn boot_root(
    kernel: &mut Kernel,
    glue: &mut Glue,
    (image, devices, carveouts, payload): (
        &ServiceImage,
        &[capvisor_kernel::object::RootDevice],
        &[RootRam],
        RootRam,
    ),
    memory: &mut MemoryMap,
    (priority, idc, root_payload_pages): (u8, bool, u64),
) -> Result<(RootLayout, u64), LoadError> {
    let pages = image.page_count() + image.stack_pages() + 1;
    let base = memory
        .alloc(pages, PAGE)
        .ok_or(LoadError::Map(MapError::OutOfMemory))?;
    // The root's own objects (CNode, space with its tables, thread, untyped records).
    let regions = capvisor_kernel::memmap::MAX_RANGES + devices.len();
    let space_bytes = RootBoot::space_bytes_for(pages + root_payload_pages);
    let kernel_bytes = RootBoot::kernel_bytes(regions, space_bytes);
    let kernel_memory = memory
        .alloc(kernel_bytes / PAGE, PAGE)
        .ok_or(LoadError::Map(MapError::OutOfMemory))?;
    let mut ram: Vec<RootRam, { capvisor_kernel::memmap::MAX_RANGES }> = Vec::new();
    for range in memory.free() {
        let region = RootRam {
            base: PhysAddr::new(range.start),
            size: range.end - range.start,
        };
        ram.push(region).map_err(|_| LoadError::TooMany)?;
    }
    // RAM carve-outs last: the root's last RAM untyped (see `spawn::Root::carveouts`).
    for carveout in carveouts {
        ram.push(*carveout).map_err(|_| LoadError::TooMany)?;
    }
    let boot = RootBoot {
        ram: &ram,
        devices,
        entry: image.header.entry,
        stack: STACK_TOP,
        ipc_buffer: IPC_BUFFER,
        priority,
        kernel_memory: RootRam {
            base: PhysAddr::new(kernel_memory),
            size: kernel_bytes,
        },
        space_bytes,
        image: payload,
    };
    let layout = kernel.create_root_thread(&boot, glue)?;
    map_root(kernel, glue, &layout, image, base, idc)?;
    Ok((layout, memory.free_bytes()))
}

/// Maps the root's image, stack and IPC buffer at consecutive pages from `base` (the root has
/// no capabilities to these pages: they are not part of its untyped memory).
fn map_root(
    kernel: &mut Kernel,
    glue: &mut Glue,
    layout: &RootLayout,
    image: &ServiceImage,
    base: u64,
    idc: bool,
) -> Result<(), LoadError> {
    for (n, page) in spawn::all_pages(image).enumerate() {
        let pa = base + n as u64 * PAGE;
        spawn::write_page(glue, pa, page.data, idc)?;
        let (ipa, pa, access) = (Ipa::new(page.ipa), PhysAddr::new(pa), access(page.access));
        glue.map(
            kernel.space_glue(layout.space)?,
            ipa,
            pa,
            PAGE,
            access,
            MemoryType::NormalWriteBack,
        )?;
    }
    Ok(())
}

/// A service page's `ACCESS_*` bits as stage-2 permissions.
fn access(bits: u32) -> S2Access {
    use capvisor_image::service::{ACCESS_EXECUTE, ACCESS_READ, ACCESS_WRITE};
    S2Access {
        read: bits & ACCESS_READ != 0,
        write: bits & ACCESS_WRITE != 0,
        exec: bits & ACCESS_EXECUTE != 0,
    }
}

/// Zeroes the root's IPC buffer, which carried the boot invocations' extra words, so the root
/// starts with a clean buffer like every other service.
fn clear_root_buffer(root: &mut spawn::Root<'_>) -> Result<(), LoadError> {
    let space = *root.kernel.space_glue(root.layout.space)?;
    let empty = capvisor_ipc::abi::IpcBuffer::default();
    root.glue
        .write_ipc_buffer(&space, Ipa::new(IPC_BUFFER), &empty)?;
    Ok(())
}

/// Runs the services; never returns. `ps` is the PARange encoding for VTCR_EL2.PS; `fwb` must
/// be the platform's (the descriptors' encoding).
pub fn start(ps: u64, vmid16: bool, fwb: bool, count: usize) -> ! {
    // SAFETY: CPU 0 only (module invariant), before any service runs.
    unsafe { HCR = HCR_SERVICE | (u64::from(fwb) << 46) };
    let Some(vtcr) = stage2::vtcr(IPA_BITS, ps, vmid16) else {
        println!("capvisor: no stage-2 configuration for {IPA_BITS}-bit service address spaces");
        exit::fail(exit::Status::Refused)
    };
    // SAFETY: VTCR_EL2 only affects the EL1&0 regime, which nothing runs in yet; every service
    // space is built for this configuration (4K granule, start level 1).
    unsafe { crate::arch::aarch64::stage2::set_vtcr(vtcr) };
    println!("capvisor: starting {count} service(s) at EL0");
    crate::arch::aarch64::gic::start_slice();
    trap::schedule()
}

/// Turns on the per-VM trace of mapping and maintenance operations (`capvisor.trace=1`).
pub fn set_trace(on: bool) {
    guest::TRACE.store(on, core::sync::atomic::Ordering::Relaxed);
}

/// Gives the kernel a frame table covering every page of RAM in `memory` (from its lowest to its
/// highest free byte), taken from `memory` itself and zeroed: 8 bytes per 4 KiB page.
fn set_frame_table(kernel: &mut Kernel, memory: &mut MemoryMap) -> Result<(), LoadError> {
    let free = memory.free();
    let (Some(first), Some(last)) = (free.first(), free.last()) else {
        return Err(LoadError::Map(MapError::OutOfMemory));
    };
    let (start, end) = (first.start & !(PAGE - 1), last.end.next_multiple_of(PAGE));
    let pages = (end - start) / PAGE;
    let bytes = (pages * size_of::<PageInfo>() as u64).next_multiple_of(PAGE);
    let table = memory
        .alloc(bytes / PAGE, PAGE)
        .ok_or(LoadError::Map(MapError::OutOfMemory))?;
    let pages = u32::try_from(pages).map_err(|_| LoadError::TooMany)?;
    // SAFETY: `table` is free RAM just taken from the memory map, identity-mapped read/write,
    // so nothing else uses it; zeroed, every entry reads `PageInfo::FREE`.
    unsafe { crate::arch::aarch64::cpu::zero(table, bytes) };
    // SAFETY: (1) the table is `pages` initialised entries in memory no longer in `memory`, so
    // never covered by an untyped; (2) every page of `[start, end)` that is RAM is identity-
    // mapped read/write (`kmain` maps all free RAM), and kernel objects are placed only in RAM
    // untyped, which lie in that RAM; (3) the window (physical address `start`, identity) is
    // page-aligned.
    let frame_table =
        unsafe { FrameTable::new(start, pages, table as *mut PageInfo, start as *mut u8) };
    kernel.set_memory(frame_table)?;
    Ok(())
}

/// HCR_EL2 for services.
fn hcr() -> u64 {
    // SAFETY: written once in `start`, before any service runs; read-only afterwards.
    unsafe { HCR }
}

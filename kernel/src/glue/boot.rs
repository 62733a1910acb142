//! The root: the one thing the kernel builds. It copies init's segments (laid out by the SDK:
//! the kernel parses no ELF) into pages taken from the memory map, and gives it every other free
//! RAM range as untyped, every device region of the board as device untyped
//! (`Description::device_regions`), IrqControl, the payload as read-only frames and a platform
//! page with the device tree ([`map_platform`]). init makes every other service and guest from
//! the boot plan, which the kernel never reads.

use super::effects::Glue;
use super::{IPA_BITS, PAGE, state};
use crate::arch::aarch64::stage2::MapError;
use capvisor_image::service::{
    IPC_BUFFER, STACK_TOP, ServiceImage, ServiceImageError, ServicePage,
};
use capvisor_image::{BootConfig, EntryKind, ImageView};
use capvisor_ipc::abi::KernelError;
use capvisor_ipc::memory::MemoryType;
use capvisor_ipc::types::{Ipa, PhysAddr};
use capvisor_kernel::memmap::MemoryMap;
use capvisor_kernel::object::{
    DeviceAttributes, Effects, FrameTable, Kernel, PageInfo, PlatformFeatures, RootBoot,
    RootDevice, RootLayout, RootRam,
};
use capvisor_kernel::platform::Platform;
use capvisor_kernel::stage2::S2Access;
use heapless::Vec;

/// Why a service could not be loaded.
#[derive(Clone, Copy, Debug)]
pub enum LoadError {
    /// The service entry is malformed.
    Image(ServiceImageError),
    /// Out of memory or address space.
    Map(MapError),
    /// The object model refused an operation.
    Kernel(KernelError),
    /// Too many service entries or RAM ranges.
    TooMany,
}

impl core::fmt::Display for LoadError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Image(error) => write!(f, "{error}"),
            Self::Map(error) => write!(f, "cannot map it: {error:?}"),
            Self::Kernel(error) => write!(f, "the kernel refused: {error:?}"),
            Self::TooMany => f.write_str("too many service entries or RAM ranges"),
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

/// Creates the root, init (the image's first service entry), which makes every other service
/// and guest from the boot plan; returns 1 (0 for an image without services) and the RAM given
/// to init as untyped, in bytes.
///
/// # Errors
///
/// Init's name and what went wrong.
pub fn load_all(
    image: &ImageView<'static>,
    memory: &mut MemoryMap,
    platform: &Platform,
    dt: &crate::devicetree::Description,
    config: &BootConfig,
) -> Result<(usize, u64), (&'static str, LoadError)> {
    load_init(image, memory, (platform, dt), config)
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
    (platform, dt): (&Platform, &crate::devicetree::Description),
    config: &BootConfig,
) -> Result<(usize, u64), (&'static str, LoadError)> {
    let dtb = dt.blob;
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
    // The platform page and the device tree after it, taken before init gets the rest of RAM.
    let platform_pages = 1 + (dtb.len() as u64).div_ceil(PAGE);
    let platform_base = memory
        .alloc(platform_pages, PAGE)
        .ok_or(fail(LoadError::Map(MapError::OutOfMemory)))?;
    // Its table budget also covers the payload mapped in 2 MiB blocks, the platform pages and a
    // page it fills others' frames through.
    let priority = u8::try_from(config.root_priority).unwrap_or(u8::MAX);
    // Every device region of the board, as device untyped that allow Device-nGnRE only until
    // init sets the memory types the manifest gives them (`UntypedSetMemory`).
    let devices: Vec<RootDevice, { crate::devicetree::MAX_DEVICE_REGIONS }> = dt
        .device_regions()
        .iter()
        .map(|r| RootDevice {
            base: PhysAddr::new(r.base as u64),
            size: r.size as u64,
            attributes: DeviceAttributes::Uncached { normal_nc: false },
        })
        .collect();
    let (layout, untyped) = boot_root(
        kernel,
        glue,
        (&root_image, &devices, payload),
        memory,
        (priority, platform.idc, 1024 + platform_pages),
    )
    .map_err(fail)?;
    map_platform(kernel, glue, &layout, (platform, dtb), platform_base).map_err(fail)?;
    if let Ok(t) = kernel.thread_glue(layout.thread) {
        t.name = Some(first);
    }
    crate::arch::aarch64::cache::sync_instructions(platform.dic);
    Ok((1, untyped))
}

/// Writes init's platform page (`capvisor_ipc::bootinfo::PlatformPage`: the platform's
/// features as the kernel decided them) and a copy of the device tree after it into the pages
/// at `base`, and maps them read-only at `PLATFORM_PAGE` in init's space (init holds no
/// capability to them). The device tree goes to EL0 so that device lookup by path or
/// `compatible` is init's business, not the kernel's.
fn map_platform(
    kernel: &mut Kernel,
    glue: &mut Glue,
    layout: &RootLayout,
    (platform, dtb): (&Platform, &[u8]),
    base: u64,
) -> Result<(), LoadError> {
    use capvisor_ipc::bootinfo::{FLAG_DIC, FLAG_FWB, PLATFORM_PAGE, PlatformPage};
    use zerocopy::IntoBytes;
    let mut flags = 0;
    if platform.fwb {
        flags |= FLAG_FWB;
    }
    if platform.dic {
        flags |= FLAG_DIC;
    }
    let page = PlatformPage {
        magic: PlatformPage::MAGIC,
        version: PlatformPage::VERSION,
        flags,
        smccc_workarounds: crate::arch::aarch64::mitigation::smccc_workaround_answers(),
        reserved: 0,
        dtb_size: dtb.len() as u64,
    };
    let chunks = core::iter::once(page.as_bytes()).chain(dtb.chunks(PAGE as usize));
    let read_only = S2Access {
        read: true,
        write: false,
        exec: false,
    };
    for (n, data) in chunks.enumerate() {
        let pa = base + n as u64 * PAGE;
        write_page(glue, pa, data, true)?;
        let ipa = Ipa::new(PLATFORM_PAGE + n as u64 * PAGE);
        let space = kernel.space_glue(layout.space)?;
        glue.map(
            space,
            ipa,
            PhysAddr::new(pa),
            PAGE,
            read_only,
            MemoryType::NormalWriteBack,
        )?;
    }
    Ok(())
}

/// Loads the root's image into pages from `memory`, sets aside the table pool, and creates the
/// root thread with the rest of RAM as untyped; returns its layout and the untyped bytes.
fn boot_root(
    kernel: &mut Kernel,
    glue: &mut Glue,
    (image, devices, payload): (&ServiceImage, &[RootDevice], RootRam),
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
    for (n, page) in all_pages(image).enumerate() {
        let pa = base + n as u64 * PAGE;
        write_page(glue, pa, page.data, idc)?;
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

/// Every page init is given, in order: its segments' pages, its stack (zeroed, ending at
/// [`STACK_TOP`]) and its IPC buffer (zeroed).
fn all_pages<'a>(image: &ServiceImage<'a>) -> impl Iterator<Item = ServicePage<'a>> + 'a {
    use capvisor_image::service::{ACCESS_READ, ACCESS_WRITE};
    let stack = STACK_TOP - image.stack_pages() * PAGE;
    let zeroed = move |ipa| ServicePage {
        ipa,
        access: ACCESS_READ | ACCESS_WRITE,
        data: &[],
    };
    let stack_pages = (0..image.stack_pages()).map(move |n| zeroed(stack + n * PAGE));
    image.pages().chain(stack_pages).chain([zeroed(IPC_BUFFER)])
}

/// Writes `data` to the start of the RAM page at `pa`, zeroes the rest, and cleans it to the
/// point of unification, so the code in it is visible to instruction fetches (unless
/// CTR_EL0.IDC makes that unnecessary).
fn write_page(glue: &Glue, pa: u64, data: &[u8], idc: bool) -> Result<(), LoadError> {
    if !glue.ram.contains(pa, pa + PAGE) || data.len() > PAGE as usize {
        return Err(LoadError::Kernel(KernelError::BadAddress));
    }
    // SAFETY: `pa` is a page of kernel-mapped RAM (checked above) taken from the memory map for
    // init, which no thread maps yet, so nothing else accesses it.
    let page = unsafe { &mut *(pa as *mut [u8; PAGE as usize]) };
    let (head, tail) = page.split_at_mut(data.len());
    head.copy_from_slice(data);
    tail.fill(0);
    if !idc {
        crate::arch::aarch64::cache::clean_to_pou(pa, pa + PAGE);
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

//! The image's guests, set up at boot by acting for the root (like [`super::spawn`]): for each
//! guest a `Vm`, and per vCPU a `Vcpu` and the thread that runs it, configured with the VM as its
//! address space and its VMM's endpoint (badged [`VCPU_BADGE`]` + n`) as its fault endpoint, and
//! bound, but not resumed: the VMM starts vCPU 0 when it has loaded the guest.
//!
//! What the services get, in their grant windows after the manifest's grants:
//! - the VMM: each vCPU's and thread's capability (and its own endpoint, made if nobody was
//!   granted it), and an endpoint to the memory manager (the manifest's grant, or one minted here
//!   with the VMM's badge);
//! - the memory manager: the `Vm` capability with all rights.
//!
//! And a read-only [`BootInfo`] page at [`BOOT_INFO`] in each of their address spaces saying
//! where all of that is; the memory manager's is followed by the guests' payloads (kernel, device
//! tree, initrd), page aligned, for it to load, and the VMM's by its guest's command line. The pages are taken from the boot memory map
//! before the root receives the rest as untyped, and the services hold no capability to them.

use super::grants::{self, Granted};
use super::spawn::Root;
use super::{LoadError, MAX_SERVICES, PAGE};
use crate::arch::aarch64::stage2::MapError;
use crate::devicetree::Description;
use capvisor_image::devices::{self, DEVICES_ENTRY, DeviceRecord};
use capvisor_image::{CmdlineError, EntryKind, GuestConfig, ImageView};
use capvisor_ipc::abi::Invocation;
use capvisor_ipc::bootinfo::{
    BOOT_INFO, BootInfo, FLAG_DIC, FLAG_FWB, GuestInfo, MAX_GUEST_VCPUS, MAX_GUESTS, Payload,
    VCPU_BADGE,
};
use capvisor_ipc::bootinfo::{
    DEVICE_CACHEABLE, DEVICE_CARVEOUT, DEVICE_OPTIONAL, DEVICE_UNPROTECTED_DMA, DeviceInfo,
    MAX_DEVICES,
};
use capvisor_ipc::cap::{ObjectKind, Rights};
use capvisor_ipc::memory::MemoryType;
use capvisor_ipc::types::{Ipa, PhysAddr};
use capvisor_kernel::memmap::MemoryMap;
use capvisor_kernel::object::{
    DeviceAttributes, Effects, Object, RootDevice, RootLayout, RootRam, THREAD_CONFIGURE,
};
use capvisor_kernel::platform::Platform;
use capvisor_kernel::stage2::S2Access;
use zerocopy::{FromZeros, IntoBytes};

/// One guest of the image, with its payloads.
#[derive(Clone, Copy)]
pub struct Guest {
    /// Its name.
    pub name: &'static str,
    /// Its checked configuration.
    pub config: GuestConfig,
    /// The kernel, device tree and initrd entries.
    pub kernel: &'static [u8],
    /// The device tree, if any.
    pub dtb: Option<&'static [u8]>,
    /// The initrd, if any.
    pub initrd: Option<&'static [u8]>,
    /// The command line (checked text), if any.
    pub cmdline: Option<&'static [u8]>,
}

/// The guests, and the boot-info pages reserved for the services that serve them.
pub struct Plan {
    guests: heapless::Vec<Guest, MAX_GUESTS>,
    /// The manifest's devices and carve-outs, found and reserved.
    pub devices: heapless::Vec<HeldDevice, MAX_DEVICES>,
    /// The platform device tree (copied into a device holder's boot-info region).
    dtb: &'static [u8],
    /// Per service index: the physical base and page count of its boot-info region (0: none).
    pub regions: [(u64, u64); MAX_SERVICES],
}

/// A device region or carve-out of the manifest, as found at boot.
#[derive(Clone, Copy, Debug)]
pub struct HeldDevice {
    /// Its record.
    pub record: DeviceRecord,
    /// Where it is.
    pub base: u64,
    /// Its size (a page multiple).
    pub size: u64,
    /// The memory types its frames allow.
    pub attributes: DeviceAttributes,
    /// A carve-out of ordinary RAM (`FLAG_RAM`): RAM untyped, not device untyped.
    pub ram: bool,
    /// The device's SPIs, when its passthrough takes its interrupts (`FLAG_IRQS`): the first
    /// `spi_count`.
    pub spis: [u32; 4],
    /// How many of `spis` are valid.
    pub spi_count: usize,
}

/// The most devices and carve-outs, and identity-mapped guests' RAM, the root holds as extra
/// untyped.
pub const MAX_HELD: usize = MAX_DEVICES + MAX_GUESTS;
/// The alignment of `ram_identity` RAM: a 2 MiB block, so the memory manager maps it in blocks.
const IDENTITY_ALIGN: u64 = 2 << 20;

/// Why the guests could not be set up.
#[derive(Clone, Copy, Debug)]
pub enum GuestError {
    /// The devices entry is malformed.
    Devices(capvisor_image::devices::DeviceError),
    /// A device is not in the device tree.
    DeviceNotFound,
    /// A device overlaps the kernel's own (console, GIC) or a carve-out is not RAM.
    DeviceInUse,
    /// A guest configuration is malformed.
    Config(capvisor_image::GuestConfigError),
    /// A guest has no kernel entry.
    NoKernel,
    /// More guests than the kernel supports.
    TooMany,
    /// The guest asks for RAM mapped 1:1 (IPA = PA) and no free RAM of its size is left.
    RamIdentity {
        /// Bytes asked for.
        size: u64,
    },
    /// The guest's command line entry is malformed.
    Cmdline(CmdlineError),
}

impl core::fmt::Display for GuestError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Config(error) => write!(f, "malformed guest configuration: {error:?}"),
            Self::NoKernel => f.write_str("the image has no kernel for it"),
            Self::TooMany => write!(f, "more than {MAX_GUESTS} guests or {MAX_DEVICES} devices"),
            Self::Devices(error) => write!(f, "{error}"),
            Self::RamIdentity { size } => write!(
                f,
                "no free 2 MiB aligned RAM of {size:#x} bytes is left for its ram_identity \
                 (IPA = PA) RAM"
            ),
            Self::Cmdline(error) => write!(f, "{error}"),
            Self::DeviceNotFound => {
                f.write_str("its device-tree node was not found (or has no reg)")
            }
            Self::DeviceInUse => f.write_str(
                "the region is the kernel's own (console, GIC) or a carve-out outside free RAM",
            ),
        }
    }
}

fn pages(bytes: u64) -> u64 {
    bytes.div_ceil(PAGE)
}

/// Reads the image's guests and reserves their services' boot-info pages from `memory` (before
/// the root takes the rest of RAM).
///
/// # Errors
/// The guest's name and what is wrong with it.
pub fn plan(
    image: &ImageView<'static>,
    services: usize,
    memory: &mut MemoryMap,
    (dt, supervised): (&Description, bool),
) -> Result<Plan, (&'static str, LoadError)> {
    let mut plan = Plan {
        guests: heapless::Vec::new(),
        devices: heapless::Vec::new(),
        dtb: dt.blob,
        regions: [(0, 0); MAX_SERVICES],
    };
    find_devices(image, services, memory, dt, &mut plan)?;
    let find = |kind: EntryKind, name: &str| {
        image
            .entries()
            .find(|e| e.kind == kind && e.name == name)
            .map(|e| e.bytes)
    };
    let mut sizes = [0u64; MAX_SERVICES];
    // A supervisor's page lists the services it supervises.
    sizes[0] = u64::from(supervised);
    for entry in image.entries().filter(|e| e.kind == EntryKind::Guest) {
        let fail = |error| (entry.name, LoadError::Guest(error));
        let mut config =
            GuestConfig::decode(entry.bytes, services).map_err(|e| fail(GuestError::Config(e)))?;
        if config.ram_identity() {
            // RAM at IPA = PA: taken out of the RAM map here, 2 MiB aligned (for block
            // mappings), and given to the memory manager as an untyped of its own.
            let size = config.ram_size;
            config.ram_base = memory
                .alloc(pages(size), IDENTITY_ALIGN)
                .ok_or(fail(GuestError::RamIdentity { size }))?;
        }
        let guest = Guest {
            name: entry.name,
            config,
            kernel: find(EntryKind::GuestKernel, entry.name)
                .ok_or_else(|| fail(GuestError::NoKernel))?,
            dtb: find(EntryKind::GuestDtb, entry.name),
            initrd: find(EntryKind::GuestInitrd, entry.name),
            cmdline: find(EntryKind::GuestCmdline, entry.name),
        };
        if let Some(cmdline) = guest.cmdline {
            capvisor_image::check_cmdline(cmdline).map_err(|e| fail(GuestError::Cmdline(e)))?;
        }
        plan.guests
            .push(guest)
            .map_err(|_| fail(GuestError::TooMany))?;
        let (vmm, memmgr) = (config.vmm as usize, config.memmgr as usize);
        if vmm >= MAX_SERVICES || memmgr >= MAX_SERVICES {
            return Err(fail(GuestError::TooMany));
        }
        // Each region is the info page followed by the payloads placed there, in `create`'s
        // order.
        sizes[vmm] = sizes[vmm].max(1) + guest.cmdline.map_or(0, |c| pages(c.len() as u64));
        let payloads = [Some(guest.kernel), guest.dtb, guest.initrd];
        sizes[memmgr] = sizes[memmgr].max(1)
            + payloads
                .iter()
                .flatten()
                .map(|p| pages(p.len() as u64))
                .sum::<u64>();
    }
    // A device holder's page is followed (after any payloads) by a copy of the platform device
    // tree.
    let mut holders = [false; MAX_SERVICES];
    for device in &plan.devices {
        if let Some(held) = holders.get_mut(device.record.service as usize) {
            *held = true;
        }
    }
    for (size, _) in sizes.iter_mut().zip(holders).filter(|(_, held)| *held) {
        *size = (*size).max(1) + pages(plan.dtb.len() as u64);
    }
    for (service, &count) in sizes.iter().enumerate().filter(|(_, c)| **c > 0) {
        let base = memory
            .alloc(count, PAGE)
            .ok_or(("guests", LoadError::Map(MapError::OutOfMemory)))?;
        plan.regions[service] = (base, count);
    }
    Ok(plan)
}

/// Finds the manifest's devices in the device tree and takes its carve-outs out of `memory`.
fn find_devices(
    image: &ImageView<'static>,
    services: usize,
    memory: &mut MemoryMap,
    dt: &Description,
    plan: &mut Plan,
) -> Result<(), (&'static str, LoadError)> {
    let Some(entry) = image
        .entries()
        .find(|e| e.kind == EntryKind::Manifest && e.name == DEVICES_ENTRY)
    else {
        return Ok(());
    };
    let records = devices::decode(entry.bytes, services)
        .map_err(|e| ("devices", LoadError::Guest(GuestError::Devices(e))))?;
    let kernel_own = [Some(dt.uart), dt.gicd, dt.gicr];
    for record in records {
        let name = record.name();
        let fail = |error| (name, LoadError::Guest(error));
        let (base, size) = if record.is_carveout() {
            // Carve-outs must be free RAM: they leave the kernel's map of RAM here.
            let (base, end) = (record.base, record.base + record.size);
            if !memory.contains(base, end) {
                return Err(fail(GuestError::DeviceInUse));
            }
            memory.reserve(capvisor_kernel::memmap::Range { start: base, end });
            (base, record.size)
        } else {
            let compatible = record.flags & devices::FLAG_COMPATIBLE != 0;
            let region = dt
                .find_device(record.locator(), compatible)
                .ok_or(fail(GuestError::DeviceNotFound))?;
            let base = region.base as u64 & !(PAGE - 1);
            let end = (region.base + region.size) as u64;
            (base, end.div_ceil(PAGE) * PAGE - base)
        };
        let overlaps = |r: &Option<crate::devicetree::Region>| {
            r.is_some_and(|r| base < (r.base + r.size) as u64 && (r.base as u64) < base + size)
        };
        if kernel_own.iter().any(overlaps) {
            return Err(fail(GuestError::DeviceInUse));
        }
        let attributes = if record.cacheable() {
            DeviceAttributes::Cacheable
        } else {
            DeviceAttributes::Uncached {
                normal_nc: record.memtype == devices::MEMTYPE_NORMAL_NC,
            }
        };
        let mut spis = [0; 4];
        let mut spi_count = 0;
        if record.flags & devices::FLAG_IRQS != 0 && !record.is_carveout() {
            let compatible = record.flags & devices::FLAG_COMPATIBLE != 0;
            for (slot, spi) in spis
                .iter_mut()
                .zip(dt.device_spis(record.locator(), compatible))
            {
                *slot = spi;
                spi_count += 1;
            }
        }
        let held = HeldDevice {
            record: *record,
            base,
            size,
            attributes,
            ram: record.is_carveout() && record.flags & devices::FLAG_RAM != 0,
            spis,
            spi_count,
        };
        plan.devices
            .push(held)
            .map_err(|_| fail(GuestError::TooMany))?;
    }
    Ok(())
}

/// The device regions the root receives as device untyped, in [`Plan::devices`] order (its slot
/// `first_device + i` holds region `i`).
pub fn root_devices(plan: &Plan) -> heapless::Vec<RootDevice, MAX_DEVICES> {
    plan.devices
        .iter()
        .filter(|d| !d.ram)
        .map(|d| RootDevice {
            base: PhysAddr::new(d.base),
            size: d.size,
            attributes: d.attributes,
        })
        .collect()
}

/// The root slot of supervised service `index`'s fault endpoint: after every guest's objects.
pub fn supervision_slot(root: &Root<'_>, index: usize) -> u64 {
    guest_slots(root, MAX_GUESTS) + index as u64
}

/// The RAM carve-outs, then the RAM of every `ram_identity` guest, which the root receives as its
/// last RAM untyped, in this order.
pub fn ram_carveouts(plan: &Plan) -> impl Iterator<Item = RootRam> + '_ {
    let carveouts = plan.devices.iter().filter(|d| d.ram).map(|d| RootRam {
        base: PhysAddr::new(d.base),
        size: d.size,
    });
    let identity = identity_guests(plan).map(|g| RootRam {
        base: PhysAddr::new(g.config.ram_base),
        size: g.config.ram_size,
    });
    carveouts.chain(identity)
}

/// The RAM the kernel may touch for services ([`super::glue::Glue::ram`]): `free`, the boot
/// memory map as it was before [`plan`] took the carve-outs, the identity-mapped guests' RAM and
/// the boot-info regions out of it (all of it mapped read/write at EL2 at boot), minus the
/// carve-outs that are not RAM (a cacheable PFNMAP is device memory by declaration: the kernel
/// never writes or cleans it through its own map).
///
/// So the frames retyped from a RAM carve-out or from `ram_identity` RAM are zeroed, and cleaned
/// to PoC where the rules ask for it, like every other RAM frame: none reaches its owner with
/// what DRAM held before (`Effects::clear_frame`), and a guest's PoC maintenance reaches them.
pub fn kernel_ram(plan: &Plan, mut free: MemoryMap) -> MemoryMap {
    for device in plan
        .devices
        .iter()
        .filter(|d| d.record.is_carveout() && !d.ram)
    {
        free.reserve(capvisor_kernel::memmap::Range {
            start: device.base,
            end: device.base + device.size,
        });
    }
    free
}

/// The guests whose RAM is mapped at IPA = PA.
fn identity_guests(plan: &Plan) -> impl Iterator<Item = &Guest> + '_ {
    plan.guests.iter().filter(|g| g.config.ram_identity())
}

/// The root slot of the first of the untyped [`ram_carveouts`] lists.
fn first_carveout_slot(root: &Root<'_>, plan: &Plan) -> u64 {
    root.layout.first_device - ram_carveouts(plan).count() as u64
}

/// The root slot of held region `index`'s untyped: device untyped from `first_device` in order,
/// RAM carve-outs among the last RAM untyped before it ([`ram_carveouts`]).
fn held_slot(root: &Root<'_>, plan: &Plan, index: usize) -> u64 {
    let before = &plan.devices[..index];
    if plan.devices[index].ram {
        first_carveout_slot(root, plan) + before.iter().filter(|d| d.ram).count() as u64
    } else {
        root.layout.first_device + before.iter().filter(|d| !d.ram).count() as u64
    }
}

/// The root slot of the untyped covering guest `index`'s RAM, if it is mapped at IPA = PA: after
/// the RAM carve-outs ([`ram_carveouts`]).
fn identity_slot(root: &Root<'_>, plan: &Plan, index: usize) -> Option<u64> {
    plan.guests.get(index)?.config.ram_identity().then(|| {
        let carveouts = plan.devices.iter().filter(|d| d.ram).count() as u64;
        let position = identity_guests(plan)
            .take_while(|g| !core::ptr::eq(*g, &plan.guests[index]))
            .count() as u64;
        first_carveout_slot(root, plan) + carveouts + position
    })
}

/// Root slots used for guest objects: after the services' (3 each).
fn guest_slots(root: &Root<'_>, guest: usize) -> u64 {
    root.layout.first_free
        + 3 * MAX_SERVICES as u64
        + guest as u64 * (1 + 3 * MAX_GUEST_VCPUS as u64)
}

/// Creates every guest's objects, gives the VMMs and memory managers their capabilities, and
/// writes and maps their boot-info pages.
///
/// # Errors
/// The guest's name and the first invocation that failed.
pub fn create(
    root: &mut Root<'_>,
    plan: &Plan,
    granted: &mut Granted,
    (platform, priorities, frames_end): (&Platform, &[u8; MAX_SERVICES], &[u64; MAX_SERVICES]),
    supervision: Option<&[&'static str]>,
) -> Result<(), (&'static str, LoadError)> {
    let infos = boot_infos();
    let mut payload_next = [1u64; MAX_SERVICES];
    let mut flags = 0;
    if platform.fwb {
        flags |= FLAG_FWB;
    }
    if platform.dic {
        flags |= FLAG_DIC;
    }
    for (index, guest) in plan.guests.iter().enumerate() {
        let (vmm, memmgr) = (guest.config.vmm as usize, guest.config.memmgr as usize);
        let mut vmm_info = guest_info(index, guest);
        let mut mm_info = vmm_info;
        create_one(
            root,
            granted,
            (index, guest, priorities[vmm]),
            (&mut vmm_info, &mut mm_info),
        )
        .map_err(|e| (guest.name, e))?;
        give_interrupts(root, plan, granted, (index, vmm), &mut vmm_info)
            .map_err(|e| (guest.name, e))?;
        if let Some(source) = identity_slot(root, plan, index) {
            // The memory manager retypes the guest's RAM from exactly this untyped.
            let (mm_cnode, _, _) = grants::window(root, memmgr);
            let all = u64::from(Rights::ALL.bits());
            let dest =
                grants::next_slot(root, memmgr, &mut granted.next).map_err(|e| (guest.name, e))?;
            root.invoke(mm_cnode, Invocation::Copy.code(), &[dest, source, all])
                .map_err(|e| (guest.name, e.into()))?;
            mm_info.ram_untyped = dest;
        }
        // The payloads, page aligned after the info page: the memory manager loads the kernel,
        // device tree and initrd; the VMM writes the command line into the guest's device tree.
        for (service, payload, bytes) in [
            (memmgr, &mut mm_info.kernel, Some(guest.kernel)),
            (memmgr, &mut mm_info.dtb, guest.dtb),
            (memmgr, &mut mm_info.initrd, guest.initrd),
            (vmm, &mut vmm_info.cmdline, guest.cmdline),
        ] {
            if let Some(bytes) = bytes {
                *payload = place(plan.regions[service].0, &mut payload_next[service], bytes);
            }
        }
        for (service, info) in [(vmm, vmm_info), (memmgr, mm_info)] {
            let page = infos[service].get_or_insert_with(|| empty_info(flags));
            if let Some(slot) = page.guests.get_mut(page.guest_count as usize) {
                *slot = info;
                page.guest_count += 1;
            }
        }
    }
    grant_devices(root, plan, granted, (infos, &mut payload_next), flags)
        .map_err(|e| ("devices", e))?;
    if let Some(names) = supervision {
        // The supervisor's page lists the services it starts and supervises.
        let page = infos[0].get_or_insert_with(|| empty_info(flags));
        for (index, name) in names.iter().enumerate().skip(1) {
            let Some(entry) = page.services.get_mut(page.service_count as usize) else {
                break;
            };
            let len = name.len().min(entry.name.len());
            entry.name[..len].copy_from_slice(&name.as_bytes()[..len]);
            entry.thread = root.layout.first_free + 3 * (index as u64 - 1) + 2;
            entry.badge = index as u64 + 1;
            page.service_count += 1;
        }
    }
    for (service, info) in infos.iter_mut().enumerate() {
        let Some(page) = info.as_mut() else { continue };
        // Its own endpoint heads its grant window (a VMM receives its vCPUs' faults there, a
        // memory manager its VMMs' calls), when one was made.
        let (_, base, _) = grants::window(root, service);
        if root_endpoint_exists(root, service) {
            page.endpoint = base;
        }
        for (slot, &untyped) in page.untyped.iter_mut().zip(&granted.untyped[service]) {
            *slot = untyped;
        }
        page.untyped_count = granted.untyped[service].len() as u64;
        (page.free_first, page.free_end) = if service == 0 {
            (supervision_slot(root, MAX_SERVICES), grants::ROOT_ENDPOINTS)
        } else {
            (frames_end[service], 1 << super::spawn::CHILD_CNODE_BITS)
        };
    }
    for (service, info) in infos.iter().enumerate() {
        if let Some(info) = info {
            install(root, service, plan.regions[service], info).map_err(|e| ("guests", e))?;
        }
    }
    Ok(())
}

/// Gives guest `index`'s VMM an IrqHandler for each SPI of the devices passed through to it
/// with their interrupts, listed in its boot info for it to forward to a vCPU.
fn give_interrupts(
    root: &mut Root<'_>,
    plan: &Plan,
    granted: &mut Granted,
    (index, vmm): (usize, usize),
    info: &mut GuestInfo,
) -> Result<(), LoadError> {
    let devices = plan
        .devices
        .iter()
        .filter(|d| d.record.guest as usize == index && d.spi_count > 0);
    // A scratch slot of the root's: its first free one, empty until the root service runs.
    let scratch = supervision_slot(root, MAX_SERVICES);
    for spi in devices.flat_map(|d| d.spis[..d.spi_count].iter().copied()) {
        let count = info.irq_count as usize;
        if count >= info.irq_handler.len() {
            return Err(LoadError::Guest(GuestError::TooMany));
        }
        let code = Invocation::IrqIssueHandler.code();
        root.invoke(RootLayout::IRQ_CONTROL, code, &[u64::from(spi), scratch])?;
        let (cnode, _, _) = grants::window(root, vmm);
        let dest = grants::next_slot(root, vmm, &mut granted.next)?;
        root.invoke(cnode, Invocation::Move.code(), &[dest, scratch])?;
        info.irq_handler[count] = dest;
        info.irq_intid[count] = spi;
        info.irq_count += 1;
    }
    Ok(())
}

/// Gives each device's holder its device untyped (a copy of the root's) and, for a region passed
/// through to a guest, the guest's `Vm`; lists them, with a copy of the platform device tree, in
/// the holder's boot info.
fn grant_devices(
    root: &mut Root<'_>,
    plan: &Plan,
    granted: &mut Granted,
    (infos, payload_next): (
        &mut [Option<BootInfo>; MAX_SERVICES],
        &mut [u64; MAX_SERVICES],
    ),
    flags: u32,
) -> Result<(), LoadError> {
    let all = u64::from(Rights::ALL.bits());
    for (index, device) in plan.devices.iter().enumerate() {
        let record = &device.record;
        let service = record.service as usize;
        if service >= MAX_SERVICES {
            continue;
        }
        let (cnode, _, _) = grants::window(root, service);
        let untyped = grants::next_slot(root, service, &mut granted.next)?;
        let source = held_slot(root, plan, index);
        root.invoke(cnode, Invocation::Copy.code(), &[untyped, source, all])?;
        let mut info = DeviceInfo::new_zeroed();
        info.name = record.name;
        info.untyped = untyped;
        info.base = device.base;
        info.size = device.size;
        info.memtype = record.memtype;
        info.guest = record.guest;
        if record.cacheable() {
            info.flags |= DEVICE_CACHEABLE;
        }
        if record.is_carveout() {
            info.flags |= DEVICE_CARVEOUT;
        }
        if record.flags & devices::FLAG_OPTIONAL != 0 {
            info.flags |= DEVICE_OPTIONAL;
        }
        if record.flags & devices::FLAG_UNPROTECTED_DMA != 0 {
            info.flags |= DEVICE_UNPROTECTED_DMA;
        }
        let page = infos[service].get_or_insert_with(|| empty_info(flags));
        if let Some(guest) = plan.guests.get(record.guest as usize) {
            let vm = grants::next_slot(root, service, &mut granted.next)?;
            let source = guest_slots(root, record.guest as usize);
            root.invoke(cnode, Invocation::Copy.code(), &[vm, source, all])?;
            info.vm = vm;
            // The holder learns the guest's name and RAM (not its capabilities) for its reports.
            let known = page.guests().iter().any(|g| g.index == record.guest);
            if !known && let Some(slot) = page.guests.get_mut(page.guest_count as usize) {
                *slot = guest_info(record.guest as usize, guest);
                page.guest_count += 1;
            }
        }
        if let Some(slot) = page.devices.get_mut(page.device_count as usize) {
            *slot = info;
            page.device_count += 1;
        }
        if page.platform_dtb.size == 0 {
            page.platform_dtb = place(
                plan.regions[service].0,
                &mut payload_next[service],
                plan.dtb,
            );
        }
    }
    Ok(())
}

/// Copies `bytes` to the next free pages of a service's boot-info region at `region` (`next`
/// counts pages from its start; [`plan`] sized the region for everything placed there).
fn place(region: u64, next: &mut u64, bytes: &[u8]) -> Payload {
    let offset = *next * PAGE;
    copy_to(region + offset, bytes);
    *next += pages(bytes.len() as u64);
    Payload {
        offset,
        size: bytes.len() as u64,
    }
}

/// The boot-info pages being written, one per service: about 3 KiB each, so they live in a
/// static, not on the 64 KiB boot stack.
fn boot_infos() -> &'static mut [Option<BootInfo>; MAX_SERVICES] {
    static mut INFOS: [Option<BootInfo>; MAX_SERVICES] = [const { None }; MAX_SERVICES];
    // SAFETY: called once, by `create`, on CPU 0 during boot (the big kernel lock's context, see
    // the services module doc); no other reference to INFOS exists.
    unsafe { &mut *(&raw mut INFOS) }
}

/// Whether service `service`'s endpoint was made (by a grant or for its guests).
fn root_endpoint_exists(root: &Root<'_>, service: usize) -> bool {
    root.object(grants::ROOT_ENDPOINTS + service as u64)
        .is_some()
}

fn empty_info(flags: u32) -> BootInfo {
    let mut info = BootInfo::new_zeroed();
    info.magic = BootInfo::MAGIC;
    info.version = BootInfo::VERSION;
    info.flags = flags;
    info.smccc_workarounds = crate::arch::aarch64::mitigation::smccc_workaround_answers();
    info
}

fn guest_info(index: usize, guest: &Guest) -> GuestInfo {
    let mut info = GuestInfo::new_zeroed();
    info.index = index as u32;
    info.vcpus = guest.config.vcpus;
    info.ram_base = guest.config.ram_base;
    info.ram_size = guest.config.ram_size;
    let header = capvisor_image::LinuxImageHeader::read(guest.kernel);
    info.text_offset = header.map_or(0, |header| header.text_offset);
    info.image_size = header
        .map_or(0, |header| header.image_size)
        .max(guest.kernel.len() as u64);
    let name = guest.name.as_bytes();
    let len = name.len().min(info.name.len());
    info.name[..len].copy_from_slice(&name[..len]);
    info
}

/// log2 of a guest's VM object: its record, root table and a table budget of one page per
/// 512 bytes of guest RAM (enough to map all of it in 4 KiB pages, 512 per table), at least 64
/// KiB and at most 16 MiB.
fn vm_bits(guest: &Guest) -> u64 {
    let bytes = (guest.config.ram_size / 512).clamp(64 << 10, 16 << 20);
    u64::from(bytes.next_power_of_two().trailing_zeros())
}

/// The objects of guest `index`: its VM, and per vCPU a vCPU, a thread and a badged fault
/// endpoint.
fn create_one(
    root: &mut Root<'_>,
    granted: &mut Granted,
    (index, guest, priority): (usize, &Guest, u8),
    (vmm_info, mm_info): (&mut GuestInfo, &mut GuestInfo),
) -> Result<(), LoadError> {
    let (vmm, memmgr) = (guest.config.vmm as usize, guest.config.memmgr as usize);
    let base = guest_slots(root, index);
    let vm = base;
    let all = u64::from(Rights::ALL.bits());
    root.retype(u64::from(ObjectKind::Vm.code()), vm_bits(guest), 0, vm)?;
    // The memory manager maps the VM's RAM: it holds the VM with all rights.
    let (mm_cnode, _, _) = grants::window(root, memmgr);
    let dest = grants::next_slot(root, memmgr, &mut granted.next)?;
    root.invoke(mm_cnode, Invocation::Copy.code(), &[dest, vm, all])?;
    mm_info.vm = dest;
    mm_info.vmm_badge = vmm as u64 + 1;
    // The VMM's endpoint receives the vCPUs' faults; its endpoint to the memory manager.
    let endpoint = grants::ensure_endpoint(root, vmm)?;
    let (vmm_cnode, _, _) = grants::window(root, vmm);
    vmm_info.memmgr = match granted.slots[vmm][memmgr] {
        0 => {
            let memmgr_endpoint = grants::ensure_endpoint(root, memmgr)?;
            let dest = grants::next_slot(root, vmm, &mut granted.next)?;
            let rights = u64::from(Rights::WRITE.union(Rights::GRANT).bits());
            let badge = vmm as u64 + 1;
            root.invoke(
                vmm_cnode,
                Invocation::Mint.code(),
                &[dest, memmgr_endpoint, rights, badge],
            )?;
            granted.slots[vmm][memmgr] = dest;
            dest
        }
        slot => slot,
    };
    let vcpus = (guest.config.vcpus as usize).min(MAX_GUEST_VCPUS);
    // A vCPU below its VMM: the VMM answers its faults before it runs again.
    let priority = u64::from(priority.saturating_sub(1));
    for n in 0..vcpus {
        let (vcpu, thread, fault) = (
            base + 1 + 3 * n as u64,
            base + 2 + 3 * n as u64,
            base + 3 + 3 * n as u64,
        );
        root.retype(u64::from(ObjectKind::Vcpu.code()), 0, 0, vcpu)?;
        root.retype(u64::from(ObjectKind::Thread.code()), 0, 0, thread)?;
        let rights = u64::from(Rights::WRITE.bits());
        let badge = VCPU_BADGE + n as u64;
        root.invoke(
            RootLayout::CNODE,
            Invocation::Mint.code(),
            &[fault, endpoint, rights, badge],
        )?;
        // Entry, stack and IPC buffer are the VMM's to set (a guest makes no syscalls); its
        // CSpace is the VMM's CNode, which it never uses.
        let configure = [0, 0, 0, priority | priority << 8, vmm_cnode, vm, fault];
        root.invoke(thread, THREAD_CONFIGURE, &configure)?;
        root.invoke(thread, Invocation::ThreadBindVcpu.code(), &[vcpu])?;
        for (source, out) in [
            (vcpu, &mut vmm_info.vcpu[n]),
            (thread, &mut vmm_info.thread[n]),
        ] {
            let dest = grants::next_slot(root, vmm, &mut granted.next)?;
            root.invoke(vmm_cnode, Invocation::Copy.code(), &[dest, source, all])?;
            *out = dest;
        }
    }
    Ok(())
}

/// Copies `bytes` into kernel-mapped RAM at `pa`: only ever inside a boot-info region that
/// [`plan`] allocated, sized for what goes there.
fn copy_to(pa: u64, bytes: &[u8]) {
    // SAFETY: `pa..pa + len` lies in a region `plan` took from the boot memory map (free RAM,
    // identity-mapped read/write by the kernel before services load), sized for the info page,
    // the payloads or the device tree copied there; nothing else uses it.
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), pa as *mut u8, bytes.len()) };
}

/// Writes `info` into the first page of `service`'s region and maps the region read-only at
/// [`BOOT_INFO`] in the service's space.
fn install(
    root: &mut Root<'_>,
    service: usize,
    (base, count): (u64, u64),
    info: &BootInfo,
) -> Result<(), LoadError> {
    if count == 0 {
        return Ok(());
    }
    copy_to(base, info.as_bytes());
    let space_slot = if service == 0 {
        RootLayout::SPACE
    } else {
        root.layout.first_free + 3 * (service as u64 - 1) + 1
    };
    let Some(Object::AddressSpace(space)) = root.object(space_slot) else {
        return Err(LoadError::Kernel(capvisor_ipc::abi::KernelError::WrongType));
    };
    let read_only = S2Access {
        read: true,
        write: false,
        exec: false,
    };
    let space = root.kernel.space_glue(space)?;
    for n in 0..count {
        let (ipa, pa) = (
            Ipa::new(BOOT_INFO + n * PAGE),
            PhysAddr::new(base + n * PAGE),
        );
        root.glue
            .map(space, ipa, pa, PAGE, read_only, MemoryType::NormalWriteBack)?;
    }
    Ok(())
}

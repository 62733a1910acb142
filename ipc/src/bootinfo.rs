//! The boot information page the kernel maps read-only into a service that runs or serves guests
//! (a VMM, a memory manager) at [`BOOT_INFO`]: the platform's features, the capabilities the kernel
//! placed in the service's CSpace for each guest, and the guests' payloads (kernel, device tree,
//! initrd) right after the page, for the memory manager to load.
//!
//! The layout is fixed (`zerocopy`, little-endian); a service checks [`BootInfo::MAGIC`] and
//! [`BootInfo::VERSION`] before it trusts anything else.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Where the page is mapped in the service's address space (an IPA; stage 1 is off at EL0).
pub const BOOT_INFO: u64 = 0x20_0000_0000;
/// The most guests one page describes.
pub const MAX_GUESTS: usize = 4;
/// The most vCPUs per guest.
pub const MAX_GUEST_VCPUS: usize = 8;
/// The most untyped pieces listed.
pub const MAX_UNTYPED: usize = 8;
/// The most device interrupts one guest's VMM is given.
pub const MAX_GUEST_IRQS: usize = 8;
/// `BootInfo::flags`: FEAT_S2FWB is implemented (and stage-2 descriptors use it).
pub const FLAG_FWB: u32 = 1 << 0;
/// `BootInfo::flags`: CTR_EL0.DIC is 1 (no instruction-cache invalidation needed for coherence).
pub const FLAG_DIC: u32 = 1 << 1;
/// The badge the kernel gives the fault endpoint of a guest's vCPU `n`: `VCPU_BADGE + n` (above
/// any service badge, which are service indices + 1).
pub const VCPU_BADGE: u64 = 0x1000;

/// A payload of a guest, as an offset from [`BOOT_INFO`] and a length (0, 0: none).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct Payload {
    /// Offset from [`BOOT_INFO`].
    pub offset: u64,
    /// Bytes.
    pub size: u64,
}

/// One guest, as a VMM or memory manager sees it. Capability pointers are slots of the service's
/// own CSpace (0: not given to this service).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct GuestInfo {
    /// The guest's index in the image (its `VmId` in the memory manager's protocol).
    pub index: u32,
    /// Number of vCPUs.
    pub vcpus: u32,
    /// Guest RAM's first IPA.
    pub ram_base: u64,
    /// Guest RAM's size in bytes.
    pub ram_size: u64,
    /// Memory manager: the `Vm` capability (all rights). VMM: 0.
    pub vm: u64,
    /// Memory manager: the badge the guest's VMM calls it with (the only caller allowed to act on
    /// this VM). VMM: 0.
    pub vmm_badge: u64,
    /// VMM: its endpoint to the memory manager. Memory manager: 0.
    pub memmgr: u64,
    /// VMM: each vCPU's capability (read/write its registers).
    pub vcpu: [u64; MAX_GUEST_VCPUS],
    /// VMM: the capability of the thread that runs each vCPU (resume, suspend).
    pub thread: [u64; MAX_GUEST_VCPUS],
    /// The guest kernel (an arm64 `Image`), mapped for the memory manager only.
    pub kernel: Payload,
    /// The guest's device tree, if the manifest gave one.
    pub dtb: Payload,
    /// The initial RAM disk, if any.
    pub initrd: Payload,
    /// The kernel's `text_offset` (from its Image header): it is loaded at `ram_base + text_offset`.
    pub text_offset: u64,
    /// The bytes the kernel occupies from its load address: the larger of its file size and its
    /// Image header's `image_size` (which covers its BSS). The initrd goes after it.
    pub image_size: u64,
    /// VMM: the guest's command line (UTF-8, no NUL; checked by
    /// `capvisor_image::check_cmdline`), after the boot-info page like the payloads. Memory
    /// manager: none.
    pub cmdline: Payload,
    /// Memory manager, for a guest whose RAM is mapped at IPA = PA (`ram_identity`): a RAM
    /// untyped covering exactly `[ram_base, ram_base + ram_size)` (2 MiB aligned), from which
    /// frames are retyped in address order. 0 otherwise, and for a VMM.
    pub ram_untyped: u64,
    /// The guest's name, NUL padded.
    pub name: [u8; 32],
    /// VMM: the IrqHandler capabilities of the interrupts of the devices passed through to the
    /// guest (the manifest's `irqs`), to forward to a vCPU (`IrqForwardToVcpu`).
    pub irq_handler: [u64; MAX_GUEST_IRQS],
    /// VMM: their INTIDs (SPIs; the guest sees the same numbers).
    pub irq_intid: [u32; MAX_GUEST_IRQS],
    /// How many of `irq_handler`/`irq_intid` are valid.
    pub irq_count: u32,
    /// Reserved, zero.
    pub reserved_irq: u32,
}

impl GuestInfo {
    /// The forwardable interrupts: (handler slot, INTID).
    pub fn irqs(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        let count = (self.irq_count as usize).min(MAX_GUEST_IRQS);
        self.irq_handler[..count]
            .iter()
            .copied()
            .zip(self.irq_intid[..count].iter().copied())
    }
}

/// `DeviceInfo::flags`: the region may be mapped cacheable (a `cacheable` device or a
/// cacheable PFNMAP carve-out); its untyped makes cacheable device frames.
pub const DEVICE_CACHEABLE: u32 = 1 << 0;
/// `DeviceInfo::flags`: a carve-out of RAM, not a device-tree device.
pub const DEVICE_CARVEOUT: u32 = 1 << 1;
/// `DeviceInfo::flags`: the guest's passthrough is optional (refused on this platform: report it
/// and go on).
pub const DEVICE_OPTIONAL: u32 = 1 << 2;
/// `DeviceInfo::flags`: the manifest accepts that the guest's passthrough of this device can
/// DMA to all physical memory (`unprotected_dma`: there is no IOMMU); a device broker says so in
/// the boot log, and refuses a device that may master the bus without it.
pub const DEVICE_UNPROTECTED_DMA: u32 = 1 << 3;
/// The most devices listed.
pub const MAX_DEVICES: usize = 16;

/// A device region (or carve-out) this service holds, for a device broker.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct DeviceInfo {
    /// The manifest name, NUL padded.
    pub name: [u8; 32],
    /// The device untyped capability covering the region (retype it into device frames).
    pub untyped: u64,
    /// The region's physical base.
    pub base: u64,
    /// Its size in bytes (a page multiple).
    pub size: u64,
    /// `DEVICE_*` bits.
    pub flags: u32,
    /// The memory type the passthrough asks for: 0 Device-nGnRE, 1 Normal non-cacheable,
    /// 2 Normal write-back (the manifest's order, `capvisor_image::devices::MEMTYPE_*`; not the
    /// `Map` invocation's codes, which are 0 write-back, 1 non-cacheable, 2 Device-nGnRE).
    pub memtype: u32,
    /// The guest it is passed through to (its image index), or `u32::MAX`.
    pub guest: u32,
    /// Reserved, zero.
    pub reserved: u32,
    /// That guest's `Vm` capability (all rights), 0 if none.
    pub vm: u64,
}

/// A service the supervisor (`services/init`) starts and supervises.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct ServiceInfo {
    /// Its manifest name, NUL padded.
    pub name: [u8; 32],
    /// Its thread's capability in the supervisor's CSpace (Resume starts it).
    pub thread: u64,
    /// The badge its faults arrive with at the supervisor's endpoint.
    pub badge: u64,
}

/// The most services listed.
pub const MAX_SERVICES: usize = 16;

/// The page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct BootInfo {
    /// [`BootInfo::MAGIC`].
    pub magic: [u8; 8],
    /// [`BootInfo::VERSION`].
    pub version: u32,
    /// [`FLAG_FWB`], [`FLAG_DIC`].
    pub flags: u32,
    /// The service's own endpoint (where it receives: a VMM its vCPUs' faults, a memory manager
    /// its VMMs' calls), 0 if none.
    pub endpoint: u64,
    /// Number of valid entries in `guests`.
    pub guest_count: u64,
    /// The untyped memory the manifest granted this service (`caps = [{ untyped = … }]`): its
    /// slots, largest piece first.
    pub untyped: [u64; MAX_UNTYPED],
    /// Number of valid entries in `untyped`.
    pub untyped_count: u64,
    /// The platform's device tree (a copy, after the page), for a device broker's inventory;
    /// (0, 0) for other services.
    pub platform_dtb: Payload,
    /// Number of valid entries in `devices`.
    pub device_count: u64,
    /// The device regions and carve-outs this service holds (a device broker).
    pub devices: [DeviceInfo; MAX_DEVICES],
    /// Number of valid entries in `services`.
    pub service_count: u64,
    /// The supervisor's: the services it starts and supervises (image order).
    pub services: [ServiceInfo; MAX_SERVICES],
    /// The first empty slot of the service's CNode that nothing else will fill…
    pub free_first: u64,
    /// …and the end of that range (exclusive).
    pub free_end: u64,
    /// The guests this service runs or serves.
    pub guests: [GuestInfo; MAX_GUESTS],
    /// What `SMCCC_ARCH_FEATURES` truthfully answers on this platform for
    /// `SMCCC_ARCH_WORKAROUND_1`, `_2` and `_3` (SMCCC DEN0028 1.1, "Arm Architecture Calls";
    /// values as DEN0070A defines them: 0 implemented and needed, 1 not needed on this PE, -1
    /// not supported, -2 not required), decided by the kernel from the CPU and from what it does
    /// on every exit from a lower exception level: a VMM answers its guest's queries with these.
    pub smccc_workarounds: [i32; 3],
    /// Reserved, zero.
    pub reserved_smccc: u32,
}

impl BootInfo {
    /// `CVBOOTI\0`.
    pub const MAGIC: [u8; 8] = *b"CVBOOTI\0";
    /// The layout version.
    pub const VERSION: u32 = 7;

    /// The page in `bytes` (at least [`size_of::<BootInfo>()`] of them), if its magic and version
    /// are this layout's.
    #[must_use]
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let (info, _) = Self::read_from_prefix(bytes).ok()?;
        (info.magic == Self::MAGIC && info.version == Self::VERSION).then_some(info)
    }

    /// The valid guests (an out-of-range count reads as the most there can be).
    #[must_use]
    pub fn guests(&self) -> &[GuestInfo] {
        let count = usize::try_from(self.guest_count).unwrap_or(MAX_GUESTS);
        &self.guests[..count.min(MAX_GUESTS)]
    }

    /// The services a supervisor starts.
    #[must_use]
    pub fn services(&self) -> &[ServiceInfo] {
        let count = usize::try_from(self.service_count).unwrap_or(MAX_SERVICES);
        &self.services[..count.min(MAX_SERVICES)]
    }

    /// A service's name as text.
    #[must_use]
    pub fn service_name(service: &ServiceInfo) -> &str {
        text(&service.name)
    }

    /// The device regions this service holds.
    #[must_use]
    pub fn devices(&self) -> &[DeviceInfo] {
        let count = usize::try_from(self.device_count).unwrap_or(MAX_DEVICES);
        &self.devices[..count.min(MAX_DEVICES)]
    }

    /// The untyped pieces' slots.
    #[must_use]
    pub fn untyped(&self) -> &[u64] {
        let count = usize::try_from(self.untyped_count).unwrap_or(MAX_UNTYPED);
        &self.untyped[..count.min(MAX_UNTYPED)]
    }

    /// Whether the platform has FEAT_S2FWB.
    #[must_use]
    pub const fn fwb(&self) -> bool {
        self.flags & FLAG_FWB != 0
    }

    /// Whether CTR_EL0.DIC is 1.
    #[must_use]
    pub const fn dic(&self) -> bool {
        self.flags & FLAG_DIC != 0
    }

    /// The guest name as text.
    #[must_use]
    pub fn name(guest: &GuestInfo) -> &str {
        text(&guest.name)
    }

    /// A device's name as text.
    #[must_use]
    pub fn device_name(device: &DeviceInfo) -> &str {
        text(&device.name)
    }
}

/// A NUL-padded UTF-8 name as text ("?" if it is not UTF-8).
fn text(bytes: &[u8]) -> &str {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    core::str::from_utf8(&bytes[..end]).unwrap_or("?")
}

const _: () = assert!(size_of::<BootInfo>() <= 4096);

/// Where the kernel maps init's platform page, read-only, in init's address space (the root's
/// only boot information besides its capabilities): a [`PlatformPage`], then, from the next page,
/// a copy of the platform device tree (`dtb_size` bytes).
pub const PLATFORM_PAGE: u64 = 0x0f_fd00_0000;

/// The platform facts init writes into the boot-info pages it completes
/// (`capvisor_image::plan::Op::InfoPlatform`), as the kernel decided them. Little-endian,
/// fixed layout; init checks [`PlatformPage::MAGIC`] and [`PlatformPage::VERSION`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct PlatformPage {
    /// [`PlatformPage::MAGIC`].
    pub magic: [u8; 8],
    /// [`PlatformPage::VERSION`].
    pub version: u32,
    /// [`FLAG_FWB`], [`FLAG_DIC`] (as [`BootInfo::flags`]).
    pub flags: u32,
    /// As [`BootInfo::smccc_workarounds`].
    pub smccc_workarounds: [i32; 3],
    /// Reserved, zero.
    pub reserved: u32,
    /// The size of the device tree copied from the next page.
    pub dtb_size: u64,
}

impl PlatformPage {
    /// `CVPLATF\0`.
    pub const MAGIC: [u8; 8] = *b"CVPLATF\0";
    /// The layout version.
    pub const VERSION: u32 = 1;

    /// The page in `bytes`, if its magic and version are this layout's.
    #[must_use]
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let (page, _) = Self::read_from_prefix(bytes).ok()?;
        (page.magic == Self::MAGIC && page.version == Self::VERSION).then_some(page)
    }
}

const _: () = assert!(size_of::<PlatformPage>() == 40);

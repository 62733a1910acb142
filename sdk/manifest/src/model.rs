//! The validated manifest: plain types the image builder consumes.
//!
//! A [`Manifest`] exists only after every check has passed: names are unique and well formed,
//! every reference resolves, sizes are non-zero page multiples, files exist. Paths are already
//! joined to the manifest's directory.

use std::path::PathBuf;

use capvisor_ipc::memory::MemoryType;

use crate::feature::{FeatureSet, Requirements};

/// The page size all manifest sizes and addresses are multiples of: the 4K granule.
pub const PAGE_SIZE: u64 = 4096;

/// The physical address sizes ID_AA64MMFR0_EL1.PARange can report, in bits.
pub const PA_BITS: &[u8] = &[32, 36, 40, 42, 44, 48, 52];

/// The physical address size assumed when `[platform].min_pa_bits` is not set: the largest one
/// reachable without FEAT_LPA.
pub const DEFAULT_PA_BITS: u8 = 48;

/// The kinds of capability grant, as written in a service's `caps`.
pub const GRANT_KINDS: &[&str] = &["endpoint", "device", "irq", "untyped", "carveout"];

/// The smallest and largest shared peripheral interrupt (SPI) number of a GICv3 (GIC
/// architecture specification IHI 0069, 2.2 "INTIDs"): the only interrupts a manifest may grant.
pub const SPI_RANGE: (u32, u32) = (32, 1019);

/// The most vCPUs a guest may have.
pub const MAX_VCPUS: u8 = capvisor_ipc::bootinfo::MAX_GUEST_VCPUS as u8;

/// A closed set of strings a manifest field may hold.
pub(crate) trait Choice: Copy + Default + 'static {
    /// Every choice with its manifest spelling.
    const CHOICES: &'static [(&'static str, Self)];
}

/// The choice spelt `name`.
pub(crate) fn choice_named<T: Choice>(name: &str) -> Option<T> {
    T::CHOICES
        .iter()
        .find(|(spelling, _)| *spelling == name)
        .map(|(_, choice)| *choice)
}

/// A validated image manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// The image name (`name`), also the image file's stem.
    pub name: String,
    /// A one-line description (`description`).
    pub description: Option<String>,
    /// The directory the manifest's relative paths are resolved against.
    pub dir: PathBuf,
    /// Kernel build options (`[kernel]`).
    pub kernel: Kernel,
    /// What the system needs of the platform (`[platform]`).
    pub platform: Platform,
    /// Platform devices the system uses (`[[device]]`), in manifest order.
    pub devices: Vec<Device>,
    /// Physical memory taken out of the kernel's RAM map (`[[carveout]]`), in manifest order.
    pub carveouts: Vec<Carveout>,
    /// EL0 services (`[[service]]`), in manifest order.
    pub services: Vec<Service>,
    /// Guests (`[[guest]]`), in manifest order.
    pub guests: Vec<Guest>,
}

impl Manifest {
    /// What the kernel must check at boot before starting the system.
    pub fn requirements(&self) -> Requirements {
        Requirements {
            features: self.platform.requires,
            min_pa_bits: self.platform.min_pa_bits.unwrap_or(0),
            min_cpus: self.platform.min_cpus,
        }
    }

    /// The service named `name`.
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|service| service.name == name)
    }

    /// The guest named `name`.
    pub fn guest(&self, name: &str) -> Option<&Guest> {
        self.guests.iter().find(|guest| guest.name == name)
    }

    /// The device named `name`.
    pub fn device(&self, name: &str) -> Option<&Device> {
        self.devices.iter().find(|device| device.name == name)
    }

    /// The carve-out named `name`.
    pub fn carveout(&self, name: &str) -> Option<&Carveout> {
        self.carveouts.iter().find(|carveout| carveout.name == name)
    }
}

/// Kernel build options.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Kernel {
    /// A built-in self-test the kernel runs instead of starting the system.
    pub selftest: Selftest,
    /// The most verbose level the kernel logs at.
    pub log: LogLevel,
}

/// A built-in kernel self-test: a deliberate fault that shows the kernel's fault reporting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Selftest {
    /// No self-test: start the system.
    #[default]
    None,
    /// Touch an unmapped address, to show the decoded register dump of a data abort.
    DataAbort,
    /// Execute an undefined instruction.
    Undefined,
    /// A deliberate Rust panic, to show the symbolized location.
    Panic,
}

impl Choice for Selftest {
    const CHOICES: &'static [(&'static str, Self)] = &[
        ("none", Selftest::None),
        ("data-abort", Selftest::DataAbort),
        ("undefined", Selftest::Undefined),
        ("panic", Selftest::Panic),
    ];
}

impl Selftest {
    /// The manifest spelling.
    pub const fn name(self) -> &'static str {
        match self {
            Selftest::None => "none",
            Selftest::DataAbort => "data-abort",
            Selftest::Undefined => "undefined",
            Selftest::Panic => "panic",
        }
    }
}

/// A log level, from the least to the most verbose.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Errors and warnings.
    Warn,
    /// The default.
    #[default]
    Info,
    /// Diagnostic detail.
    Debug,
    /// Everything.
    Trace,
}

impl Choice for LogLevel {
    const CHOICES: &'static [(&'static str, Self)] = &[
        ("error", LogLevel::Error),
        ("warn", LogLevel::Warn),
        ("info", LogLevel::Info),
        ("debug", LogLevel::Debug),
        ("trace", LogLevel::Trace),
    ];
}

/// The board the image is built for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Board {
    /// QEMU's `virt` machine with `virtualization=on` and GICv3 (also what U-Boot boots there).
    #[default]
    QemuVirt,
}

impl Choice for Board {
    const CHOICES: &'static [(&'static str, Self)] = &[("qemu-virt", Board::QemuVirt)];
}

/// What the system needs of the platform; the kernel refuses to start a system whose
/// requirements the platform does not meet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Platform {
    /// The board.
    pub board: Board,
    /// CPU features that must be present.
    pub requires: FeatureSet,
    /// The smallest physical address size accepted, in bits (one of [`PA_BITS`]).
    pub min_pa_bits: Option<u8>,
    /// The smallest number of CPUs accepted (1 when not set).
    pub min_cpus: u8,
}

/// A platform device the system uses, found in the device tree at boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    /// The name capabilities and passthroughs use.
    pub name: String,
    /// How to find the device in the device tree.
    pub locator: DeviceLocator,
    /// Whether the device's memory may be mapped cacheable (cacheable PFNMAP, e.g. coherent
    /// accelerator memory).
    pub cacheable: bool,
    /// The manifest line of its name (for init's messages about it).
    pub line: u32,
}

/// How a device is found in the device tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceLocator {
    /// By node path, e.g. `/pl011@9040000`.
    Path(String),
    /// By the first node with this `compatible` string, e.g. `arm,pl011`.
    Compatible(String),
}

/// Physical memory carved out of the kernel's RAM map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Carveout {
    /// The name capabilities and guests use.
    pub name: String,
    /// The physical base address, page aligned.
    pub base: u64,
    /// The size in bytes, a non-zero page multiple.
    pub size: u64,
    /// Whether the region is treated as device memory its owner maps cacheable (cacheable
    /// PFNMAP), rather than as ordinary RAM withheld from the kernel.
    pub cacheable_pfnmap: bool,
    /// The manifest line of its name.
    pub line: u32,
}

/// An EL0 service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    /// The service's name; also the name of its endpoint.
    pub name: String,
    /// Where its code is.
    pub crate_ref: CrateRef,
    /// Scheduling priority, 0 (lowest) to 255.
    pub priority: u8,
    /// RAM for its code and data, in bytes (page multiple).
    pub memory: u64,
    /// Its stack, in bytes (page multiple).
    pub stack: u64,
    /// Whether it starts at boot (otherwise it waits to be started by another service).
    pub start: bool,
    /// The capabilities it holds at start.
    pub caps: Vec<Capability>,
    /// The manifest line of its name.
    pub line: u32,
}

/// The default service stack size: 64 KiB, what the VMM needs (its guest's device tree is built
/// on the stack).
pub const DEFAULT_STACK: u64 = 64 * 1024;

/// Where a service's code is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CrateRef {
    /// A crate directory, joined to the manifest's directory (it exists).
    Path(PathBuf),
    /// A crate of the workspace, by package name.
    Name(String),
}

/// A capability a service holds at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Capability {
    /// Call the endpoint of the named service.
    Endpoint(String),
    /// Map the named device's registers and receive its interrupts.
    Device(String),
    /// Receive this shared peripheral interrupt.
    Irq(u32),
    /// Untyped RAM of this many bytes, to retype (page multiple).
    Untyped(u64),
    /// Map the named carve-out.
    Carveout(String),
}

/// A guest virtual machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Guest {
    /// The guest's name.
    pub name: String,
    /// The guest kernel: an arm64 `Image` file or a guest crate the SDK builds into one.
    pub kernel: GuestKernel,
    /// The initial RAM disk.
    pub initrd: Option<PathBuf>,
    /// A device tree to give the guest instead of the generated one.
    pub dtb: Option<PathBuf>,
    /// The kernel command line.
    pub cmdline: String,
    /// Guest RAM, in bytes (page multiple).
    pub memory: u64,
    /// Number of vCPUs, 1 to [`MAX_VCPUS`].
    pub vcpus: u8,
    /// Whether guest RAM is mapped at IPA = PA (1:1), e.g. for devices that DMA without an IOMMU.
    pub ram_identity: bool,
    /// Devices passed through.
    pub devices: Vec<Passthrough>,
    /// Carve-outs mapped into the guest.
    pub carveouts: Vec<CarveoutPassthrough>,
    /// The service that is this guest's VMM.
    pub vmm: String,
    /// The memory manager service the VMM gets guest RAM from.
    pub memmgr: String,
    /// The manifest line of its name.
    pub line: u32,
}

/// The memory manager a guest uses when its `memmgr` is not given.
pub const DEFAULT_MEMMGR: &str = "memmgr";

/// Where a guest's kernel comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GuestKernel {
    /// An arm64 `Image` file, joined to the manifest's directory (`kernel = "…"`).
    Image(PathBuf),
    /// A bare-metal guest crate the SDK builds and flattens into an `Image` (`crate = "…"`, as
    /// for services: a package name or a crate directory).
    Crate(CrateRef),
}

/// A device passed through to a guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Passthrough {
    /// The device's name.
    pub device: String,
    /// The stage-2 memory type of its registers.
    pub memtype: MemoryType,
    /// Whether its interrupts are forwarded to the guest as virtual interrupts.
    pub irqs: bool,
    /// Whether the system boots without it where the platform refuses it (a cacheable
    /// passthrough without FEAT_S2FWB and CTR_EL0.DIC): the device broker reports the refusal.
    pub optional: bool,
    /// The manifest accepts that the device, which may master the bus, can DMA to all physical
    /// memory once the guest has it (`unprotected_dma = true`: there is no IOMMU).
    pub unprotected_dma: bool,
}

/// A carve-out mapped into a guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CarveoutPassthrough {
    /// The carve-out's name.
    pub carveout: String,
    /// As [`Passthrough::optional`].
    pub optional: bool,
}

/// The manifest's spelling of each memory type (`memtype` of a passthrough, DESIGN.md rules 3–5;
/// Device-nGnRE when absent). `normal-wb` only for devices declared cacheable, and only with
/// FEAT_S2FWB and CTR_EL0.DIC.
impl Choice for MemoryType {
    const CHOICES: &'static [(&'static str, Self)] = &[
        ("device-ngnre", MemoryType::DeviceNgnre),
        ("normal-nc", MemoryType::NormalNonCacheable),
        ("normal-wb", MemoryType::NormalWriteBack),
    ];
}

//! The boot plan: everything init (`services/init`) does to build the system from the image,
//! computed by `capvisor build` from the manifest and carried in the payload entry of kind
//! [`EntryKind::BootPlan`](crate::EntryKind::BootPlan) (seL4 capDL's idea, in a fixed layout).
//! The kernel never reads it: it creates only init, which carries the plan out with ordinary
//! invocations, step by step, in order.
//!
//! ```text
//! PlanHeader                      64 bytes
//! PlanName[name_count]            40 bytes each: the manifest items steps are done for
//! PlanItem[item_count]            64 bytes each: the steps
//! strings[strings_size]           device locators (UTF-8)
//! ```
//!
//! Objects live in init's CNode at *plan slots*: plan slot `n` is init's slot
//! `first_free + n` (`first_free` is the first slot the kernel left empty, which init learns at
//! boot). A step that makes an object puts it in a free plan slot; a `Move` empties it again. A
//! few references name init's own capabilities ([`INIT_CNODE`], [`INIT_SPACE`], [`IRQ_CONTROL`]).
//! Capabilities copied, minted or moved into a service's CNode name that CNode by the plan slot
//! init holds it in, and the service's slot by its number.
//!
//! Every plan is untrusted input to init: [`Plan::decode`] checks every field and every
//! reference (each names a live object of the kind the step needs, made by an earlier step) and
//! refuses anything else with a typed [`PlanError`], never a panic; init then only sees
//! [`Step`]s. The kernel checks every invocation init makes as it would any service's.

use core::fmt;
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

/// The magic at the start of the plan.
pub const PLAN_MAGIC: [u8; 8] = *b"CVPLAN\0\0";
/// The layout version of the plan.
pub const PLAN_VERSION: u32 = 1;
/// The name of the plan's payload entry.
pub const PLAN_ENTRY: &str = "plan";
/// The most steps a plan has.
pub const MAX_ITEMS: usize = 32768;
/// The most names a plan has.
pub const MAX_NAMES: usize = 128;
/// The most plan slots a plan may name (init also refuses a plan that does not fit its CNode,
/// `capvisor_ipc::cap::root::CNODE_SLOTS`, after the kernel's capabilities).
pub const MAX_SLOTS: u32 = 3072;
/// The most bytes of strings.
pub const MAX_STRINGS: usize = 16384;
/// The largest CNode slot index a step may name in a service's CNode.
pub const MAX_CNODE_SLOT: u64 = 4096;
/// The most pages one `Pages` step makes.
pub const MAX_PAGES: u64 = 4096;
/// The size of the image's read-only frames ([`Op::ImageFrame`]): the payload is handed to init
/// in 2 MiB blocks.
pub const IMAGE_BLOCK: u64 = 2 << 20;
/// The most guests one boot-info page lists (`capvisor_ipc::bootinfo::MAX_GUESTS`).
pub const MAX_INFO_GUESTS: u64 = 4;
/// The most devices one boot-info page lists (`capvisor_ipc::bootinfo::MAX_DEVICES`).
pub const MAX_INFO_DEVICES: u64 = 16;
/// The most interrupts a guest's VMM is given (`capvisor_ipc::bootinfo::MAX_GUEST_IRQS`).
pub const MAX_INFO_IRQS: u64 = 8;

/// `PlanHeader::flags`: the manifest's first service is init itself (`svc-init`): it
/// supervises, receiving the other services' faults on [`PlanHeader::supervisor`].
pub const PLAN_SUPERVISED: u32 = 1 << 0;
/// `Pages` flag: the source bytes are a guest's command line, checked before use
/// (`crate::check_cmdline`).
pub const PAGES_CMDLINE: u32 = 1 << 0;
/// `Device` flag: the locator is a `compatible` string (else a node path).
pub const DEVICE_COMPATIBLE: u64 = 1 << 0;

/// A reference to init's own CNode.
pub const INIT_CNODE: u32 = 0xffff_ff01;
/// A reference to init's own AddressSpace.
pub const INIT_SPACE: u32 = 0xffff_ff02;
/// A reference to init's IrqControl capability.
pub const IRQ_CONTROL: u32 = 0xffff_ff04;
/// No reference.
pub const NONE: u32 = u32::MAX;

/// The plan's head. Little-endian, 64 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct PlanHeader {
    /// [`PLAN_MAGIC`].
    pub magic: [u8; 8],
    /// [`PLAN_VERSION`].
    pub version: u32,
    /// [`PLAN_SUPERVISED`].
    pub flags: u32,
    /// How many [`PlanName`]s follow.
    pub name_count: u32,
    /// How many [`PlanItem`]s follow them.
    pub item_count: u32,
    /// How many plan slots the steps use (at most [`MAX_SLOTS`]).
    pub slot_count: u32,
    /// How many bytes of strings follow the items.
    pub strings_size: u32,
    /// How many of the names are the manifest's services (the first ones, in manifest order:
    /// service `i`'s badge is `i + 1`).
    pub service_count: u32,
    /// Supervised: the plan slot of init's endpoint, where the services' faults arrive;
    /// [`NONE`] otherwise.
    pub supervisor: u32,
    /// Reserved, zero.
    pub reserved: [u64; 3],
}

/// What a name names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum NameKind {
    /// A `[[service]]`.
    Service = 1,
    /// A `[[guest]]`.
    Guest = 2,
    /// A `[[device]]`.
    Device = 3,
    /// A `[[carveout]]`.
    Carveout = 4,
    /// The init the SDK added to an image whose manifest has none.
    Init = 5,
}

impl NameKind {
    fn from_u32(value: u32) -> Option<Self> {
        Some(match value {
            1 => Self::Service,
            2 => Self::Guest,
            3 => Self::Device,
            4 => Self::Carveout,
            5 => Self::Init,
            _ => return None,
        })
    }

    const fn word(self) -> &'static str {
        match self {
            Self::Service => "service",
            Self::Guest => "guest",
            Self::Device => "device",
            Self::Carveout => "carve-out",
            Self::Init => "init",
        }
    }
}

/// A manifest item steps are done for, named in init's messages. Little-endian, 40 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct PlanName {
    /// A [`NameKind`].
    pub kind: u32,
    /// Its line in the manifest (0: none).
    pub line: u32,
    /// Its name, NUL padded.
    pub name: [u8; 32],
}

impl PlanName {
    /// A name (for the SDK and tests); longer names are cut at 32 bytes.
    #[must_use]
    pub fn new(kind: NameKind, name: &str, line: u32) -> Self {
        let mut out = Self::new_zeroed();
        out.kind = kind as u32;
        out.line = line;
        let n = name.len().min(out.name.len());
        out.name[..n].copy_from_slice(&name.as_bytes()[..n]);
        out
    }

    /// Its text.
    #[must_use]
    pub fn text(&self) -> &str {
        crate::nul_padded(&self.name).unwrap_or("?")
    }
}

impl fmt::Display for PlanName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match NameKind::from_u32(self.kind) {
            Some(NameKind::Init) => f.write_str("init (added by the SDK)"),
            Some(kind) if self.line != 0 => write!(
                f,
                "{} '{}' (manifest line {})",
                kind.word(),
                self.text(),
                self.line
            ),
            Some(kind) => write!(f, "{} '{}'", kind.word(), self.text()),
            None => f.write_str("?"),
        }
    }
}

/// One step, as stored. Little-endian, 64 bytes; [`Step`] is its checked form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct PlanItem {
    /// An [`OpCode`].
    pub op: u16,
    /// A [`Purpose`].
    pub purpose: u16,
    /// The index of the name it is done for.
    pub owner: u32,
    /// The plan slot it makes, or the object it acts on.
    pub slot: u32,
    /// Its second reference (a CNode, a space, a vCPU, an untyped), or [`NONE`].
    pub target: u32,
    /// Its third reference, or [`NONE`].
    pub third: u32,
    /// Reserved, zero.
    pub reserved: u32,
    /// The step's numbers (see [`Op`]).
    pub args: [u64; 5],
}

const _: () = assert!(size_of::<PlanHeader>() == 64);
const _: () = assert!(size_of::<PlanName>() == 40);
const _: () = assert!(size_of::<PlanItem>() == 64);

macro_rules! codes {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $code:literal => $text:literal,)* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(u16)]
        pub enum $name { $($(#[$vmeta])* $variant = $code,)* }

        impl $name {
            /// The value with this code, if it is one.
            #[must_use]
            pub const fn from_u16(code: u16) -> Option<Self> {
                match code { $($code => Some(Self::$variant),)* _ => None }
            }

            /// How init's messages and `capvisor inspect` say it.
            #[must_use]
            pub const fn text(self) -> &'static str {
                match self { $(Self::$variant => $text,)* }
            }
        }
    };
}

codes! {
    /// A step's operation (the [`Op`] variants).
    pub enum OpCode {
        /// [`Op::Retype`].
        Retype = 1 => "retype",
        /// [`Op::Pages`].
        Pages = 2 => "pages",
        /// [`Op::ImageFrame`].
        ImageFrame = 3 => "image-frame",
        /// [`Op::Device`].
        Device = 4 => "device",
        /// [`Op::Carveout`].
        Carveout = 5 => "carve-out",
        /// [`Op::IdentityRam`].
        IdentityRam = 6 => "identity-ram",
        /// [`Op::Copy`].
        Copy = 7 => "copy",
        /// [`Op::Mint`].
        Mint = 8 => "mint",
        /// [`Op::Move`].
        Move = 9 => "move",
        /// [`Op::Map`].
        Map = 10 => "map",
        /// [`Op::Configure`].
        Configure = 11 => "configure",
        /// [`Op::BindVcpu`].
        BindVcpu = 12 => "bind-vcpu",
        /// [`Op::Name`].
        Name = 13 => "name",
        /// [`Op::Resume`].
        Resume = 14 => "resume",
        /// [`Op::Irqs`].
        Irqs = 15 => "irqs",
        /// [`Op::InfoPlatform`].
        InfoPlatform = 16 => "info-platform",
        /// [`Op::InfoDevice`].
        InfoDevice = 17 => "info-device",
        /// [`Op::InfoGuestRam`].
        InfoGuestRam = 18 => "info-guest-ram",
        /// [`Op::InfoDtb`].
        InfoDtb = 19 => "info-dtb",
        /// [`Op::GiveRam`].
        GiveRam = 20 => "give-ram",
    }
}

codes! {
    /// What a step is for, so init can say what it could not make ("out of memory for its
    /// stack").
    pub enum Purpose {
        /// A CNode.
        Cnode = 1 => "its CNode",
        /// An address space.
        Space = 2 => "its address space",
        /// A thread.
        Thread = 3 => "its thread",
        /// Code and data pages.
        Code = 4 => "its code and data",
        /// Stack pages.
        Stack = 5 => "its stack",
        /// The IPC buffer page.
        IpcBuffer = 6 => "its IPC buffer",
        /// Boot-info pages.
        BootInfo = 7 => "its boot-info page",
        /// An endpoint.
        Endpoint = 8 => "its endpoint",
        /// A fault endpoint.
        FaultEndpoint = 9 => "its fault endpoint",
        /// Untyped memory the manifest grants.
        Untyped = 10 => "its untyped memory",
        /// A VM.
        Vm = 11 => "its VM",
        /// A vCPU.
        Vcpu = 12 => "its vCPU",
        /// A vCPU's thread.
        VcpuThread = 13 => "its vCPU's thread",
        /// A device region.
        Device = 14 => "its device region",
        /// Interrupt handlers.
        Irq = 15 => "its interrupts",
        /// RAM at IPA = PA.
        IdentityRam = 16 => "its RAM at IPA = PA",
        /// A carve-out.
        Carveout = 17 => "its carve-out",
        /// A guest payload (kernel, initrd, device tree).
        GuestPayload = 18 => "its guest's payload",
        /// A guest's command line.
        Cmdline = 19 => "its guest's command line",
        /// A capability the manifest grants.
        Grant = 20 => "a capability it is granted",
        /// Starting it.
        Start = 21 => "starting it",
        /// The root's RAM and interrupt control.
        Root = 22 => "the root's memory",
    }
}

/// An object kind the plan retypes (the codes of `capvisor_ipc::cap::ObjectKind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum RetypeKind {
    /// Untyped RAM.
    Untyped = 1,
    /// An endpoint.
    Endpoint = 2,
    /// A notification.
    Notification = 3,
    /// A CNode (`size_bits` is log2 of its slots).
    CNode = 5,
    /// A 4 KiB frame.
    Frame = 6,
    /// A VM.
    Vm = 8,
    /// A vCPU.
    Vcpu = 9,
    /// A thread.
    Thread = 10,
    /// A service address space.
    AddressSpace = 13,
}

impl RetypeKind {
    fn from_u64(code: u64) -> Option<Self> {
        Some(match code {
            1 => Self::Untyped,
            2 => Self::Endpoint,
            3 => Self::Notification,
            5 => Self::CNode,
            6 => Self::Frame,
            8 => Self::Vm,
            9 => Self::Vcpu,
            10 => Self::Thread,
            13 => Self::AddressSpace,
            _ => return None,
        })
    }

    /// Whether `bits` is a size the kind takes (as the kernel's `ObjectType::charge`).
    fn takes(self, bits: u64) -> bool {
        match self {
            Self::Endpoint | Self::Notification | Self::Vcpu | Self::Thread => bits == 0,
            Self::CNode => (2..=12).contains(&bits),
            Self::Frame => bits == 12,
            Self::Vm | Self::AddressSpace => bits == 0 || (13..=24).contains(&bits),
            Self::Untyped => (12..=47).contains(&bits),
        }
    }

    fn object(self) -> Kind {
        match self {
            Self::Untyped => Kind::Untyped,
            Self::Endpoint => Kind::Endpoint,
            Self::Notification => Kind::Notification,
            Self::CNode => Kind::Cnode,
            Self::Frame => Kind::Frame,
            Self::Vm => Kind::Vm,
            Self::Vcpu => Kind::Vcpu,
            Self::Thread => Kind::Thread,
            Self::AddressSpace => Kind::Space,
        }
    }
}

/// What a plan slot holds, as the decoder tracks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Kind {
    Empty = 0,
    Untyped,
    DeviceUntyped,
    Endpoint,
    Notification,
    Cnode,
    Frame,
    Vm,
    Vcpu,
    Thread,
    Space,
    Other,
}

/// A plan step, checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op<'a> {
    /// Retype one object of `kind` (`bits` as the kind takes it) from init's RAM into `slot`.
    Retype {
        /// Where.
        slot: u32,
        /// What.
        kind: RetypeKind,
        /// Its size, as the kind takes it.
        bits: u64,
    },
    /// Make `count` zeroed 4 KiB frames in the slots from `slot`, fill them from `data_size`
    /// bytes of the payload at `source`, map them from `ipa` into `space` with `access` (unless
    /// [`NONE`]), and move them to `cnode`'s slots from `dest` (unless [`NONE`]).
    Pages {
        /// The first slot.
        slot: u32,
        /// How many.
        count: u64,
        /// The payload bytes they hold (a payload offset and a length).
        source: u64,
        /// How many bytes (at most `count` pages; the rest is zero).
        data_size: u64,
        /// The space they are mapped into, or [`NONE`].
        space: u32,
        /// The first page's address there.
        ipa: u64,
        /// R/W/X bits.
        access: u64,
        /// The CNode they move to, or [`NONE`].
        cnode: u32,
        /// The first slot there.
        dest: u64,
        /// [`PAGES_CMDLINE`].
        flags: u32,
    },
    /// A copy of the kernel's read-only frame of the payload's 2 MiB block `block`.
    ImageFrame {
        /// Where.
        slot: u32,
        /// Which block.
        block: u64,
    },
    /// The device untyped covering the device-tree node `locator` names (its first `reg`
    /// range, page aligned), with its memory attributes set.
    Device {
        /// Where.
        slot: u32,
        /// A node path, or a `compatible` string.
        locator: &'a str,
        /// Whether `locator` is a `compatible` string.
        compatible: bool,
        /// The memory types its frames may be mapped with: 1 Device-nGnRE only, 2 Device-nGnRE
        /// or Normal non-cacheable, 3 Normal write-back only (a cacheable PFNMAP, DESIGN.md
        /// rules 3–5).
        attributes: u64,
    },
    /// A RAM untyped covering exactly `[base, base + size)` (a power of two aligned to its size),
    /// made device memory mapped cacheable when `cacheable` (a cacheable PFNMAP).
    Carveout {
        /// Where.
        slot: u32,
        /// Its base.
        base: u64,
        /// Its size.
        size: u64,
        /// A cacheable PFNMAP.
        cacheable: bool,
    },
    /// A RAM untyped of `1 << bits` bytes (aligned to its size) for a guest's RAM at IPA = PA.
    IdentityRam {
        /// Where.
        slot: u32,
        /// log2 of its size.
        bits: u64,
    },
    /// Copy `slot` with `rights` into `cnode`'s slot `dest` (a plan slot for [`INIT_CNODE`]).
    Copy {
        /// The source.
        slot: u32,
        /// The destination CNode.
        cnode: u32,
        /// The destination slot.
        dest: u64,
        /// Rights bits.
        rights: u64,
    },
    /// As [`Op::Copy`], with a badge.
    Mint {
        /// The source.
        slot: u32,
        /// The destination CNode.
        cnode: u32,
        /// The destination slot.
        dest: u64,
        /// Rights bits.
        rights: u64,
        /// The badge.
        badge: u64,
    },
    /// Move `slot` into `cnode`'s slot `dest` (the plan slot is empty afterwards).
    Move {
        /// The source.
        slot: u32,
        /// The destination CNode.
        cnode: u32,
        /// The destination slot.
        dest: u64,
    },
    /// Map the frame `slot` into `space` at `ipa`.
    Map {
        /// The frame.
        slot: u32,
        /// The space.
        space: u32,
        /// The address.
        ipa: u64,
        /// R/W/X bits.
        access: u64,
        /// `capvisor_ipc::abi::MapMemType` code.
        memtype: u64,
    },
    /// `ThreadConfigure` of thread `slot`.
    Configure {
        /// The thread.
        slot: u32,
        /// Its CSpace.
        cspace: u32,
        /// Its address space.
        space: u32,
        /// Entry point, stack pointer, IPC buffer.
        registers: [u64; 3],
        /// Priority and maximum priority (`priority | max << 8`).
        priorities: u64,
        /// Its fault endpoint (a plan slot), or [`NONE`].
        fault: u32,
    },
    /// Bind vCPU `vcpu` to thread `slot`.
    BindVcpu {
        /// The thread.
        slot: u32,
        /// The vCPU.
        vcpu: u32,
    },
    /// Name thread `slot` after the image's service entry `service` (the console prefix).
    Name {
        /// The thread.
        slot: u32,
        /// The index among the image's service entries.
        service: u64,
    },
    /// Start thread `slot`.
    Resume {
        /// The thread.
        slot: u32,
    },
    /// An IrqHandler for each SPI of the device `slot` covers (from the device tree), moved to
    /// `cnode`'s slots from `dest`, and listed in guest `guest` of the boot-info page `info`.
    Irqs {
        /// The device untyped.
        slot: u32,
        /// The VMM's CNode.
        cnode: u32,
        /// The boot-info frame.
        info: u32,
        /// The first slot in the VMM's CNode.
        dest: u64,
        /// The guest entry of the boot-info page.
        guest: u64,
    },
    /// Write the platform's features into the boot-info frame `slot`.
    InfoPlatform {
        /// The boot-info frame.
        slot: u32,
    },
    /// Write where untyped `region` is into device entry `index` of the boot-info frame `slot`.
    InfoDevice {
        /// The boot-info frame.
        slot: u32,
        /// The device or carve-out untyped.
        region: u32,
        /// The device entry.
        index: u64,
    },
    /// Write where untyped `region` is into guest entry `index`'s RAM base.
    InfoGuestRam {
        /// The boot-info frame.
        slot: u32,
        /// The RAM untyped.
        region: u32,
        /// The guest entry.
        index: u64,
    },
    /// Copy the platform device tree into new frames mapped read-only at `ipa` in `space`, and
    /// write where into the boot-info frame `slot`.
    InfoDtb {
        /// The boot-info frame.
        slot: u32,
        /// The space.
        space: u32,
        /// The address.
        ipa: u64,
    },
    /// Copy every RAM untyped init holds into `cnode`'s slots `first..end`.
    GiveRam {
        /// The CNode.
        cnode: u32,
        /// The first slot.
        first: u64,
        /// The end of the range.
        end: u64,
    },
}

/// A checked step with the name it is done for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step<'a> {
    /// What is done.
    pub op: Op<'a>,
    /// Why.
    pub purpose: Purpose,
    /// The index of the name it is done for.
    pub owner: u32,
}

/// Why a plan was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanError {
    /// Shorter than its header, names, items and strings say.
    Truncated,
    /// The magic is missing.
    Magic,
    /// The version is not [`PLAN_VERSION`].
    Version(u32),
    /// A count beyond its limit, unknown flags or reserved fields set, or a supervisor slot that
    /// does not hold an endpoint.
    Header,
    /// Name `index` has an unknown kind or is not UTF-8.
    Name(usize),
    /// Step `index` is malformed: an unknown operation or purpose, a reference to a slot that is
    /// not live or of the wrong kind, a slot made twice, or a number out of its range.
    Item(usize),
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Truncated => f.write_str("the plan is truncated"),
            Self::Magic => f.write_str("the plan's magic is missing"),
            Self::Version(v) => write!(f, "plan version {v}, expected {PLAN_VERSION}"),
            Self::Header => f.write_str("the plan's header is malformed"),
            Self::Name(i) => write!(f, "plan name {i} is malformed"),
            Self::Item(i) => write!(f, "plan step {i} is malformed"),
        }
    }
}

/// A checked plan.
#[derive(Clone, Copy, Debug)]
pub struct Plan<'a> {
    /// Its header.
    pub header: PlanHeader,
    names: &'a [PlanName],
    items: &'a [PlanItem],
    strings: &'a [u8],
}

mod check;
pub use check::encode_op;

impl<'a> Plan<'a> {
    /// Reads and checks a plan for a payload of `payload_size` bytes (every payload range a step
    /// names lies inside it).
    ///
    /// # Errors
    /// A [`PlanError`] saying the first thing found wrong.
    pub fn decode(bytes: &'a [u8], payload_size: u64) -> Result<Self, PlanError> {
        let (header, rest) =
            PlanHeader::read_from_prefix(bytes).map_err(|_| PlanError::Truncated)?;
        if header.magic != PLAN_MAGIC {
            return Err(PlanError::Magic);
        }
        if header.version != PLAN_VERSION {
            return Err(PlanError::Version(header.version));
        }
        let within = header.name_count as usize <= MAX_NAMES
            && header.item_count as usize <= MAX_ITEMS
            && header.slot_count <= MAX_SLOTS
            && header.strings_size as usize <= MAX_STRINGS
            && header.service_count <= header.name_count
            && header.flags & !PLAN_SUPERVISED == 0
            && header.reserved == [0; 3];
        if !within {
            return Err(PlanError::Header);
        }
        let (names, rest) =
            <[PlanName]>::ref_from_prefix_with_elems(rest, header.name_count as usize)
                .map_err(|_| PlanError::Truncated)?;
        let (items, rest) =
            <[PlanItem]>::ref_from_prefix_with_elems(rest, header.item_count as usize)
                .map_err(|_| PlanError::Truncated)?;
        let strings = rest
            .get(..header.strings_size as usize)
            .ok_or(PlanError::Truncated)?;
        for (index, name) in names.iter().enumerate() {
            if NameKind::from_u32(name.kind).is_none() || crate::nul_padded(&name.name).is_none() {
                return Err(PlanError::Name(index));
            }
        }
        let plan = Self {
            header,
            names,
            items,
            strings,
        };
        check::references(&plan, payload_size)?;
        Ok(plan)
    }

    /// The names.
    #[must_use]
    pub fn names(&self) -> &'a [PlanName] {
        self.names
    }

    /// The name steps for `owner` are done for (checked by [`decode`](Self::decode)).
    #[must_use]
    pub fn name(&self, owner: u32) -> Option<&'a PlanName> {
        self.names.get(owner as usize)
    }

    /// The steps, in order.
    pub fn steps(&self) -> impl Iterator<Item = Step<'a>> + '_ {
        self.items
            .iter()
            .filter_map(move |item| check::step(item, self.strings).ok())
    }

    /// How many steps.
    #[must_use]
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there are no steps.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Whether init supervises (the manifest's first service is init).
    #[must_use]
    pub const fn supervised(&self) -> bool {
        self.header.flags & PLAN_SUPERVISED != 0
    }
}

/// A plan slot reference as `capvisor inspect` and init's messages print it.
#[derive(Clone, Copy, Debug)]
pub struct SlotRef(pub u32);

impl fmt::Display for SlotRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            INIT_CNODE => f.write_str("init's CNode"),
            INIT_SPACE => f.write_str("init's space"),
            IRQ_CONTROL => f.write_str("IrqControl"),
            NONE => f.write_str("none"),
            slot => write!(f, "p{slot}"),
        }
    }
}

impl fmt::Display for Op<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use SlotRef as S;
        match *self {
            Self::Retype { slot, kind, bits } => {
                write!(f, "retype {kind:?} ({bits}) into {}", S(slot))
            }
            Self::Pages {
                slot,
                count,
                source,
                data_size,
                space,
                ipa,
                access,
                cnode,
                dest,
                flags,
            } => {
                write!(f, "{count} page(s) into {}..", S(slot))?;
                if data_size != 0 {
                    write!(f, ", {data_size} bytes from payload {source:#x}")?;
                }
                if space != NONE {
                    write!(f, ", mapped {} at {ipa:#x} in {}", Access(access), S(space))?;
                }
                if cnode != NONE {
                    write!(f, ", moved to slot {dest} of {}", S(cnode))?;
                }
                if flags & PAGES_CMDLINE != 0 {
                    f.write_str(", checked as a command line")?;
                }
                Ok(())
            }
            Self::ImageFrame { slot, block } => {
                write!(
                    f,
                    "image frame of payload block {block} (2 MiB, read-only) into {}",
                    S(slot)
                )
            }
            Self::Device {
                slot,
                locator,
                compatible,
                attributes,
            } => write!(
                f,
                "device untyped of {} \"{locator}\" ({}) into {}",
                if compatible { "compatible" } else { "path" },
                ["uncached", "uncached or normal-nc", "cacheable"]
                    .get((attributes as usize).wrapping_sub(1))
                    .unwrap_or(&"?"),
                S(slot)
            ),
            Self::Carveout {
                slot,
                base,
                size,
                cacheable,
            } => write!(
                f,
                "carve-out {base:#x}..{:#x}{} into {}",
                base + size,
                if cacheable {
                    " (cacheable PFNMAP)"
                } else {
                    " (RAM)"
                },
                S(slot)
            ),
            Self::IdentityRam { slot, bits } => {
                write!(
                    f,
                    "RAM untyped of {} KiB (aligned) into {}",
                    (1u64 << bits) >> 10,
                    S(slot)
                )
            }
            Self::Copy {
                slot,
                cnode,
                dest,
                rights,
            } => {
                write!(
                    f,
                    "copy {} to slot {dest} of {} with rights {rights:#x}",
                    S(slot),
                    S(cnode)
                )
            }
            Self::Mint {
                slot,
                cnode,
                dest,
                rights,
                badge,
            } => write!(
                f,
                "mint {} to slot {dest} of {} with rights {rights:#x} badge {badge:#x}",
                S(slot),
                S(cnode)
            ),
            Self::Move { slot, cnode, dest } => {
                write!(f, "move {} to slot {dest} of {}", S(slot), S(cnode))
            }
            Self::Map {
                slot,
                space,
                ipa,
                access,
                memtype,
            } => write!(
                f,
                "map {} {} at {ipa:#x} in {} (memtype {memtype})",
                S(slot),
                Access(access),
                S(space)
            ),
            Self::Configure {
                slot,
                cspace,
                space,
                registers: [entry, sp, ipc],
                priorities,
                fault,
            } => write!(
                f,
                "configure {} entry {entry:#x} sp {sp:#x} ipc buffer {ipc:#x} priority {} max {} \
                 cspace {} space {} fault endpoint {}",
                S(slot),
                priorities & 0xff,
                priorities >> 8,
                S(cspace),
                S(space),
                S(fault)
            ),
            Self::BindVcpu { slot, vcpu } => write!(f, "bind {} to thread {}", S(vcpu), S(slot)),
            Self::Name { slot, service } => {
                write!(f, "name thread {} after service entry {service}", S(slot))
            }
            Self::Resume { slot } => write!(f, "resume {}", S(slot)),
            Self::Irqs {
                slot,
                cnode,
                info,
                dest,
                guest,
            } => write!(
                f,
                "irq handlers of {}'s SPIs to slots {dest}.. of {}, listed in guest {guest} of {}",
                S(slot),
                S(cnode),
                S(info)
            ),
            Self::InfoPlatform { slot } => {
                write!(f, "platform features into boot info {}", S(slot))
            }
            Self::InfoDevice {
                slot,
                region,
                index,
            } => {
                write!(
                    f,
                    "where {} is into device {index} of boot info {}",
                    S(region),
                    S(slot)
                )
            }
            Self::InfoGuestRam {
                slot,
                region,
                index,
            } => {
                write!(
                    f,
                    "where {} is into guest {index}'s RAM of boot info {}",
                    S(region),
                    S(slot)
                )
            }
            Self::InfoDtb { slot, space, ipa } => write!(
                f,
                "platform device tree mapped at {ipa:#x} in {}, into boot info {}",
                S(space),
                S(slot)
            ),
            Self::GiveRam { cnode, first, end } => {
                write!(
                    f,
                    "copy init's RAM untyped to slots {first}..{end} of {}",
                    S(cnode)
                )
            }
        }
    }
}

/// R/W/X bits as `rwx`.
struct Access(u64);

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (bit, letter) in [(1, "r"), (2, "w"), (4, "x")] {
            f.write_str(if self.0 & bit != 0 { letter } else { "-" })?;
        }
        Ok(())
    }
}

/// Encodes a plan (the SDK's side): `header`'s counts are filled in from the parts.
#[cfg(any(test, feature = "std"))]
#[must_use]
pub fn encode(
    mut header: PlanHeader,
    names: &[PlanName],
    items: &[PlanItem],
    strings: &[u8],
) -> std::vec::Vec<u8> {
    header.magic = PLAN_MAGIC;
    header.version = PLAN_VERSION;
    header.name_count = names.len() as u32;
    header.item_count = items.len() as u32;
    header.strings_size = strings.len() as u32;
    let mut out = header.as_bytes().to_vec();
    out.extend_from_slice(names.as_bytes());
    out.extend_from_slice(items.as_bytes());
    out.extend_from_slice(strings);
    out
}

#[cfg(test)]
mod tests;

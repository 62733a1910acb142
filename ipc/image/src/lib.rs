//! The capvisor system image layout, shared by the kernel (reader) and the SDK (writer).
//!
//! An image is one file that boot loaders treat as an arm64 Linux `Image`:
//!
//! ```text
//! offset 0     LinuxImageHeader (64 bytes; Documentation/arch/arm64/booting.rst of Linux)
//! offset 64    CapvisorHeader   (where the payload is, checksums)
//! ...          the kernel's loadable bytes (text, rodata, data), then zeroes up to its memory size
//! payload_off  PayloadTable, then PayloadEntry[count], then the entries' bytes
//! ```
//!
//! The payload starts beyond the kernel's memory footprint (its zero-initialised data included), so
//! the kernel never overwrites it while it starts. Every multi-byte field is little-endian.
//!
//! Principles: fixed layouts through `zerocopy` (no hand-written casts); everything read from an
//! image is validated here, once, before anyone uses it ([`ImageView::parse`]); no allocation.
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![forbid(unsafe_code)]

mod crc;
pub mod devices;
mod features;
mod guest;
pub mod plan;
pub mod service;
#[cfg(any(test, feature = "std"))]
pub mod writer;

pub use crc::crc32;
pub use features::{Feature, FeatureSet};
pub use guest::{
    CmdlineError, DEVICE_TREE_SPACE, GUEST_CONFIG_VERSION, GUEST_FLAG_RAM_IDENTITY, GUEST_RAM_BASE,
    GuestConfig, GuestConfigError, INITRD_ALIGN, MAX_CMDLINE, MAX_GUEST_VCPUS, check_cmdline,
    device_tree_ipa, initrd_ipa,
};

use core::fmt;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// A NUL-padded UTF-8 field (an entry's or a record's name) as text; `None` if not UTF-8.
#[must_use]
pub fn nul_padded(bytes: &[u8]) -> Option<&str> {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    core::str::from_utf8(&bytes[..end]).ok()
}

/// `ARM\x64`, the arm64 `Image` magic at offset 56.
pub const ARM64_IMAGE_MAGIC: u32 = 0x644d_5241;
/// The magic at the start of [`CapvisorHeader`].
pub const CAPVISOR_MAGIC: [u8; 8] = *b"CAPVISOR";
/// The magic at the start of [`PayloadTable`].
pub const PAYLOAD_MAGIC: [u8; 8] = *b"CVPAYLD\0";
/// The version of this layout; bumped on any incompatible change (2: services as laid-out
/// segments, the boot plan, a payload on a 2 MiB boundary).
pub const LAYOUT_VERSION: u32 = 2;
/// Where [`CapvisorHeader`] sits in the image.
pub const CAPVISOR_HEADER_OFFSET: usize = 64;
/// The bytes at the start of the image that the checksum does not cover: the two headers, which
/// the SDK patches after the kernel is linked.
pub const CHECKSUM_START: usize = 128;
/// The payload's alignment inside the image file, and the multiple `image_size` is rounded up
/// to: a boot loader places the image on a 2 MiB boundary (Linux `booting.rst`), so the payload
/// starts a 2 MiB block in memory and the image's footprint ends one, and the kernel hands the
/// payload's blocks to init as read-only frames.
pub const PAYLOAD_ALIGN: u64 = plan::IMAGE_BLOCK;
/// The most payload entries an image may have.
pub const MAX_ENTRIES: u32 = 256;

/// `flags` of the arm64 Image header: little-endian, 4K pages, "may be placed anywhere in RAM"
/// (bit 3), as Linux's booting.rst defines them.
pub const ARM64_IMAGE_FLAGS: u64 = (1 << 1) | (1 << 3);

/// The arm64 Linux `Image` header (Linux, Documentation/arch/arm64/booting.rst, "Call the kernel
/// image"). QEMU's `-kernel` and U-Boot's `booti` recognise an image by `magic`.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct LinuxImageHeader {
    /// An instruction: a branch to the entry point.
    pub code0: u32,
    /// An instruction (a NOP).
    pub code1: u32,
    /// Offset from a 2 MiB aligned base at which the image must be placed.
    pub text_offset: u64,
    /// Bytes of memory the image needs from its start, its zero-initialised data included.
    pub image_size: u64,
    /// See [`ARM64_IMAGE_FLAGS`].
    pub flags: u64,
    /// Reserved.
    pub res2: u64,
    /// Reserved.
    pub res3: u64,
    /// Reserved.
    pub res4: u64,
    /// [`ARM64_IMAGE_MAGIC`].
    pub magic: u32,
    /// Reserved (a PE header offset for EFI images; zero here).
    pub res5: u32,
}

impl LinuxImageHeader {
    /// The header at the start of `bytes`, if they are that long (its magic unchecked).
    #[must_use]
    pub fn read(bytes: &[u8]) -> Option<Self> {
        Self::read_from_prefix(bytes).ok().map(|(header, _)| header)
    }
}

/// capvisor's own header, right after the Linux header.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct CapvisorHeader {
    /// [`CAPVISOR_MAGIC`].
    pub magic: [u8; 8],
    /// [`LAYOUT_VERSION`].
    pub version: u32,
    /// CRC-32 of the kernel's read-only part, bytes `CHECKSUM_START..kernel_ro_size`.
    pub kernel_crc32: u32,
    /// End of the kernel's text and read-only data (which relocation never writes).
    pub kernel_ro_size: u64,
    /// Offset of the [`PayloadTable`] from the start of the image; 0 when there is none.
    pub payload_offset: u64,
    /// Bytes of payload, table and entries together.
    pub payload_size: u64,
    /// CRC-32 of the payload bytes.
    pub payload_crc32: u32,
    /// Reserved, zero.
    pub reserved0: u32,
    /// Reserved, zero.
    pub reserved: [u64; 2],
}

/// The head of the payload: how many entries follow.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct PayloadTable {
    /// [`PAYLOAD_MAGIC`].
    pub magic: [u8; 8],
    /// Number of [`PayloadEntry`] records that follow.
    pub count: u32,
    /// Reserved, zero.
    pub reserved: u32,
}

/// One item of the payload.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct PayloadEntry {
    /// An [`EntryKind`] value.
    pub kind: u32,
    /// Reserved, zero.
    pub flags: u32,
    /// Offset of the bytes from the start of the payload.
    pub offset: u64,
    /// Length of the bytes.
    pub size: u64,
    /// A NUL-padded UTF-8 name (a service's or guest's name from the manifest).
    pub name: [u8; 32],
}

/// What a payload entry holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum EntryKind {
    /// A [`BootConfig`].
    BootConfig = 1,
    /// An EL0 service's code and data, laid out by the SDK ([`service`]); the first is the
    /// root service (init), which the kernel loads itself.
    Service = 2,
    /// A guest's kernel.
    GuestKernel = 3,
    /// A guest's initial RAM disk.
    GuestInitrd = 4,
    /// A guest's device tree.
    GuestDtb = 5,
    /// A record of the manifest for `capvisor inspect` (the devices entry, [`devices`]).
    Manifest = 6,
    /// A guest's configuration, a [`GuestConfig`]; named after the guest.
    Guest = 7,
    /// A guest's kernel command line (UTF-8, no NUL, at most [`MAX_CMDLINE`] bytes), which its
    /// VMM writes into `/chosen/bootargs` of the device tree it gives the guest.
    GuestCmdline = 8,
    /// The boot plan ([`plan`]), which init carries out; the kernel never reads it.
    BootPlan = 9,
    /// A service's boot-info page as the SDK computed it (`capvisor_ipc::bootinfo::BootInfo`),
    /// named after the service; init completes it with what only the running system knows.
    BootInfo = 10,
}

impl EntryKind {
    /// The kind with this number, if it is one.
    #[must_use]
    pub fn from_u32(value: u32) -> Option<Self> {
        Some(match value {
            1 => Self::BootConfig,
            2 => Self::Service,
            3 => Self::GuestKernel,
            4 => Self::GuestInitrd,
            5 => Self::GuestDtb,
            6 => Self::Manifest,
            7 => Self::Guest,
            8 => Self::GuestCmdline,
            9 => Self::BootPlan,
            10 => Self::BootInfo,
            _ => return None,
        })
    }

    /// The alignment of an entry of this kind in the payload: a guest's kernel, initrd and device
    /// tree occupy whole 2 MiB blocks of their own (init hands them to the memory manager as the
    /// kernel's read-only frames of the image, [`plan::IMAGE_BLOCK`]); a service's blobs are
    /// page-aligned.
    #[must_use]
    pub const fn alignment(self) -> u64 {
        match self {
            Self::GuestKernel | Self::GuestInitrd | Self::GuestDtb => plan::IMAGE_BLOCK,
            Self::Service | Self::BootInfo => 4096,
            _ => 16,
        }
    }
}

/// Built-in kernel self-tests that test images select (a deliberate fault, to check the
/// kernel's reporting).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum SelfTest {
    /// Boot normally.
    None = 0,
    /// Read an unmapped address: a data abort at EL2.
    DataAbort = 1,
    /// Execute an undefined instruction.
    Undefined = 2,
    /// A Rust panic.
    Panic = 3,
}

impl SelfTest {
    /// The self-test with this number, if it is one.
    #[must_use]
    pub fn from_u32(value: u32) -> Option<Self> {
        Some(match value {
            0 => Self::None,
            1 => Self::DataAbort,
            2 => Self::Undefined,
            3 => Self::Panic,
            _ => return None,
        })
    }
}

/// What the kernel needs to know before any service runs.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct BootConfig {
    /// A [`SelfTest`] value.
    pub selftest: u32,
    /// Log level: 1 error, 2 warn, 3 info, 4 debug, 5 trace.
    pub log_level: u32,
    /// The [`FeatureSet`] the system requires of the platform.
    pub required_features: u64,
    /// The smallest physical address size the system accepts, in bits (0: any).
    pub min_pa_bits: u32,
    /// The fewest CPUs the system accepts (0: any).
    pub min_cpus: u32,
    /// No flags are defined: zero. (Whether init supervises is the boot plan's
    /// `PLAN_SUPERVISED`; every image boots through the plan.)
    pub flags: u64,
    /// How many services the manifest declares: the image's last `services` service entries,
    /// in manifest order (what `capvisor inspect` lists). An entry before them is the init the
    /// SDK added to an image whose manifest has none, to carry out the boot plan.
    pub services: u32,
    /// The root service's (init's) priority.
    pub root_priority: u32,
    /// Reserved, zero.
    pub reserved: [u64; 3],
}

/// Why an image was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageError {
    /// The image is shorter than its headers, or than what its headers describe.
    Truncated {
        /// Bytes needed.
        needed: u64,
        /// Bytes there.
        have: u64,
    },
    /// The arm64 Image magic is missing.
    NotArm64Image,
    /// The capvisor header's magic is missing.
    NotCapvisor,
    /// The layout version is not [`LAYOUT_VERSION`].
    Version(u32),
    /// The kernel's checksum does not match.
    KernelChecksum {
        /// What the header says.
        expected: u32,
        /// What the bytes give.
        actual: u32,
    },
    /// The payload's checksum does not match.
    PayloadChecksum {
        /// What the header says.
        expected: u32,
        /// What the bytes give.
        actual: u32,
    },
    /// The payload table's magic is missing.
    BadPayloadTable,
    /// More entries than [`MAX_ENTRIES`].
    TooManyEntries(u32),
    /// An entry lies outside the payload.
    EntryOutOfBounds {
        /// Its index.
        index: u32,
    },
    /// An entry's kind is unknown.
    UnknownEntryKind {
        /// Its index.
        index: u32,
        /// The kind number.
        kind: u32,
    },
    /// A boot configuration entry has the wrong size or a bad value.
    BadBootConfig,
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Truncated { needed, have } => {
                write!(f, "image truncated: needs {needed} bytes, has {have}")
            }
            Self::NotArm64Image => f.write_str("not an arm64 Image (magic ARM\\x64 missing)"),
            Self::NotCapvisor => f.write_str("not a capvisor image (CAPVISOR header missing)"),
            Self::Version(v) => write!(f, "image layout version {v}, expected {LAYOUT_VERSION}"),
            Self::KernelChecksum { expected, actual } => write!(
                f,
                "kernel checksum mismatch: header says {expected:#010x}, contents give {actual:#010x}"
            ),
            Self::PayloadChecksum { expected, actual } => write!(
                f,
                "payload checksum mismatch: header says {expected:#010x}, contents give {actual:#010x}"
            ),
            Self::BadPayloadTable => f.write_str("payload table magic missing"),
            Self::TooManyEntries(n) => write!(f, "{n} payload entries, at most {MAX_ENTRIES}"),
            Self::EntryOutOfBounds { index } => {
                write!(f, "payload entry {index} lies outside the payload")
            }
            Self::UnknownEntryKind { index, kind } => {
                write!(f, "payload entry {index} has unknown kind {kind}")
            }
            Self::BadBootConfig => f.write_str("boot configuration malformed"),
        }
    }
}

/// A validated view of an image's headers and payload.
#[derive(Clone, Copy, Debug)]
pub struct ImageView<'a> {
    /// The Linux header.
    pub linux: LinuxImageHeader,
    /// The capvisor header.
    pub header: CapvisorHeader,
    payload: &'a [u8],
    entries: &'a [PayloadEntry],
}

/// The payload alone, as the root service (init) reads it from the image's read-only frames: its
/// table and entries are checked (the kernel checked its checksum at boot, with the headers that
/// carry it).
#[derive(Clone, Copy, Debug)]
pub struct Payload<'a> {
    bytes: &'a [u8],
    entries: &'a [PayloadEntry],
}

impl<'a> Payload<'a> {
    /// Reads the payload's table and checks every entry lies inside `payload` with a known kind.
    ///
    /// # Errors
    ///
    /// An [`ImageError`] saying the first thing found wrong.
    pub fn parse(payload: &'a [u8]) -> Result<Self, ImageError> {
        let (table, rest) =
            PayloadTable::read_from_prefix(payload).map_err(|_| ImageError::BadPayloadTable)?;
        if table.magic != PAYLOAD_MAGIC {
            return Err(ImageError::BadPayloadTable);
        }
        if table.count > MAX_ENTRIES {
            return Err(ImageError::TooManyEntries(table.count));
        }
        let (entries, _) = <[PayloadEntry]>::ref_from_prefix_with_elems(rest, table.count as usize)
            .map_err(|_| ImageError::Truncated {
                needed: (table.count as u64) * size_of::<PayloadEntry>() as u64,
                have: rest.len() as u64,
            })?;
        for (index, entry) in entries.iter().enumerate() {
            let index = index as u32;
            slice(payload, entry.offset, entry.size)
                .map_err(|_| ImageError::EntryOutOfBounds { index })?;
            if EntryKind::from_u32(entry.kind).is_none() {
                return Err(ImageError::UnknownEntryKind {
                    index,
                    kind: entry.kind,
                });
            }
        }
        Ok(Self {
            bytes: payload,
            entries,
        })
    }

    /// The entries, in order.
    pub fn entries(self) -> impl Iterator<Item = Entry<'a>> + 'a {
        let payload = self.bytes;
        self.entries.iter().map(move |e| {
            Entry {
                // Both checked in `parse`.
                kind: EntryKind::from_u32(e.kind).unwrap_or(EntryKind::Manifest),
                name: nul_padded(&e.name).unwrap_or("?"),
                bytes: &payload[e.offset as usize..(e.offset + e.size) as usize],
            }
        })
    }

    /// Its size in bytes.
    #[must_use]
    pub const fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether it is empty (never, once parsed: it has a table).
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// One payload entry, validated.
#[derive(Clone, Copy, Debug)]
pub struct Entry<'a> {
    /// What it is.
    pub kind: EntryKind,
    /// Its name.
    pub name: &'a str,
    /// Its bytes.
    pub bytes: &'a [u8],
}

fn slice(bytes: &[u8], offset: u64, len: u64) -> Result<&[u8], ImageError> {
    let end = offset.checked_add(len).ok_or(ImageError::Truncated {
        needed: u64::MAX,
        have: bytes.len() as u64,
    })?;
    if end > bytes.len() as u64 {
        return Err(ImageError::Truncated {
            needed: end,
            have: bytes.len() as u64,
        });
    }
    Ok(&bytes[offset as usize..end as usize])
}

impl<'a> ImageView<'a> {
    /// Reads the headers of `image` (the kernel's read-only part and the payload, as loaded) and
    /// checks magics, version, checksums and every entry's bounds.
    ///
    /// `image` must reach at least to the end of the payload; the bytes between the kernel's
    /// read-only part and the payload (its writable data) are not looked at.
    ///
    /// # Errors
    ///
    /// An [`ImageError`] saying the first thing found wrong.
    pub fn parse(image: &'a [u8]) -> Result<Self, ImageError> {
        let head = slice(image, 0, CHECKSUM_START as u64)?;
        let header = read_headers(head)?.1;
        let kernel_ro = slice(image, 0, header.kernel_ro_size)?;
        let payload = if header.payload_offset == 0 {
            &[][..]
        } else {
            slice(image, header.payload_offset, header.payload_size)?
        };
        Self::parse_split(kernel_ro, payload)
    }

    /// Like [`parse`](Self::parse), for a kernel that holds its image in two pieces: its
    /// read-only part (`kernel_ro`, from offset 0 to the header's `kernel_ro_size`) and the
    /// payload (the header's `payload_size` bytes at `payload_offset`), without its writable
    /// data in between.
    ///
    /// # Errors
    ///
    /// An [`ImageError`] saying the first thing found wrong.
    pub fn parse_split(kernel_ro: &'a [u8], payload: &'a [u8]) -> Result<Self, ImageError> {
        let (linux, header) = read_headers(kernel_ro)?;
        let ro_len = header
            .kernel_ro_size
            .checked_sub(CHECKSUM_START as u64)
            .ok_or(ImageError::NotCapvisor)?;
        let checked = slice(kernel_ro, CHECKSUM_START as u64, ro_len)?;
        let actual = crc32(checked);
        if actual != header.kernel_crc32 {
            return Err(ImageError::KernelChecksum {
                expected: header.kernel_crc32,
                actual,
            });
        }
        let mut view = Self {
            linux,
            header,
            payload: &[],
            entries: &[],
        };
        if header.payload_offset != 0 {
            if payload.len() as u64 != header.payload_size {
                return Err(ImageError::Truncated {
                    needed: header.payload_size,
                    have: payload.len() as u64,
                });
            }
            view.parse_payload(payload)?;
        }
        Ok(view)
    }

    fn parse_payload(&mut self, payload: &'a [u8]) -> Result<(), ImageError> {
        let actual = crc32(payload);
        if actual != self.header.payload_crc32 {
            return Err(ImageError::PayloadChecksum {
                expected: self.header.payload_crc32,
                actual,
            });
        }
        let parsed = Payload::parse(payload)?;
        self.payload = parsed.bytes;
        self.entries = parsed.entries;
        Ok(())
    }

    /// The payload's bytes (empty when the image has none).
    #[must_use]
    pub const fn payload(&self) -> &'a [u8] {
        self.payload
    }

    /// The payload's entries, in order.
    pub fn entries(&self) -> impl Iterator<Item = Entry<'a>> + 'a {
        Payload {
            bytes: self.payload,
            entries: self.entries,
        }
        .entries()
    }

    /// The boot configuration, or the default one when the image has none.
    ///
    /// # Errors
    ///
    /// [`ImageError::BadBootConfig`] when the entry has the wrong size or an unknown self-test.
    pub fn boot_config(&self) -> Result<BootConfig, ImageError> {
        let Some(entry) = self.entries().find(|e| e.kind == EntryKind::BootConfig) else {
            return Ok(BootConfig::default());
        };
        let config =
            BootConfig::read_from_bytes(entry.bytes).map_err(|_| ImageError::BadBootConfig)?;
        if SelfTest::from_u32(config.selftest).is_none()
            || !(1..=5).contains(&config.log_level)
            || config.root_priority > 255
            || config.flags != 0
            || config.reserved != [0; 3]
        {
            return Err(ImageError::BadBootConfig);
        }
        Ok(config)
    }
}

/// Reads and checks the two headers at the start of an image.
fn read_headers(image: &[u8]) -> Result<(LinuxImageHeader, CapvisorHeader), ImageError> {
    let head = slice(image, 0, CHECKSUM_START as u64)?;
    let (linux, rest) =
        LinuxImageHeader::read_from_prefix(head).map_err(|_| ImageError::NotArm64Image)?;
    if linux.magic != ARM64_IMAGE_MAGIC {
        return Err(ImageError::NotArm64Image);
    }
    let (header, _) =
        CapvisorHeader::read_from_prefix(rest).map_err(|_| ImageError::NotCapvisor)?;
    if header.magic != CAPVISOR_MAGIC {
        return Err(ImageError::NotCapvisor);
    }
    if header.version != LAYOUT_VERSION {
        return Err(ImageError::Version(header.version));
    }
    Ok((linux, header))
}

impl Default for BootConfig {
    fn default() -> Self {
        Self {
            selftest: SelfTest::None as u32,
            log_level: 3,
            required_features: 0,
            min_pa_bits: 0,
            min_cpus: 0,
            flags: 0,
            services: 0,
            root_priority: 255,
            reserved: [0; 3],
        }
    }
}

const _: () = assert!(size_of::<LinuxImageHeader>() == 64);
const _: () = assert!(size_of::<CapvisorHeader>() == 64);
const _: () = assert!(CAPVISOR_HEADER_OFFSET + size_of::<CapvisorHeader>() == CHECKSUM_START);
const _: () = assert!(size_of::<PayloadEntry>() == 56);
const _: () = assert!(size_of::<BootConfig>() == 64);

#[cfg(test)]
mod tests;

//! Assembling an image file from a linked kernel and payload entries (host side, for the SDK).

extern crate std;

use crate::{
    ARM64_IMAGE_FLAGS, ARM64_IMAGE_MAGIC, BootConfig, CAPVISOR_HEADER_OFFSET, CAPVISOR_MAGIC,
    CHECKSUM_START, CapvisorHeader, EntryKind, LAYOUT_VERSION, LinuxImageHeader, PAYLOAD_ALIGN,
    PAYLOAD_MAGIC, PayloadEntry, PayloadTable, crc32,
};
use std::vec::Vec;
use zerocopy::{FromBytes, IntoBytes};

/// The kernel as the linker produced it, flattened to the bytes it loads from.
#[derive(Clone, Debug)]
pub struct FlatKernel {
    /// The loadable bytes, from the image header on (offset 0 is the load address).
    pub bytes: Vec<u8>,
    /// End of text and read-only data, which the kernel's relocation never writes.
    pub ro_size: u64,
    /// The memory the kernel occupies once loaded, its zero-initialised data included.
    pub mem_size: u64,
}

/// Why an image could not be written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteError {
    /// The kernel's bytes do not start with the two headers the kernel's entry code lays out.
    KernelHeaderMissing,
    /// An entry's name is longer than 31 bytes.
    NameTooLong(std::string::String),
    /// The read-only size is outside the kernel.
    BadRoSize,
}

impl core::fmt::Display for WriteError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::KernelHeaderMissing => {
                f.write_str("the kernel binary does not start with the arm64 Image header")
            }
            Self::NameTooLong(n) => write!(f, "payload entry name {n:?} is longer than 31 bytes"),
            Self::BadRoSize => f.write_str("the kernel's read-only size lies outside the kernel"),
        }
    }
}

impl std::error::Error for WriteError {}

/// One payload entry to write.
#[derive(Clone, Debug)]
pub struct NewEntry {
    /// What it is.
    pub kind: EntryKind,
    /// Its name (at most 31 bytes).
    pub name: std::string::String,
    /// Its contents.
    pub bytes: Vec<u8>,
}

impl NewEntry {
    /// An entry holding `config`.
    #[must_use]
    pub fn boot_config(config: &BootConfig) -> Self {
        Self {
            kind: EntryKind::BootConfig,
            name: "boot".into(),
            bytes: config.as_bytes().to_vec(),
        }
    }
}

fn align_up(value: u64, align: u64) -> u64 {
    value.div_ceil(align) * align
}

/// Lays out `kernel` and `entries` as one image file: patches both headers, places the payload
/// after the kernel's memory footprint, and fills in the checksums.
///
/// # Errors
///
/// A [`WriteError`] when the kernel lacks its headers or an entry is malformed.
pub fn write_image(kernel: &FlatKernel, entries: &[NewEntry]) -> Result<Vec<u8>, WriteError> {
    let mut image = kernel.bytes.clone();
    let linux = LinuxImageHeader::read_from_prefix(&image)
        .map_err(|_| WriteError::KernelHeaderMissing)?
        .0;
    if linux.magic != ARM64_IMAGE_MAGIC || image.len() < CHECKSUM_START {
        return Err(WriteError::KernelHeaderMissing);
    }
    if kernel.ro_size < CHECKSUM_START as u64 || kernel.ro_size > image.len() as u64 {
        return Err(WriteError::BadRoSize);
    }
    // The payload is not padded to its last 2 MiB boundary (nor checksummed that far):
    // `image_size` reaches it, so a boot loader keeps the rest of the block free, and the
    // kernel's read-only 2 MiB frames of the payload cover nothing but the image.
    let payload = payload_bytes(entries)?;
    let payload_offset = if payload.is_empty() {
        0
    } else {
        align_up(kernel.mem_size.max(image.len() as u64), PAYLOAD_ALIGN)
    };
    let header = CapvisorHeader {
        magic: CAPVISOR_MAGIC,
        version: LAYOUT_VERSION,
        kernel_crc32: crc32(&image[CHECKSUM_START..kernel.ro_size as usize]),
        kernel_ro_size: kernel.ro_size,
        payload_offset,
        payload_size: payload.len() as u64,
        payload_crc32: crc32(&payload),
        reserved0: 0,
        reserved: [0; 2],
    };
    if payload_offset != 0 {
        image.resize(payload_offset as usize, 0);
        image.extend_from_slice(&payload);
    }
    let linux = LinuxImageHeader {
        text_offset: 0,
        image_size: align_up(kernel.mem_size.max(image.len() as u64), PAYLOAD_ALIGN),
        flags: ARM64_IMAGE_FLAGS,
        ..linux
    };
    image[..CAPVISOR_HEADER_OFFSET].copy_from_slice(linux.as_bytes());
    image[CAPVISOR_HEADER_OFFSET..CHECKSUM_START].copy_from_slice(header.as_bytes());
    Ok(image)
}

/// Where each entry's bytes go, as offsets from the start of the payload: after the table and
/// the records, each aligned as its kind asks ([`EntryKind::alignment`]), and an entry that takes
/// whole 2 MiB blocks followed by nothing else in its last block.
#[must_use]
pub fn layout(entries: &[NewEntry]) -> Vec<u64> {
    let head = (size_of::<PayloadTable>() + entries.len() * size_of::<PayloadEntry>()) as u64;
    let mut end = head;
    let mut offsets = Vec::new();
    for entry in entries {
        let alignment = entry.kind.alignment();
        let offset = align_up(end, alignment);
        offsets.push(offset);
        end = offset + entry.bytes.len() as u64;
        if alignment > 4096 {
            end = align_up(end, alignment);
        }
    }
    offsets
}

fn payload_bytes(entries: &[NewEntry]) -> Result<Vec<u8>, WriteError> {
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let table = PayloadTable {
        magic: PAYLOAD_MAGIC,
        count: entries.len() as u32,
        reserved: 0,
    };
    let mut records = Vec::new();
    let mut data = Vec::new();
    for (entry, offset) in entries.iter().zip(layout(entries)) {
        if entry.name.len() > 31 {
            return Err(WriteError::NameTooLong(entry.name.clone()));
        }
        let mut name = [0u8; 32];
        name[..entry.name.len()].copy_from_slice(entry.name.as_bytes());
        records.push(PayloadEntry {
            kind: entry.kind as u32,
            flags: 0,
            offset,
            size: entry.bytes.len() as u64,
            name,
        });
        data.resize(offset as usize, 0);
        data.extend_from_slice(&entry.bytes);
    }
    let head = table.as_bytes().len() + records.as_bytes().len();
    data[..table.as_bytes().len()].copy_from_slice(table.as_bytes());
    data[table.as_bytes().len()..head].copy_from_slice(records.as_bytes());
    Ok(data)
}

//! A service's code and data as the image carries them: the payload entry of kind
//! [`EntryKind::Service`](crate::EntryKind::Service), named after the service, is a
//! [`ServiceHeader`], its [`Segment`] records, then each segment's bytes as a flat, page-aligned
//! blob. The SDK lays the segments out from the service's ELF file at build time (pages two ELF
//! segments share are one segment with both permissions), so neither the kernel nor init parses
//! ELF: the kernel copies the root service's segments into its pages at boot, and init every
//! other service's, by the boot plan ([`crate::plan`]).
//!
//! Everything read from the entry is checked once, by [`ServiceImage::decode`], which refuses
//! anything malformed with a [`ServiceImageError`] and never panics.

use core::fmt;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The magic at the start of the entry.
pub const SERVICE_MAGIC: [u8; 8] = *b"CVSERVC\0";
/// The layout version of the entry.
pub const SERVICE_VERSION: u32 = 1;
/// The most segments a service has.
pub const MAX_SEGMENTS: usize = 16;
/// The page size of a service's address space.
pub const PAGE: u64 = 4096;
/// The top of a service's stack (the runtime's convention: `sdk/rt/src/target.rs`).
pub const STACK_TOP: u64 = 0x40_0000_0000;
/// Where a service's IPC buffer page is mapped.
pub const IPC_BUFFER: u64 = 0x40_0010_0000;
/// The largest stack a service may ask for.
pub const MAX_STACK: u64 = 16 << 20;
/// The most pages a service's segments occupy together (64 MiB).
pub const MAX_PAGES: u64 = 16 << 8;

/// `Segment::access` bits: the capability rights `Map` takes (`capvisor_ipc::cap::Rights`).
pub const ACCESS_READ: u32 = 1 << 0;
/// Writable.
pub const ACCESS_WRITE: u32 = 1 << 1;
/// Executable.
pub const ACCESS_EXECUTE: u32 = 1 << 2;

/// The entry's head. Little-endian, 64 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct ServiceHeader {
    /// [`SERVICE_MAGIC`].
    pub magic: [u8; 8],
    /// [`SERVICE_VERSION`].
    pub version: u32,
    /// How many [`Segment`] records follow.
    pub segment_count: u32,
    /// The entry point: inside an executable segment.
    pub entry: u64,
    /// The stack's size in bytes (a page multiple, at most [`MAX_STACK`]); it ends at
    /// [`STACK_TOP`].
    pub stack_size: u64,
    /// Reserved, zero.
    pub reserved: [u64; 4],
}

/// One segment: `pages` pages at `ipa`, holding `data_size` bytes from `offset` of the entry
/// and zeroes after them. Little-endian, 48 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct Segment {
    /// Its first address (page-aligned).
    pub ipa: u64,
    /// How many pages it spans.
    pub pages: u64,
    /// Where its bytes start in the entry (page-aligned).
    pub offset: u64,
    /// How many bytes the entry holds for it (at most `pages` pages; the rest is zero).
    pub data_size: u64,
    /// `ACCESS_*` bits: not empty.
    pub access: u32,
    /// Reserved, zero.
    pub reserved: u32,
    /// Reserved, zero.
    pub reserved2: u64,
}

const _: () = assert!(size_of::<ServiceHeader>() == 64);
const _: () = assert!(size_of::<Segment>() == 48);

impl Segment {
    /// The address after its last page.
    #[must_use]
    pub const fn end(&self) -> u64 {
        self.ipa + self.pages * PAGE
    }
}

/// Why a service entry was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceImageError {
    /// Shorter than its header and records.
    Truncated,
    /// The magic is missing.
    Magic,
    /// The version is not [`SERVICE_VERSION`].
    Version(u32),
    /// More than [`MAX_SEGMENTS`] segments, or none.
    Segments(u32),
    /// The stack is not a page multiple from 4 KiB to [`MAX_STACK`], or reserved fields are set.
    Stack(u64),
    /// Segment `index` is unaligned, empty, overlaps the previous one (segments are in address
    /// order), reaches into the stack, or has reserved fields or unknown access bits set.
    Layout(usize),
    /// Segment `index`'s bytes lie outside the entry or beyond its pages.
    Data(usize),
    /// The segments span more than [`MAX_PAGES`] pages.
    TooLarge,
    /// The entry point is in no executable segment.
    Entry(u64),
}

impl fmt::Display for ServiceImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Truncated => f.write_str("the service entry is truncated"),
            Self::Magic => f.write_str("the service entry's magic is missing"),
            Self::Version(v) => write!(f, "service entry version {v}, expected {SERVICE_VERSION}"),
            Self::Segments(n) => write!(f, "{n} segments, expected 1 to {MAX_SEGMENTS}"),
            Self::Stack(size) => write!(f, "a stack of {size:#x} bytes is not allowed"),
            Self::Layout(i) => write!(f, "segment {i} is misplaced"),
            Self::Data(i) => write!(f, "segment {i}'s bytes lie outside the entry"),
            Self::TooLarge => write!(f, "the segments span more than {MAX_PAGES} pages"),
            Self::Entry(entry) => write!(f, "the entry point {entry:#x} is not executable"),
        }
    }
}

/// A checked service entry.
#[derive(Clone, Copy, Debug)]
pub struct ServiceImage<'a> {
    /// Its header.
    pub header: ServiceHeader,
    segments: &'a [Segment],
    bytes: &'a [u8],
}

/// One page of a service, as it is made: where it goes, with which access, and its bytes (at
/// most a page; the rest of the page is zero).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServicePage<'a> {
    /// Its address.
    pub ipa: u64,
    /// `ACCESS_*` bits.
    pub access: u32,
    /// Its leading bytes.
    pub data: &'a [u8],
}

impl<'a> ServiceImage<'a> {
    /// Reads and checks a service entry.
    ///
    /// # Errors
    /// A [`ServiceImageError`] saying the first thing found wrong.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, ServiceImageError> {
        let (header, rest) =
            ServiceHeader::read_from_prefix(bytes).map_err(|_| ServiceImageError::Truncated)?;
        if header.magic != SERVICE_MAGIC {
            return Err(ServiceImageError::Magic);
        }
        if header.version != SERVICE_VERSION {
            return Err(ServiceImageError::Version(header.version));
        }
        let count = header.segment_count;
        if count == 0 || count as usize > MAX_SEGMENTS {
            return Err(ServiceImageError::Segments(count));
        }
        let stack = header.stack_size;
        if !stack.is_multiple_of(PAGE) || !(PAGE..=MAX_STACK).contains(&stack) {
            return Err(ServiceImageError::Stack(stack));
        }
        if header.reserved != [0; 4] {
            return Err(ServiceImageError::Stack(stack));
        }
        let (segments, _) = <[Segment]>::ref_from_prefix_with_elems(rest, count as usize)
            .map_err(|_| ServiceImageError::Truncated)?;
        let image = Self {
            header,
            segments,
            bytes,
        };
        image.check_segments()?;
        let entry = header.entry;
        let executable = segments
            .iter()
            .any(|s| s.access & ACCESS_EXECUTE != 0 && s.ipa <= entry && entry < s.end());
        if !executable {
            return Err(ServiceImageError::Entry(entry));
        }
        Ok(image)
    }

    fn check_segments(&self) -> Result<(), ServiceImageError> {
        let limit = STACK_TOP - self.header.stack_size;
        let known = ACCESS_READ | ACCESS_WRITE | ACCESS_EXECUTE;
        let mut previous_end = 0;
        let mut total = 0u64;
        for (index, segment) in self.segments.iter().enumerate() {
            let aligned = segment.ipa.is_multiple_of(PAGE) && segment.offset.is_multiple_of(PAGE);
            let placed = segment.pages != 0
                && segment.pages <= MAX_PAGES
                && segment.ipa >= previous_end
                && segment
                    .ipa
                    .checked_add(segment.pages * PAGE)
                    .is_some_and(|end| end <= limit);
            let access_ok = segment.access != 0 && segment.access & !known == 0;
            if !aligned || !placed || !access_ok || segment.reserved != 0 || segment.reserved2 != 0
            {
                return Err(ServiceImageError::Layout(index));
            }
            let data_end = segment.offset.checked_add(segment.data_size);
            if segment.data_size > segment.pages * PAGE
                || data_end.is_none_or(|end| end > self.bytes.len() as u64)
            {
                return Err(ServiceImageError::Data(index));
            }
            previous_end = segment.end();
            total += segment.pages;
        }
        if total > MAX_PAGES {
            return Err(ServiceImageError::TooLarge);
        }
        Ok(())
    }

    /// The segments, in address order.
    #[must_use]
    pub fn segments(&self) -> &'a [Segment] {
        self.segments
    }

    /// A segment's bytes (checked by [`decode`](Self::decode)).
    #[must_use]
    pub fn data(&self, segment: &Segment) -> &'a [u8] {
        let start = segment.offset as usize;
        self.bytes
            .get(start..start + segment.data_size as usize)
            .unwrap_or(&[])
    }

    /// Every page of every segment, in address order.
    pub fn pages(&self) -> impl Iterator<Item = ServicePage<'a>> + 'a {
        let image = *self;
        self.segments.iter().flat_map(move |segment| {
            let data = image.data(segment);
            (0..segment.pages).map(move |n| {
                let start = (n * PAGE) as usize;
                let end = data.len().min(start + PAGE as usize);
                ServicePage {
                    ipa: segment.ipa + n * PAGE,
                    access: segment.access,
                    data: data.get(start..end).unwrap_or(&[]),
                }
            })
        })
    }

    /// How many pages the segments span.
    #[must_use]
    pub fn page_count(&self) -> u64 {
        self.segments.iter().map(|s| s.pages).sum()
    }

    /// How many stack pages.
    #[must_use]
    pub const fn stack_pages(&self) -> u64 {
        self.header.stack_size / PAGE
    }
}

/// One segment to write: its pages' first address, their access, how many, and its bytes.
#[cfg(any(test, feature = "std"))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewSegment {
    /// Its first address (page-aligned).
    pub ipa: u64,
    /// How many pages.
    pub pages: u64,
    /// `ACCESS_*` bits.
    pub access: u32,
    /// Its leading bytes (trailing zeroes may be left out).
    pub data: std::vec::Vec<u8>,
}

/// Encodes a service entry (the SDK's side): the header, the records, then each segment's bytes
/// at the next page boundary of the entry.
#[cfg(any(test, feature = "std"))]
#[must_use]
pub fn encode(entry: u64, stack_size: u64, segments: &[NewSegment]) -> std::vec::Vec<u8> {
    use zerocopy::FromZeros;
    let header = ServiceHeader {
        magic: SERVICE_MAGIC,
        version: SERVICE_VERSION,
        segment_count: segments.len() as u32,
        entry,
        stack_size,
        reserved: [0; 4],
    };
    let head = size_of::<ServiceHeader>() + segments.len() * size_of::<Segment>();
    let mut offset = (head as u64).next_multiple_of(PAGE);
    let mut records = std::vec::Vec::new();
    for segment in segments {
        let data = trimmed(&segment.data);
        let mut record = Segment::new_zeroed();
        record.ipa = segment.ipa;
        record.pages = segment.pages;
        record.offset = offset;
        record.data_size = data.len() as u64;
        record.access = segment.access;
        records.push(record);
        offset = (offset + data.len() as u64).next_multiple_of(PAGE);
    }
    let mut out = header.as_bytes().to_vec();
    out.extend_from_slice(records.as_bytes());
    for (segment, record) in segments.iter().zip(&records) {
        out.resize(record.offset as usize, 0);
        out.extend_from_slice(trimmed(&segment.data));
    }
    out
}

/// `data` without its trailing zeroes (the pages are zero beyond what the entry holds).
#[cfg(any(test, feature = "std"))]
fn trimmed(data: &[u8]) -> &[u8] {
    let end = data.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    &data[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> std::vec::Vec<u8> {
        let code = NewSegment {
            ipa: 0x20_0000,
            pages: 2,
            access: ACCESS_READ | ACCESS_EXECUTE,
            data: [0xd5u8; 5000].to_vec(),
        };
        let data = NewSegment {
            ipa: 0x20_3000,
            pages: 3,
            access: ACCESS_READ | ACCESS_WRITE,
            data: [1, 2, 3, 0, 0].to_vec(),
        };
        encode(0x20_0010, 64 << 10, &[code, data])
    }

    #[test]
    fn pages_carry_their_bytes_and_zeroes() {
        let bytes = sample();
        let image = ServiceImage::decode(&bytes).unwrap();
        assert_eq!(image.page_count(), 5);
        assert_eq!(image.stack_pages(), 16);
        let pages: std::vec::Vec<_> = image.pages().collect();
        assert_eq!(pages.len(), 5);
        assert_eq!((pages[0].ipa, pages[0].data.len()), (0x20_0000, 4096));
        assert_eq!((pages[1].ipa, pages[1].data.len()), (0x20_1000, 904));
        // Trailing zeroes are not stored: the page is zero beyond them.
        assert_eq!(pages[2].data, &[1, 2, 3]);
        assert!(pages[3].data.is_empty() && pages[4].data.is_empty());
        assert_eq!(pages[4].access, ACCESS_READ | ACCESS_WRITE);
        // Every blob starts on a page of the entry.
        assert!(image.segments().iter().all(|s| s.offset % PAGE == 0));
    }

    #[test]
    fn malformed_entries_are_refused() {
        let good = sample();
        let header = size_of::<ServiceHeader>();
        let seg = |i: usize| header + i * size_of::<Segment>();
        let patch = |at: usize, value: u64| {
            let mut bytes = good.clone();
            bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
            ServiceImage::decode(&bytes).err()
        };
        assert_eq!(patch(0, 0), Some(ServiceImageError::Magic));
        // Entry point in the data segment.
        assert_eq!(
            patch(16, 0x20_3000),
            Some(ServiceImageError::Entry(0x20_3000))
        );
        // Stack not a page multiple; too large.
        assert_eq!(patch(24, 100), Some(ServiceImageError::Stack(100)));
        assert_eq!(
            patch(24, MAX_STACK * 2),
            Some(ServiceImageError::Stack(MAX_STACK * 2))
        );
        // Unaligned, overlapping, beyond the stack.
        assert_eq!(patch(seg(0), 0x20_0001), Some(ServiceImageError::Layout(0)));
        assert_eq!(patch(seg(1), 0x20_1000), Some(ServiceImageError::Layout(1)));
        assert_eq!(
            patch(seg(1), STACK_TOP - 0x1000),
            Some(ServiceImageError::Layout(1))
        );
        assert_eq!(patch(seg(1) + 8, 0), Some(ServiceImageError::Layout(1)));
        // Bytes beyond the entry or beyond the segment's pages.
        assert_eq!(
            patch(seg(1) + 24, 1 << 20),
            Some(ServiceImageError::Data(1))
        );
        assert_eq!(
            patch(seg(0) + 16, 1 << 40),
            Some(ServiceImageError::Data(0))
        );
        assert_eq!(
            ServiceImage::decode(&good[..100]).err(),
            Some(ServiceImageError::Truncated)
        );
    }

    proptest! {
        /// Arbitrary bytes, and damaged valid entries: decoding never panics, and what it
        /// accepts has in-bounds, ordered pages below the stack.
        #[test]
        fn decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600),
                                 flips in proptest::collection::vec((0usize..400, any::<u8>()), 0..8)) {
            let _ = ServiceImage::decode(&bytes);
            let mut damaged = sample();
            for (at, value) in flips {
                if let Some(b) = damaged.get_mut(at) { *b = value; }
            }
            if let Ok(image) = ServiceImage::decode(&damaged) {
                let mut last = 0;
                for page in image.pages() {
                    prop_assert!(page.ipa >= last && page.data.len() <= PAGE as usize);
                    prop_assert!(page.ipa + PAGE <= STACK_TOP - image.header.stack_size);
                    last = page.ipa + PAGE;
                }
            }
        }
    }
}

//! Service ELF images: checking an image's header and segments, and the pages it occupies in
//! the service's address space with their contents and permissions.

use super::LoadError;
use super::{PAGE, STACK_PAGES, STACK_TOP};
use capvisor_kernel::stage2::S2Access;
use elf::ElfBytes;
use elf::abi::{EM_AARCH64, PF_R, PF_W, PF_X, PT_LOAD};
use elf::endian::LittleEndian;
use heapless::Vec;

/// The most loadable segments a service image may have.
const MAX_SEGMENTS: usize = 8;
/// The largest segment (memory size) accepted.
const MAX_SEGMENT: u64 = 64 << 20;

/// A loadable segment: `data` at `start`, then zeroes up to `start + size`.
#[derive(Clone, Copy, Debug)]
struct Segment {
    start: u64,
    size: u64,
    data: &'static [u8],
    access: S2Access,
}

impl Segment {
    fn end(&self) -> u64 {
        self.start + self.size
    }

    fn touches(&self, page: u64) -> bool {
        self.start < page + PAGE && page < self.end()
    }

    fn first_page(&self) -> u64 {
        self.start & !(PAGE - 1)
    }
}

/// A checked service image.
#[derive(Debug)]
pub struct ServiceImage {
    /// The entry point.
    pub entry: u64,
    segments: Vec<Segment, MAX_SEGMENTS>,
}

impl ServiceImage {
    /// Checks an AArch64 ELF64 file: bounded segments, all below the stack.
    ///
    /// # Errors
    /// [`LoadError::Elf`] for a malformed file, [`LoadError::Layout`] for a misplaced segment.
    pub fn parse(bytes: &'static [u8]) -> Result<Self, LoadError> {
        let file =
            ElfBytes::<LittleEndian>::minimal_parse(bytes).map_err(|_| LoadError::Elf("header"))?;
        if file.ehdr.e_machine != EM_AARCH64 || file.ehdr.class != elf::file::Class::ELF64 {
            return Err(LoadError::Elf("not an AArch64 ELF64 file"));
        }
        let program = file
            .segments()
            .ok_or(LoadError::Elf("no program headers"))?;
        let mut segments = Vec::new();
        for header in program.iter().filter(|s| s.p_type == PT_LOAD) {
            let data = file
                .segment_data(&header)
                .map_err(|_| LoadError::Elf("segment data"))?;
            let (start, size) = (header.p_vaddr, header.p_memsz);
            let end = start.checked_add(size).ok_or(LoadError::Layout(start))?;
            if size > MAX_SEGMENT
                || data.len() as u64 > size
                || end > STACK_TOP - STACK_PAGES * PAGE
            {
                return Err(LoadError::Layout(start));
            }
            let access = S2Access {
                read: header.p_flags & PF_R != 0,
                write: header.p_flags & PF_W != 0,
                exec: header.p_flags & PF_X != 0,
            };
            segments
                .push(Segment {
                    start,
                    size,
                    data,
                    access,
                })
                .map_err(|_| LoadError::Elf("too many segments"))?;
        }
        Ok(Self {
            entry: file.ehdr.e_entry,
            segments,
        })
    }

    /// Every page the segments occupy, once each, with the union of the permissions of the
    /// segments in it (two segments may share a page: the end of one, the start of the next).
    pub fn pages(&self) -> impl Iterator<Item = (u64, S2Access)> + '_ {
        self.segments
            .iter()
            .enumerate()
            .flat_map(move |(i, segment)| {
                let pages = (segment.end() - segment.first_page()).div_ceil(PAGE);
                (0..pages)
                    .map(move |n| segment.first_page() + n * PAGE)
                    .filter(move |&page| !self.segments[..i].iter().any(|s| s.touches(page)))
                    .map(move |page| (page, self.access(page)))
            })
    }

    fn access(&self, page: u64) -> S2Access {
        self.segments
            .iter()
            .filter(|s| s.touches(page))
            .fold(S2Access::default(), |a, s| S2Access {
                read: a.read || s.access.read,
                write: a.write || s.access.write,
                exec: a.exec || s.access.exec,
            })
    }

    /// Copies into `dest` (the zeroed page that will appear at `page`) the parts of the segments
    /// that fall in it.
    pub fn fill(&self, page: u64, dest: &mut [u8; PAGE as usize]) {
        for segment in self.segments.iter().filter(|s| s.touches(page)) {
            let data_end = segment.start + segment.data.len() as u64;
            let copy_start = page.max(segment.start);
            let copy_end = (page + PAGE).min(data_end);
            if copy_start < copy_end {
                let source =
                    (copy_start - segment.start) as usize..(copy_end - segment.start) as usize;
                let target = (copy_start - page) as usize..(copy_end - page) as usize;
                if let (Some(s), Some(d)) = (segment.data.get(source), dest.get_mut(target)) {
                    d.copy_from_slice(s);
                }
            }
        }
    }
}

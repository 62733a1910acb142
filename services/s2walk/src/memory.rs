//! The memory a walk reads its descriptors from: untrusted, and possibly absent.

use crate::regs::OutputAddr;

/// A descriptor read that could not be satisfied; the walk reports it as a synchronous external
/// abort on the translation table walk (FSC 0b0101LL), as the Arm ARM's FetchDescriptor does when
/// the memory system returns an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReadError {
    /// No memory backs this address.
    Unbacked,
}

/// Memory that holds a stage-2 table tree, addressed in the walk's output address space.
///
/// The EL0 service reads a guest hypervisor's tables from that guest's memory; the CLI and the
/// tests supply the bytes they were given. Reads are 8-byte, little-endian, and always 8-byte
/// aligned (descriptor addresses are multiples of 8).
pub trait GuestMemory {
    /// Reads the 64-bit little-endian word at `addr`.
    ///
    /// # Errors
    /// [`ReadError::Unbacked`] when any of the 8 bytes is not backed by memory.
    fn read_u64(&self, addr: OutputAddr) -> Result<u64, ReadError>;
}

impl<M: GuestMemory + ?Sized> GuestMemory for &M {
    fn read_u64(&self, addr: OutputAddr) -> Result<u64, ReadError> {
        (**self).read_u64(addr)
    }
}

/// One contiguous run of little-endian bytes starting at `base`.
#[derive(Clone, Copy, Debug)]
pub struct SliceMemory<'a> {
    base: u64,
    bytes: &'a [u8],
}

impl<'a> SliceMemory<'a> {
    /// Memory holding `bytes` at `base`.
    #[must_use]
    pub const fn new(base: OutputAddr, bytes: &'a [u8]) -> Self {
        Self {
            base: base.get(),
            bytes,
        }
    }
}

impl GuestMemory for SliceMemory<'_> {
    fn read_u64(&self, addr: OutputAddr) -> Result<u64, ReadError> {
        let offset = addr
            .get()
            .checked_sub(self.base)
            .ok_or(ReadError::Unbacked)?;
        let start = usize::try_from(offset).map_err(|_| ReadError::Unbacked)?;
        let end = start.checked_add(8).ok_or(ReadError::Unbacked)?;
        let word = self.bytes.get(start..end).ok_or(ReadError::Unbacked)?;
        let mut raw = [0u8; 8];
        raw.copy_from_slice(word);
        Ok(u64::from_le_bytes(raw))
    }
}

/// Memory made of 64-bit words starting at `base` (the fastest backend; used by the benchmark
/// and by callers that keep tables as word arrays).
#[derive(Clone, Copy, Debug)]
pub struct WordMemory<'a> {
    base: u64,
    words: &'a [u64],
}

impl<'a> WordMemory<'a> {
    /// Memory holding `words` (each little-endian in guest memory) at `base`.
    #[must_use]
    pub const fn new(base: OutputAddr, words: &'a [u64]) -> Self {
        Self {
            base: base.get(),
            words,
        }
    }
}

impl GuestMemory for WordMemory<'_> {
    #[inline]
    fn read_u64(&self, addr: OutputAddr) -> Result<u64, ReadError> {
        let offset = addr.get().wrapping_sub(self.base);
        if offset & 7 != 0 {
            return Err(ReadError::Unbacked);
        }
        let index = usize::try_from(offset >> 3).map_err(|_| ReadError::Unbacked)?;
        self.words.get(index).copied().ok_or(ReadError::Unbacked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_memory_reads_only_inside() {
        let bytes = [1, 2, 3, 4, 5, 6, 7, 8, 9];
        let mem = SliceMemory::new(OutputAddr::new(0x1000), &bytes);
        assert_eq!(
            mem.read_u64(OutputAddr::new(0x1000)),
            Ok(0x0807_0605_0403_0201)
        );
        assert_eq!(
            mem.read_u64(OutputAddr::new(0x1001)),
            Ok(0x0908_0706_0504_0302)
        );
        assert_eq!(
            mem.read_u64(OutputAddr::new(0x1002)),
            Err(ReadError::Unbacked)
        );
        assert_eq!(
            mem.read_u64(OutputAddr::new(0xfff)),
            Err(ReadError::Unbacked)
        );
        assert_eq!(
            mem.read_u64(OutputAddr::new(u64::MAX)),
            Err(ReadError::Unbacked)
        );
    }

    #[test]
    fn word_memory_reads_only_inside() {
        let words = [5, 6];
        let mem = WordMemory::new(OutputAddr::new(0x2000), &words);
        assert_eq!(mem.read_u64(OutputAddr::new(0x2008)), Ok(6));
        assert_eq!(
            mem.read_u64(OutputAddr::new(0x2010)),
            Err(ReadError::Unbacked)
        );
        assert_eq!(
            mem.read_u64(OutputAddr::new(0x1ff8)),
            Err(ReadError::Unbacked)
        );
    }
}

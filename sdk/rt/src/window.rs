//! Windows: ranges of a service's own address space where it maps memory to read or write it —
//! frames a guest's RAM is made of (the memory manager), pages lent to it (s2walk), device
//! regions. The one `unsafe` access to such memory is here, behind a bounds-checked API, so that
//! system services can `#![forbid(unsafe_code)]`.
//!
//! Why this is sound: a [`Window`] may only cover [`WINDOW_AREAS`], parts of every service's
//! address space where neither the kernel nor this runtime place anything (code and data are
//! linked at 2 MiB, the boot-info page and its payloads are at `BOOT_INFO`, stacks end at
//! `0x40_0000_0000` and IPC buffers follow it: all outside). No Rust object lives there, and a
//! window never hands out a reference into it: every access is a raw read or write of bytes
//! the service does not otherwise alias. An access to a part nothing is mapped at (or mapped
//! read-only, for a write) is a stage-2 fault of the service — the kernel stops it, or its fault
//! handler recovers (s2walk) — never a write into another object. Memory that someone else also
//! writes (a guest's RAM, a lender's page) is read with volatile loads, so each read is made
//! once, as written.
//!
//! On the host, windows are a sparse byte map per thread (unwritten bytes read as zero, as a
//! fresh frame does), which tests read with [`host_read`].

use core::ops::Range;

/// The parts of a service's address space that windows may cover.
pub const WINDOW_AREAS: [Range<u64>; 3] = [
    0x10_0000_0000..0x20_0000_0000,
    0x30_0000_0000..0x3F_F000_0000,
    0x40_1000_0000..0x80_0000_0000,
];

// The boot-info page and its payloads (`BOOT_INFO`, below 0x30_0000_0000) are no window.
const _: () = {
    let boot_info = capvisor_ipc::bootinfo::BOOT_INFO;
    assert!(boot_info >= WINDOW_AREAS[0].end && boot_info < WINDOW_AREAS[1].start);
};

/// A window was asked where none may be, or an access fell outside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowError {
    /// The range is not inside one of [`WINDOW_AREAS`].
    NotInWindowArea,
    /// The access is not inside the window (or, for a word, not 8-byte aligned).
    OutOfBounds,
}

/// `len` bytes of this service's address space from `base`, where it maps memory (see the
/// module's documentation).
#[derive(Debug, PartialEq, Eq)]
pub struct Window {
    base: u64,
    len: u64,
}

impl Window {
    /// The window `[base, base + len)`.
    ///
    /// # Errors
    /// `NotInWindowArea` unless the range is inside one of [`WINDOW_AREAS`].
    pub fn new(base: u64, len: u64) -> Result<Self, WindowError> {
        let end = base.checked_add(len).ok_or(WindowError::NotInWindowArea)?;
        if WINDOW_AREAS
            .iter()
            .any(|area| area.start <= base && end <= area.end)
        {
            Ok(Self { base, len })
        } else {
            Err(WindowError::NotInWindowArea)
        }
    }

    /// Its first address.
    #[must_use]
    pub const fn base(&self) -> u64 {
        self.base
    }

    /// Its size in bytes.
    #[must_use]
    pub const fn len(&self) -> u64 {
        self.len
    }

    /// Whether it is empty.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The address of `[offset, offset + length)`, if that is inside the window.
    fn at(&self, offset: u64, length: u64) -> Result<u64, WindowError> {
        match offset.checked_add(length) {
            Some(end) if end <= self.len => Ok(self.base + offset),
            _ => Err(WindowError::OutOfBounds),
        }
    }

    /// Reads the word at byte `offset`, once (volatile: another party may be writing it; one
    /// aligned word reads as one value or the other).
    ///
    /// # Errors
    /// `OutOfBounds` when the word is not inside the window or `offset` is not a multiple of 8.
    pub fn read_u64(&self, offset: u64) -> Result<u64, WindowError> {
        if !offset.is_multiple_of(8) {
            return Err(WindowError::OutOfBounds);
        }
        let address = self.at(offset, 8)?;
        Ok(imp::read_u64(address))
    }

    /// Writes `bytes` at byte `offset`, one volatile byte store each (for a few bytes that a
    /// guest may be reading).
    ///
    /// # Errors
    /// `OutOfBounds` (nothing written) when they do not fit inside the window.
    pub fn write_volatile(&mut self, offset: u64, bytes: &[u8]) -> Result<(), WindowError> {
        let address = self.at(offset, bytes.len() as u64)?;
        imp::write_volatile(address, bytes);
        Ok(())
    }

    /// Copies `bytes` to byte `offset` (a bulk copy, for payloads written before anyone reads
    /// them).
    ///
    /// # Errors
    /// `OutOfBounds` (nothing written) when they do not fit inside the window.
    pub fn copy_from(&mut self, offset: u64, bytes: &[u8]) -> Result<(), WindowError> {
        let address = self.at(offset, bytes.len() as u64)?;
        imp::copy(address, bytes);
        Ok(())
    }
}

#[cfg(target_os = "none")]
mod imp {
    pub(super) fn read_u64(address: u64) -> u64 {
        // SAFETY: (1) `Window::at` checked that the word lies inside the window, hence inside
        // `WINDOW_AREAS`, where no Rust object lives (module documentation), so no reference
        // aliases it; (2) `read_u64` checked 8-byte alignment; (3) if nothing is mapped there
        // the load faults to the kernel instead of reading anything else.
        unsafe { (address as *const u64).read_volatile() }
    }

    pub(super) fn write_volatile(address: u64, bytes: &[u8]) {
        for (n, byte) in bytes.iter().enumerate() {
            // SAFETY: as in `read_u64` (1) and (3): every byte is inside the window, which no
            // Rust object overlaps; a byte store has no alignment requirement.
            unsafe { ((address + n as u64) as *mut u8).write_volatile(*byte) };
        }
    }

    pub(super) fn copy(address: u64, bytes: &[u8]) {
        // SAFETY: (1) the destination `[address, address + bytes.len())` is inside the window
        // (`Window::at`), in `WINDOW_AREAS`, where no Rust object lives, so it cannot overlap
        // `bytes`, which is one; (2) byte copies need no alignment; (3) an unmapped destination
        // faults to the kernel instead of writing anything else.
        unsafe {
            core::ptr::copy_nonoverlapping(bytes.as_ptr(), address as *mut u8, bytes.len());
        }
    }
}

#[cfg(not(target_os = "none"))]
mod imp {
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    std::thread_local! {
        /// The window areas of the host's stand-in address space: written bytes only.
        static MEMORY: RefCell<BTreeMap<u64, u8>> = const { RefCell::new(BTreeMap::new()) };
    }

    pub(super) fn read_u64(address: u64) -> u64 {
        let mut bytes = [0; 8];
        for (n, byte) in bytes.iter_mut().enumerate() {
            *byte = super::host_read(address + n as u64);
        }
        u64::from_le_bytes(bytes)
    }

    pub(super) fn write_volatile(address: u64, bytes: &[u8]) {
        copy(address, bytes);
    }

    pub(super) fn copy(address: u64, bytes: &[u8]) {
        MEMORY.with_borrow_mut(|memory| {
            for (n, byte) in bytes.iter().enumerate() {
                memory.insert(address + n as u64, *byte);
            }
        });
    }

    pub(super) fn read(address: u64) -> u8 {
        MEMORY.with_borrow(|memory| memory.get(&address).copied().unwrap_or(0))
    }
}

/// The byte at `address` of this thread's host stand-in windows (0 if never written).
#[cfg(not(target_os = "none"))]
#[must_use]
pub fn host_read(address: u64) -> u8 {
    imp::read(address)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_lies_inside_a_window_area() {
        assert!(Window::new(0x30_0000_0000, 0x20_0000).is_ok());
        assert!(Window::new(0x10_0000_0000, 4096).is_ok());
        // The boot-info page, the stacks, the IPC buffers, code: none is a window.
        for base in [
            capvisor_ipc::bootinfo::BOOT_INFO,
            0x3F_FFFF_0000,
            0x40_0010_0000,
            0x20_0000,
        ] {
            assert_eq!(Window::new(base, 4096), Err(WindowError::NotInWindowArea));
        }
        // Nor a range that starts in one and runs out of it, or wraps.
        assert_eq!(
            Window::new(0x3F_EFFF_F000, 0x2000),
            Err(WindowError::NotInWindowArea)
        );
        assert_eq!(
            Window::new(u64::MAX - 10, 4096),
            Err(WindowError::NotInWindowArea)
        );
    }

    #[test]
    fn accesses_stay_inside_the_window() {
        let mut window = Window::new(0x30_0000_0000, 4096).unwrap();
        window.copy_from(4088, &[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
        assert_eq!(window.read_u64(4088), Ok(0x0807_0605_0403_0201));
        assert_eq!(
            window.copy_from(4089, &[0; 8]),
            Err(WindowError::OutOfBounds)
        );
        assert_eq!(
            window.write_volatile(u64::MAX, &[1]),
            Err(WindowError::OutOfBounds)
        );
        assert_eq!(window.read_u64(4096), Err(WindowError::OutOfBounds));
        assert_eq!(window.read_u64(4), Err(WindowError::OutOfBounds));
        // A refused access wrote nothing.
        assert_eq!(host_read(0x30_0000_1000), 0);
        window.write_volatile(0, &[0xab]).unwrap();
        assert_eq!(host_read(0x30_0000_0000), 0xab);
    }
}

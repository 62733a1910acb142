//! Where things go: the slots of each service's CNode (the layout the kernel made at boot before
//! init did, kept so services find what they found), and the addresses of the boot-info region.
//!
//! - A service's CNode has 512 slots ([`SERVICE_CNODE_BITS`]): slot 1 itself, 2 its
//!   AddressSpace, 3 its Thread, [`FIRST_GRANT`]… its *window* (its own endpoint first, when
//!   anyone calls it, then what its manifest grants and what it needs for guests and devices),
//!   [`FIRST_FRAME`]… its frames (code and data pages, stack, IPC buffer); the rest is free.
//! - In an image whose manifest does not start with init, the first service has the root's
//!   layout it had when it was the kernel's root: 1024 slots ([`ROOT_CNODE_BITS`]), slot 4
//!   IrqControl, 5–63 the RAM init leaves ([`ROOT_RAM`]), its window at [`ROOT_GRANTS`], free
//!   slots [`ROOT_FREE`]; its frames stay in init's CNode.
//! - Supervised images: the first service is init itself, whose grants go into plan slots.

use capvisor_ipc::bootinfo::BOOT_INFO;

/// Radix bits of a service's CNode (512 slots).
pub const SERVICE_CNODE_BITS: u64 = 9;
/// Radix bits of the root-compatible first service's CNode (1024 slots).
pub const ROOT_CNODE_BITS: u64 = 10;
/// log2 of a service's AddressSpace object: its record, root table and 62 table pages (room for
/// 62 distinct 2 MiB regions mapped in pages, or 62 GiB in blocks), 256 KiB.
pub const SERVICE_SPACE_BITS: u64 = 18;
/// The first slot of a service's window.
pub const FIRST_GRANT: u64 = 4;
/// The first slot of a service's frames.
pub const FIRST_FRAME: u64 = 64;
/// The root-compatible service's window (30 slots, as the kernel's root had).
pub const ROOT_GRANTS: u64 = 992;
/// Its window's length.
const ROOT_GRANT_SLOTS: u64 = 30;
/// Where the root-compatible service's RAM untyped go.
pub const ROOT_RAM: (u64, u64) = (5, 64);
/// The root-compatible service's free slots.
pub const ROOT_FREE: (u64, u64) = (64, 976);
/// Plan slots pages pass through on their way to a service's CNode; a `Pages` step that moves
/// its pages makes at most this many.
pub const SCRATCH_SLOTS: u32 = 64;
/// Where a device holder's copy of the platform device tree is mapped (at most 1 MiB, after the
/// boot-info page and the command lines).
pub const DTB_IPA: u64 = BOOT_INFO + (1 << 20);
/// Where a memory manager's guest payloads are mapped, each on 2 MiB blocks of its own.
pub const PAYLOAD_IPA: u64 = BOOT_INFO + (2 << 20);

/// A service's capability window: slots its boot capabilities fill, in order.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    /// Its first slot (the service's own endpoint).
    pub base: u64,
    size: u64,
    /// The next free offset (0 is the endpoint's).
    next: u64,
}

impl Window {
    /// The window of manifest service `index`.
    #[must_use]
    pub const fn of(index: usize, supervised: bool) -> Self {
        let (base, size) = if index == 0 && !supervised {
            (ROOT_GRANTS, ROOT_GRANT_SLOTS)
        } else {
            (FIRST_GRANT, FIRST_FRAME - FIRST_GRANT)
        };
        Self {
            base,
            size,
            next: 1,
        }
    }

    /// Its next free slot.
    pub fn take(&mut self) -> Option<u64> {
        (self.next < self.size).then(|| {
            self.next += 1;
            self.base + self.next - 1
        })
    }

    /// Reserves `count` slots and returns the first.
    pub fn reserve(&mut self, count: u64) -> Option<u64> {
        (self.next + count <= self.size).then(|| {
            self.next += count;
            self.base + self.next - count
        })
    }
}

/// log2 of a guest's VM object: its record, root table and a table budget of one page per 512
/// bytes of guest RAM (enough to map all of it in 4 KiB pages, 512 per table), at least 64 KiB
/// and at most 16 MiB.
#[must_use]
pub fn vm_bits(ram: u64) -> u64 {
    let bytes = (ram / 512).clamp(64 << 10, 16 << 20);
    u64::from(bytes.next_power_of_two().trailing_zeros())
}

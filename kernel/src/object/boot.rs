//! Creating the root service's thread with its initial capabilities.
//!
//! The root thread gets a CNode of [`ROOT_CNODE_SLOTS`] slots, an address space, the priority the
//! glue gives ([`RootBoot::priority`]) with maximum priority 255, and these capabilities (all rights, no badge, each a root of the
//! derivation tree):
//!
//! | slot | capability |
//! |---|---|
//! | [`RootLayout::CNODE`] (1) | its own CNode |
//! | [`RootLayout::SPACE`] (2) | its own AddressSpace |
//! | [`RootLayout::THREAD`] (3) | its own Thread |
//! | [`RootLayout::IRQ_CONTROL`] (4) | IrqControl |
//! | 5 … | one Untyped per RAM range, in the order given |
//! | then | one device Untyped per device region, in the order given |
//! | then | one read-only 2 MiB Frame per block of the image ([`RootBoot::image`]) |
//!
//! [`RootLayout`] reports where each group starts and the first free slot; the glue passes those
//! to the root service (init: its `RootInfo` page), then loads its code into pages and maps them
//! through the same [`Effects`] the kernel uses. The root's own objects and the untyped records
//! live in [`RootBoot::kernel_memory`], which the glue sets aside before giving the rest of RAM to
//! the root: boot-time objects have no origin and are never freed.
//!
//! The image's frames are the one way the root reads the image and hands parts of it on (a
//! guest's kernel to its memory manager): each capability has `READ` only, so no mapping of the
//! image is ever writable, and no memory is paid for them (they are not RAM the kernel owns).

use capvisor_ipc::abi::KernelError;
use capvisor_ipc::cap::{Rights, root};
use capvisor_ipc::types::{Ipa, PhysAddr};

use super::capability::{
    Capability, DeviceAttributes, FrameCap, FrameMemory, FrameSize, Object, ObjectType,
};
use super::cspace::{SLOT_BYTES, SlotId};
use super::effects::Effects;
use super::memory::{PAGE, SpaceRef, ThreadRef};
use super::thread::Thread;
use super::untyped::Untyped;
use super::{CNodeRef, Kernel};

/// Slots in the root CNode.
pub const ROOT_CNODE_SLOTS: usize = root::CNODE_SLOTS as usize;
/// The size of the image's frames given to the root.
pub const IMAGE_BLOCK: u64 = 2 << 20;
/// The least bytes of the root's address space: its record, root table and table budget.
pub const ROOT_SPACE_BYTES: u64 = 1 << ObjectType::DEFAULT_SPACE_BITS;

/// A RAM range the root service may retype.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RootRam {
    /// First byte (4 KiB aligned).
    pub base: PhysAddr,
    /// Bytes (a multiple of 4 KiB).
    pub size: u64,
}

/// A device region the root service may retype into device frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RootDevice {
    /// First byte (4 KiB aligned).
    pub base: PhysAddr,
    /// Bytes (a multiple of 4 KiB).
    pub size: u64,
    /// The memory types its frames may be mapped with.
    pub attributes: DeviceAttributes,
}

/// What the glue knows about the root service when it creates it.
#[derive(Debug, Clone, Copy)]
pub struct RootBoot<'a> {
    /// RAM the root service may use (not the kernel's, not its own image's).
    pub ram: &'a [RootRam],
    /// Device regions (from the device tree).
    pub devices: &'a [RootDevice],
    /// Entry point (IPA in its space).
    pub entry: u64,
    /// Initial stack pointer.
    pub stack: u64,
    /// IPC buffer address (0: none).
    pub ipc_buffer: u64,
    /// Its priority (its maximum priority is always 255, so it can create any thread).
    pub priority: u8,
    /// RAM for the root's own objects (its CNode, address space, thread and the untyped records),
    /// [`RootBoot::kernel_bytes`] long, inside the frame table's memory and outside `ram`.
    pub kernel_memory: RootRam,
    /// Bytes of the root's address space (a power of two, at least [`ROOT_SPACE_BYTES`]): its
    /// record, root table, and the table budget for what the glue maps into it.
    pub space_bytes: u64,
    /// The image the root reads, as read-only frames of [`IMAGE_BLOCK`] bytes: aligned to them
    /// and a multiple of them in size ([`RootRam::NONE`]: none). It lies outside `ram`.
    pub image: RootRam,
}

impl RootRam {
    /// No memory.
    pub const NONE: Self = Self {
        base: PhysAddr::new(0),
        size: 0,
    };
}

impl RootBoot<'_> {
    /// The bytes of [`RootBoot::kernel_memory`] a root with `regions` untyped regions (RAM and
    /// device) and an address space of `space_bytes` needs.
    #[must_use]
    pub const fn kernel_bytes(regions: usize, space_bytes: u64) -> u64 {
        ROOT_CNODE_SLOTS as u64 * SLOT_BYTES + space_bytes + PAGE + regions as u64 * PAGE
    }

    /// The root space's bytes for a root that has `pages` pages mapped into it: a table page
    /// per 512 pages, eight more for the separate regions (image, stack, IPC buffer, boot
    /// information), its record and root table, rounded up to a power of two.
    #[must_use]
    pub const fn space_bytes_for(pages: u64) -> u64 {
        let tables = pages.div_ceil(512) + 8 + 2;
        let bytes = (tables * PAGE).next_power_of_two();
        if bytes < ROOT_SPACE_BYTES {
            ROOT_SPACE_BYTES
        } else {
            bytes
        }
    }
}

/// Where the root service's capabilities are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RootLayout {
    /// The root thread.
    pub thread: ThreadRef,
    /// Its address space (the glue maps its image here).
    pub space: SpaceRef,
    /// Its CNode.
    pub cnode: CNodeRef,
    /// Slot of the first RAM untyped.
    pub first_untyped: u64,
    /// Slot of the first device untyped.
    pub first_device: u64,
    /// Slot of the first of the image's frames.
    pub first_image: u64,
    /// The first slot after them.
    pub first_free: u64,
}

impl RootLayout {
    /// The root's own CNode.
    pub const CNODE: u64 = root::CNODE;
    /// The root's own AddressSpace.
    pub const SPACE: u64 = root::SPACE;
    /// The root's own Thread.
    pub const THREAD: u64 = root::THREAD;
    /// IrqControl.
    pub const IRQ_CONTROL: u64 = root::IRQ_CONTROL;
    /// The first untyped.
    pub const FIRST_UNTYPED: u64 = root::FIRST_UNTYPED;
}

fn check_region(base: PhysAddr, size: u64) -> Result<(), KernelError> {
    if !base.raw().is_multiple_of(4096) || !size.is_multiple_of(4096) {
        return Err(KernelError::AlignmentError);
    }
    if size == 0 || base.raw().checked_add(size).is_none() {
        return Err(KernelError::RangeError);
    }
    Ok(())
}

impl Kernel {
    /// Creates the root service's thread, ready to run, with the capabilities in the module doc.
    ///
    /// # Errors
    /// [`KernelError::IllegalOperation`] when a thread already exists; `AlignmentError`/`RangeError`
    /// for a bad region; `RangeError` when the regions do not fit in the root CNode;
    /// `BadAddress`/`AlignmentError` for the IPC buffer; the glue's errors creating the space.
    pub fn create_root_thread(
        &mut self,
        boot: &RootBoot<'_>,
        fx: &mut impl Effects,
    ) -> Result<RootLayout, KernelError> {
        if self.booted {
            return Err(KernelError::IllegalOperation);
        }
        for region in boot.ram {
            check_region(region.base, region.size)?;
        }
        for region in boot.devices {
            check_region(region.base, region.size)?;
        }
        let regions = boot.ram.len() + boot.devices.len();
        let image = boot.image;
        if !(image.base.raw() | image.size).is_multiple_of(IMAGE_BLOCK) {
            return Err(KernelError::AlignmentError);
        }
        let blocks = (image.size / IMAGE_BLOCK) as usize;
        if RootLayout::FIRST_UNTYPED as usize + regions + blocks > ROOT_CNODE_SLOTS {
            return Err(KernelError::RangeError);
        }
        check_region(boot.kernel_memory.base, boot.kernel_memory.size)?;
        let space_bytes = boot.space_bytes;
        if !space_bytes.is_power_of_two() || space_bytes < ROOT_SPACE_BYTES {
            return Err(KernelError::RangeError);
        }
        if boot.kernel_memory.size < RootBoot::kernel_bytes(regions, space_bytes) {
            return Err(KernelError::NotEnoughMemory);
        }
        self.check_ipc_buffer(boot.ipc_buffer)?;
        let mut next = boot.kernel_memory.base.raw();
        let mut take = |bytes: u64| {
            let at = PhysAddr::new(next);
            next += bytes;
            at
        };
        let cnode_bytes = ROOT_CNODE_SLOTS as u64 * SLOT_BYTES;
        let cnode = self.create_cnode(
            take(cnode_bytes),
            cnode_bytes,
            ROOT_CNODE_SLOTS as u32,
            None,
        )?;
        let space = self.create_space(take(space_bytes), space_bytes, false, None, fx)?;
        let thread = self.threads.create(take(PAGE), PAGE, Thread::new(None))?;
        self.booted = true;
        let at = |kernel: &Self, index: u64| kernel.cnodes.get(cnode).and_then(|c| c.slot(index));
        let objects = [
            (RootLayout::CNODE, Object::CNode(cnode)),
            (RootLayout::SPACE, Object::AddressSpace(space)),
            (RootLayout::THREAD, Object::Thread(thread)),
            (RootLayout::IRQ_CONTROL, Object::IrqControl),
        ];
        for (index, object) in objects {
            self.install(at(self, index)?, Capability::new(object), None)?;
        }
        let untyped = boot.ram.iter().map(|r| (r.base, r.size, None));
        let devices = boot
            .devices
            .iter()
            .map(|d| (d.base, d.size, Some(d.attributes)));
        let mut index = RootLayout::FIRST_UNTYPED;
        for (base, size, device) in untyped.chain(devices) {
            let record = Untyped::new(base, size, device, None);
            let object = self.untyped.create(take(PAGE), PAGE, record)?;
            self.install(
                at(self, index)?,
                Capability::new(Object::Untyped(object)),
                None,
            )?;
            index += 1;
        }
        let first_image = index;
        for block in 0..blocks as u64 {
            let frame = FrameCap {
                base: PhysAddr::new(image.base.raw() + block * IMAGE_BLOCK),
                size: FrameSize::Block2M,
                memory: FrameMemory::Ram,
                mapping: None,
            };
            let cap = Capability {
                rights: Rights::READ,
                ..Capability::new(Object::Frame(frame))
            };
            self.install(at(self, index)?, cap, None)?;
            index += 1;
        }
        self.start_root(thread, cnode, space, boot, fx);
        Ok(RootLayout {
            thread,
            space,
            cnode,
            first_untyped: RootLayout::FIRST_UNTYPED,
            first_device: RootLayout::FIRST_UNTYPED + boot.ram.len() as u64,
            first_image,
            first_free: index,
        })
    }

    fn start_root(
        &mut self,
        thread: ThreadRef,
        cnode: CNodeRef,
        space: SpaceRef,
        boot: &RootBoot<'_>,
        fx: &mut impl Effects,
    ) {
        if let Ok(t) = self.threads.get_mut(thread) {
            t.priority = boot.priority;
            t.max_priority = u8::MAX;
            t.cspace = Some(cnode);
            t.ipc_buffer = Ipa::new(boot.ipc_buffer);
            fx.thread_start(&mut t.glue, boot.entry, boot.stack, boot.ipc_buffer);
        }
        // The root is its space's first thread: there is room.
        let _ = self.join_space(thread, space);
        self.make_ready(thread);
    }

    /// The slot of index `index` in `cnode` (for the glue's loader and for tests).
    ///
    /// # Errors
    /// As `CNode::slot`; `Revoked` when the CNode is gone.
    pub fn cnode_slot(&self, cnode: CNodeRef, index: u64) -> Result<SlotId, KernelError> {
        self.cnodes.get(cnode)?.slot(index)
    }

    /// The capability in a slot (for the glue's loader and diagnostics).
    #[must_use]
    pub fn capability(&self, slot: SlotId) -> Option<&Capability> {
        self.slots.cap(slot)
    }
}

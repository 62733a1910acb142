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
//!
//! [`RootLayout`] reports where the untyped ranges start and the first free slot; the glue passes
//! those to the root service (its boot information), then loads its image into frames and maps them
//! through the same [`Effects`] the kernel uses.

use capvisor_ipc::abi::KernelError;
use capvisor_ipc::types::{Ipa, PhysAddr};

use super::arena::{SpaceRef, ThreadRef};
use super::capability::{Capability, DeviceAttributes, Object};
use super::cspace::SlotId;
use super::effects::Effects;
use super::thread::Thread;
use super::untyped::Untyped;
use super::{CNodeRef, Kernel};

/// Slots in the root CNode.
pub const ROOT_CNODE_SLOTS: usize = 1024;

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
    /// The first slot after them.
    pub first_free: u64,
}

impl RootLayout {
    /// The root's own CNode.
    pub const CNODE: u64 = 1;
    /// The root's own AddressSpace.
    pub const SPACE: u64 = 2;
    /// The root's own Thread.
    pub const THREAD: u64 = 3;
    /// IrqControl.
    pub const IRQ_CONTROL: u64 = 4;
    /// The first untyped.
    pub const FIRST_UNTYPED: u64 = 5;
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
        if self.threads.iter::<ThreadRef>().next().is_some() {
            return Err(KernelError::IllegalOperation);
        }
        for region in boot.ram {
            check_region(region.base, region.size)?;
        }
        for region in boot.devices {
            check_region(region.base, region.size)?;
        }
        let regions = boot.ram.len() + boot.devices.len();
        if RootLayout::FIRST_UNTYPED as usize + regions > ROOT_CNODE_SLOTS
            || regions > super::MAX_UNTYPED
        {
            return Err(KernelError::RangeError);
        }
        self.check_ipc_buffer(boot.ipc_buffer)?;
        let cnode = self.create_cnode(ROOT_CNODE_SLOTS)?;
        let space = self.create_space(false, fx)?;
        let thread = self.threads.alloc(Thread::new())?;
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
            let object = self.untyped.alloc(Untyped::new(base, size, device))?;
            self.install(
                at(self, index)?,
                Capability::new(Object::Untyped(object)),
                None,
            )?;
            index += 1;
        }
        self.start_root(thread, cnode, space, boot, fx);
        Ok(RootLayout {
            thread,
            space,
            cnode,
            first_untyped: RootLayout::FIRST_UNTYPED,
            first_device: RootLayout::FIRST_UNTYPED + boot.ram.len() as u64,
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
            t.space = Some(space);
            t.ipc_buffer = Ipa::new(boot.ipc_buffer);
        }
        fx.thread_start(thread, boot.entry, boot.stack, boot.ipc_buffer);
        self.make_ready(thread);
    }

    /// The global slot of index `index` in `cnode` (for the glue's loader and for tests).
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

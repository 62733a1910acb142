//! Untyped memory and `Retype`.
//!
//! An untyped object is a physical range `[base, base + size)` with a watermark: everything below it
//! has been handed out. Retype aligns the watermark up to the object size, charges `count` objects
//! and creates them in consecutive empty destination slots, each capability a child of the invoked
//! untyped capability in the derivation tree and carrying the untyped as its `origin`. Copies of an
//! untyped capability share the one watermark, so memory is never handed out twice.
//!
//! - Frames are the memory itself: frame `i` starts at `base + aligned + i * size`. Frames from RAM
//!   are zeroed by the glue before the capability exists. Device untyped (a device region) retypes
//!   only into device frames (carrying the region's memory types) and smaller device untyped.
//! - Kernel objects live in kernel arenas (see the module root); their charge is bookkeeping.
//! - Everything is checked before anything is created: a failed retype changes nothing.
//! - The watermark returns to 0 when the untyped is revoked and nothing paid from it remains.
//!
//! Invariant: `watermark <= size`.

use capvisor_ipc::abi::KernelError;
use capvisor_ipc::cap::{Badge, Rights};
use capvisor_ipc::types::PhysAddr;

use super::arena::{CNodeRef, UntypedRef};
use super::capability::{
    Capability, DeviceAttributes, FrameCap, FrameMemory, FrameSize, Object, ObjectType,
};
use super::cspace::{self, CNode, SlotId};
use super::effects::Effects;
use super::endpoint::Endpoint;
use super::frame::{Space, Vcpu};
use super::notification::Notification;
use super::thread::Thread;
use super::{Kernel, MAX_CNODES};

/// The most objects one `Retype` creates.
pub const MAX_RETYPE: u64 = 64;

/// Untyped memory.
#[derive(Debug, Clone)]
pub struct Untyped {
    pub(super) base: PhysAddr,
    pub(super) size: u64,
    pub(super) watermark: u64,
    pub(super) device: Option<DeviceAttributes>,
    pub(super) caps: u32,
}

impl Untyped {
    /// An untyped region (RAM when `device` is `None`).
    pub(super) const fn new(base: PhysAddr, size: u64, device: Option<DeviceAttributes>) -> Self {
        Self {
            base,
            size,
            watermark: 0,
            device,
            caps: 0,
        }
    }

    /// Bytes handed out.
    #[must_use]
    pub const fn watermark(&self) -> u64 {
        self.watermark
    }

    /// Size in bytes.
    #[must_use]
    pub const fn size(&self) -> u64 {
        self.size
    }
}

/// Checks that `untyped` can make `request`'s objects; returns log2 of one object's charge.
fn check_request(untyped: &Untyped, request: &Retype) -> Result<u32, KernelError> {
    let kind_ok = match untyped.device {
        Some(_) => matches!(request.kind, ObjectType::DeviceFrame | ObjectType::Untyped),
        None => request.kind != ObjectType::DeviceFrame,
    };
    if !kind_ok {
        return Err(KernelError::InvalidArgument);
    }
    let bits = request.kind.charge(request.size_bits)?;
    let single = matches!(
        request.kind,
        ObjectType::CNode | ObjectType::AddressSpace | ObjectType::Vm
    );
    if request.count == 0 || request.count > MAX_RETYPE || (single && request.count != 1) {
        return Err(KernelError::RangeError);
    }
    Ok(bits)
}

/// Where `count` objects of `1 << bits` bytes go: the first one's offset and the new watermark.
/// The physical address is aligned, not the offset: a 2 MiB frame is 2 MiB-aligned in memory.
fn placement(untyped: &Untyped, bits: u32, count: u64) -> Result<(u64, u64), KernelError> {
    let base = untyped.base.raw();
    let aligned = base
        .checked_add(untyped.watermark)
        .and_then(|pa| pa.checked_next_multiple_of(1u64 << bits))
        .map(|pa| pa - base)
        .ok_or(KernelError::NotEnoughMemory)?;
    let end = (count << bits)
        .checked_add(aligned)
        .filter(|&e| e <= untyped.size);
    Ok((aligned, end.ok_or(KernelError::NotEnoughMemory)?))
}

/// A retype request (the invocation's arguments, decoded).
#[derive(Debug, Clone, Copy)]
pub(super) struct Retype {
    pub kind: ObjectType,
    pub size_bits: u64,
    pub dest: CNodeRef,
    pub first: u64,
    pub count: u64,
}

impl Kernel {
    /// Retypes the untyped capability in `slot`.
    ///
    /// # Errors
    /// `WrongType` (not untyped), `InsufficientRights` (no `WRITE`), `InvalidArgument` (a kind the
    /// untyped cannot make), `RangeError` (size or count), `InvalidSlot`/`SlotOccupied`
    /// (destinations), `NotEnoughMemory` (the untyped, an arena or the slot table is full).
    pub(super) fn retype(
        &mut self,
        slot: SlotId,
        request: Retype,
        fx: &mut impl Effects,
    ) -> Result<(), KernelError> {
        let cap = *self.slots.cap(slot).ok_or(KernelError::EmptySlot)?;
        let Object::Untyped(untyped_ref) = cap.object else {
            return Err(KernelError::WrongType);
        };
        if !cap.rights.contains(Rights::WRITE) {
            return Err(KernelError::InsufficientRights);
        }
        let untyped = self.untyped.get(untyped_ref)?.clone();
        let bits = check_request(&untyped, &request)?;
        let dest = *self.cnodes.get(request.dest)?;
        let slots = self.destination_slots(&dest, request.first, request.count)?;
        let (aligned, end) = placement(&untyped, bits, request.count)?;
        self.check_capacity(request.kind, request.count, request.size_bits)?;
        for (i, &dest_slot) in slots.iter().enumerate() {
            let offset = aligned + ((i as u64) << bits);
            let object = self.create(request, &untyped, untyped.base.raw() + offset, fx)?;
            let new_cap = Capability {
                object,
                rights: Rights::ALL,
                badge: Badge::NONE,
                origin: Some(untyped_ref),
            };
            self.install(dest_slot, new_cap, Some(slot))?;
        }
        if let Ok(u) = self.untyped.get_mut(untyped_ref) {
            u.watermark = end;
        }
        Ok(())
    }

    /// `count` consecutive empty slots of `dest` from index `first`.
    fn destination_slots(
        &self,
        dest: &CNode,
        first: u64,
        count: u64,
    ) -> Result<heapless::Vec<SlotId, { MAX_RETYPE as usize }>, KernelError> {
        let mut slots: heapless::Vec<SlotId, { MAX_RETYPE as usize }> = heapless::Vec::new();
        for i in 0..count {
            let slot = dest.slot(first.checked_add(i).ok_or(KernelError::InvalidSlot)?)?;
            if self.slots.cap(slot).is_some() {
                return Err(KernelError::SlotOccupied);
            }
            slots.push(slot).map_err(|_| KernelError::RangeError)?;
        }
        Ok(slots)
    }

    /// Whether the arenas (and, for a CNode, the slot table) have room.
    fn check_capacity(
        &self,
        kind: ObjectType,
        count: u64,
        size_bits: u64,
    ) -> Result<(), KernelError> {
        let free = match kind {
            ObjectType::Endpoint => self.endpoints.free_entries(),
            ObjectType::Notification => self.notifications.free_entries(),
            ObjectType::Thread => self.threads.free_entries(),
            ObjectType::Untyped => self.untyped.free_entries(),
            ObjectType::Vm | ObjectType::AddressSpace => self.spaces.free_entries(),
            ObjectType::Vcpu => self.vcpus.free_entries(),
            ObjectType::CNode => {
                let range = self.free_slot_range(1 << size_bits);
                usize::from(range.is_some() && self.cnodes.free_entries() > 0)
            }
            ObjectType::Frame | ObjectType::DeviceFrame => usize::MAX,
        };
        if (free as u64) < count {
            Err(KernelError::NotEnoughMemory)
        } else {
            Ok(())
        }
    }

    /// The lowest free range of `len` slots.
    fn free_slot_range(&self, len: usize) -> Option<u16> {
        let mut used: heapless::Vec<(u16, u16), MAX_CNODES> = heapless::Vec::new();
        for (_, cnode) in self.cnodes.iter::<CNodeRef>() {
            let _ = used.push(cnode.range());
        }
        cspace::find_range(&used, len)
    }

    /// Makes one object of the request at physical address `pa`.
    fn create(
        &mut self,
        request: Retype,
        untyped: &Untyped,
        pa: u64,
        fx: &mut impl Effects,
    ) -> Result<Object, KernelError> {
        Ok(match request.kind {
            ObjectType::Endpoint => Object::Endpoint(self.endpoints.alloc(Endpoint::new())?),
            ObjectType::Notification => {
                Object::Notification(self.notifications.alloc(Notification::new())?)
            }
            ObjectType::Thread => Object::Thread(self.threads.alloc(Thread::new())?),
            ObjectType::Vcpu => {
                let vcpu = self.vcpus.alloc(Vcpu {
                    caps: 0,
                    thread: None,
                })?;
                fx.vcpu_created(vcpu);
                Object::Vcpu(vcpu)
            }
            ObjectType::Untyped => {
                let size = 1u64 << request.size_bits;
                Object::Untyped(self.untyped.alloc(Untyped::new(
                    PhysAddr::new(pa),
                    size,
                    untyped.device,
                ))?)
            }
            ObjectType::CNode => Object::CNode(self.create_cnode(1 << request.size_bits)?),
            ObjectType::AddressSpace => Object::AddressSpace(self.create_space(false, fx)?),
            ObjectType::Vm => Object::Vm(self.create_space(true, fx)?),
            ObjectType::Frame | ObjectType::DeviceFrame => {
                let size = FrameSize::from_bits(request.size_bits)?;
                let memory = match untyped.device {
                    Some(attributes) => FrameMemory::Device(attributes),
                    None => {
                        fx.clear_frame(PhysAddr::new(pa), size.bytes());
                        FrameMemory::Ram
                    }
                };
                Object::Frame(FrameCap {
                    base: PhysAddr::new(pa),
                    size,
                    memory,
                    mapping: None,
                })
            }
        })
    }

    /// A CNode of `len` slots.
    pub(super) fn create_cnode(&mut self, len: usize) -> Result<CNodeRef, KernelError> {
        let base = self
            .free_slot_range(len)
            .ok_or(KernelError::NotEnoughMemory)?;
        let len = u16::try_from(len).map_err(|_| KernelError::RangeError)?;
        self.cnodes.alloc(CNode::new(base, len))
    }

    /// An address space, with its VMID from the glue.
    pub(super) fn create_space(
        &mut self,
        vm: bool,
        fx: &mut impl Effects,
    ) -> Result<super::SpaceRef, KernelError> {
        let space = self.spaces.alloc(Space {
            vmid: super::Vmid::default(),
            caps: 0,
            vm,
        })?;
        match fx.space_created(space, vm) {
            Ok(vmid) => {
                if let Ok(s) = self.spaces.get_mut(space) {
                    s.vmid = vmid;
                }
                Ok(space)
            }
            Err(error) => {
                self.spaces.free(space);
                Err(error)
            }
        }
    }

    /// The untyped object a capability names (for tests and diagnostics).
    ///
    /// # Errors
    /// [`KernelError::Revoked`] when it no longer exists.
    pub fn untyped(&self, untyped: UntypedRef) -> Result<&Untyped, KernelError> {
        self.untyped.get(untyped)
    }
}

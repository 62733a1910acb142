//! Untyped memory and `Retype`.
//!
//! An untyped object is a physical range `[base, base + size)` with a watermark: everything below it
//! has been handed out. Retype aligns the watermark up to the object size, places `count` objects
//! there and creates their capabilities in consecutive empty destination slots, each a child of the
//! invoked untyped capability in the derivation tree and carrying the untyped as its `origin`.
//! Copies of an untyped capability share the one object, so memory is never handed out twice.
//!
//! - Kernel objects live in the memory they are placed in (`memory.rs`): a thread's record and
//!   registers, a CNode's slots, a space's tables. A child untyped's record takes one page of the
//!   parent, from the parent's top end downwards (`top`), so records never push a large, aligned
//!   region past an alignment boundary: objects grow up from the watermark, records down from
//!   the top, and the two never cross.
//! - Frames are the memory itself: frame `i` starts at `base + aligned + i * size`. Frames from RAM
//!   are zeroed by the glue before the capability exists. Device untyped (a device region) retypes
//!   only into device frames, carrying the region's memory types.
//! - Everything is checked before anything is created: a failed retype changes nothing.
//! - One retype does bounded work: at most [`MAX_RETYPE`] objects and [`MAX_CLEARED`] bytes of
//!   memory zeroed or initialised.
//!
//! # When memory comes back
//! An untyped counts its `children`: every capability whose origin it is, plus every object from
//! it whose last capability is gone but which still occupies its memory (a dying endpoint,
//! notification or CNode the reaper has not finished, or a child untyped whose own children
//! remain). Only when the count is zero does the watermark go back to 0 (at the next retype, or
//! when a revoke finishes), so a live object is never overlapped. A child untyped whose last
//! capability goes while it still has children stays as a *zombie* record until its last child
//! goes; its own record then goes through the reaper, and only then does its parent's count drop.
//!
//! Invariant: `watermark <= top <= size`; `children` is exactly what the paragraph above counts.

use capvisor_ipc::abi::KernelError;
use capvisor_ipc::cap::{Badge, Rights};
use capvisor_ipc::types::PhysAddr;

use super::Kernel;
use super::capability::{
    Capability, DeviceAttributes, FrameCap, FrameMemory, FrameSize, Object, ObjectType,
};
use super::cspace::{CNode, Dying, SLOT_BITS, SlotId};
use super::effects::{Effects, SpaceGlue, VcpuGlue};
use super::endpoint::Endpoint;
use super::frame::{Space, Vcpu};
use super::memory::ObjectRef;
use super::memory::{CNodeRef, KernelObject, PAGE, PageKind, UntypedRef};
use super::notification::Notification;
use super::thread::Thread;
use super::{MAX_SPACE_THREADS, SpaceRef};

/// The most objects one `Retype` creates.
pub const MAX_RETYPE: u64 = 64;
/// The most bytes one `Retype` zeroes or initialises (one 2 MiB block).
pub const MAX_CLEARED: u64 = 2 << 20;

/// Untyped memory: its record, in a page of its parent (or of the kernel's boot memory).
#[derive(Debug, Clone)]
pub struct Untyped {
    pub(super) base: PhysAddr,
    pub(super) size: u64,
    pub(super) watermark: u64,
    /// Child untyped records take pages from here down.
    pub(super) top: u64,
    pub(super) device: Option<DeviceAttributes>,
    /// RAM made device memory (`UntypedSetMemory`: a cacheable carve-out): its frames are still
    /// zeroed before their capability exists, as RAM's are, so no one reads what it held.
    pub(super) from_ram: bool,
    pub(super) caps: u32,
    /// What it paid for that still lives (module doc).
    pub(super) children: u64,
    /// Of those, how many objects are in the reaper's queue.
    pub(super) queued: u64,
    /// The untyped its record was retyped from (`None` at boot).
    pub(super) origin: Option<UntypedRef>,
    /// Its last capability is gone but children remain: the record lives until they are gone.
    pub(super) zombie: bool,
    pub(super) next_dying: Option<Dying>,
}

impl KernelObject for Untyped {
    const KIND: PageKind = PageKind::Untyped;
}

impl Untyped {
    /// An untyped region (RAM when `device` is `None`), paid from `origin`.
    pub(super) const fn new(
        base: PhysAddr,
        size: u64,
        device: Option<DeviceAttributes>,
        origin: Option<UntypedRef>,
    ) -> Self {
        Self {
            base,
            size,
            watermark: 0,
            top: size,
            device,
            from_ram: false,
            caps: 0,
            children: 0,
            queued: 0,
            origin,
            zombie: false,
            next_dying: None,
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

    /// First byte.
    #[must_use]
    pub const fn base(&self) -> PhysAddr {
        self.base
    }

    /// Live things paid from it.
    #[must_use]
    pub const fn children(&self) -> u64 {
        self.children
    }
}

/// Checks that `untyped` can make `request`'s objects; returns log2 of one object's charge.
fn check_request(untyped: &Untyped, request: &Retype) -> Result<u32, KernelError> {
    let kind_ok = match untyped.device {
        // A device region holds no kernel records, not even a child untyped's.
        Some(_) => request.kind == ObjectType::DeviceFrame,
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
    let initialised = match request.kind {
        // A frame of device memory is not touched (but one of RAM made device memory is
        // zeroed); an untyped's region is not either.
        ObjectType::DeviceFrame if untyped.from_ram => request.count << bits,
        ObjectType::DeviceFrame | ObjectType::Untyped => 0,
        // A space's table pages are zeroed as the glue takes them, not here.
        ObjectType::AddressSpace | ObjectType::Vm => PAGE,
        _ => request.count << bits,
    };
    if initialised > MAX_CLEARED {
        return Err(KernelError::RangeError);
    }
    Ok(bits)
}

/// Where a retype's objects go, as offsets into the untyped.
struct Placement {
    /// The first child untyped record (`Untyped` only): the new top.
    records: u64,
    /// The first object (or child region).
    objects: u64,
    /// The new watermark.
    end: u64,
}

/// Where `count` objects of `1 << bits` bytes go (and, for child untyped, their one-page records,
/// taken from the top). The physical address is aligned, not the offset: a 2 MiB frame is 2
/// MiB-aligned in memory.
fn placement(
    untyped: &Untyped,
    bits: u32,
    count: u64,
    records: bool,
) -> Result<Placement, KernelError> {
    let base = untyped.base.raw();
    let top = if records {
        untyped
            .top
            .checked_sub(count * PAGE)
            .ok_or(KernelError::NotEnoughMemory)?
    } else {
        untyped.top
    };
    let objects = base
        .checked_add(untyped.watermark)
        .and_then(|pa| pa.checked_next_multiple_of(1u64 << bits))
        .map(|pa| pa - base)
        .ok_or(KernelError::NotEnoughMemory)?;
    let end = count
        .checked_mul(1u64 << bits)
        .and_then(|bytes| bytes.checked_add(objects))
        .filter(|&e| e <= top)
        .ok_or(KernelError::NotEnoughMemory)?;
    Ok(Placement {
        records: top,
        objects,
        end,
    })
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
    /// (destinations), `NotEnoughMemory` (the untyped is used up, or its memory cannot hold kernel
    /// objects).
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
        // Nothing paid from it lives any more: its memory is all free again (seL4's reset).
        if let Ok(u) = self.untyped.get_mut(untyped_ref)
            && u.children == 0
        {
            u.watermark = 0;
            u.top = u.size;
        }
        let untyped = self.untyped.get(untyped_ref)?.clone();
        let bits = check_request(&untyped, &request)?;
        let dest = *self.live_cnode(request.dest)?;
        self.check_destination(&dest, request.first, request.count)?;
        let records = request.kind == ObjectType::Untyped;
        let place = placement(&untyped, bits, request.count, records)?;
        self.check_placeable(&untyped, &request, &place, bits)?;
        for i in 0..request.count {
            // Checked above: in range and empty.
            let dest_slot = dest.slot(request.first + i)?;
            let at = |offset: u64| PhysAddr::new(untyped.base.raw() + offset);
            let object_pa = at(place.objects + (i << bits));
            let record_pa = at(place.records + i * PAGE);
            let where_ = (object_pa, record_pa, bits);
            let object = self.create(request, &untyped, untyped_ref, where_, fx)?;
            let new_cap = Capability {
                object,
                rights: Rights::ALL,
                badge: Badge::NONE,
                origin: Some(untyped_ref),
            };
            self.install(dest_slot, new_cap, Some(slot))?;
        }
        if let Ok(u) = self.untyped.get_mut(untyped_ref) {
            u.watermark = place.end;
            if records {
                u.top = place.records;
            }
        }
        Ok(())
    }

    /// Checks that kernel objects (and child untyped records) can live where they would go: in
    /// RAM the frame table covers.
    fn check_placeable(
        &self,
        untyped: &Untyped,
        request: &Retype,
        place: &Placement,
        bits: u32,
    ) -> Result<(), KernelError> {
        let memory = self.untyped.memory();
        let base = untyped.base.raw();
        let covered = match request.kind {
            ObjectType::Frame | ObjectType::DeviceFrame => true,
            ObjectType::Untyped => {
                memory.covers(PhysAddr::new(base + place.records), request.count * PAGE)
            }
            _ => memory.covers(PhysAddr::new(base + place.objects), request.count << bits),
        };
        if covered {
            Ok(())
        } else {
            Err(KernelError::NotEnoughMemory)
        }
    }

    /// Checks that `dest` has `count` consecutive empty slots from index `first`. (Checked, not
    /// collected: a list of up to [`MAX_RETYPE`] slot ids is a kilobyte to move around.)
    fn check_destination(&self, dest: &CNode, first: u64, count: u64) -> Result<(), KernelError> {
        for i in 0..count {
            let slot = dest.slot(first.checked_add(i).ok_or(KernelError::InvalidSlot)?)?;
            if self.slots.cap(slot).is_some() {
                return Err(KernelError::SlotOccupied);
            }
        }
        Ok(())
    }

    /// Makes one object of the request: at `pa` (`1 << bits` bytes), and for a child untyped its
    /// record at `record`.
    fn create(
        &mut self,
        request: Retype,
        untyped: &Untyped,
        origin: UntypedRef,
        (pa, record, bits): (PhysAddr, PhysAddr, u32),
        fx: &mut impl Effects,
    ) -> Result<Object, KernelError> {
        let bytes = 1u64 << bits;
        let origin = Some(origin);
        Ok(match request.kind {
            ObjectType::Endpoint => {
                Object::Endpoint(self.endpoints.create(pa, bytes, Endpoint::new(origin))?)
            }
            ObjectType::Notification => Object::Notification(self.notifications.create(
                pa,
                bytes,
                Notification::new(origin),
            )?),
            ObjectType::Thread => {
                Object::Thread(self.threads.create(pa, bytes, Thread::new(origin))?)
            }
            ObjectType::Vcpu => {
                let vcpu = Vcpu {
                    caps: 0,
                    thread: None,
                    origin,
                    glue: VcpuGlue::RESET,
                };
                let vcpu = self.vcpus.create(pa, bytes, vcpu)?;
                if let Ok(v) = self.vcpus.get_mut(vcpu) {
                    fx.vcpu_created(vcpu, &mut v.glue);
                }
                Object::Vcpu(vcpu)
            }
            ObjectType::Untyped => Object::Untyped(self.untyped.create(
                record,
                PAGE,
                Untyped::new(pa, bytes, untyped.device, origin),
            )?),
            ObjectType::CNode => {
                let slots = 1u32 << (bits - SLOT_BITS).min(request.size_bits as u32);
                Object::CNode(self.create_cnode(pa, bytes, slots, origin)?)
            }
            ObjectType::AddressSpace => {
                Object::AddressSpace(self.create_space(pa, bytes, false, origin, fx)?)
            }
            ObjectType::Vm => Object::Vm(self.create_space(pa, bytes, true, origin, fx)?),
            ObjectType::Frame | ObjectType::DeviceFrame => {
                let size = FrameSize::from_bits(request.size_bits)?;
                let memory = match untyped.device {
                    Some(attributes) => {
                        if untyped.from_ram {
                            fx.clear_frame(pa, size.bytes());
                        }
                        FrameMemory::Device(attributes)
                    }
                    None => {
                        fx.clear_frame(pa, size.bytes());
                        FrameMemory::Ram
                    }
                };
                Object::Frame(FrameCap {
                    base: pa,
                    size,
                    memory,
                    mapping: None,
                })
            }
        })
    }

    /// A CNode of `slots` slots occupying `[pa, pa + bytes)`, its slots empty.
    pub(super) fn create_cnode(
        &mut self,
        pa: PhysAddr,
        bytes: u64,
        slots: u32,
        origin: Option<UntypedRef>,
    ) -> Result<CNodeRef, KernelError> {
        let page = self
            .cnodes
            .memory()
            .page_of(pa)
            .ok_or(KernelError::NotEnoughMemory)?;
        let cnode: CNodeRef = self
            .cnodes
            .create(pa, bytes, CNode::new(page, slots, origin))?;
        // Its slot ids carry its generation: an id outliving it names nothing.
        self.cnodes.get_mut(cnode)?.generation = cnode.generation();
        self.slots.init_cnode(page, cnode.generation(), slots);
        Ok(cnode)
    }

    /// An address space occupying `[pa, pa + bytes)`: its record, then the glue's root table
    /// and table budget.
    pub(super) fn create_space(
        &mut self,
        pa: PhysAddr,
        bytes: u64,
        vm: bool,
        origin: Option<UntypedRef>,
        fx: &mut impl Effects,
    ) -> Result<SpaceRef, KernelError> {
        let record = Space {
            caps: 0,
            vm,
            origin,
            threads: [None; MAX_SPACE_THREADS],
            glue: SpaceGlue {
                vm,
                ..SpaceGlue::default()
            },
        };
        let space = self.spaces.create(pa, bytes, record)?;
        let created = match self.spaces.get_mut(space) {
            Ok(s) => fx.space_created(&mut s.glue, pa, bytes),
            Err(error) => Err(error),
        };
        if let Err(error) = created {
            self.spaces.free(space);
            return Err(error);
        }
        Ok(space)
    }

    /// The untyped object a capability names (for tests and diagnostics).
    ///
    /// # Errors
    /// [`KernelError::Revoked`] when it no longer exists.
    pub fn untyped(&self, untyped: UntypedRef) -> Result<&Untyped, KernelError> {
        self.untyped.get(untyped)
    }

    /// One thing paid from `origin` is gone for good: its count drops, and an untyped whose last
    /// capability went earlier and whose last child this was goes to the reaper to be freed.
    pub(super) fn release_child(&mut self, origin: Option<UntypedRef>) {
        let Some(origin) = origin else { return };
        let Ok(u) = self.untyped.get_mut(origin) else {
            return;
        };
        u.children = u.children.saturating_sub(1);
        if u.children == 0 && u.zombie {
            u.zombie = false;
            let parent = u.origin;
            self.count_queued(parent, true);
            self.enqueue_dying(Dying::Untyped(origin));
        }
    }

    /// A dying object from `origin` joined the reaper's queue (`queued`), or left it.
    pub(super) fn count_queued(&mut self, origin: Option<UntypedRef>, joined: bool) {
        if let Some(u) = origin.and_then(|o| self.untyped.get_mut(o).ok()) {
            if joined {
                u.queued += 1;
            } else {
                u.queued = u.queued.saturating_sub(1);
            }
        }
    }

    /// A CNode that is alive (not dying).
    ///
    /// # Errors
    /// [`KernelError::Revoked`] when it is gone or dying.
    #[inline(always)]
    pub(super) fn live_cnode(&self, cnode: CNodeRef) -> Result<&CNode, KernelError> {
        match self.cnodes.get(cnode) {
            Ok(c) if !c.dying => Ok(c),
            _ => Err(KernelError::Revoked),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn untyped(base: u64, size: u64, watermark: u64) -> Untyped {
        let mut u = Untyped::new(PhysAddr::new(base), size, None, None);
        u.watermark = watermark;
        u
    }

    #[test]
    fn objects_are_aligned_in_memory_and_records_come_from_the_top() {
        let u = untyped(0x4000_1000, 0x40_0000, 0);
        let p = placement(&u, 21, 1, false).unwrap();
        assert_eq!((u.base.raw() + p.objects) % (2 << 20), 0);
        assert_eq!(p.end, p.objects + (2 << 20));
        let p = placement(&u, 16, 2, true).unwrap();
        assert_eq!(p.records, 0x40_0000 - 2 * PAGE);
        assert_eq!((u.base.raw() + p.objects) % (1 << 16), 0);
        // A region as large as can fit beside its record: records do not push it out.
        let big = untyped(0x4000_0000, 0x2000_0000, 0);
        let p = placement(&big, 28, 1, true).unwrap();
        assert_eq!((p.objects, p.end), (0, 1 << 28));
        assert_eq!(
            placement(&u, 22, 1, false).err(),
            Some(KernelError::NotEnoughMemory)
        );
    }

    #[test]
    fn placement_never_goes_below_the_watermark() {
        let u = untyped(0x4000_0000, 0x10_0000, 0x3000);
        let p = placement(&u, 12, 4, false).unwrap();
        assert_eq!(p.objects, 0x3000);
        assert_eq!(p.end, 0x7000);
        let p = placement(&u, 14, 1, true).unwrap();
        assert_eq!(p.records, 0x10_0000 - PAGE);
        assert_eq!(p.objects, 0x4000);
    }

    #[test]
    fn one_retype_zeroes_a_bounded_amount() {
        let u = untyped(0x4000_0000, 1 << 30, 0);
        let request = |kind, size_bits, count| Retype {
            kind,
            size_bits,
            dest: <CNodeRef as super::super::memory::ObjectRef>::from_parts(0, 0),
            first: 1,
            count,
        };
        assert!(check_request(&u, &request(ObjectType::Frame, 21, 1)).is_ok());
        assert_eq!(
            check_request(&u, &request(ObjectType::Frame, 21, 2)),
            Err(KernelError::RangeError)
        );
        assert!(check_request(&u, &request(ObjectType::Frame, 12, 64)).is_ok());
        assert!(check_request(&u, &request(ObjectType::Untyped, 30, 4)).is_ok());
        assert!(check_request(&u, &request(ObjectType::Vm, 24, 1)).is_ok());
    }
}

//! The one fake kernel of host tests: [`FakeKernel`] implements [`Kernel`] with the checks the
//! kernel makes that system services rely on, so a service's policy tested against it is tested
//! against the kernel's rules, not against what its own author assumed:
//! - capabilities live in slots; an empty slot is `EmptySlot`, the wrong kind `WrongType`;
//!   created ones go to the free slots in order ([`Slots`], as on the target);
//! - untyped memory is handed out at its watermark aligned up to each object's size
//!   (`NotEnoughMemory` past its end); a child untyped's record page comes from the parent's top;
//!   device untyped makes device frames only, RAM untyped anything else (`InvalidArgument`);
//! - revoking a capability deletes everything derived from it, with their mappings; revoking an
//!   untyped resets its watermark; a slot may be reused only once it is empty;
//! - `Map` (`kernel/src/object/frame.rs`, rules 1–7): a frame capability maps once; access is
//!   R/W/X and not empty; RAM is mapped write-back only; a cacheable device region write-back
//!   only, with FEAT_S2FWB and CTR_EL0.DIC; Normal non-cacheable only where the region allows
//!   it; nothing but RAM executable; no non-cacheable 2 MiB block; the IPA aligned to the frame;
//! - a vCPU's registers read back what was written; a vCPU whose list registers are full
//!   ([`FakeKernel::fill_list_registers`]) refuses injections until a list register is cleared.
//!
//! Every invocation the kernel carried out is logged, in order, with the service's other effects
//! (calls to other services, console lines: [`FakeKernel::record`]), for tests to compare.

use std::collections::{BTreeMap, BTreeSet};

use capvisor_ipc::abi::{CacheOp, KernelError, VcpuRegister};
use capvisor_ipc::cap::{
    CPtr, Cap, Frame, IrqHandler, ObjectKind, ObjectType, Thread, Untyped, Vcpu, Vm,
};
use capvisor_ipc::memory::MemoryType;

use crate::kernel::{FreeSlots, Kernel, Mappable, Slots, Space};

/// One thing the service had the kernel do (or, [`Op::Service`], did otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op<E> {
    /// An object of `kind` and `1 << size_bits` bytes, from `untyped`, into `slot`.
    Retype {
        /// The untyped it came from.
        untyped: u64,
        /// Its kind.
        kind: ObjectKind,
        /// log2 of its size.
        size_bits: u32,
        /// Where it went.
        slot: u64,
    },
    /// `source` copied into `slot`.
    Copy {
        /// The original.
        source: u64,
        /// The copy.
        slot: u64,
    },
    /// Everything derived from the capability in this slot deleted.
    Revoke(u64),
    /// `frame` mapped at `ipa` of `space`.
    Map {
        /// The frame.
        frame: u64,
        /// Where.
        space: Space,
        /// At which IPA.
        ipa: u64,
        /// R=1 W=2 X=4.
        access: u64,
        /// The memory type.
        memtype: MemoryType,
    },
    /// `frame`'s mapping removed.
    Unmap(u64),
    /// Cache maintenance on a frame, for a VM.
    FrameCache {
        /// The frame.
        frame: u64,
        /// The operation.
        op: CacheOp,
        /// The VM.
        vm: u64,
    },
    /// Cache maintenance on a range of a VM.
    VmCache {
        /// The VM.
        vm: u64,
        /// The operation.
        op: CacheOp,
        /// First IPA.
        ipa: u64,
        /// Bytes.
        size: u64,
    },
    /// A vCPU register written.
    WriteRegister {
        /// The vCPU.
        vcpu: u64,
        /// Which register.
        register: u64,
        /// The value.
        value: u64,
    },
    /// A virtual interrupt made pending.
    InjectIrq {
        /// The vCPU.
        vcpu: u64,
        /// The INTID.
        intid: u32,
        /// Its priority.
        priority: u8,
    },
    /// An interrupt forwarded to a vCPU.
    ForwardIrq {
        /// The interrupt's handler.
        handler: u64,
        /// The vCPU.
        vcpu: u64,
        /// The virtual INTID.
        intid: u32,
    },
    /// A thread resumed.
    Resume(u64),
    /// A thread suspended.
    Suspend(u64),
    /// Something the service did other than invoke the kernel.
    Service(E),
}

/// A device region an untyped covers: the memory types its grant carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeviceMemory {
    /// Its owner maps it cacheable (a cacheable PFNMAP): write-back only.
    pub cacheable: bool,
    /// Normal non-cacheable is allowed besides Device-nGnRE.
    pub allows_uncached: bool,
}

#[derive(Debug, Clone)]
struct UntypedMemory {
    size: u64,
    watermark: u64,
    top: u64,
    device: Option<DeviceMemory>,
}

#[derive(Debug, Clone)]
struct Object {
    kind: ObjectKind,
    parent: Option<u64>,
    untyped: Option<UntypedMemory>,
    /// A frame: its size and, for a device frame, its region's memory types.
    frame_bits: u32,
    device: Option<DeviceMemory>,
    mapped: bool,
}

impl Object {
    const fn new(kind: ObjectKind, parent: Option<u64>) -> Self {
        Self {
            kind,
            parent,
            untyped: None,
            frame_bits: 0,
            device: None,
            mapped: false,
        }
    }
}

/// Slots the fake keeps for reuse (as many as any service's test needs).
const FAKE_REUSED: usize = 64;

const R: u64 = 1;
const W: u64 = 2;
const X: u64 = 4;

/// The fake kernel (module documentation); `E` is the service's other effects, if it logs any.
#[derive(Debug, Clone)]
pub struct FakeKernel<E = ()> {
    slots: Slots<{ FAKE_REUSED }>,
    objects: BTreeMap<u64, Object>,
    log: Vec<Op<E>>,
    registers: BTreeMap<(u64, u64), u64>,
    full: BTreeSet<u64>,
    frames_left: Option<usize>,
    /// FEAT_S2FWB and CTR_EL0.DIC, for a cacheable device mapping.
    fwb_dic: bool,
}

impl<E> FakeKernel<E> {
    /// A kernel with nothing but the free slots `[first, end)` (add capabilities with
    /// [`FakeKernel::with_untyped`] and friends); the platform has FEAT_S2FWB and CTR_EL0.DIC.
    #[must_use]
    pub fn new(first: u64, end: u64) -> Self {
        Self {
            slots: Slots::new(first, end),
            objects: BTreeMap::new(),
            log: Vec::new(),
            registers: BTreeMap::new(),
            full: BTreeSet::new(),
            frames_left: None,
            fwb_dic: true,
        }
    }

    fn untyped(mut self, slot: u64, size: u64, device: Option<DeviceMemory>) -> Self {
        let mut object = Object::new(ObjectKind::Untyped, None);
        object.untyped = Some(UntypedMemory {
            size,
            watermark: 0,
            top: size,
            device,
        });
        self.objects.insert(slot, object);
        self
    }

    /// Adds `size` bytes of RAM untyped in `slot`.
    #[must_use]
    pub fn with_untyped(self, slot: u64, size: u64) -> Self {
        self.untyped(slot, size, None)
    }

    /// Adds a device region's untyped of `size` bytes in `slot`.
    #[must_use]
    pub fn with_device_untyped(self, slot: u64, size: u64, memory: DeviceMemory) -> Self {
        self.untyped(slot, size, Some(memory))
    }

    /// Adds a capability to an object of kind `T` (a VM, a vCPU, a thread) in `slot`.
    #[must_use]
    pub fn with<T: ObjectType>(mut self, slot: u64) -> Self {
        self.objects.insert(slot, Object::new(T::KIND, None));
        self
    }

    /// The platform lacks FEAT_S2FWB or CTR_EL0.DIC: no cacheable device mapping.
    #[must_use]
    pub const fn without_fwb_dic(mut self) -> Self {
        self.fwb_dic = false;
        self
    }

    /// After `count` more frames, retyping a frame fails with `NotEnoughMemory` (memory the
    /// kernel ran out of, whatever the service's own accounting says).
    pub const fn limit_frames(&mut self, count: usize) {
        self.frames_left = Some(count);
    }

    /// The log so far.
    #[must_use]
    pub fn log(&self) -> &[Op<E>] {
        &self.log
    }

    /// Takes the log so far.
    pub fn take_log(&mut self) -> Vec<Op<E>> {
        std::mem::take(&mut self.log)
    }

    /// Logs one of the service's other effects, in order with its invocations.
    pub fn record(&mut self, effect: E) {
        self.log.push(Op::Service(effect));
    }

    /// How many capabilities the service made (retyped or copied) are still there.
    #[must_use]
    pub fn made(&self) -> usize {
        self.objects
            .values()
            .filter(|object| object.parent.is_some())
            .count()
    }

    /// Whether `slot` holds a capability.
    #[must_use]
    pub fn holds(&self, slot: u64) -> bool {
        self.objects.contains_key(&slot)
    }

    /// Sets register `register` of `vcpu` (as the guest would have left it).
    pub fn set_register(&mut self, vcpu: Cap<Vcpu>, register: u64, value: u64) {
        self.registers.insert((vcpu.cptr().raw(), register), value);
    }

    /// Every list register of `vcpu` holds an interrupt until the service clears one.
    pub fn fill_list_registers(&mut self, vcpu: Cap<Vcpu>) {
        self.full.insert(vcpu.cptr().raw());
    }

    /// `vcpu`'s list registers have room again (the guest handled an interrupt).
    pub fn drain_list_registers(&mut self, vcpu: Cap<Vcpu>) {
        self.full.remove(&vcpu.cptr().raw());
    }

    fn object(&self, cptr: CPtr, kind: ObjectKind) -> Result<&Object, KernelError> {
        let object = self
            .objects
            .get(&cptr.raw())
            .ok_or(KernelError::EmptySlot)?;
        if object.kind == kind {
            Ok(object)
        } else {
            Err(KernelError::WrongType)
        }
    }

    fn object_mut(&mut self, cptr: CPtr, kind: ObjectKind) -> Result<&mut Object, KernelError> {
        self.object(cptr, kind)?;
        Ok(self.objects.get_mut(&cptr.raw()).expect("checked"))
    }

    /// Whether `slot` descends from `ancestor`.
    fn descends(&self, mut slot: u64, ancestor: u64) -> bool {
        while let Some(parent) = self.objects.get(&slot).and_then(|object| object.parent) {
            if parent == ancestor {
                return true;
            }
            slot = parent;
        }
        false
    }

    /// Where `1 << bits` bytes of `kind` go in `untyped` (its watermark after them, and its top).
    fn place(
        memory: &UntypedMemory,
        kind: ObjectKind,
        bits: u32,
    ) -> Result<(u64, u64), KernelError> {
        let device_kind = kind == ObjectKind::DeviceFrame;
        if memory.device.is_some() != device_kind {
            return Err(KernelError::InvalidArgument);
        }
        let bytes = 1u64.checked_shl(bits).ok_or(KernelError::RangeError)?;
        let start = memory.watermark.next_multiple_of(bytes);
        // A child untyped's record takes a page from the top, as the kernel's does.
        let top = if kind == ObjectKind::Untyped {
            memory
                .top
                .checked_sub(4096)
                .ok_or(KernelError::NotEnoughMemory)?
        } else {
            memory.top
        };
        match start.checked_add(bytes) {
            Some(end) if end <= top => Ok((end, top)),
            _ => Err(KernelError::NotEnoughMemory),
        }
    }

    fn check_map(
        object: &Object,
        access: u64,
        memtype: MemoryType,
        fwb_dic: bool,
    ) -> Result<(), KernelError> {
        if object.mapped || access == 0 || access & !(R | W | X) != 0 {
            return Err(KernelError::InvalidArgument);
        }
        let write_back = memtype == MemoryType::NormalWriteBack;
        match object.device {
            None if !write_back => return Err(KernelError::MismatchedAttributes),
            None => {}
            Some(region) if region.cacheable && !write_back => {
                return Err(KernelError::MismatchedAttributes);
            }
            Some(region) => {
                let allowed = match memtype {
                    MemoryType::NormalWriteBack => region.cacheable,
                    MemoryType::NormalNonCacheable => region.allows_uncached,
                    _ => true,
                };
                if !allowed {
                    return Err(KernelError::MemoryTypeNotAllowed);
                }
                if write_back && !fwb_dic {
                    return Err(KernelError::CacheableDeviceUnsupported);
                }
                if access & X != 0 {
                    return Err(KernelError::ExecuteFromDevice);
                }
            }
        }
        if object.frame_bits > 12 && !write_back {
            return Err(KernelError::UncachedBlock);
        }
        Ok(())
    }
}

impl<E> Kernel for FakeKernel<E> {
    fn free_slots(&self) -> u64 {
        self.slots.left()
    }

    fn retype<T: ObjectType>(
        &mut self,
        untyped: Cap<Untyped>,
        size_bits: u32,
    ) -> Result<Cap<T>, KernelError> {
        let parent = untyped.cptr().raw();
        let source = self.object(untyped.cptr(), ObjectKind::Untyped)?;
        let memory = source.untyped.clone().expect("an untyped has memory");
        let (watermark, top) = Self::place(&memory, T::KIND, size_bits)?;
        let frame = matches!(T::KIND, ObjectKind::Frame | ObjectKind::DeviceFrame);
        if frame && self.frames_left == Some(0) {
            return Err(KernelError::NotEnoughMemory);
        }
        let slot = self.slots.fill(|_| Ok(()))?;
        if frame && let Some(left) = &mut self.frames_left {
            *left -= 1;
        }
        let source = self.objects.get_mut(&parent).expect("checked");
        let memory_left = source.untyped.as_mut().expect("checked");
        memory_left.watermark = watermark;
        memory_left.top = top;
        let mut object = Object::new(T::KIND, Some(parent));
        if frame {
            object.frame_bits = size_bits;
            object.device = memory.device;
        }
        if T::KIND == ObjectKind::Untyped {
            let size = 1 << size_bits;
            object.untyped = Some(UntypedMemory {
                size,
                watermark: 0,
                top: size,
                device: None,
            });
        }
        self.objects.insert(slot, object);
        self.log.push(Op::Retype {
            untyped: parent,
            kind: T::KIND,
            size_bits,
            slot,
        });
        Ok(Cap::from_cptr(CPtr::new(slot)))
    }

    fn untyped_size(&mut self, untyped: Cap<Untyped>) -> Result<u64, KernelError> {
        let object = self.object(untyped.cptr(), ObjectKind::Untyped)?;
        Ok(object.untyped.as_ref().expect("an untyped has memory").size)
    }

    fn copy<T: ObjectType>(&mut self, cap: Cap<T>) -> Result<Cap<T>, KernelError> {
        let source = cap.cptr().raw();
        let mut object = self.object(cap.cptr(), T::KIND)?.clone();
        // The services copy no untyped; the fake does not model two capabilities sharing a
        // watermark.
        if object.untyped.is_some() {
            return Err(KernelError::IllegalOperation);
        }
        object.parent = Some(source);
        object.mapped = false;
        let slot = self.slots.fill(|_| Ok(()))?;
        self.objects.insert(slot, object);
        self.log.push(Op::Copy { source, slot });
        Ok(Cap::from_cptr(CPtr::new(slot)))
    }

    fn revoke<T: ObjectType>(&mut self, cap: Cap<T>) -> Result<(), KernelError> {
        let slot = cap.cptr().raw();
        let object = self.object_mut(cap.cptr(), T::KIND)?;
        // Nothing paid from it is left: the kernel resets the watermark.
        if let Some(memory) = &mut object.untyped {
            memory.watermark = 0;
            memory.top = memory.size;
        }
        let gone: Vec<u64> = self
            .objects
            .keys()
            .copied()
            .filter(|&made| self.descends(made, slot))
            .collect();
        for made in gone {
            self.objects.remove(&made);
        }
        self.log.push(Op::Revoke(slot));
        Ok(())
    }

    fn reuse<T: ObjectType>(&mut self, emptied: Cap<T>) {
        let slot = emptied.cptr().raw();
        assert!(
            !self.objects.contains_key(&slot),
            "slot {slot} is reused while it holds a capability"
        );
        self.slots.reuse(slot);
    }

    fn map<T: Mappable>(
        &mut self,
        frame: Cap<T>,
        space: Space,
        ipa: u64,
        access: u64,
        memtype: MemoryType,
    ) -> Result<(), KernelError> {
        if let Space::Vm(vm) = space {
            self.object(vm.cptr(), ObjectKind::Vm)?;
        }
        let fwb_dic = self.fwb_dic;
        let object = self.object_mut(frame.cptr(), T::KIND)?;
        Self::check_map(object, access, memtype, fwb_dic)?;
        if !ipa.is_multiple_of(1 << object.frame_bits) {
            return Err(KernelError::AlignmentError);
        }
        object.mapped = true;
        self.log.push(Op::Map {
            frame: frame.cptr().raw(),
            space,
            ipa,
            access,
            memtype,
        });
        Ok(())
    }

    fn unmap<T: Mappable>(&mut self, frame: Cap<T>) -> Result<(), KernelError> {
        self.object_mut(frame.cptr(), T::KIND)?.mapped = false;
        self.log.push(Op::Unmap(frame.cptr().raw()));
        Ok(())
    }

    fn frame_cache(
        &mut self,
        frame: Cap<Frame>,
        op: CacheOp,
        vm: Cap<Vm>,
    ) -> Result<(), KernelError> {
        self.object(frame.cptr(), ObjectKind::Frame)?;
        self.object(vm.cptr(), ObjectKind::Vm)?;
        self.log.push(Op::FrameCache {
            frame: frame.cptr().raw(),
            op,
            vm: vm.cptr().raw(),
        });
        Ok(())
    }

    fn vm_cache(
        &mut self,
        vm: Cap<Vm>,
        op: CacheOp,
        ipa: u64,
        size: u64,
    ) -> Result<(), KernelError> {
        self.object(vm.cptr(), ObjectKind::Vm)?;
        self.log.push(Op::VmCache {
            vm: vm.cptr().raw(),
            op,
            ipa,
            size,
        });
        Ok(())
    }

    fn read_register(&mut self, vcpu: Cap<Vcpu>, register: u64) -> Result<u64, KernelError> {
        self.object(vcpu.cptr(), ObjectKind::Vcpu)?;
        let key = (vcpu.cptr().raw(), register);
        Ok(self.registers.get(&key).copied().unwrap_or(0))
    }

    fn write_register(
        &mut self,
        vcpu: Cap<Vcpu>,
        register: u64,
        value: u64,
    ) -> Result<(), KernelError> {
        self.object(vcpu.cptr(), ObjectKind::Vcpu)?;
        let slot = vcpu.cptr().raw();
        let lr0 = VcpuRegister::ListRegister0.code();
        // Emptying a list register makes room in a full vCPU's.
        if (lr0..lr0 + 16).contains(&register) && value == 0 {
            self.full.remove(&slot);
        }
        self.registers.insert((slot, register), value);
        self.log.push(Op::WriteRegister {
            vcpu: slot,
            register,
            value,
        });
        Ok(())
    }

    fn inject_irq(&mut self, vcpu: Cap<Vcpu>, intid: u32, priority: u8) -> Result<(), KernelError> {
        self.object(vcpu.cptr(), ObjectKind::Vcpu)?;
        let slot = vcpu.cptr().raw();
        if self.full.contains(&slot) {
            return Err(KernelError::ListRegistersFull);
        }
        self.log.push(Op::InjectIrq {
            vcpu: slot,
            intid,
            priority,
        });
        Ok(())
    }

    fn forward_irq(
        &mut self,
        handler: Cap<IrqHandler>,
        vcpu: Cap<Vcpu>,
        intid: u32,
    ) -> Result<(), KernelError> {
        self.object(handler.cptr(), ObjectKind::IrqHandler)?;
        self.object(vcpu.cptr(), ObjectKind::Vcpu)?;
        self.log.push(Op::ForwardIrq {
            handler: handler.cptr().raw(),
            vcpu: vcpu.cptr().raw(),
            intid,
        });
        Ok(())
    }

    fn resume(&mut self, thread: Cap<Thread>) -> Result<(), KernelError> {
        self.object(thread.cptr(), ObjectKind::Thread)?;
        self.log.push(Op::Resume(thread.cptr().raw()));
        Ok(())
    }

    fn suspend(&mut self, thread: Cap<Thread>) -> Result<(), KernelError> {
        self.object(thread.cptr(), ObjectKind::Thread)?;
        self.log.push(Op::Suspend(thread.cptr().raw()));
        Ok(())
    }
}

#[cfg(test)]
#[path = "fake_tests.rs"]
mod tests;

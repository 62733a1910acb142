//! The kernel as a service sees it: one typed interface, [`Kernel`], over the capabilities a
//! service holds (`Cap<Untyped>`, `Cap<Frame>`, `Cap<Vm>`, `Cap<Vcpu>`, …), implemented by the
//! system calls on the target ([`Syscalls`]) and by one shared fake on the host
//! (`capvisor_rt::fake::FakeKernel`), so every system service's policy is tested against the same
//! model of the kernel's checks.
//!
//! A `Cap<T>` is `capvisor_ipc::cap::Cap`: a `CPtr` with a zero-sized kind marker, so an
//! endpoint cannot be passed where a frame is expected (STYLE.md 7). A service names a
//! capability the boot-info page lists with `Cap::from_cptr`, its one explicit cast; a wrong
//! claim is refused by the kernel (`WrongType`), never unsafe.
//!
//! Capabilities the interface creates (retype, copy) land in the service's free slots, handed
//! out in order by [`Slots`] (the range the boot-info page lists, plus slots a revoke emptied).

use capvisor_ipc::abi::{CacheOp, KernelError};
use capvisor_ipc::cap::{
    Cap, DeviceFrame, Frame, IrqHandler, ObjectType, Thread, Untyped, Vcpu, Vm,
};
use capvisor_ipc::memory::MemoryType;

#[cfg(target_os = "none")]
mod syscalls;
#[cfg(target_os = "none")]
pub use syscalls::Syscalls;

/// A kind of capability a service can map: RAM frames and device frames.
pub trait Mappable: ObjectType {}
impl Mappable for Frame {}
impl Mappable for DeviceFrame {}

/// The address space a mapping goes into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Space {
    /// A guest's VM.
    Vm(Cap<Vm>),
    /// The calling service's own address space (its windows: `crate::window`).
    Own,
}

/// What a service asks of the kernel. Every method is one invocation of the capability it
/// names; the kernel checks each (type, rights, memory type, range) and refuses with a
/// [`KernelError`], changing nothing.
pub trait Kernel {
    /// Empty capability slots left for [`Kernel::retype`] and [`Kernel::copy`].
    fn free_slots(&self) -> u64;

    /// Retypes one object of kind `T` and `1 << size_bits` bytes from `untyped` (at its
    /// watermark, aligned up to the object's size) into a free slot.
    ///
    /// # Errors
    /// `NotEnoughMemory` when it does not fit or no slot is free; `WrongType` when `untyped` is
    /// not untyped memory.
    fn retype<T: ObjectType>(
        &mut self,
        untyped: Cap<Untyped>,
        size_bits: u32,
    ) -> Result<Cap<T>, KernelError>;

    /// The size in bytes of `untyped`.
    ///
    /// # Errors
    /// `WrongType` when it is not untyped memory, `EmptySlot` when nothing is there.
    fn untyped_size(&mut self, untyped: Cap<Untyped>) -> Result<u64, KernelError>;

    /// Copies `cap` (all its rights) into a free slot. A frame capability maps once: a second
    /// mapping needs a copy.
    ///
    /// # Errors
    /// The kernel's refusal, or `NotEnoughMemory` when no slot is free.
    fn copy<T: ObjectType>(&mut self, cap: Cap<T>) -> Result<Cap<T>, KernelError>;

    /// Deletes every capability derived from `cap`, with their mappings. Revoking an untyped
    /// that nothing is paid from any more lets the kernel reset its watermark.
    ///
    /// # Errors
    /// The kernel's refusal (nothing changed).
    fn revoke<T: ObjectType>(&mut self, cap: Cap<T>) -> Result<(), KernelError>;

    /// `emptied`, whose slot a [`Kernel::revoke`] emptied, may be handed out again.
    fn reuse<T: ObjectType>(&mut self, emptied: Cap<T>);

    /// Maps `frame` at `ipa` of `space` with `access` (R=1 W=2 X=4) and `memtype`.
    ///
    /// # Errors
    /// The kernel's refusal: a frame already mapped, rights or memory type the capability does
    /// not carry (`DESIGN.md` rules 3–7).
    fn map<T: Mappable>(
        &mut self,
        frame: Cap<T>,
        space: Space,
        ipa: u64,
        access: u64,
        memtype: MemoryType,
    ) -> Result<(), KernelError>;

    /// Removes `frame`'s mapping; the kernel invalidates the TLB before it returns.
    ///
    /// # Errors
    /// The kernel's refusal.
    fn unmap<T: Mappable>(&mut self, frame: Cap<T>) -> Result<(), KernelError>;

    /// Cache maintenance `op` on the whole of `frame`, on behalf of VM `vm` (named in the
    /// kernel's trace).
    ///
    /// # Errors
    /// The kernel's refusal.
    fn frame_cache(
        &mut self,
        frame: Cap<Frame>,
        op: CacheOp,
        vm: Cap<Vm>,
    ) -> Result<(), KernelError>;

    /// Cache maintenance `op` on `[ipa, ipa + size)` of VM `vm`.
    ///
    /// # Errors
    /// The kernel's refusal.
    fn vm_cache(
        &mut self,
        vm: Cap<Vm>,
        op: CacheOp,
        ipa: u64,
        size: u64,
    ) -> Result<(), KernelError>;

    /// Reads register `register` of `vcpu` (x0–x30 = 0–30, or a `VcpuRegister` code).
    ///
    /// # Errors
    /// The kernel's refusal.
    fn read_register(&mut self, vcpu: Cap<Vcpu>, register: u64) -> Result<u64, KernelError>;

    /// Writes register `register` of `vcpu`.
    ///
    /// # Errors
    /// The kernel's refusal.
    fn write_register(
        &mut self,
        vcpu: Cap<Vcpu>,
        register: u64,
        value: u64,
    ) -> Result<(), KernelError>;

    /// Makes virtual interrupt `intid` pending for `vcpu` at `priority`.
    ///
    /// # Errors
    /// `ListRegistersFull` when the vCPU has no free list register.
    fn inject_irq(&mut self, vcpu: Cap<Vcpu>, intid: u32, priority: u8) -> Result<(), KernelError>;

    /// Delivers the interrupt `handler` stands for straight to `vcpu`, as virtual INTID `intid`.
    ///
    /// # Errors
    /// The kernel's refusal.
    fn forward_irq(
        &mut self,
        handler: Cap<IrqHandler>,
        vcpu: Cap<Vcpu>,
        intid: u32,
    ) -> Result<(), KernelError>;

    /// Resumes `thread`.
    ///
    /// # Errors
    /// The kernel's refusal.
    fn resume(&mut self, thread: Cap<Thread>) -> Result<(), KernelError>;

    /// Suspends `thread`.
    ///
    /// # Errors
    /// The kernel's refusal.
    fn suspend(&mut self, thread: Cap<Thread>) -> Result<(), KernelError>;
}

/// The free slots of a service's CNode: `[first, end)`, which the kernel left empty and only this
/// service fills, in order, and up to `REUSED` slots a revoke emptied (beyond, a slot is not
/// reused). A service that never revokes keeps `REUSED = 0`, so the handle costs three words:
/// services run on a 64 KiB stack, and their main future is moved on it.
#[derive(Debug, Clone)]
pub struct Slots<const REUSED: usize = 0> {
    next: u64,
    end: u64,
    reused: heapless::Vec<u64, REUSED>,
}

impl<const REUSED: usize> Slots<REUSED> {
    /// The free range `[first, end)` (empty when `end <= first`).
    #[must_use]
    pub const fn new(first: u64, end: u64) -> Self {
        Self {
            next: first,
            end: if end > first { end } else { first },
            reused: heapless::Vec::new(),
        }
    }
}

/// Where the capabilities a [`Kernel`] creates go.
pub trait FreeSlots {
    /// How many are left.
    fn left(&self) -> u64;

    /// Fills the next free slot with `make`; a slot `make` could not fill stays free.
    ///
    /// # Errors
    /// `NotEnoughMemory` when no slot is free, or `make`'s error.
    fn fill(
        &mut self,
        make: impl FnOnce(u64) -> Result<(), KernelError>,
    ) -> Result<u64, KernelError>;

    /// `slot` is empty again.
    fn reuse(&mut self, slot: u64);
}

impl<const REUSED: usize> FreeSlots for Slots<REUSED> {
    fn left(&self) -> u64 {
        self.end - self.next + self.reused.len() as u64
    }

    fn fill(
        &mut self,
        make: impl FnOnce(u64) -> Result<(), KernelError>,
    ) -> Result<u64, KernelError> {
        // `REUSED > 0` first: a service that reuses nothing does not even look.
        if REUSED > 0
            && let Some(&slot) = self.reused.last()
        {
            make(slot)?;
            self.reused.pop();
            return Ok(slot);
        }
        if self.next >= self.end {
            return Err(KernelError::NotEnoughMemory);
        }
        make(self.next)?;
        self.next += 1;
        Ok(self.next - 1)
    }

    fn reuse(&mut self, slot: u64) {
        // Without room to remember it, the slot is just not reused.
        let _ = self.reused.push(slot);
    }
}

/// No free slots, for a service that only invokes the capabilities it was given (a VMM): a
/// [`Syscalls`] over it is zero-sized, and creating a capability is `NotEnoughMemory`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoFreeSlots;

impl FreeSlots for NoFreeSlots {
    fn left(&self) -> u64 {
        0
    }

    fn fill(&mut self, _: impl FnOnce(u64) -> Result<(), KernelError>) -> Result<u64, KernelError> {
        Err(KernelError::NotEnoughMemory)
    }

    fn reuse(&mut self, _: u64) {}
}

/// This service's own CNode and address space: the same slots for every service
/// (`sdk/src/plan/layout.rs`).
pub const OWN_CNODE: capvisor_ipc::cap::CPtr = capvisor_ipc::cap::CPtr::new(1);
/// See [`OWN_CNODE`].
pub const OWN_SPACE: capvisor_ipc::cap::CPtr = capvisor_ipc::cap::CPtr::new(2);

//! The kernel's object model: capabilities, kernel objects, IPC and scheduling, as pure logic.
//!
//! Nothing here touches hardware. The EL2 glue (SVC entry, context switch, stage-2 tables, timer)
//! calls the [`Kernel`] entry points and performs the side effects the logic asks for through the
//! [`Effects`] trait; host tests and the fuzz target implement `Effects` with `fake::FakeEffects`
//! (compiled only for them: `cfg(test)` or the feature `fake`).
//!
//! # Objects live in the memory their untyped paid for (as in seL4)
//! Retype places each kernel object in whole pages of the untyped it is retyped from
//! ([`ObjectType::charge`]), and the kernel keeps the object's state there (`memory.rs`): a
//! thread's record and saved registers, a vCPU's EL1 state, a CNode's slots, an address space's
//! stage-2 tables. So a service can create no more objects, and cause no more page tables, than
//! its untyped memory pays for, and no shared kernel pool exists for anyone to exhaust. A frame
//! table with one entry per page of RAM (kernel memory, sized at boot) says which pages hold
//! which objects; the same memory is never handed out twice (`untyped.rs`).
//!
//! # References and generations
//! Every object reference ([`ThreadRef`], [`EndpointRef`], …) names the object's first page and
//! the generation of that page's frame-table entry; the generation changes whenever the object is
//! freed, so a reference held across the object's destruction resolves to
//! [`KernelError::Revoked`], never to a new object.
//!
//! # Capability spaces
//! A thread's capability space is one [`CNode`](cspace::CNode), whose slots are in its own memory.
//! A `CPtr` is a slot index in the caller's CNode (single level, no guards or radix walk); slot 0
//! holds the CNode's record, so `CPtr::NULL` names nothing ([`KernelError::InvalidSlot`]).
//!
//! # Invariants (checked by the property tests and the fuzz target after every step)
//! 1. Every capability names a live object (or a frame, which has no record), and each object's
//!    `caps` count equals the number of capabilities naming it.
//! 2. The derivation tree is well formed: parent, first-child and sibling links are mutual, acyclic,
//!    and only link occupied slots.
//! 3. No two live objects overlap, and every object lies inside exactly one untyped's used range
//!    (below its watermark); each untyped's watermark is at most its size, and its count of
//!    children is exactly what it paid for.
//! 4. A thread is in at most one queue (a ready queue, an endpoint's or a notification's), and its
//!    state says which.
//! 5. A thread with a vCPU runs only in the VM it was bound in; a service thread's saved state is
//!    always EL0.
//! 6. Every kernel path does bounded work: no loop runs over all objects; a revoke does a bounded
//!    number of steps per entry and restarts; dying objects are finished by a bounded reaper
//!    (`delete.rs`).
//!
//! # Locking (single big kernel lock)
//! The whole [`Kernel`] is one value, and every entry point takes `&mut self`: the glue wraps it in
//! one spin lock, taken on every trap into the kernel and released before returning to EL0 or a
//! guest. No entry point blocks or waits, and each does bounded work, so the lock is held for a
//! bounded time. For now only one CPU runs threads (`current` is a single value). `Effects`
//! callbacks run under the lock and must not call back into the kernel.

pub mod boot;
pub mod capability;
pub mod cspace;
pub mod delete;
pub mod effects;
mod endpoint;
#[cfg(any(test, feature = "fake"))]
pub mod fake;
mod fastpath;
mod fault;
mod frame;
#[cfg(any(test, feature = "invariants"))]
mod invariants;
mod invoke;
pub mod irq;
pub mod memory;
mod notification;
mod regs;
pub mod sched;
mod sleepers;
pub mod syscall;
mod tcb;
pub mod thread;
mod transfer;
mod untyped;
mod vcpu;

#[cfg(test)]
mod tests;

pub use boot::ROOT_CNODE_SLOTS;
pub use boot::{RootBoot, RootDevice, RootLayout, RootRam};
pub use capability::{
    Capability, DeviceAttributes, FrameCap, FrameSize, MemTypes, Object, ObjectType,
};
pub use delete::{REAP_STEPS, TICK_REAP_STEPS};
pub use effects::{
    Effects, IpcWords, MaintenanceTarget, RegisterAccess, Resumption, SpaceGlue, ThreadGlue,
    VcpuGlue,
};
pub use fault::FaultOutcome;
pub use invoke::{THREAD_BIND_NOTIFICATION, THREAD_CONFIGURE};
pub use irq::IrqHandlerRef;
pub use irq::IrqOutcome;
pub use memory::{
    CNodeRef, EndpointRef, FrameTable, NotificationRef, PageInfo, SpaceRef, ThreadRef, UntypedRef,
    VcpuRef,
};
pub use notification::NOTIFICATION_LABEL;
pub use regs::{Schedule, SyscallRegs};

use capvisor_ipc::abi::KernelError;
use capvisor_ipc::memory::CacheFeatures;
use memory::Store;

use crate::platform::Platform;

/// The most threads one address space runs (threads configured into it, vCPU threads of a VM
/// included): deleting a space stops them all, so this bounds that work.
pub const MAX_SPACE_THREADS: usize = 64;

/// The platform features the mapping rules depend on (DESIGN.md, stage-2 rules 1–8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PlatformFeatures {
    /// FEAT_S2FWB and CTR_EL0.DIC (rule 4 is `CacheFeatures::cacheable_device`).
    pub cache: CacheFeatures,
    /// Width of a stage-2 input address (IPA) the glue's tables accept, in bits.
    pub ipa_bits: u8,
}

impl PlatformFeatures {
    /// Nothing known yet (for a static `Kernel` before boot): every mapping is refused.
    pub const UNKNOWN: Self = Self {
        cache: CacheFeatures::NONE,
        ipa_bits: 0,
    };

    /// The features of `platform`, for stage-2 tables that translate `ipa_bits`-bit IPAs (the
    /// glue's table configuration, e.g. 39 for a 4K granule starting at level 1).
    #[must_use]
    pub fn for_platform(platform: &Platform, ipa_bits: u8) -> Self {
        Self {
            cache: CacheFeatures {
                fwb: platform.fwb,
                dic: platform.dic,
            },
            ipa_bits,
        }
    }
}

/// What [`Kernel::entry`] gives the glue.
#[derive(Debug)]
pub struct Entry<'a> {
    /// The thread's saved registers and name.
    pub thread: &'a mut ThreadGlue,
    /// Its space's tables and VMID.
    pub space: &'a mut SpaceGlue,
    /// The vCPU it runs, if any.
    pub vcpu: Option<VcpuRef>,
}

/// The whole kernel state: the object stores (views of the memory objects live in), the IRQ
/// handler table, the scheduler and the queue of dying objects.
#[derive(Debug)]
pub struct Kernel {
    features: PlatformFeatures,
    slots: cspace::SlotTable,
    cnodes: Store<cspace::CNode>,
    untyped: Store<untyped::Untyped>,
    threads: Store<thread::Thread>,
    endpoints: Store<endpoint::Endpoint>,
    notifications: Store<notification::Notification>,
    spaces: Store<frame::Space>,
    vcpus: Store<frame::Vcpu>,
    irqs: irq::IrqTable,
    sched: sched::Scheduler,
    reaper: delete::Reaper,
    /// vCPU threads sleeping in WFI with a timer, by deadline (`vcpu.rs`, `sleepers.rs`).
    sleepers: sleepers::Sleepers,
    booted: bool,
    /// The system call being handled stopped at a preemption point (`delete.rs`): the glue
    /// restarts it.
    restart: bool,
    /// The image's service names, which init names threads after (`tcb.rs`).
    service_names: heapless::Vec<&'static str, MAX_SERVICE_NAMES>,
}

/// The most service names the kernel keeps.
pub const MAX_SERVICE_NAMES: usize = 32;

impl Kernel {
    /// An empty kernel for a platform with `features`, over no memory. Nothing exists until
    /// [`Kernel::set_memory`] and [`Kernel::create_root_thread`].
    ///
    /// A `const fn`, so the glue keeps the kernel in a static, initialised at build time.
    #[must_use]
    pub const fn new(features: PlatformFeatures) -> Self {
        Self {
            features,
            slots: cspace::SlotTable::new(),
            cnodes: Store::new(),
            untyped: Store::new(),
            threads: Store::new(),
            endpoints: Store::new(),
            notifications: Store::new(),
            spaces: Store::new(),
            vcpus: Store::new(),
            irqs: irq::IrqTable::new(),
            sched: sched::Scheduler::new(),
            reaper: delete::Reaper::new(),
            sleepers: sleepers::Sleepers::EMPTY,
            booted: false,
            restart: false,
            service_names: heapless::Vec::new(),
        }
    }

    /// Sets the names threads may be given (the image's services, in image order), at boot.
    ///
    /// # Errors
    /// [`KernelError::IllegalOperation`] once the root thread exists; `RangeError` for more than
    /// [`MAX_SERVICE_NAMES`].
    pub fn set_service_names(&mut self, names: &[&'static str]) -> Result<(), KernelError> {
        if self.booted {
            return Err(KernelError::IllegalOperation);
        }
        self.service_names =
            heapless::Vec::from_slice(names).map_err(|_| KernelError::RangeError)?;
        Ok(())
    }

    /// Gives the kernel the frame table over the RAM its objects may live in (boot only: before
    /// the root thread exists).
    ///
    /// # Errors
    /// [`KernelError::IllegalOperation`] once the root thread exists.
    pub fn set_memory(&mut self, memory: FrameTable) -> Result<(), KernelError> {
        if self.booted {
            return Err(KernelError::IllegalOperation);
        }
        self.slots.set_memory(memory);
        self.cnodes.set_memory(memory);
        self.untyped.set_memory(memory);
        self.threads.set_memory(memory);
        self.endpoints.set_memory(memory);
        self.notifications.set_memory(memory);
        self.spaces.set_memory(memory);
        self.vcpus.set_memory(memory);
        Ok(())
    }

    /// Sets the platform features (boot only: before the root thread exists).
    ///
    /// # Errors
    /// [`KernelError::IllegalOperation`] once a thread exists.
    pub fn set_features(&mut self, features: PlatformFeatures) -> Result<(), KernelError> {
        if self.booted {
            return Err(KernelError::IllegalOperation);
        }
        self.features = features;
        Ok(())
    }

    /// The platform features this kernel checks mappings against.
    #[must_use]
    pub fn features(&self) -> PlatformFeatures {
        self.features
    }

    /// The thread the kernel believes is running (set by [`Kernel::pick_next`]).
    #[must_use]
    #[inline]
    pub fn current(&self) -> Option<ThreadRef> {
        self.sched.current()
    }

    /// The thread's state, for the glue's diagnostics.
    ///
    /// # Errors
    /// [`KernelError::Revoked`] when the thread no longer exists.
    pub fn thread_state(&self, thread: ThreadRef) -> Result<thread::ThreadState, KernelError> {
        self.threads.get(thread).map(|t| t.state)
    }

    /// The address space a thread runs in (for the glue's context switch: its VTTBR).
    ///
    /// # Errors
    /// [`KernelError::Revoked`] when the thread no longer exists.
    #[inline]
    pub fn thread_space(&self, thread: ThreadRef) -> Result<Option<SpaceRef>, KernelError> {
        self.threads.get(thread).map(|t| t.space)
    }

    /// The glue's state of a live space (its tables and VMID), for the context switch.
    ///
    /// # Errors
    /// [`KernelError::Revoked`] when the space no longer exists.
    #[inline]
    pub fn space_glue(&mut self, space: SpaceRef) -> Result<&mut SpaceGlue, KernelError> {
        self.spaces.get_mut(space).map(|s| &mut s.glue)
    }

    /// The glue's state of a live thread (its saved registers and console state).
    ///
    /// # Errors
    /// [`KernelError::Revoked`] when the thread no longer exists.
    #[inline]
    pub fn thread_glue(&mut self, thread: ThreadRef) -> Result<&mut ThreadGlue, KernelError> {
        self.threads.get_mut(thread).map(|t| &mut t.glue)
    }

    /// The glue's state of a live vCPU (its EL1 state and virtual CPU interface).
    ///
    /// # Errors
    /// [`KernelError::Revoked`] when the vCPU no longer exists.
    #[inline]
    pub fn vcpu_glue(&mut self, vcpu: VcpuRef) -> Result<&mut VcpuGlue, KernelError> {
        self.vcpus.get_mut(vcpu).map(|v| &mut v.glue)
    }

    /// Every VM's counters, by a number naming it (its root table's page number): a scan of every object, for
    /// the report at the end of the system only (never on a kernel path).
    pub fn vm_stats(&self) -> impl Iterator<Item = (usize, crate::context::VmStats)> + '_ {
        self.spaces
            .iter::<SpaceRef>()
            .filter(|(_, s)| s.vm)
            .map(|(_, s)| ((s.glue.root >> 12) as usize, s.glue.stats))
    }

    /// What the glue needs to enter `thread`, in one lookup: its saved registers, its space's
    /// glue state and its vCPU. `None` when the thread or its space is gone.
    #[inline]
    pub fn entry(&mut self, thread: ThreadRef) -> Option<Entry<'_>> {
        let t = self.threads.get_mut(thread).ok()?;
        let space = self.spaces.get_mut(t.space?).ok()?;
        Some(Entry {
            thread: &mut t.glue,
            space: &mut space.glue,
            vcpu: t.vcpu,
        })
    }

    /// The glue's states of a thread and the vCPU it runs, together (for a guest exit).
    ///
    /// # Errors
    /// [`KernelError::Revoked`] when either no longer exists.
    pub fn vcpu_thread_glue(
        &mut self,
        thread: ThreadRef,
        vcpu: VcpuRef,
    ) -> Result<(&mut ThreadGlue, &mut VcpuGlue), KernelError> {
        let t = self.threads.get_mut(thread)?;
        let v = self.vcpus.get_mut(vcpu)?;
        Ok((&mut t.glue, &mut v.glue))
    }
}

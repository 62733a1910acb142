//! The kernel's object model: capabilities, kernel objects, IPC and scheduling, as pure logic.
//!
//! Nothing here touches hardware. The EL2 glue (SVC entry, context switch, stage-2 tables, timer)
//! calls the [`Kernel`] entry points and performs the side effects the logic asks for through the
//! [`Effects`] trait; host tests and the fuzz target implement `Effects` with [`fake::FakeEffects`].
//!
//! # Objects live in kernel arenas, not in untyped memory
//! seL4 places every kernel object inside the untyped memory it was retyped from. capvisor keeps
//! its objects in fixed-capacity arenas inside the one [`Kernel`] struct (capacities below), so the
//! kernel never writes into memory a service can name. Retyping still charges the object's size
//! ([`ObjectType::charge`]) to the untyped's watermark, so a service can create no more objects than
//! its untyped memory pays for, and the same memory cannot be handed out twice. Only frames are real:
//! a frame retyped from untyped *is* the physical range at the untyped's next aligned offset. Kernel
//! objects' charged bytes are bookkeeping only (they are never read or written).
//!
//! # References and generations
//! Every arena reference ([`ThreadRef`], [`EndpointRef`], …) carries the generation of its entry;
//! the generation changes whenever the entry is freed, so a reference held across the object's
//! destruction resolves to [`KernelError::Revoked`], never to a new object.
//!
//! # Capability spaces
//! A thread's capability space is one [`CNode`](cspace::CNode): a contiguous range of the global slot
//! table. A `CPtr` is a slot index in the caller's CNode (single level, no guards or radix walk);
//! slot 0 is never populated, so `CPtr::NULL` names nothing ([`KernelError::InvalidSlot`]).
//!
//! # Invariants (checked by the property tests in `tests.rs`)
//! 1. Every capability names a live object (or a frame, which needs no arena entry), and each arena
//!    object's `caps` count equals the number of capabilities naming it.
//! 2. The derivation tree is well formed: parent, first-child and sibling links are mutual, acyclic,
//!    and only link occupied slots.
//! 3. Each untyped object's watermark is at most its size.
//! 4. A thread is in at most one queue (a ready queue, an endpoint's or a notification's), and its
//!    state says which.
//!
//! # Locking (single big kernel lock)
//! The whole [`Kernel`] is one value, and every entry point takes `&mut self`: the glue wraps it in
//! one spin lock, taken on every trap into the kernel and released before returning to EL0 or a
//! guest. No entry point blocks or waits, so the lock is held for a bounded time. For now only one
//! CPU runs threads (`current` is a single value); making the lock finer-grained later means
//! splitting per-CPU `current` and ready queues first, then per-object locks ordered
//! CNode/slot table → endpoint/notification → thread → scheduler queue (the order these modules
//! already touch them in). `Effects` callbacks run under the lock and must not call back into
//! the kernel.

mod arena;
pub mod boot;
pub mod capability;
pub mod cspace;
mod delete;
pub mod effects;
mod endpoint;
pub mod fake;
mod fastpath;
mod fault;
mod frame;
mod invariants;
mod invoke;
mod irq;
mod notification;
pub mod sched;
pub mod syscall;
mod tcb;
pub mod thread;
mod transfer;
mod untyped;
mod vcpu;

#[cfg(test)]
mod tests;

pub use arena::{
    CNodeRef, EndpointRef, IrqHandlerRef, NotificationRef, SpaceRef, ThreadRef, UntypedRef, VcpuRef,
};
pub use boot::ROOT_CNODE_SLOTS;
pub use boot::{RootBoot, RootDevice, RootLayout, RootRam};
pub use capability::{
    Capability, DeviceAttributes, FrameCap, FrameSize, MemTypes, Object, ObjectType,
};
pub use effects::{Effects, IpcWords, MaintenanceTarget, RegisterAccess, UserBuffer, Vmid};
pub use fault::FaultOutcome;
pub use invoke::{THREAD_BIND_NOTIFICATION, THREAD_CONFIGURE};
pub use irq::IrqOutcome;
pub use notification::NOTIFICATION_LABEL;
pub use syscall::{Schedule, SyscallRegs};

use arena::Arena;
use capvisor_ipc::abi::KernelError;

use crate::platform::Platform;

/// Thread capacity.
pub const MAX_THREADS: usize = 64;
/// Endpoint capacity.
pub const MAX_ENDPOINTS: usize = 128;
/// Notification capacity.
pub const MAX_NOTIFICATIONS: usize = 128;
/// Capability slots, shared by all CNodes.
pub const MAX_SLOTS: usize = 4096;
/// CNode capacity.
pub const MAX_CNODES: usize = 64;
/// Untyped object capacity (root regions plus their untyped children).
pub const MAX_UNTYPED: usize = 128;
/// Address spaces (service spaces and VMs together).
pub const MAX_SPACES: usize = 32;
/// vCPU capacity.
pub const MAX_VCPUS: usize = 16;
/// IRQ handler capacity.
pub const MAX_IRQ_HANDLERS: usize = 64;

/// The platform features the mapping rules depend on (DESIGN.md, stage-2 rules 1–8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PlatformFeatures {
    /// FEAT_S2FWB.
    pub fwb: bool,
    /// CTR_EL0.DIC.
    pub dic: bool,
    /// Width of a stage-2 input address (IPA) the glue's tables accept, in bits.
    pub ipa_bits: u8,
}

impl PlatformFeatures {
    /// Whether device memory may be mapped cacheable: FEAT_S2FWB **and** CTR_EL0.DIC.
    #[must_use]
    pub const fn cacheable_device(self) -> bool {
        self.fwb && self.dic
    }
}

impl PlatformFeatures {
    /// Nothing known yet (for a static `Kernel` before boot): every mapping is refused.
    pub const UNKNOWN: Self = Self {
        fwb: false,
        dic: false,
        ipa_bits: 0,
    };

    /// The features of `platform`, for stage-2 tables that translate `ipa_bits`-bit IPAs (the
    /// glue's table configuration, e.g. 39 for a 4K granule starting at level 1).
    #[must_use]
    pub fn for_platform(platform: &Platform, ipa_bits: u8) -> Self {
        Self {
            fwb: platform.fwb,
            dic: platform.dic,
            ipa_bits,
        }
    }
}

/// The whole kernel state: every object arena, the slot table and the scheduler.
#[derive(Debug)]
pub struct Kernel {
    features: PlatformFeatures,
    slots: cspace::SlotTable,
    cnodes: Arena<cspace::CNode, MAX_CNODES>,
    untyped: Arena<untyped::Untyped, MAX_UNTYPED>,
    threads: Arena<thread::Thread, MAX_THREADS>,
    endpoints: Arena<endpoint::Endpoint, MAX_ENDPOINTS>,
    notifications: Arena<notification::Notification, MAX_NOTIFICATIONS>,
    spaces: Arena<frame::Space, MAX_SPACES>,
    vcpus: Arena<frame::Vcpu, MAX_VCPUS>,
    irqs: Arena<irq::IrqHandler, MAX_IRQ_HANDLERS>,
    sched: sched::Scheduler,
}

impl Kernel {
    /// An empty kernel for a platform with `features`. No thread exists until
    /// [`Kernel::create_root_thread`].
    ///
    /// `Kernel` is large (about 300 KiB: the slot table dominates), so the glue keeps it in a
    /// static, never on a kernel stack: this is a `const fn` for exactly that, and
    /// [`Kernel::set_features`] fills in what is only known at boot.
    #[must_use]
    pub const fn new(features: PlatformFeatures) -> Self {
        Self {
            features,
            slots: cspace::SlotTable::new(),
            cnodes: Arena::new(),
            untyped: Arena::new(),
            threads: Arena::new(),
            endpoints: Arena::new(),
            notifications: Arena::new(),
            spaces: Arena::new(),
            vcpus: Arena::new(),
            irqs: Arena::new(),
            sched: sched::Scheduler::new(),
        }
    }

    /// Sets the platform features (boot only: before the root thread exists).
    ///
    /// # Errors
    /// [`KernelError::IllegalOperation`] once a thread exists.
    pub fn set_features(&mut self, features: PlatformFeatures) -> Result<(), KernelError> {
        if self.threads.iter::<ThreadRef>().next().is_some() {
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

    /// The VMID the glue assigned to a space.
    ///
    /// # Errors
    /// [`KernelError::Revoked`] when the space no longer exists.
    #[inline]
    pub fn space_vmid(&self, space: SpaceRef) -> Result<Vmid, KernelError> {
        self.spaces.get(space).map(|s| s.vmid)
    }
}

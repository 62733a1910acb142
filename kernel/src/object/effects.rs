//! The side effects the object model asks of the EL2 glue: stage-2 tables, IPC buffer access,
//! frame clearing, thread start and interrupt acknowledgement.
//!
//! Every method runs under the big kernel lock and must not call back into the
//! [`Kernel`](super::Kernel). The kernel calls a method only after every check of the operation passed, so a
//! failing effect leaves the object model unchanged (the kernel returns its error to the caller).

use capvisor_ipc::abi::{IpcBuffer, KernelError};
use capvisor_ipc::types::{Ipa, PhysAddr};

use capvisor_ipc::abi::{CacheOp, VcpuRegister};
use capvisor_ipc::protocols::fault::{GuestFault, Resolution};

use super::arena::{SpaceRef, ThreadRef, VcpuRef};
use crate::stage2::{MemType, S2Access};

/// What a cache or TLB maintenance invocation covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaintenanceTarget {
    /// A frame's whole physical range (RAM only), done for the VM `vm` when one was named.
    Frame {
        /// The frame's base.
        pa: PhysAddr,
        /// Its size.
        size: u64,
        /// The VM it is done for (for its trace), if the caller named one.
        vm: Option<SpaceRef>,
    },
    /// An IPA range of a VM (only its mapped pages are touched).
    Vm {
        /// The VM.
        vm: SpaceRef,
        /// Start of the range.
        ipa: Ipa,
        /// Its size.
        size: u64,
    },
}

/// A vCPU register access: read, or write a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterAccess {
    /// Read general-purpose register `n` (0–30).
    ReadGp(u8),
    /// Write general-purpose register `n` (0–30).
    WriteGp(u8, u64),
    /// Read a named register.
    Read(VcpuRegister),
    /// Write a named register.
    Write(VcpuRegister, u64),
}

/// A hardware VMID, assigned by the glue when an address space is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Vmid(u16);

impl Vmid {
    /// The VMID with value `raw`.
    #[must_use]
    pub const fn new(raw: u16) -> Self {
        Self(raw)
    }

    /// The raw value, for VTTBR_EL2.VMID.
    #[must_use]
    pub const fn raw(self) -> u16 {
        self.0
    }
}

/// A thread's IPC buffer, as the thread configured it: an address in its own address space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserBuffer {
    /// The thread whose buffer it is.
    pub thread: ThreadRef,
    /// The address space the address is in (`None`: the thread has none, so no address is valid).
    pub space: Option<SpaceRef>,
    /// The buffer's address in that space (non-zero; the kernel never asks for address 0).
    pub addr: Ipa,
}

/// Word index of `IpcBuffer::tag` when the buffer is seen as an array of `u64`s (its layout,
/// const-asserted in `capvisor_ipc::abi`).
pub const IPC_TAG_WORD: usize = core::mem::offset_of!(IpcBuffer, tag) / 8;
/// Word index of `IpcBuffer::msg[0]`.
pub const IPC_MSG_WORD: usize = core::mem::offset_of!(IpcBuffer, msg) / 8;
/// Word index of `IpcBuffer::badge`.
pub const IPC_BADGE_WORD: usize = core::mem::offset_of!(IpcBuffer, badge) / 8;
/// Word index of `IpcBuffer::caps[0]`.
pub const IPC_CAPS_WORD: usize = core::mem::offset_of!(IpcBuffer, caps) / 8;
/// Word index of `IpcBuffer::cap_kinds[0]`.
pub const IPC_CAP_KINDS_WORD: usize = core::mem::offset_of!(IpcBuffer, cap_kinds) / 8;
/// Word index of `IpcBuffer::receive_slot`.
pub const IPC_RECEIVE_SLOT_WORD: usize = core::mem::offset_of!(IpcBuffer, receive_slot) / 8;
/// Number of words in an `IpcBuffer`.
pub const IPC_BUFFER_WORDS: usize = size_of::<IpcBuffer>() / 8;

const _: () = assert!(
    size_of::<IpcBuffer>().is_multiple_of(8) && IPC_RECEIVE_SLOT_WORD + 1 == IPC_BUFFER_WORDS
);

/// A thread's IPC buffer whose checks passed (the whole buffer is mapped readable and writable in
/// the thread's space, and is RAM): word-level access, so a transfer touches only the words a
/// message uses instead of all 584 bytes.
///
/// Words are indexed as the buffer's `u64`s (the `IPC_*_WORD` constants). Indices past
/// [`IPC_BUFFER_WORDS`] are never accessed: a read leaves those words unchanged and a write drops
/// them.
pub trait IpcWords {
    /// Reads `words.len()` words from word `first` on.
    fn read(&self, first: usize, words: &mut [u64]);
    /// Writes `words` from word `first` on.
    fn write(&mut self, first: usize, words: &[u64]);
}

/// What the glue does for the object model.
pub trait Effects {
    /// The word view of a checked IPC buffer ([`Effects::ipc_buffer`]).
    type IpcBuffer<'a>: IpcWords
    where
        Self: 'a;

    /// Checks a thread's IPC buffer as [`Effects::read_ipc_buffer`] does (the whole buffer mapped
    /// readable and writable) and gives word-level access to it.
    ///
    /// # Errors
    /// [`KernelError::BadAddress`] when it is not mapped so.
    fn ipc_buffer(&mut self, buffer: UserBuffer) -> Result<Self::IpcBuffer<'_>, KernelError>;

    /// Writes a stage-2 leaf descriptor for `[ipa, ipa + size)` → `[pa, pa + size)` in `space`.
    ///
    /// # Errors
    /// [`KernelError::SlotOccupied`] when a valid descriptor already covers part of the range;
    /// [`KernelError::NotEnoughMemory`] when no table page is left; [`KernelError::BadAddress`] when
    /// the IPA is outside the space.
    fn map(
        &mut self,
        space: SpaceRef,
        ipa: Ipa,
        pa: PhysAddr,
        size: u64,
        access: S2Access,
        memtype: MemType,
    ) -> Result<(), KernelError>;

    /// Removes the mapping of `[ipa, ipa + size)` from `space` and invalidates the TLB by IPA for the
    /// space's VMID before returning (break-before-make's "break").
    fn unmap(&mut self, space: SpaceRef, ipa: Ipa, size: u64);

    /// A new address space (a service space, or a VM when `vm`): allocate its root table and VMID.
    ///
    /// # Errors
    /// [`KernelError::NotEnoughMemory`] when no VMID or table page is left.
    fn space_created(&mut self, space: SpaceRef, vm: bool) -> Result<Vmid, KernelError>;

    /// The space's last capability was deleted: tear down its tables, invalidate its VMID's TLB
    /// entries, free the VMID.
    fn space_destroyed(&mut self, space: SpaceRef, vmid: Vmid);

    /// Zeroes a frame retyped from RAM untyped (it may hold an earlier owner's data).
    fn clear_frame(&mut self, pa: PhysAddr, size: u64);

    /// Reads a thread's IPC buffer. The glue translates the address through the thread's space and
    /// checks that the whole buffer is mapped readable and writable there.
    ///
    /// # Errors
    /// [`KernelError::BadAddress`] when it is not.
    fn read_ipc_buffer(&mut self, buffer: UserBuffer) -> Result<IpcBuffer, KernelError>;

    /// Writes a thread's IPC buffer (same checks as reading).
    ///
    /// # Errors
    /// [`KernelError::BadAddress`] when it is not mapped.
    fn write_ipc_buffer(&mut self, buffer: UserBuffer, data: &IpcBuffer)
    -> Result<(), KernelError>;

    /// A thread was configured: its next run starts at `pc` with stack pointer `sp` (the glue
    /// resets the thread's saved register context and passes `ipc_buffer`, the buffer address the
    /// thread was configured with, 0 for none, in `x0`: the runtime's entry convention).
    fn thread_start(&mut self, thread: ThreadRef, pc: u64, sp: u64, ipc_buffer: u64);

    /// An IRQ handler acknowledged interrupt `intid`: unmask it so it can fire again.
    fn irq_ack(&mut self, intid: u32);

    /// Interrupt `intid` is now forwarded to a vCPU (`forwarding`: unmask it, it is delivered
    /// as it comes) or no longer (mask it until a handler acknowledges it).
    fn irq_forwarding(&mut self, intid: u32, forwarding: bool);

    /// A vCPU object was created: set its EL1 state to the reset state.
    fn vcpu_created(&mut self, vcpu: VcpuRef);

    /// Reads or writes a register of `vcpu`, run by `thread` (which is not running: the caller is).
    ///
    /// # Errors
    /// [`KernelError::InvalidArgument`] for a value the register may not hold (e.g. a PSTATE that
    /// is not EL1 or EL0 in AArch64) or a read of a write-only register.
    fn vcpu_register(
        &mut self,
        thread: ThreadRef,
        vcpu: VcpuRef,
        access: RegisterAccess,
    ) -> Result<u64, KernelError>;

    /// Makes virtual interrupt `intid` pending for `vcpu` at `priority` (in a list register of
    /// its virtual CPU interface).
    ///
    /// # Errors
    /// [`KernelError::ListRegistersFull`] when every list register holds another interrupt.
    fn vcpu_inject_irq(
        &mut self,
        vcpu: VcpuRef,
        intid: u32,
        priority: u8,
    ) -> Result<(), KernelError>;

    /// Applies a fault handler's resolution of `fault` to the vCPU run by `thread` before it is
    /// made ready again (register writes, PC advance, abort injection).
    ///
    /// # Errors
    /// [`KernelError::InvalidArgument`] when the resolution is not valid for the fault or the vCPU's
    /// state (e.g. an injected syndrome whose exception class does not match the guest's EL):
    /// nothing is changed and the vCPU stays stopped.
    fn resolve_guest_fault(
        &mut self,
        thread: ThreadRef,
        vcpu: VcpuRef,
        fault: &GuestFault,
        resolution: &Resolution,
    ) -> Result<(), KernelError>;

    /// Performs cache or TLB maintenance (the object model has checked the capabilities and that
    /// the operation suits the target).
    fn maintenance(&mut self, op: CacheOp, target: MaintenanceTarget);
}

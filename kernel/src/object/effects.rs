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
use capvisor_ipc::protocols::guest_call::CallResult;

use super::VcpuRef;
use crate::context::{El1State, ThreadContext, VmStats};
use crate::stage2::S2Access;
use crate::vgic::VgicState;
use capvisor_ipc::memory::MemoryType;

/// What a cache or TLB maintenance invocation covers.
#[derive(Debug)]
pub enum MaintenanceTarget<'a> {
    /// A frame's whole physical range (RAM only), done for the VM `vm` when one was named.
    Frame {
        /// The frame's base.
        pa: PhysAddr,
        /// Its size.
        size: u64,
        /// The VM it is done for (for its counters), if the caller named one.
        vm: Option<&'a mut SpaceGlue>,
    },
    /// An IPA range of a VM (only its mapped pages are touched).
    Vm {
        /// The VM.
        vm: &'a mut SpaceGlue,
        /// Start of the range.
        ipa: Ipa,
        /// Its size.
        size: u64,
    },
}

/// How a vCPU goes on after its fault was resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resumption {
    /// It runs again.
    Run,
    /// It sleeps (a WFI with nothing pending) until an interrupt can wake it: a virtual
    /// interrupt made pending for it, or its virtual timer reaching `deadline` (physical counter
    /// ticks; `None`: its timer is off).
    Sleep {
        /// When its virtual timer fires, in physical counter ticks.
        deadline: Option<u64>,
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

/// What the glue keeps in a thread: its saved registers and its name.
#[derive(Debug, Clone, Copy)]
pub struct ThreadGlue {
    /// The registers while it is not running (the exception path saves into them).
    pub context: ThreadContext,
    /// The image service's name (threads services create have none).
    pub name: Option<&'static str>,
}

impl ThreadGlue {
    /// A new thread's: zero registers, no name.
    pub const NEW: Self = Self {
        context: ThreadContext::ZERO,
        name: None,
    };
}

/// What the glue keeps in a vCPU: its EL1 state and virtual CPU interface while not loaded.
#[derive(Debug, Clone, Copy)]
pub struct VcpuGlue {
    /// EL1 system registers, timer and FP/SIMD.
    pub el1: El1State,
    /// The virtual CPU interface (list registers, active priorities, VMCR).
    pub vgic: VgicState,
    /// ESR_EL2 of its last exit (its IL bit says how far to step past the instruction).
    pub exit_esr: u64,
    /// The registers the kernel emulates for it: debug, the EL1 physical timer.
    pub emul: crate::vsysreg::Emulated,
    /// Its physical timer's interrupt level as last presented to it (in a list register).
    pub ptimer_line: bool,
    /// VDISR_EL2 (with FEAT_RAS): the guest's DISR_EL1, where its ESB records a deferred
    /// virtual SError.
    pub vdisr: u64,
}

impl VcpuGlue {
    /// A vCPU at reset.
    pub const RESET: Self = Self {
        el1: El1State::RESET,
        vgic: VgicState::RESET,
        exit_esr: 0,
        emul: crate::vsysreg::Emulated::RESET,
        ptimer_line: false,
        vdisr: 0,
    };
}

/// What the glue keeps in an address space: its stage-2 tables, which live in the space's own
/// memory (its table budget, paid from the untyped it was retyped from), and its VMID.
#[derive(Debug, Clone, Copy, Default)]
pub struct SpaceGlue {
    /// Physical address of the root table (0 until [`Effects::space_created`]).
    pub root: u64,
    /// The next unused page of the table budget.
    pub next_table: u64,
    /// The end of the table budget.
    pub end: u64,
    /// The hardware VMID, valid while `vmid_generation` is the allocator's current one.
    pub vmid: u16,
    /// The VMID allocator's generation `vmid` belongs to (0: none yet).
    pub vmid_generation: u64,
    /// Whether the space is a VM.
    pub vm: bool,
    /// Per-VM counters.
    pub stats: VmStats,
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
///
/// The per-object state the glue keeps (a thread's registers, a vCPU's EL1 state, a space's
/// tables) lives inside the kernel objects; the kernel hands it to each call that needs it.
pub trait Effects {
    /// The word view of a checked IPC buffer ([`Effects::ipc_buffer`]).
    type IpcBuffer<'a>: IpcWords
    where
        Self: 'a;

    /// Checks the IPC buffer at `addr` of `space` as [`Effects::read_ipc_buffer`] does (the
    /// whole buffer mapped readable and writable) and gives word-level access to it.
    ///
    /// # Errors
    /// [`KernelError::BadAddress`] when it is not mapped so.
    fn ipc_buffer(
        &mut self,
        space: &SpaceGlue,
        addr: Ipa,
    ) -> Result<Self::IpcBuffer<'_>, KernelError>;

    /// Writes a stage-2 leaf descriptor for `[ipa, ipa + size)` → `[pa, pa + size)` in `space`,
    /// taking any table page it needs from the space's own budget.
    ///
    /// # Errors
    /// [`KernelError::SlotOccupied`] when a valid descriptor already covers part of the range;
    /// [`KernelError::NotEnoughMemory`] when the space's table budget is used up;
    /// [`KernelError::BadAddress`] when the IPA is outside the space.
    fn map(
        &mut self,
        space: &mut SpaceGlue,
        ipa: Ipa,
        pa: PhysAddr,
        size: u64,
        access: S2Access,
        memtype: MemoryType,
    ) -> Result<(), KernelError>;

    /// Removes the mapping of `[ipa, ipa + size)` from `space` and invalidates the TLB by IPA for
    /// the space's VMID before returning (break-before-make's "break").
    fn unmap(&mut self, space: &mut SpaceGlue, ipa: Ipa, size: u64);

    /// A new address space (a VM when `space.vm`) occupying `[memory, memory + bytes)`: its
    /// first page holds the kernel's record, the rest is the glue's — the root table and the
    /// table budget.
    ///
    /// # Errors
    /// [`KernelError::NotEnoughMemory`] when the memory cannot hold a root table.
    fn space_created(
        &mut self,
        space: &mut SpaceGlue,
        memory: PhysAddr,
        bytes: u64,
    ) -> Result<(), KernelError>;

    /// The space's last capability was deleted: invalidate its VMID's TLB entries (its table
    /// pages return to the untyped with the object).
    fn space_destroyed(&mut self, space: &mut SpaceGlue);

    /// Zeroes a frame retyped from RAM untyped (it may hold an earlier owner's data).
    fn clear_frame(&mut self, pa: PhysAddr, size: u64);

    /// Reads the IPC buffer at `addr` of `space`. The glue translates the address through the
    /// space's stage-2 tables and checks that the whole buffer is mapped readable and writable.
    ///
    /// # Errors
    /// [`KernelError::BadAddress`] when it is not.
    fn read_ipc_buffer(&mut self, space: &SpaceGlue, addr: Ipa) -> Result<IpcBuffer, KernelError>;

    /// Writes the IPC buffer at `addr` of `space` (same checks as reading).
    ///
    /// # Errors
    /// [`KernelError::BadAddress`] when it is not mapped.
    fn write_ipc_buffer(
        &mut self,
        space: &SpaceGlue,
        addr: Ipa,
        data: &IpcBuffer,
    ) -> Result<(), KernelError>;

    /// A thread was configured: its next run starts at `pc` with stack pointer `sp` at EL0 (the
    /// glue resets the saved context and passes `ipc_buffer`, the buffer address the thread was
    /// configured with, 0 for none, in `x0`: the runtime's entry convention).
    fn thread_start(&mut self, thread: &mut ThreadGlue, pc: u64, sp: u64, ipc_buffer: u64);

    /// The thread's system call stopped at a preemption point and must run again: make its next
    /// run re-execute the `svc` (its registers are as it made the call).
    fn restart_syscall(&mut self, thread: &mut ThreadGlue);

    /// An IRQ handler acknowledged interrupt `intid`: unmask it so it can fire again.
    fn irq_ack(&mut self, intid: u32);

    /// Interrupt `intid` is now forwarded to a vCPU (`forwarding`: unmask it, it is delivered
    /// as it comes) or no longer (deactivate it if a guest still held it, and mask it until a
    /// handler acknowledges it).
    fn irq_forwarding(&mut self, intid: u32, forwarding: bool);

    /// A vCPU object was created: set its EL1 state to the reset state.
    fn vcpu_created(&mut self, vcpu: VcpuRef, state: &mut VcpuGlue);

    /// A vCPU object is being destroyed: forget it if its state is loaded on the CPU.
    fn vcpu_destroyed(&mut self, vcpu: VcpuRef);

    /// Reads or writes a register of `vcpu`, run by the thread whose glue state is `thread`
    /// (which is not running: the caller is).
    ///
    /// # Errors
    /// [`KernelError::InvalidArgument`] for a value the register may not hold (e.g. a PSTATE that
    /// is not EL1 or EL0 in AArch64) or a read of a write-only register.
    fn vcpu_register(
        &mut self,
        thread: &mut ThreadGlue,
        vcpu: VcpuRef,
        state: &mut VcpuGlue,
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
        state: &mut VcpuGlue,
        intid: u32,
        priority: u8,
    ) -> Result<(), KernelError>;

    /// Applies a fault handler's resolution of `fault` to the vCPU run by the thread whose glue
    /// state is `thread`, before it is made ready again (register writes, PC advance, abort
    /// injection).
    ///
    /// Returns whether the vCPU runs or sleeps ([`Resolution::WaitForInterrupt`] with nothing
    /// pending for it).
    ///
    /// # Errors
    /// [`KernelError::InvalidArgument`] when the resolution is not valid for the fault or the vCPU's
    /// state (e.g. an injected syndrome whose exception class does not match the guest's EL):
    /// nothing is changed and the vCPU stays stopped.
    fn resolve_guest_fault(
        &mut self,
        thread: &mut ThreadGlue,
        vcpu: VcpuRef,
        state: &mut VcpuGlue,
        fault: &GuestFault,
        resolution: &Resolution,
    ) -> Result<Resumption, KernelError>;

    /// Applies a guest-call result (`guest_call::CallResult`, the fixed-layout reply to an
    /// `hvc` or `smc`) to the vCPU's thread: x0, x1, … take its values and, for an `smc` that
    /// asks for it, the PC steps past the instruction (an `hvc`'s return address is already
    /// past it). The same as a `Resolution::Emulate` of those writes, without building one.
    ///
    /// # Errors
    /// As [`Effects::resolve_guest_fault`] (the glue's implementation never refuses).
    fn apply_guest_call(
        &mut self,
        thread: &mut ThreadGlue,
        state: &mut VcpuGlue,
        fault: &GuestFault,
        result: &CallResult,
    ) -> Result<Resumption, KernelError> {
        apply_call_result(&mut thread.context, state.exit_esr, fault, result);
        Ok(Resumption::Run)
    }

    /// Performs cache or TLB maintenance (the object model has checked the capabilities, that
    /// the operation suits the target, and that the range is bounded).
    fn maintenance(&mut self, op: CacheOp, target: MaintenanceTarget<'_>);
}

/// What [`Effects::apply_guest_call`] does to the vCPU's saved registers: x0.. = the values, the
/// PC past the trapped instruction (by ESR_EL2.IL of `exit_esr`) when the result asks for it
/// and the call is not an `hvc`.
pub fn apply_call_result(
    context: &mut ThreadContext,
    exit_esr: u64,
    fault: &GuestFault,
    result: &CallResult,
) {
    let count = usize::from(result.count).min(result.values.len());
    let [a, b, c, d] = result.values;
    for (x, value) in context.x.iter_mut().zip([a, b, c, d]).take(count) {
        *x = value;
    }
    if result.advance_pc && !matches!(fault, GuestFault::Hvc { .. }) {
        crate::exception::step(context, exit_esr);
    }
}

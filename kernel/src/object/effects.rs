//! The side effects the object model asks of the EL2 glue: stage-2 tables, IPC buffer access,
//! frame clearing, thread start and interrupt acknowledgement.
//!
//! Every method runs under the big kernel lock and must not call back into the
//! [`Kernel`](super::Kernel). The kernel calls a method only after every check of the operation passed, so a
//! failing effect leaves the object model unchanged (the kernel returns its error to the caller).

use capvisor_ipc::abi::{IpcBuffer, KernelError};
use capvisor_ipc::types::{Ipa, PhysAddr};

use super::arena::{SpaceRef, ThreadRef};
use crate::stage2::{MemType, S2Access};

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

/// What the glue does for the object model.
pub trait Effects {
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
}

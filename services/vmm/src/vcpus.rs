//! The guest's vCPUs as the kernel knows them: a `Cap<Vcpu>` and the `Cap<Thread>` that runs it
//! per vCPU index, invoked through the runtime's typed [`Kernel`].

use capvisor_ipc::abi::KernelError;
use capvisor_ipc::cap::{CPtr, Cap, IrqHandler, ObjectType, Thread, Vcpu};
use capvisor_rt::kernel::Kernel;

use crate::vmm::MAX_VCPUS;

/// The vCPU and thread capabilities, by vCPU index (absent: the null capability).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vcpus {
    vcpu: [Option<Cap<Vcpu>>; MAX_VCPUS],
    thread: [Option<Cap<Thread>>; MAX_VCPUS],
}

/// The capability in `slot`, if there is one.
fn cap<T: ObjectType>(slot: u64) -> Option<Cap<T>> {
    (slot != 0).then(|| Cap::from_cptr(CPtr::new(slot)))
}

impl Vcpus {
    /// The capabilities in slots `vcpu[n]` and `thread[n]` (0: none), as the boot-info page
    /// lists them.
    #[must_use]
    pub fn from_slots(vcpu: &[u64; MAX_VCPUS], thread: &[u64; MAX_VCPUS]) -> Self {
        Self {
            vcpu: vcpu.map(cap),
            thread: thread.map(cap),
        }
    }

    fn vcpu(&self, index: u32) -> Result<Cap<Vcpu>, KernelError> {
        self.vcpu
            .get(index as usize)
            .copied()
            .flatten()
            .ok_or(KernelError::InvalidSlot)
    }

    fn thread(&self, index: u32) -> Result<Cap<Thread>, KernelError> {
        self.thread
            .get(index as usize)
            .copied()
            .flatten()
            .ok_or(KernelError::InvalidSlot)
    }

    /// Reads a register of vCPU `index` (x0–x30 = 0–30, or a `VcpuRegister` code).
    ///
    /// # Errors
    /// `InvalidSlot` for a vCPU the guest does not have; the kernel's.
    pub fn read_register(
        &self,
        kernel: &mut impl Kernel,
        index: u32,
        register: u64,
    ) -> Result<u64, KernelError> {
        kernel.read_register(self.vcpu(index)?, register)
    }

    /// Writes a register of vCPU `index`.
    ///
    /// # Errors
    /// As [`Vcpus::read_register`].
    pub fn write_register(
        &self,
        kernel: &mut impl Kernel,
        index: u32,
        register: u64,
        value: u64,
    ) -> Result<(), KernelError> {
        kernel.write_register(self.vcpu(index)?, register, value)
    }

    /// Makes virtual interrupt `intid` pending for vCPU `index` at `priority`.
    ///
    /// # Errors
    /// As [`Vcpus::read_register`]; `ListRegistersFull`.
    pub fn inject_irq(
        &self,
        kernel: &mut impl Kernel,
        index: u32,
        intid: u32,
        priority: u8,
    ) -> Result<(), KernelError> {
        kernel.inject_irq(self.vcpu(index)?, intid, priority)
    }

    /// Resumes the thread of vCPU `index`.
    ///
    /// # Errors
    /// As [`Vcpus::read_register`].
    pub fn resume(&self, kernel: &mut impl Kernel, index: u32) -> Result<(), KernelError> {
        kernel.resume(self.thread(index)?)
    }

    /// Suspends the thread of vCPU `index`.
    ///
    /// # Errors
    /// As [`Vcpus::read_register`].
    pub fn suspend(&self, kernel: &mut impl Kernel, index: u32) -> Result<(), KernelError> {
        kernel.suspend(self.thread(index)?)
    }

    /// Delivers the interrupt `handler` stands for straight to vCPU `index`, as `intid`.
    ///
    /// # Errors
    /// As [`Vcpus::read_register`].
    pub fn forward_irq(
        &self,
        kernel: &mut impl Kernel,
        handler: Cap<IrqHandler>,
        index: u32,
        intid: u32,
    ) -> Result<(), KernelError> {
        kernel.forward_irq(handler, self.vcpu(index)?, intid)
    }
}

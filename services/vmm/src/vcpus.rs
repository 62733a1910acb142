//! The guest's vCPUs as the kernel knows them: a `Cap<Vcpu>` and the `Cap<Thread>` that runs it
//! per vCPU index, invoked through the runtime's typed [`Kernel`].

use capvisor_ipc::abi::KernelError;
use capvisor_ipc::cap::{CPtr, Cap, IrqHandler, ObjectType, Thread, Vcpu};
use capvisor_rt::kernel::Kernel;

use capvisor_ipc::bootinfo::MAX_GUEST_VCPUS as MAX_VCPUS;

/// The vCPU and thread capabilities, by vCPU index (absent: the null capability, which no slot
/// holds; not an `Option`, which would double the size of a handle the VMM's future carries on
/// its 64 KiB stack).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vcpus {
    vcpu: [Cap<Vcpu>; MAX_VCPUS],
    thread: [Cap<Thread>; MAX_VCPUS],
}

/// The capability in `slot`, if there is one.
fn present<T: ObjectType>(caps: &[Cap<T>; MAX_VCPUS], index: u32) -> Result<Cap<T>, KernelError> {
    caps.get(index as usize)
        .copied()
        .filter(|cap| !cap.cptr().is_null())
        .ok_or(KernelError::InvalidSlot)
}

impl Vcpus {
    /// The capabilities in slots `vcpu[n]` and `thread[n]` (0: none), as the boot-info page
    /// lists them.
    #[must_use]
    pub fn from_slots(vcpu: &[u64; MAX_VCPUS], thread: &[u64; MAX_VCPUS]) -> Self {
        Self {
            vcpu: vcpu.map(|slot| Cap::from_cptr(CPtr::new(slot))),
            thread: thread.map(|slot| Cap::from_cptr(CPtr::new(slot))),
        }
    }

    fn vcpu(&self, index: u32) -> Result<Cap<Vcpu>, KernelError> {
        present(&self.vcpu, index)
    }

    fn thread(&self, index: u32) -> Result<Cap<Thread>, KernelError> {
        present(&self.thread, index)
    }

    /// These capabilities, to invoke through `kernel`.
    pub const fn with<'a, K: Kernel>(&'a self, kernel: &'a mut K) -> Invoker<'a, K> {
        Invoker { caps: self, kernel }
    }
}

/// The vCPUs' capabilities and the kernel to invoke them through, for one call.
#[derive(Debug)]
pub struct Invoker<'a, K> {
    caps: &'a Vcpus,
    kernel: &'a mut K,
}

impl<K: Kernel> Invoker<'_, K> {
    /// Reads a register of vCPU `index` (x0–x30 = 0–30, or a `VcpuRegister` code).
    ///
    /// # Errors
    /// `InvalidSlot` for a vCPU the guest does not have; the kernel's.
    pub fn read_register(self, index: u32, register: u64) -> Result<u64, KernelError> {
        self.kernel.read_register(self.caps.vcpu(index)?, register)
    }

    /// Writes a register of vCPU `index`.
    ///
    /// # Errors
    /// As [`Invoker::read_register`].
    pub fn write_register(self, index: u32, register: u64, value: u64) -> Result<(), KernelError> {
        self.kernel
            .write_register(self.caps.vcpu(index)?, register, value)
    }

    /// Makes virtual interrupt `intid` pending for vCPU `index` at `priority`.
    ///
    /// # Errors
    /// As [`Invoker::read_register`]; `ListRegistersFull`.
    pub fn inject_irq(self, index: u32, intid: u32, priority: u8) -> Result<(), KernelError> {
        self.kernel
            .inject_irq(self.caps.vcpu(index)?, intid, priority)
    }

    /// Resumes the thread of vCPU `index`.
    ///
    /// # Errors
    /// As [`Invoker::read_register`].
    pub fn resume(self, index: u32) -> Result<(), KernelError> {
        self.kernel.resume(self.caps.thread(index)?)
    }

    /// Suspends the thread of vCPU `index`.
    ///
    /// # Errors
    /// As [`Invoker::read_register`].
    pub fn suspend(self, index: u32) -> Result<(), KernelError> {
        self.kernel.suspend(self.caps.thread(index)?)
    }

    /// Delivers the interrupt `handler` stands for straight to vCPU `index`, as `intid`.
    ///
    /// # Errors
    /// As [`Invoker::read_register`].
    pub fn forward_irq(
        self,
        handler: Cap<IrqHandler>,
        index: u32,
        intid: u32,
    ) -> Result<(), KernelError> {
        self.kernel
            .forward_irq(handler, self.caps.vcpu(index)?, intid)
    }
}

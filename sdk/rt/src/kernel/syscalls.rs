//! [`Kernel`] over the system calls: each method is one capability invocation (`crate::sys`).

use capvisor_ipc::abi::{CacheOp, Invocation, KernelError};
use capvisor_ipc::cap::{
    CPtr, Cap, Frame, IrqHandler, ObjectKind, ObjectType, Rights, Thread, Untyped, Vcpu, Vm,
};
use capvisor_ipc::memory::MemoryType;

use super::{FreeSlots, Kernel, Mappable, NoFreeSlots, OWN_CNODE, OWN_SPACE, Slots, Space};
use crate::sys;

/// The kernel, reached with system calls; capabilities it creates go to `slots`.
#[derive(Debug, Clone)]
pub struct Syscalls<S = Slots> {
    slots: S,
}

impl Syscalls {
    /// The kernel, with the free slots `[first, end)` of this service's CNode (its boot-info
    /// page's `free_first` and `free_end`); emptied slots are not reused.
    #[must_use]
    pub const fn new(first: u64, end: u64) -> Self {
        Self::with_reuse(first, end)
    }
}

impl<const REUSED: usize> Syscalls<Slots<REUSED>> {
    /// As [`Syscalls::new`], reusing up to `REUSED` slots a revoke emptied.
    #[must_use]
    pub const fn with_reuse(first: u64, end: u64) -> Self {
        Self {
            slots: Slots::new(first, end),
        }
    }
}

impl Syscalls<NoFreeSlots> {
    /// The kernel for a service that creates no capabilities: zero-sized.
    #[must_use]
    pub const fn invoke_only() -> Self {
        Self { slots: NoFreeSlots }
    }
}

fn done(result: Result<[u64; 4], KernelError>) -> Result<(), KernelError> {
    result.map(|_| ())
}

impl<S: FreeSlots> Kernel for Syscalls<S> {
    fn free_slots(&self) -> u64 {
        self.slots.left()
    }

    fn retype<T: ObjectType>(
        &mut self,
        untyped: Cap<Untyped>,
        size_bits: u32,
    ) -> Result<Cap<T>, KernelError> {
        let kind = u64::from(T::KIND.code());
        let slot = self.slots.fill(|slot| {
            sys::retype(untyped.cptr(), kind, size_bits.into(), CPtr::NULL, slot, 1)
        })?;
        Ok(Cap::from_cptr(CPtr::new(slot)))
    }

    fn untyped_size(&mut self, untyped: Cap<Untyped>) -> Result<u64, KernelError> {
        let [kind, _, _, size] = sys::invoke(untyped.cptr(), Invocation::Identify.code(), &[])?;
        if kind != u64::from(ObjectKind::Untyped.code()) {
            return Err(KernelError::WrongType);
        }
        Ok(size)
    }

    fn copy<T: ObjectType>(&mut self, cap: Cap<T>) -> Result<Cap<T>, KernelError> {
        let slot = self
            .slots
            .fill(|slot| sys::copy(OWN_CNODE, slot, cap.cptr(), Rights::ALL))?;
        Ok(Cap::from_cptr(CPtr::new(slot)))
    }

    fn revoke<T: ObjectType>(&mut self, cap: Cap<T>) -> Result<(), KernelError> {
        sys::revoke(OWN_CNODE, cap.cptr().raw())
    }

    fn reuse<T: ObjectType>(&mut self, emptied: Cap<T>) {
        self.slots.reuse(emptied.cptr().raw());
    }

    #[inline]
    fn map<T: Mappable>(
        &mut self,
        frame: Cap<T>,
        space: Space,
        ipa: u64,
        access: u64,
        memtype: MemoryType,
    ) -> Result<(), KernelError> {
        let space = match space {
            Space::Vm(vm) => vm.cptr(),
            Space::Own => OWN_SPACE,
        };
        sys::map(frame.cptr(), space, ipa, access, memtype.code())
    }

    #[inline]
    fn unmap<T: Mappable>(&mut self, frame: Cap<T>) -> Result<(), KernelError> {
        sys::unmap(frame.cptr())
    }

    #[inline]
    fn frame_cache(
        &mut self,
        frame: Cap<Frame>,
        op: CacheOp,
        vm: Cap<Vm>,
    ) -> Result<(), KernelError> {
        let args = [op.code(), vm.cptr().raw()];
        done(sys::invoke(
            frame.cptr(),
            Invocation::CacheMaintenance.code(),
            &args,
        ))
    }

    fn vm_cache(
        &mut self,
        vm: Cap<Vm>,
        op: CacheOp,
        ipa: u64,
        size: u64,
    ) -> Result<(), KernelError> {
        let args = [op.code(), ipa, size];
        done(sys::invoke(
            vm.cptr(),
            Invocation::CacheMaintenance.code(),
            &args,
        ))
    }

    #[inline]
    fn read_register(&mut self, vcpu: Cap<Vcpu>, register: u64) -> Result<u64, KernelError> {
        let code = Invocation::VcpuReadRegisters.code();
        sys::invoke(vcpu.cptr(), code, &[register]).map(|words| words[0])
    }

    #[inline]
    fn write_register(
        &mut self,
        vcpu: Cap<Vcpu>,
        register: u64,
        value: u64,
    ) -> Result<(), KernelError> {
        let code = Invocation::VcpuWriteRegisters.code();
        done(sys::invoke(vcpu.cptr(), code, &[register, value]))
    }

    #[inline]
    fn inject_irq(&mut self, vcpu: Cap<Vcpu>, intid: u32, priority: u8) -> Result<(), KernelError> {
        let args = [u64::from(intid), u64::from(priority)];
        done(sys::invoke(
            vcpu.cptr(),
            Invocation::VcpuInjectIrq.code(),
            &args,
        ))
    }

    fn forward_irq(
        &mut self,
        handler: Cap<IrqHandler>,
        vcpu: Cap<Vcpu>,
        intid: u32,
    ) -> Result<(), KernelError> {
        let args = [vcpu.cptr().raw(), u64::from(intid)];
        done(sys::invoke(
            handler.cptr(),
            Invocation::IrqForwardToVcpu.code(),
            &args,
        ))
    }

    fn resume(&mut self, thread: Cap<Thread>) -> Result<(), KernelError> {
        done(sys::invoke(thread.cptr(), Invocation::Resume.code(), &[]))
    }

    fn suspend(&mut self, thread: Cap<Thread>) -> Result<(), KernelError> {
        done(sys::invoke(thread.cptr(), Invocation::Suspend.code(), &[]))
    }
}

//! Thread invocations: configure, resume, suspend.
//!
//! `ThreadConfigure` (label [`THREAD_CONFIGURE`](super::invoke::THREAD_CONFIGURE)) takes seven
//! words: entry PC, stack pointer, IPC buffer address (0: none; else 8-byte aligned and inside the
//! IPA space), `priority | max_priority << 8`, the CSpace's CNode CPtr, the AddressSpace CPtr, and
//! the fault endpoint CPtr (0: none). All CPtrs are in the caller's CSpace. Only an inactive thread
//! (never resumed, or suspended) is configured, so the glue never resets the context of a thread
//! that is blocked in a syscall. Neither priority may exceed the caller's maximum priority
//! (seL4's MCP), so a service can never create a thread more important than itself.
//!
//! A thread bound to a vCPU runs only in the VM it was bound in: configuring it into any other
//! space is `IllegalOperation` (otherwise its saved guest state could be entered as a service,
//! with HCR_EL2.TGE set, which is an illegal exception return). A space runs at most
//! [`MAX_SPACE_THREADS`](super::MAX_SPACE_THREADS) threads (`NotEnoughMemory` beyond).
//!
//! `Resume` makes an inactive thread ready (a thread stopped after a fault restarts at the
//! faulting instruction); `Suspend` takes a thread out of whatever it waits for. Both need `WRITE`
//! on the thread capability, as does configure.
//!
//! `IrqControlNameThread` (on IrqControl, the root's platform capability: only init names
//! threads) names a thread after one of the image's services ([`Kernel::set_service_names`]):
//! the console's `[name]` prefix and the kernel's fault reports use it, so no other service can
//! print as another.

use capvisor_ipc::abi::{IpcBuffer, KernelError};
use capvisor_ipc::cap::{CPtr, Rights};
use capvisor_ipc::types::Ipa;

use super::Kernel;
use super::capability::Object;
use super::effects::Effects;
use super::invoke::Args;
use super::memory::{SpaceRef, ThreadRef};
use super::regs::SyscallRegs;
use super::thread::ThreadState;

impl Kernel {
    pub(super) fn configure_thread(
        &mut self,
        caller: ThreadRef,
        thread: ThreadRef,
        rights: Rights,
        args: &Args,
        fx: &mut impl Effects,
    ) -> Result<(), KernelError> {
        let [pc, sp, ipc_buffer, priorities, cspace, space, fault] = args.take()?;
        if !rights.contains(Rights::WRITE) {
            return Err(KernelError::InsufficientRights);
        }
        if self.threads.get(thread)?.state != ThreadState::Inactive {
            return Err(KernelError::IllegalOperation);
        }
        if priorities >> 16 != 0 {
            return Err(KernelError::InvalidArgument);
        }
        let (priority, max_priority) = (priorities as u8, (priorities >> 8) as u8);
        let caller_max = self.threads.get(caller)?.max_priority;
        if priority > caller_max || max_priority > caller_max {
            return Err(KernelError::RangeError);
        }
        self.check_ipc_buffer(ipc_buffer)?;
        let Object::CNode(cspace) = self.lookup(caller, CPtr::new(cspace))?.1.object else {
            return Err(KernelError::WrongType);
        };
        // A thread in a VM runs the vCPU it is bound to (`ThreadBindVcpu`), never EL0 code.
        let (Object::AddressSpace(space) | Object::Vm(space)) =
            self.lookup(caller, CPtr::new(space))?.1.object
        else {
            return Err(KernelError::WrongType);
        };
        // A thread with a vCPU runs only in its VM (module doc).
        let t = self.threads.get(thread)?;
        if t.vcpu.is_some() && t.space != Some(space) {
            return Err(KernelError::IllegalOperation);
        }
        let fault_endpoint = match fault {
            0 => None,
            cptr => {
                let (_, cap) = self.lookup(caller, CPtr::new(cptr))?;
                let Object::Endpoint(endpoint) = cap.object else {
                    return Err(KernelError::WrongType);
                };
                if !cap.rights.contains(Rights::WRITE) {
                    return Err(KernelError::InsufficientRights);
                }
                Some((endpoint, cap.badge))
            }
        };
        self.live_cnode(cspace)?;
        self.join_space(thread, space)?;
        let t = self.threads.get_mut(thread)?;
        t.priority = priority;
        t.max_priority = max_priority;
        t.cspace = Some(cspace);
        t.ipc_buffer = Ipa::new(ipc_buffer);
        t.fault_endpoint = fault_endpoint;
        t.fault = None;
        t.regs_pending = false;
        fx.thread_start(&mut t.glue, pc, sp, ipc_buffer);
        Ok(())
    }

    /// Makes `thread` one of `space`'s threads (leaving its previous space).
    ///
    /// # Errors
    /// [`KernelError::NotEnoughMemory`] when the space runs [`MAX_SPACE_THREADS`] already;
    /// `Revoked` when it is gone.
    pub(super) fn join_space(
        &mut self,
        thread: ThreadRef,
        space: SpaceRef,
    ) -> Result<(), KernelError> {
        if self.threads.get(thread)?.space == Some(space) {
            return Ok(());
        }
        let s = self.spaces.get_mut(space)?;
        let free = s
            .threads
            .iter_mut()
            .find(|t| t.is_none())
            .ok_or(KernelError::NotEnoughMemory)?;
        *free = Some(thread);
        self.leave_space(thread);
        self.threads.get_mut(thread)?.space = Some(space);
        Ok(())
    }

    /// Takes `thread` out of its space's list (it is being destroyed or moved).
    pub(super) fn leave_space(&mut self, thread: ThreadRef) {
        let Some(space) = self
            .threads
            .get_mut(thread)
            .ok()
            .and_then(|t| t.space.take())
        else {
            return;
        };
        if let Ok(s) = self.spaces.get_mut(space)
            && let Some(entry) = s.threads.iter_mut().find(|t| **t == Some(thread))
        {
            *entry = None;
        }
    }

    /// An IPC buffer address: 0, or 8-byte aligned with the whole buffer inside the IPA space.
    pub(super) fn check_ipc_buffer(&self, addr: u64) -> Result<(), KernelError> {
        if addr == 0 {
            return Ok(());
        }
        if !addr.is_multiple_of(8) {
            return Err(KernelError::AlignmentError);
        }
        let limit = 1u64
            .checked_shl(u32::from(self.features.ipa_bits))
            .unwrap_or(u64::MAX);
        let size = core::mem::size_of::<IpcBuffer>() as u64;
        if addr.checked_add(size).is_none_or(|end| end > limit) {
            return Err(KernelError::BadAddress);
        }
        Ok(())
    }

    pub(super) fn bind_thread(
        &mut self,
        caller: ThreadRef,
        thread: ThreadRef,
        rights: Rights,
        args: &Args,
    ) -> Result<(), KernelError> {
        let [cptr] = args.take()?;
        if !rights.contains(Rights::WRITE) {
            return Err(KernelError::InsufficientRights);
        }
        if cptr == 0 {
            self.unbind(thread);
            return Ok(());
        }
        let (_, cap) = self.lookup(caller, CPtr::new(cptr))?;
        let Object::Notification(notification) = cap.object else {
            return Err(KernelError::WrongType);
        };
        if !cap.rights.contains(Rights::READ) {
            return Err(KernelError::InsufficientRights);
        }
        self.bind(thread, notification)
    }

    pub(super) fn resume_thread(
        &mut self,
        thread: ThreadRef,
        rights: Rights,
    ) -> Result<(), KernelError> {
        if !rights.contains(Rights::WRITE) {
            return Err(KernelError::InsufficientRights);
        }
        let t = self.threads.get(thread)?;
        if t.state != ThreadState::Inactive {
            return Ok(());
        }
        // A thread runs only in a live address space: the glue never switches to one without.
        if t.space.is_none_or(|space| self.spaces.get(space).is_err()) {
            return Err(KernelError::InvalidArgument);
        }
        // A VM's thread runs only with a vCPU; a service space's never has one.
        let in_vm = t.space.is_some_and(|space| self.space_is_vm(space));
        if in_vm != t.vcpu.is_some() {
            return Err(KernelError::InvalidArgument);
        }
        self.threads.get_mut(thread)?.fault = None;
        self.make_ready(thread);
        Ok(())
    }

    /// `IrqControlNameThread`: names the thread `cptr` (with `WRITE`) after the image's service
    /// entry `entry`.
    pub(super) fn name_thread(
        &mut self,
        caller: ThreadRef,
        cptr: u64,
        entry: u64,
    ) -> Result<(), KernelError> {
        let (_, cap) = self.lookup(caller, CPtr::new(cptr))?;
        let Object::Thread(thread) = cap.object else {
            return Err(KernelError::WrongType);
        };
        if !cap.rights.contains(Rights::WRITE) {
            return Err(KernelError::InsufficientRights);
        }
        let name = usize::try_from(entry)
            .ok()
            .and_then(|entry| self.service_names.get(entry).copied())
            .ok_or(KernelError::InvalidArgument)?;
        self.threads.get_mut(thread)?.glue.name = Some(name);
        Ok(())
    }

    pub(super) fn suspend_thread(
        &mut self,
        thread: ThreadRef,
        rights: Rights,
    ) -> Result<(), KernelError> {
        if !rights.contains(Rights::WRITE) {
            return Err(KernelError::InsufficientRights);
        }
        self.stop_thread(thread)
    }

    /// Takes a thread out of whatever it runs or waits for; a syscall it was blocked in ends with
    /// `Cancelled`.
    pub(super) fn stop_thread(&mut self, thread: ThreadRef) -> Result<(), KernelError> {
        let t = self.threads.get_mut(thread)?;
        let in_syscall =
            !matches!(t.state, ThreadState::Inactive | ThreadState::Ready) && t.fault.is_none();
        t.fault = None;
        self.unlink_thread(thread);
        if in_syscall {
            // Its blocked syscall ends: when resumed, it sees `Cancelled`, not its own arguments.
            self.set_result(thread, SyscallRegs::error(KernelError::Cancelled));
        }
        Ok(())
    }
}

//! The syscall entry point: decodes the registers of an `svc`, dispatches, and tells the glue what
//! to run next.
//!
//! # Contract with the glue
//! - **Registers.** The glue saves a thread's full context (x0–x30, SP_EL0, ELR, SPSR) in the
//!   thread's [`ThreadGlue`](super::ThreadGlue) on every trap, and on an `svc` calls
//!   [`Kernel::handle_syscall`]. The saved x0–x7 *are* the thread's syscall registers: the kernel
//!   reads the arguments there and writes results there, for the running thread as for one that
//!   blocked and is woken later (whose saved registers still hold its arguments until then). A
//!   thread that must make the call again (preempted at a restart point) keeps its arguments and
//!   has its PC rewound. The glue just restores the context.
//! - **Scheduling.** [`Schedule::Resume`]: return to the same thread. [`Schedule::Switch`]: call
//!   [`Kernel::pick_next`] and switch to the thread it returns (or idle on `None`).
//! - **Result registers.** `x7` = 0 or a `KernelError` code; after IPC, `x0` = badge, `x1` = the
//!   message-info word, `x2`–`x5` = the first message words (the rest, and capabilities, in the IPC
//!   buffer). After a capability invocation, `x1` = a message-info word with label 0 and the length
//!   of the returned words, which are in `x2`–`x5`.
//! - Every input is untrusted: no register value can make this panic or corrupt kernel state.

use capvisor_ipc::abi::{KernelError, MessageInfo, Syscall};
use capvisor_ipc::cap::{CPtr, Rights};

use super::Kernel;
use super::capability::Object;
use super::effects::Effects;
use super::memory::ThreadRef;
use super::regs::{SUCCESS, Schedule, SyscallRegs};
use super::thread::{SendInfo, ThreadState};

/// The words of a syscall that choose its path: x0, x1, x7.
#[derive(Debug, Clone, Copy)]
struct SyscallArgs {
    cptr: CPtr,
    info: u64,
    number: u64,
}

impl Kernel {
    /// Handles one `svc` of thread `current`, whose saved x0–x7 hold its arguments. See the
    /// module doc for the exact contract.
    ///
    /// Kept small: the entry checks and the IPC fast path, which reads its few registers
    /// itself; everything else goes out of line to [`Kernel::slow_syscall`].
    #[inline]
    pub fn handle_syscall(&mut self, current: ThreadRef, fx: &mut impl Effects) -> Schedule {
        let number = match self.threads.get_mut(current) {
            Ok(thread) if thread.state == ThreadState::Ready => {
                thread.regs_pending = false;
                thread.glue.context.x[7]
            }
            // The glue ran a thread the kernel does not consider runnable: reschedule.
            _ => return Schedule::Switch,
        };
        // The glue says which thread trapped: that is the one running on this CPU.
        self.sched.set_current(current);
        // The fast path leaves exactly the slow path's state, with `current` blocked.
        const CALL: u64 = Syscall::Call.code();
        const REPLY_RECV: u64 = Syscall::ReplyRecv.code();
        let fast = match number {
            CALL => self.fast_call(current),
            REPLY_RECV => self.fast_reply_recv(current, fx),
            _ => None,
        };
        if let Some(schedule) = fast {
            #[cfg(test)]
            super::fastpath::TAKEN.with(|taken| taken.set(taken.get() + 1));
            return schedule;
        }
        self.slow_syscall(current, fx)
    }

    /// [`Kernel::handle_syscall`] without the fast path (the tests compare the two).
    #[cfg(test)]
    pub(crate) fn handle_syscall_slow(
        &mut self,
        current: ThreadRef,
        fx: &mut impl Effects,
    ) -> Schedule {
        match self.threads.get_mut(current) {
            Ok(thread) if thread.state == ThreadState::Ready => thread.regs_pending = false,
            _ => return Schedule::Switch,
        }
        self.sched.set_current(current);
        self.slow_syscall(current, fx)
    }

    /// Everything after the entry checks: dispatch, errors, results and the scheduling decision.
    #[inline(never)]
    fn slow_syscall(&mut self, current: ThreadRef, fx: &mut impl Effects) -> Schedule {
        // Only x0 (the capability), x1 (the message info) and x7 (the number) decide the path;
        // the paths read the message words from the saved context themselves.
        let Ok(args) = self.threads.get(current).map(|t| {
            let x = &t.glue.context.x;
            SyscallArgs {
                cptr: CPtr::new(x[0]),
                info: x[1],
                number: x[7],
            }
        }) else {
            return Schedule::Switch;
        };
        if let Err(error) = self.dispatch(current, args, fx) {
            self.set_result(current, SyscallRegs::error(error));
        }
        if core::mem::take(&mut self.restart) {
            // Preempted: the saved registers still hold the arguments (a call that restarts
            // writes no results), and the thread makes the call again (after any pending
            // interrupt).
            if let Ok(thread) = self.threads.get_mut(current) {
                thread.regs_pending = false;
                fx.restart_syscall(&mut thread.glue);
            }
        }
        self.decide()
    }

    /// x0–x7 of `thread` if results were written there since its last syscall (once; for tests
    /// and diagnostics: the glue needs nothing, the results are in the saved context).
    #[inline]
    pub fn take_syscall_result(&mut self, thread: ThreadRef) -> Option<SyscallRegs> {
        let t = self.threads.get_mut(thread).ok()?;
        if !core::mem::take(&mut t.regs_pending) {
            return None;
        }
        Some(SyscallRegs::of(&t.glue.context))
    }

    fn dispatch(
        &mut self,
        current: ThreadRef,
        regs: SyscallArgs,
        fx: &mut impl Effects,
    ) -> Result<(), KernelError> {
        let number = Syscall::from_code(regs.number).ok_or(KernelError::InvalidSyscall)?;
        match number {
            Syscall::Call => self.sys_send(current, regs, true, true, fx),
            Syscall::Send => self.sys_send(current, regs, false, true, fx),
            Syscall::NbSend => self.sys_send(current, regs, false, false, fx),
            Syscall::Recv => self.sys_recv(current, regs.cptr, true, fx),
            Syscall::NbRecv => self.sys_recv(current, regs.cptr, false, fx),
            Syscall::Reply => {
                MessageInfo::decode(regs.info).map_err(|_| KernelError::InvalidMessageInfo)?;
                self.reply(current, fx);
                self.set_result(current, SUCCESS);
                Ok(())
            }
            Syscall::ReplyRecv => {
                MessageInfo::decode(regs.info).map_err(|_| KernelError::InvalidMessageInfo)?;
                // Check the receive capability first, so a bad one fails before the reply is spent.
                self.receive_object(current, regs.cptr)?;
                self.reply(current, fx);
                self.sys_recv(current, regs.cptr, true, fx)
            }
            Syscall::Signal => self.sys_signal(current, regs.cptr),
            Syscall::Wait => self.sys_wait(current, regs.cptr, true),
            Syscall::Poll => self.sys_wait(current, regs.cptr, false),
            Syscall::Yield => {
                self.set_result(current, SUCCESS);
                self.yield_current(current);
                Ok(())
            }
        }
    }

    fn sys_send(
        &mut self,
        current: ThreadRef,
        regs: SyscallArgs,
        call: bool,
        blocking: bool,
        fx: &mut impl Effects,
    ) -> Result<(), KernelError> {
        let info = MessageInfo::decode(regs.info).map_err(|_| KernelError::InvalidMessageInfo)?;
        let (slot, cap) = self.lookup(current, regs.cptr)?;
        let Object::Endpoint(endpoint) = cap.object else {
            return self.invoke(current, slot, info, fx);
        };
        if !cap.rights.contains(Rights::WRITE) {
            return Err(KernelError::InsufficientRights);
        }
        let can_grant = cap.rights.contains(Rights::GRANT);
        self.check_send(current, info, can_grant, fx)?;
        let send = SendInfo {
            badge: cap.badge,
            can_grant,
            is_call: call,
        };
        let delivered = self.send_ipc(current, endpoint, send, blocking, fx);
        if !call && (delivered || !blocking) {
            self.set_result(current, SUCCESS);
        }
        Ok(())
    }

    fn sys_recv(
        &mut self,
        current: ThreadRef,
        cptr: CPtr,
        blocking: bool,
        fx: &mut impl Effects,
    ) -> Result<(), KernelError> {
        match self.receive_object(current, cptr)? {
            (Object::Endpoint(endpoint), rights) => {
                let can_grant_reply =
                    rights.contains(Rights::GRANT) || rights.contains(Rights::GRANT_REPLY);
                self.recv_ipc(current, endpoint, can_grant_reply, blocking, fx);
                Ok(())
            }
            (Object::Notification(notification), _) => {
                self.wait_notification(current, notification, blocking)
            }
            _ => Err(KernelError::WrongType),
        }
    }

    /// The endpoint or notification a receive names, with the rights checked.
    fn receive_object(
        &self,
        current: ThreadRef,
        cptr: CPtr,
    ) -> Result<(Object, Rights), KernelError> {
        let (_, cap) = self.lookup(current, cptr)?;
        if !matches!(cap.object, Object::Endpoint(_) | Object::Notification(_)) {
            return Err(KernelError::WrongType);
        }
        if !cap.rights.contains(Rights::READ) {
            return Err(KernelError::InsufficientRights);
        }
        Ok((cap.object, cap.rights))
    }

    fn sys_signal(&mut self, current: ThreadRef, cptr: CPtr) -> Result<(), KernelError> {
        let (_, cap) = self.lookup(current, cptr)?;
        let Object::Notification(notification) = cap.object else {
            return Err(KernelError::WrongType);
        };
        if !cap.rights.contains(Rights::WRITE) {
            return Err(KernelError::InsufficientRights);
        }
        self.signal(notification, cap.badge);
        self.set_result(current, SUCCESS);
        Ok(())
    }

    fn sys_wait(
        &mut self,
        current: ThreadRef,
        cptr: CPtr,
        blocking: bool,
    ) -> Result<(), KernelError> {
        let (_, cap) = self.lookup(current, cptr)?;
        let Object::Notification(notification) = cap.object else {
            return Err(KernelError::WrongType);
        };
        if !cap.rights.contains(Rights::READ) {
            return Err(KernelError::InsufficientRights);
        }
        self.wait_notification(current, notification, blocking)
    }
}

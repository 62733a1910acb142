//! Threads (TCBs) and the intrusive thread queues that ready lists, endpoints and notifications
//! share.
//!
//! Invariant: a thread is linked into at most one queue, and its [`ThreadState`] names it: `Ready`
//! → the ready queue of its priority; `BlockedSend`/`BlockedRecv` → that endpoint's queue;
//! `BlockedNotification` → that notification's queue; `WaitingForInterrupt` → the sleepers' tree
//! when it has a deadline (`sleepers.rs`); any other state → no queue.

use capvisor_ipc::cap::Badge;
use capvisor_ipc::protocols::fault::{GuestFault, ServiceFault};
use capvisor_ipc::types::Ipa;

use super::Kernel;
use super::capability::ObjectType;
use super::effects::ThreadGlue;
use super::memory::{
    CNodeRef, EndpointRef, KernelObject, NotificationRef, PageKind, SpaceRef, Store, ThreadRef,
    UntypedRef, VcpuRef,
};
use super::regs::SyscallRegs;
use super::sleepers::Links;

/// What a thread is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadState {
    /// Not runnable: never resumed, suspended, or stopped after a fault.
    Inactive,
    /// Runnable, in the ready queue of its priority.
    Ready,
    /// Waiting for a receiver on an endpoint.
    BlockedSend(EndpointRef),
    /// Waiting for a sender on an endpoint.
    BlockedRecv(EndpointRef),
    /// Waiting for the reply to a call (or to its fault message).
    BlockedReply,
    /// Waiting for a notification.
    BlockedNotification(NotificationRef),
    /// A vCPU's thread sleeping in WFI until an interrupt can wake its vCPU (in the sleepers'
    /// tree when its virtual timer is armed).
    WaitingForInterrupt,
}

/// A queued sender's message, as the kernel needs it when a receiver arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct SendInfo {
    /// Badge of the capability sent on.
    pub badge: Badge,
    /// The sender's capability had `GRANT`: capabilities may be transferred.
    pub can_grant: bool,
    /// A call: the sender waits for a reply.
    pub is_call: bool,
}

/// A fault the kernel is delivering on the thread's behalf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FaultRecord {
    /// Where it faulted.
    pub pc: u64,
    /// What happened.
    pub fault: FaultKind,
}

/// A service thread's fault, or its vCPU's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FaultKind {
    /// The thread itself faulted at EL0.
    Service(ServiceFault),
    /// The vCPU it runs trapped to EL2.
    Guest(GuestFault),
}

/// A thread control block.
#[derive(Debug, Clone)]
pub struct Thread {
    pub(super) state: ThreadState,
    pub(super) priority: u8,
    pub(super) max_priority: u8,
    pub(super) cspace: Option<CNodeRef>,
    pub(super) space: Option<SpaceRef>,
    pub(super) ipc_buffer: Ipa,
    pub(super) fault_endpoint: Option<(EndpointRef, Badge)>,
    /// Results were written into its saved x0–x7 since its last syscall (for
    /// [`Kernel::take_syscall_result`]).
    pub(super) regs_pending: bool,
    /// The thread this one must reply to (the one-shot reply capability).
    pub(super) caller: Option<ThreadRef>,
    /// The reply may transfer capabilities.
    pub(super) reply_can_grant: bool,
    pub(super) send: SendInfo,
    /// A blocked receiver's capability had `GRANT`/`GRANT_REPLY` (its reply may carry capabilities).
    pub(super) recv_can_grant: bool,
    pub(super) fault: Option<FaultRecord>,
    /// The notification bound to this thread (delivered through `Recv` on any endpoint).
    pub(super) bound: Option<NotificationRef>,
    /// The vCPU this thread runs (its space is then a VM).
    pub(super) vcpu: Option<VcpuRef>,
    pub(super) slice: u32,
    /// When a sleeping vCPU's timer fires (physical counter ticks), if it is armed.
    pub(super) deadline: Option<u64>,
    pub(super) next: Option<ThreadRef>,
    pub(super) prev: Option<ThreadRef>,
    /// Its place among the sleepers while it sleeps with a deadline.
    pub(super) sleeper: Links,
    pub(super) caps: u32,
    /// The untyped it was retyped from (`None` at boot).
    pub(super) origin: Option<UntypedRef>,
    /// The glue's state: saved registers, console.
    pub glue: ThreadGlue,
}

impl KernelObject for Thread {
    const KIND: PageKind = PageKind::Thread;
}

// Retype gives a thread one page (`ObjectType::charge`): its record, links and saved registers.
const _: () = assert!(size_of::<Thread>() as u64 <= 1 << ObjectType::RECORD_BITS);

impl Thread {
    /// A new, inactive thread at priority 0, paid from `origin`.
    #[must_use]
    pub(super) fn new(origin: Option<UntypedRef>) -> Self {
        Self {
            state: ThreadState::Inactive,
            priority: 0,
            max_priority: 0,
            cspace: None,
            space: None,
            ipc_buffer: Ipa::new(0),
            fault_endpoint: None,
            regs_pending: false,
            caller: None,
            reply_can_grant: false,
            send: SendInfo::default(),
            recv_can_grant: false,
            fault: None,
            bound: None,
            vcpu: None,
            slice: 0,
            deadline: None,
            next: None,
            prev: None,
            sleeper: Links::NONE,
            caps: 0,
            origin,
            glue: ThreadGlue::NEW,
        }
    }

    /// The thread's priority.
    #[must_use]
    pub fn priority(&self) -> u8 {
        self.priority
    }
}

/// A FIFO of threads linked through their TCBs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Queue {
    head: Option<ThreadRef>,
    tail: Option<ThreadRef>,
}

impl Queue {
    pub(super) const EMPTY: Self = Self {
        head: None,
        tail: None,
    };

    #[inline]
    pub(super) fn is_empty(&self) -> bool {
        self.head.is_none()
    }

    /// The first thread.
    #[inline]
    pub(super) fn front(&self) -> Option<ThreadRef> {
        self.head
    }

    /// Appends `thread` (which must be in no queue).
    #[inline]
    pub(super) fn push_back(&mut self, threads: &mut Store<Thread>, thread: ThreadRef) {
        let old_tail = self.tail;
        match threads.get_mut(thread) {
            Ok(t) => {
                t.next = None;
                t.prev = old_tail;
            }
            Err(_) => return,
        }
        match old_tail.and_then(|tail| threads.get_mut(tail).ok()) {
            Some(tail) => tail.next = Some(thread),
            None => self.head = Some(thread),
        }
        self.tail = Some(thread);
    }

    /// Unlinks `thread` from this queue.
    #[inline]
    pub(super) fn remove(&mut self, threads: &mut Store<Thread>, thread: ThreadRef) {
        let Ok(t) = threads.get_mut(thread) else {
            return;
        };
        let (next, prev) = (t.next.take(), t.prev.take());
        match prev.and_then(|p| threads.get_mut(p).ok()) {
            Some(p) => p.next = next,
            None => self.head = next,
        }
        match next.and_then(|n| threads.get_mut(n).ok()) {
            Some(n) => n.prev = prev,
            None => self.tail = prev,
        }
    }

    /// Moves `thread` (queued here) to the back; for the head (the running thread yielding, or
    /// its slice ending) this relinks only the head, its successor and the tail.
    pub(super) fn move_to_back(&mut self, threads: &mut Store<Thread>, thread: ThreadRef) {
        if self.tail == Some(thread) {
            return;
        }
        if self.head != Some(thread) {
            self.remove(threads, thread);
            self.push_back(threads, thread);
            return;
        }
        let old_tail = self.tail;
        let Ok(t) = threads.get_mut(thread) else {
            return;
        };
        let next = t.next.take();
        t.prev = old_tail;
        self.head = next;
        self.tail = Some(thread);
        if let Some(n) = next.and_then(|n| threads.get_mut(n).ok()) {
            n.prev = None;
        }
        if let Some(tail) = old_tail.and_then(|t| threads.get_mut(t).ok()) {
            tail.next = Some(thread);
        }
    }

    /// Removes and returns the first thread.
    #[inline]
    pub(super) fn pop_front(&mut self, threads: &mut Store<Thread>) -> Option<ThreadRef> {
        let first = self.front()?;
        self.remove(threads, first);
        Some(first)
    }

    /// The threads in order, at most `limit` of them (for invariant checks).
    #[cfg(any(test, feature = "invariants"))]
    pub(super) fn iter<'a>(
        &self,
        threads: &'a Store<Thread>,
        limit: usize,
    ) -> impl Iterator<Item = ThreadRef> + 'a {
        let mut at = self.head;
        core::iter::from_fn(move || {
            let r = at?;
            at = threads.get(r).ok()?.next;
            Some(r)
        })
        .take(limit)
    }
}

impl Kernel {
    /// Takes a thread out of whatever queue its state names, leaving it `Inactive`.
    pub(super) fn unlink_thread(&mut self, thread: ThreadRef) {
        let Ok(state) = self.threads.get(thread).map(|t| t.state) else {
            return;
        };
        if state == ThreadState::WaitingForInterrupt {
            // Out of line (a tail call): the sleepers' tree's removal would otherwise make this
            // function, inlined or called on every wake-up, save registers on every path.
            return self.unlink_sleeper(thread);
        }
        match state {
            ThreadState::Ready => self.sched.remove(&mut self.threads, thread),
            ThreadState::BlockedSend(ep) | ThreadState::BlockedRecv(ep) => {
                if let Ok(endpoint) = self.endpoints.get_mut(ep) {
                    endpoint.queue.remove(&mut self.threads, thread);
                }
            }
            ThreadState::BlockedNotification(n) => {
                if let Ok(notification) = self.notifications.get_mut(n) {
                    notification.queue.remove(&mut self.threads, thread);
                }
            }
            ThreadState::WaitingForInterrupt
            | ThreadState::Inactive
            | ThreadState::BlockedReply => {}
        }
        if let Ok(t) = self.threads.get_mut(thread) {
            t.state = ThreadState::Inactive;
            t.deadline = None;
        }
    }

    /// [`Kernel::unlink_thread`] for a thread sleeping in WFI: out of the sleepers' tree if it
    /// has a deadline, then `Inactive`.
    #[inline(never)]
    #[cold]
    fn unlink_sleeper(&mut self, thread: ThreadRef) {
        if self.threads.get(thread).is_ok_and(|t| t.deadline.is_some()) {
            self.sleepers.remove(&mut self.threads, thread);
        }
        if let Ok(t) = self.threads.get_mut(thread) {
            t.state = ThreadState::Inactive;
            t.deadline = None;
        }
    }

    /// Writes syscall results into `thread`'s saved x0–x7.
    #[inline]
    pub(super) fn set_result(&mut self, thread: ThreadRef, regs: SyscallRegs) {
        if let Ok(t) = self.threads.get_mut(thread) {
            regs.write_to(&mut t.glue.context);
            t.regs_pending = true;
        }
    }

    /// Wakes a blocked thread with an error code as its syscall result.
    pub(super) fn wake_with_error(
        &mut self,
        thread: ThreadRef,
        error: capvisor_ipc::abi::KernelError,
    ) {
        self.unlink_thread(thread);
        // A faulted thread whose handler went away stays stopped: it has no syscall to fail.
        if self
            .threads
            .get_mut(thread)
            .is_ok_and(|t| t.fault.take().is_some())
        {
            return;
        }
        self.set_result(thread, SyscallRegs::error(error));
        self.make_ready(thread);
    }

    /// Destroys a thread whose last capability was deleted: it leaves every queue and its space,
    /// a caller waiting for its reply is woken with `Cancelled`, and its memory returns to its
    /// untyped.
    pub(super) fn destroy_thread(&mut self, thread: ThreadRef) {
        self.unlink_thread(thread);
        let caller = self.threads.get(thread).ok().and_then(|t| t.caller);
        if let Some(caller) = caller
            && self
                .threads
                .get(caller)
                .is_ok_and(|c| c.state == ThreadState::BlockedReply)
        {
            self.wake_with_error(caller, capvisor_ipc::abi::KernelError::Cancelled);
        }
        self.unbind(thread);
        if let Some(vcpu) = self.threads.get(thread).ok().and_then(|t| t.vcpu)
            && let Ok(v) = self.vcpus.get_mut(vcpu)
        {
            v.thread = None;
        }
        self.leave_space(thread);
        self.sched.forget(thread);
        let origin = self.threads.free(thread).and_then(|t| t.origin);
        self.release_child(origin);
    }
}

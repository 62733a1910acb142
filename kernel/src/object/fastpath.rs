//! The IPC fast path: `Call` and `ReplyRecv` with a short message (seL4's `fastpath_call` and
//! `fastpath_reply_recv`).
//!
//! It applies when the message fits the registers and carries no capabilities, the capability is
//! an endpoint with the right the slow path checks, and the other side is already waiting: a
//! receiver at the head of the endpoint's queue for `Call`; for `ReplyRecv`, a caller blocked for
//! the reply (or a vCPU's thread blocked on a guest fault, answered with a guest-call result), no
//! sender queued on the endpoint and no notification bound to the server. As in seL4, the thread
//! that runs next must not have a lower priority than the one entering (a `Call` to a
//! lower-priority server, or a reply to a lower-priority caller, takes the slow path); a vCPU's
//! thread, which runs one priority below its VMM, is the exception when its VMM resumes it.
//!
//! Invariant: when the fast path is taken, the kernel ends in exactly the state the slow path
//! leaves (same queues, states, results, reply capabilities), and the entering thread is blocked,
//! so the glue switches. `tests/fastpath.rs` checks this on random states, `tests/vcpus.rs` for
//! guest-call results. Every condition is checked before anything changes: a fast path that does
//! not apply has touched nothing.

#[cfg(test)]
std::thread_local! {
    /// How many syscalls of this test thread took the fast path.
    pub(super) static TAKEN: core::cell::Cell<usize> = const { core::cell::Cell::new(0) };
}

use capvisor_ipc::abi::MessageInfo;
use capvisor_ipc::cap::{Badge, Rights};
use capvisor_ipc::protocols::guest_call::CallResult;

use super::Kernel;
use super::capability::Object;
use super::effects::Effects;
use super::memory::{EndpointRef, ThreadRef};
use super::regs::{Schedule, SyscallRegs};
use super::thread::{FaultKind, FaultRecord, Thread, ThreadState};
use super::transfer::{REGISTER_BYTES, delivered_info};

impl Kernel {
    /// `Call` on the fast path; `None` (nothing changed) when it does not apply. Not inlined: the
    /// other syscalls would pay for its registers in `handle_syscall`'s prologue.
    #[inline(never)]
    pub(super) fn fast_call(&mut self, caller: ThreadRef) -> Option<Schedule> {
        let c = self.threads.get(caller).ok()?;
        let regs = &SyscallRegs::of(&c.glue.context);
        let info = short_info(regs)?;
        let (endpoint, rights, badge) = self.fast_endpoint(c, regs)?;
        if !rights.contains(Rights::WRITE) {
            return None;
        }
        let receiver = self.waiting(endpoint, true)?;
        let r = self.threads.get(receiver).ok()?;
        if c.fault.is_some() || r.priority < c.priority {
            return None;
        }
        let can_grant_reply = r.recv_can_grant;
        // The slow path's steps, in its order (`send_ipc` meeting a receiver).
        let message = SyscallRegs::message(
            badge,
            delivered_info(info, info.length(), 0, 0),
            regs.words(),
        );
        self.dequeue(endpoint, receiver);
        self.sched.remove(&mut self.threads, caller);
        if let Ok(c) = self.threads.get_mut(caller) {
            c.state = ThreadState::BlockedReply;
        }
        if let Ok(r) = self.threads.get_mut(receiver) {
            r.reply_can_grant = can_grant_reply;
            r.caller = Some(caller);
        }
        self.wake_with(receiver, message);
        Some(Schedule::Switch)
    }

    /// `ReplyRecv` on the fast path; `None` (nothing changed) when it does not apply. A reply to a
    /// vCPU's guest fault takes it only as a guest-call result (`guest_call::CallResult`), which
    /// the glue checks and applies exactly as `resolve_fault` has it do.
    #[inline(never)]
    pub(super) fn fast_reply_recv(
        &mut self,
        server: ThreadRef,
        fx: &mut impl Effects,
    ) -> Option<Schedule> {
        let s = self.threads.get(server).ok()?;
        let regs = &SyscallRegs::of(&s.glue.context);
        let info = short_info(regs)?;
        let caller = s.caller?;
        let c = self.threads.get(caller).ok()?;
        // A vCPU's thread runs below its VMM: the priority rule is for replies to calls.
        if s.bound.is_some()
            || s.fault.is_some()
            || c.state != ThreadState::BlockedReply
            || (c.fault.is_none() && c.priority < s.priority)
        {
            return None;
        }
        let result = match &c.fault {
            None => None,
            Some(FaultRecord {
                fault: FaultKind::Guest(_),
                ..
            }) => Some(CallResult::decode(info, regs.words())?),
            Some(_) => return None,
        };
        let (endpoint, rights, _) = self.fast_endpoint(s, regs)?;
        if !rights.contains(Rights::READ) || self.waiting(endpoint, false).is_some() {
            return None;
        }
        match result {
            Some(result) => self.fast_resolve(caller, &result, fx),
            // `reply`: the caller gets the message and becomes ready (the reply carries no
            // capabilities, so whether it could have granted them does not matter).
            None => {
                let delivered = delivered_info(info, info.length(), 0, 0);
                self.wake_with(
                    caller,
                    SyscallRegs::message(Badge::NONE, delivered, regs.words()),
                );
            }
        }
        // `recv_ipc` finding no sender: the server waits at the tail of the endpoint's queue.
        let can_grant_reply =
            rights.contains(Rights::GRANT) || rights.contains(Rights::GRANT_REPLY);
        self.sched.remove(&mut self.threads, server);
        if let Ok(s) = self.threads.get_mut(server) {
            s.caller = None;
            s.recv_can_grant = can_grant_reply;
            s.state = ThreadState::BlockedRecv(endpoint);
        }
        if let Ok(ep) = self.endpoints.get_mut(endpoint) {
            ep.queue.push_back(&mut self.threads, server);
        }
        Some(Schedule::Switch)
    }

    /// `resolve_fault` for a guest-call result: the vCPU runs again only if the glue accepts it.
    /// Out of line, so that replies to calls do not pay for it.
    #[inline(never)]
    fn fast_resolve(&mut self, caller: ThreadRef, result: &CallResult, fx: &mut impl Effects) {
        let resume = self.apply_call_result(caller, result, fx);
        self.resume_after_fault(caller, resume);
    }

    /// The endpoint, rights and badge of the capability in x0, without copying the capability.
    #[inline(always)]
    fn fast_endpoint(
        &self,
        thread: &Thread,
        regs: &SyscallRegs,
    ) -> Option<(EndpointRef, Rights, Badge)> {
        let slot = self.lookup_slot_of(thread, regs.cptr()).ok()?;
        let cap = self.slots.cap(slot)?;
        match cap.object {
            Object::Endpoint(endpoint) => Some((endpoint, cap.rights, cap.badge)),
            _ => None,
        }
    }
}

/// x1 when it is a valid message-info word for a message that fits the registers and carries no
/// capabilities.
#[inline(always)]
fn short_info(regs: &SyscallRegs) -> Option<MessageInfo> {
    let info = MessageInfo::decode(regs.info()).ok()?;
    (info.length() <= REGISTER_BYTES && info.extra_caps() == 0).then_some(info)
}

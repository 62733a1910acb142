//! Faults: the glue reports a thread's fault (or its vCPU's), the kernel sends it to the thread's
//! fault endpoint as a fixed-layout fault message (`capvisor_ipc::protocols::fault`, seL4's
//! model), and the handler's reply resumes or stops the thread.
//!
//! The faulting thread behaves as if it had called its fault endpoint with the kernel-made message:
//! it waits in the endpoint's queue until the handler receives, then for the reply. A reply that
//! decodes to `ServiceResolution::Resume` makes it ready again, re-executing the faulting
//! instruction (the glue's saved context is untouched); a guest fault's resolution goes to the glue
//! to apply; any other reply, or one that does not decode exactly, stops it (inactive). A
//! thread without a live fault endpoint is stopped at once, and the glue reports it
//! ([`FaultOutcome::NoHandler`]) at warning level: a service's fault is never an ERROR of the
//! kernel. If the fault endpoint is deleted while the message is queued, the thread stays stopped.

use capvisor_ipc::abi::MessageInfo;
use capvisor_ipc::protocols::fault::{
    GuestFault, Resolution, ServiceFault, ServiceResolution, decode_guest_reply,
    decode_service_reply,
};
use capvisor_ipc::protocols::guest_call::CallResult;

use super::Kernel;
use super::effects::{Effects, Resumption};
use super::memory::ThreadRef;
use super::regs::{Schedule, SyscallRegs};
use super::thread::{FaultKind, FaultRecord, SendInfo, ThreadState};

/// What became of a reported fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOutcome {
    /// The fault message went (or is queued) to the thread's fault endpoint.
    Sent,
    /// The thread has no live fault endpoint: it is stopped; the glue reports it.
    NoHandler,
}

impl Kernel {
    /// Thread `thread` faulted at `pc` (the glue saved its context and will not run it until the
    /// kernel makes it ready again).
    pub fn handle_fault(
        &mut self,
        thread: ThreadRef,
        pc: u64,
        fault: ServiceFault,
        fx: &mut impl Effects,
    ) -> (FaultOutcome, Schedule) {
        self.deliver_fault(thread, pc, FaultKind::Service(fault), fx)
    }

    /// The vCPU that `thread` runs trapped at guest `pc` with `fault` (the glue saved its state):
    /// the fault goes to the thread's fault endpoint as a guest fault message (without `pc`: the
    /// handler reads the vCPU's registers), and the thread waits for the resolution.
    pub fn handle_guest_fault(
        &mut self,
        thread: ThreadRef,
        pc: u64,
        fault: GuestFault,
        fx: &mut impl Effects,
    ) -> (FaultOutcome, Schedule) {
        self.deliver_fault(thread, pc, FaultKind::Guest(fault), fx)
    }

    fn deliver_fault(
        &mut self,
        thread: ThreadRef,
        pc: u64,
        fault: FaultKind,
        fx: &mut impl Effects,
    ) -> (FaultOutcome, Schedule) {
        let Ok(t) = self.threads.get_mut(thread) else {
            return (FaultOutcome::NoHandler, self.decide());
        };
        let endpoint = t
            .fault_endpoint
            .filter(|(ep, _)| self.endpoints.get(*ep).is_ok_and(|e| !e.dying));
        t.regs_pending = false;
        self.unlink_thread(thread);
        let Some((endpoint, badge)) = endpoint else {
            return (FaultOutcome::NoHandler, self.decide());
        };
        if let Ok(t) = self.threads.get_mut(thread) {
            t.fault = Some(FaultRecord { pc, fault });
        }
        self.send_ipc(
            thread,
            endpoint,
            SendInfo {
                badge,
                can_grant: false,
                is_call: true,
            },
            true,
            fx,
        );
        (FaultOutcome::Sent, self.decide())
    }

    /// `server` replied to the faulted `caller`: resume or stop it. The reply is the server's
    /// message-info word and first words, all a fault reply has (`protocols::fault`; a guest
    /// call's result, `guest_call`, for any guest fault), decoded exactly.
    pub(super) fn resolve_fault(
        &mut self,
        server: ThreadRef,
        caller: ThreadRef,
        fx: &mut impl Effects,
    ) {
        let Ok(s) = self.threads.get(server) else {
            return;
        };
        let regs = SyscallRegs::of(&s.glue.context);
        let (info, words) = (MessageInfo::decode(regs.info()).ok(), regs.words());
        let Ok(c) = self.threads.get(caller) else {
            return;
        };
        let resume = match (info, &c.fault) {
            (
                Some(info),
                Some(FaultRecord {
                    fault: FaultKind::Guest(_),
                    ..
                }),
            ) => match CallResult::decode(info, words) {
                Some(result) => self.apply_call_result(caller, &result, fx),
                None => match decode_guest_reply(info, words) {
                    Ok(Ok(resolution)) => self.apply_resolution(caller, &resolution, fx),
                    _ => None,
                },
            },
            (
                Some(info),
                Some(FaultRecord {
                    fault: FaultKind::Service(_),
                    ..
                }),
            ) => match decode_service_reply(info, words) {
                Ok(Ok(ServiceResolution::Resume)) => Some(Resumption::Run),
                _ => None,
            },
            _ => None,
        };
        self.resume_after_fault(caller, resume);
    }

    /// Ends `caller`'s fault: it runs, sleeps, or (`None`) stays stopped.
    pub(super) fn resume_after_fault(&mut self, caller: ThreadRef, resume: Option<Resumption>) {
        if let Ok(c) = self.threads.get_mut(caller) {
            c.fault = None;
            c.state = ThreadState::Inactive;
        }
        match resume {
            Some(Resumption::Run) => self.make_ready(caller),
            Some(Resumption::Sleep { deadline }) => self.sleep(caller, deadline),
            None => {}
        }
    }
}

impl Kernel {
    /// Lets the glue apply a guest resolution to `thread`'s guest fault; `None` (the vCPU stays
    /// stopped) when it refuses or the thread has no guest fault. The fault record is borrowed in
    /// place (it is large: copying it costs a `memcpy` on every guest exit).
    fn apply_resolution(
        &mut self,
        thread: ThreadRef,
        resolution: &Resolution,
        fx: &mut impl Effects,
    ) -> Option<Resumption> {
        let t = self.threads.get_mut(thread).ok()?;
        let (
            Some(vcpu),
            Some(FaultRecord {
                fault: FaultKind::Guest(fault),
                ..
            }),
        ) = (t.vcpu, &t.fault)
        else {
            return None;
        };
        let v = self.vcpus.get_mut(vcpu).ok()?;
        fx.resolve_guest_fault(&mut t.glue, vcpu, &mut v.glue, fault, resolution)
            .ok()
    }
}

impl Kernel {
    /// Applies a guest-call result to `thread`'s guest fault (the fast path's and
    /// `resolve_fault`'s common step), the fault record borrowed in place.
    #[inline]
    pub(super) fn apply_call_result(
        &mut self,
        thread: ThreadRef,
        result: &CallResult,
        fx: &mut impl Effects,
    ) -> Option<Resumption> {
        let t = self.threads.get_mut(thread).ok()?;
        let (
            Some(vcpu),
            Some(FaultRecord {
                fault: FaultKind::Guest(fault),
                ..
            }),
        ) = (t.vcpu, &t.fault)
        else {
            return None;
        };
        let v = self.vcpus.get_mut(vcpu).ok()?;
        fx.apply_guest_call(&mut t.glue, &mut v.glue, fault, result)
            .ok()
    }
}

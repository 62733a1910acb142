//! Endpoints: synchronous rendezvous of senders and receivers, calls and their one-shot replies.
//!
//! An endpoint's queue holds either only senders or only receivers (whoever arrived first waits);
//! the state of the thread at its head says which, so there is no separate state to keep in sync.
//! A call that meets a receiver leaves the caller `BlockedReply` and gives the receiver the one-shot
//! reply capability (`caller` in its TCB, seL4's non-MCS caller slot). A server that receives
//! again before replying spends that capability: its previous caller is woken with `Cancelled`
//! (seL4 would leave it blocked forever).
//!
//! Deleting an endpoint's last capability makes it dying: the reaper (`delete.rs`) wakes its queued
//! threads with `Cancelled`, a bounded number per kernel entry, then frees it.

use capvisor_ipc::abi::KernelError;

use super::Kernel;
use super::cspace::Dying;
use super::effects::Effects;
use super::memory::{EndpointRef, KernelObject, PageKind, ThreadRef, UntypedRef};
use super::regs::SUCCESS;
use super::thread::{Queue, SendInfo, ThreadState};

/// An endpoint.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub(super) queue: Queue,
    pub(super) caps: u32,
    /// The untyped it was retyped from.
    pub(super) origin: Option<UntypedRef>,
    /// Its last capability is gone; the reaper is cancelling its queue.
    pub(super) dying: bool,
    pub(super) next_dying: Option<Dying>,
}

impl KernelObject for Endpoint {
    const KIND: PageKind = PageKind::Endpoint;
}

impl Endpoint {
    pub(super) const fn new(origin: Option<UntypedRef>) -> Self {
        Self {
            queue: Queue::EMPTY,
            caps: 0,
            origin,
            dying: false,
            next_dying: None,
        }
    }
}

impl Kernel {
    /// The thread at the head of `endpoint`'s queue if it is waiting in state `want`.
    pub(super) fn waiting(&self, endpoint: EndpointRef, receivers: bool) -> Option<ThreadRef> {
        let head = self.endpoints.get(endpoint).ok()?.queue.front()?;
        let state = self.threads.get(head).ok()?.state;
        let matches = match state {
            ThreadState::BlockedRecv(_) => receivers,
            ThreadState::BlockedSend(_) => !receivers,
            _ => false,
        };
        matches.then_some(head)
    }

    pub(super) fn dequeue(&mut self, endpoint: EndpointRef, thread: ThreadRef) {
        if let Ok(ep) = self.endpoints.get_mut(endpoint) {
            ep.queue.remove(&mut self.threads, thread);
        }
        if let Ok(t) = self.threads.get_mut(thread) {
            t.state = ThreadState::Inactive;
        }
    }

    fn enqueue(&mut self, endpoint: EndpointRef, thread: ThreadRef, state: ThreadState) {
        self.unlink_thread(thread);
        if let Ok(ep) = self.endpoints.get_mut(endpoint) {
            ep.queue.push_back(&mut self.threads, thread);
        }
        if let Ok(t) = self.threads.get_mut(thread) {
            t.state = state;
        }
    }

    /// Gives `server` the reply capability for `caller`.
    fn set_caller(&mut self, server: ThreadRef, caller: ThreadRef, can_grant: bool) {
        if let Ok(s) = self.threads.get_mut(server) {
            s.reply_can_grant = can_grant;
            s.caller = Some(caller);
        }
    }

    /// A server about to receive spends the reply capability it still holds: that caller is
    /// woken with `Cancelled`.
    pub(super) fn spend_reply(&mut self, server: ThreadRef) {
        let previous = self
            .threads
            .get_mut(server)
            .ok()
            .and_then(|s| s.caller.take());
        if let Some(previous) = previous
            && self
                .threads
                .get(previous)
                .is_ok_and(|p| p.state == ThreadState::BlockedReply && p.fault.is_none())
        {
            self.wake_with_error(previous, KernelError::Cancelled);
        }
    }

    /// `sender` sends on `endpoint`. Returns whether the message was delivered now. A blocking send
    /// that finds no receiver queues the sender; a non-blocking one drops the message.
    pub(super) fn send_ipc(
        &mut self,
        sender: ThreadRef,
        endpoint: EndpointRef,
        send: SendInfo,
        blocking: bool,
        fx: &mut impl Effects,
    ) -> bool {
        if let Some(receiver) = self.waiting(endpoint, true) {
            self.dequeue(endpoint, receiver);
            let can_grant_reply = self.threads.get(receiver).is_ok_and(|r| r.recv_can_grant);
            self.transfer(sender, receiver, send, Some(endpoint), fx);
            if send.is_call {
                self.unlink_thread(sender);
                if let Ok(s) = self.threads.get_mut(sender) {
                    s.state = ThreadState::BlockedReply;
                }
                self.set_caller(receiver, sender, can_grant_reply);
            }
            self.make_ready(receiver);
            return true;
        }
        if blocking || send.is_call {
            if let Ok(s) = self.threads.get_mut(sender) {
                s.send = send;
            }
            self.enqueue(endpoint, sender, ThreadState::BlockedSend(endpoint));
        }
        false
    }

    /// `receiver` receives on `endpoint`: takes a queued sender's message, or waits (blocking), or
    /// returns an empty message (non-blocking).
    pub(super) fn recv_ipc(
        &mut self,
        receiver: ThreadRef,
        endpoint: EndpointRef,
        can_grant_reply: bool,
        blocking: bool,
        fx: &mut impl Effects,
    ) {
        self.spend_reply(receiver);
        if let Some(signal) = self.take_bound_word(receiver) {
            self.set_result(receiver, signal);
            return;
        }
        let Some(sender) = self.waiting(endpoint, false) else {
            if blocking {
                if let Ok(r) = self.threads.get_mut(receiver) {
                    r.recv_can_grant = can_grant_reply;
                }
                self.enqueue(endpoint, receiver, ThreadState::BlockedRecv(endpoint));
            } else {
                self.set_result(receiver, SUCCESS);
            }
            return;
        };
        self.dequeue(endpoint, sender);
        let send = self.threads.get(sender).map(|s| s.send).unwrap_or_default();
        self.transfer(sender, receiver, send, Some(endpoint), fx);
        if send.is_call {
            if let Ok(s) = self.threads.get_mut(sender) {
                s.state = ThreadState::BlockedReply;
            }
            self.set_caller(receiver, sender, can_grant_reply);
        } else {
            self.set_result(sender, SUCCESS);
            self.make_ready(sender);
        }
    }

    /// One step of a dying endpoint: wakes one queued thread with `Cancelled`, or frees the
    /// endpoint when none is left. Returns whether it is freed.
    pub(super) fn reap_endpoint(&mut self, endpoint: EndpointRef) -> bool {
        let next = self
            .endpoints
            .get_mut(endpoint)
            .ok()
            .and_then(|ep| ep.queue.pop_front(&mut self.threads));
        if let Some(thread) = next {
            if let Ok(t) = self.threads.get_mut(thread) {
                t.state = ThreadState::Inactive;
            }
            self.wake_with_error(thread, KernelError::Cancelled);
            return false;
        }
        let origin = self.endpoints.free(endpoint).and_then(|ep| ep.origin);
        self.release_child(origin);
        true
    }
}

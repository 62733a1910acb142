//! Notifications: a word of bits that signals OR into and a wait takes and clears.
//!
//! A signal with a waiter queued wakes the first waiter with the signaller's badge (the word stays
//! as it was, which is then 0: a waiter only queues while the word is 0); otherwise the badge is ORed
//! into the word. A wait takes the word if it is non-zero, else blocks (or, polling, returns 0).
//! Signalling with badge 0 wakes a waiter but sets no bit (seL4's behaviour). Deleting the last
//! capability makes it dying: it takes no more signals, and the reaper (`delete.rs`) wakes its
//! waiters with `Cancelled` and unbinds it before freeing it.
//!
//! A notification can be bound to one thread (`ThreadBindNotification`, seL4's
//! `TCB_BindNotification`), so a server waits for messages and signals in one `Recv` on its
//! endpoint: a signal with no `Wait`er wakes the bound thread if it is receiving on an endpoint, and
//! a `Recv` takes a pending word first. Either way the thread sees the word in x0 and
//! [`NOTIFICATION_LABEL`] as the message label, so it cannot mistake a signal for a message.
//!
//! Invariant: `notification.bound == Some(t)` iff `t.bound == Some(notification)`.

use capvisor_ipc::abi::{KernelError, MessageInfo};
use capvisor_ipc::cap::Badge;

use super::Kernel;
use super::cspace::Dying;
use super::memory::{KernelObject, NotificationRef, PageKind, ThreadRef, UntypedRef};
use super::regs::SyscallRegs;
use super::thread::{Queue, ThreadState};

/// A notification.
#[derive(Debug, Clone)]
pub struct Notification {
    pub(super) word: u64,
    pub(super) queue: Queue,
    pub(super) caps: u32,
    pub(super) bound: Option<ThreadRef>,
    /// The untyped it was retyped from.
    pub(super) origin: Option<UntypedRef>,
    /// Its last capability is gone: signals are dropped; the reaper cancels its waiters.
    pub(super) dying: bool,
    pub(super) next_dying: Option<Dying>,
}

impl KernelObject for Notification {
    const KIND: PageKind = PageKind::Notification;
}

impl Notification {
    pub(super) const fn new(origin: Option<UntypedRef>) -> Self {
        Self {
            word: 0,
            queue: Queue::EMPTY,
            caps: 0,
            bound: None,
            origin,
            dying: false,
            next_dying: None,
        }
    }
}

/// The label of a bound notification's word delivered by `Recv` (the largest label: no protocol
/// or invocation uses it).
pub const NOTIFICATION_LABEL: u64 = capvisor_ipc::abi::BOUND_NOTIFICATION_LABEL;

const DELIVERED: MessageInfo = match MessageInfo::new(NOTIFICATION_LABEL, 0, 0) {
    Ok(info) => info,
    Err(_) => panic!("the largest label is valid"),
};

const EMPTY: MessageInfo = match MessageInfo::new(0, 0, 0) {
    Ok(info) => info,
    Err(_) => panic!("an empty message-info word is valid"),
};

fn woken(bits: u64) -> SyscallRegs {
    SyscallRegs::message(Badge::new(bits), EMPTY, [0; 4])
}

impl Kernel {
    /// ORs `badge` into the notification, or hands it to the first waiter.
    pub(super) fn signal(&mut self, notification: NotificationRef, badge: Badge) {
        let Ok(n) = self.notifications.get_mut(notification) else {
            return;
        };
        if n.dying {
            return;
        }
        if let Some(waiter) = n.queue.pop_front(&mut self.threads) {
            self.wake_with(waiter, woken(badge.raw()));
            return;
        }
        let bound = n.bound;
        let receiving = bound.filter(|&t| {
            matches!(
                self.threads.get(t).map(|t| t.state),
                Ok(ThreadState::BlockedRecv(_))
            )
        });
        match receiving {
            Some(thread) => {
                self.unlink_thread(thread);
                self.spend_reply(thread);
                self.set_result(thread, SyscallRegs::message(badge, DELIVERED, [0; 4]));
                self.make_ready(thread);
            }
            None => {
                if let Ok(n) = self.notifications.get_mut(notification) {
                    n.word |= badge.raw();
                }
            }
        }
    }

    /// A receiver's bound notification word, taken, if it is non-zero.
    pub(super) fn take_bound_word(&mut self, thread: ThreadRef) -> Option<SyscallRegs> {
        let bound = self.threads.get(thread).ok()?.bound?;
        let n = self.notifications.get_mut(bound).ok()?;
        let word = core::mem::take(&mut n.word);
        (word != 0).then(|| SyscallRegs::message(Badge::new(word), DELIVERED, [0; 4]))
    }

    /// Binds `notification` to `thread`.
    ///
    /// # Errors
    /// [`KernelError::InvalidArgument`] when either is already bound.
    pub(super) fn bind(
        &mut self,
        thread: ThreadRef,
        notification: NotificationRef,
    ) -> Result<(), KernelError> {
        let already = self.threads.get(thread)?.bound.is_some()
            || self.notifications.get(notification)?.bound.is_some();
        if already {
            return Err(KernelError::InvalidArgument);
        }
        self.threads.get_mut(thread)?.bound = Some(notification);
        self.notifications.get_mut(notification)?.bound = Some(thread);
        Ok(())
    }

    /// Unbinds whatever notification `thread` has.
    pub(super) fn unbind(&mut self, thread: ThreadRef) {
        let bound = self
            .threads
            .get_mut(thread)
            .ok()
            .and_then(|t| t.bound.take());
        if let Some(n) = bound.and_then(|n| self.notifications.get_mut(n).ok()) {
            n.bound = None;
        }
    }

    /// `thread` waits on (or polls) the notification; the word arrives in x0.
    pub(super) fn wait_notification(
        &mut self,
        thread: ThreadRef,
        notification: NotificationRef,
        blocking: bool,
    ) -> Result<(), KernelError> {
        let n = self.notifications.get_mut(notification)?;
        let word = core::mem::take(&mut n.word);
        if word != 0 || !blocking {
            self.set_result(thread, woken(word));
            return Ok(());
        }
        self.unlink_thread(thread);
        if let Ok(n) = self.notifications.get_mut(notification) {
            n.queue.push_back(&mut self.threads, thread);
        }
        if let Ok(t) = self.threads.get_mut(thread) {
            t.state = ThreadState::BlockedNotification(notification);
        }
        Ok(())
    }

    /// One step of a dying notification: wakes one waiter with `Cancelled`, or unbinds it and
    /// frees it when none is left. Returns whether it is freed.
    pub(super) fn reap_notification(&mut self, notification: NotificationRef) -> bool {
        let next = self
            .notifications
            .get_mut(notification)
            .ok()
            .and_then(|n| n.queue.pop_front(&mut self.threads));
        if let Some(thread) = next {
            if let Ok(t) = self.threads.get_mut(thread) {
                t.state = ThreadState::Inactive;
            }
            self.wake_with_error(thread, KernelError::Cancelled);
            return false;
        }
        let Some(n) = self.notifications.free(notification) else {
            return true;
        };
        if let Some(t) = n.bound.and_then(|t| self.threads.get_mut(t).ok()) {
            t.bound = None;
        }
        self.release_child(n.origin);
        true
    }
}

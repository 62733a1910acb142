//! Notifications: a word of bits that signals OR into and a wait takes and clears.
//!
//! A signal with a waiter queued wakes the first waiter with the signaller's badge (the word stays
//! as it was, which is then 0: a waiter only queues while the word is 0); otherwise the badge is ORed
//! into the word. A wait takes the word if it is non-zero, else blocks (or, polling, returns 0).
//! Signalling with badge 0 wakes a waiter but sets no bit (seL4's behaviour). Deleting the last
//! capability wakes the waiters with `Cancelled`.

use capvisor_ipc::abi::{KernelError, MessageInfo};
use capvisor_ipc::cap::Badge;

use super::Kernel;
use super::arena::{NotificationRef, ThreadRef};
use super::syscall::SyscallRegs;
use super::thread::{Queue, ThreadState};

/// A notification.
#[derive(Debug, Clone)]
pub struct Notification {
    pub(super) word: u64,
    pub(super) queue: Queue,
    pub(super) caps: u32,
}

impl Notification {
    pub(super) const fn new() -> Self {
        Self {
            word: 0,
            queue: Queue::EMPTY,
            caps: 0,
        }
    }
}

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
        match n.queue.pop_front(&mut self.threads) {
            Some(waiter) => {
                if let Ok(t) = self.threads.get_mut(waiter) {
                    t.state = ThreadState::Inactive;
                }
                self.set_result(waiter, woken(badge.raw()));
                self.make_ready(waiter);
            }
            None => n.word |= badge.raw(),
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

    /// The notification's last capability is gone: wake its waiters with `Cancelled`.
    pub(super) fn destroy_notification(&mut self, notification: NotificationRef) {
        while let Some(thread) = self
            .notifications
            .get_mut(notification)
            .ok()
            .and_then(|n| n.queue.pop_front(&mut self.threads))
        {
            if let Ok(t) = self.threads.get_mut(thread) {
                t.state = ThreadState::Inactive;
            }
            self.wake_with_error(thread, KernelError::Cancelled);
        }
        self.notifications.free(notification);
    }
}

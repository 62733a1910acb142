//! Fixed-priority preemptive scheduling with round-robin time slices within a priority.
//!
//! 256 priorities (255 highest), one FIFO ready queue each, and a bitmap of the non-empty ones.
//! The running thread stays at the head of its ready queue while it runs (unlike seL4, which takes
//! it out): [`Kernel::pick_next`] returns the head of the highest non-empty queue, so the scheduling
//! decision after any kernel entry is "is the best ready thread still the current one?".
//! - A thread made ready goes to the tail of its queue (round-robin among equals; a woken thread
//!   of the same priority does not preempt).
//! - A thread of higher priority made ready preempts at the end of the current kernel entry.
//! - A timer tick uses up one tick of the current thread's slice; an empty slice is refilled and
//!   the thread moves to the tail ([`TIME_SLICE_TICKS`]).
//! - `Yield` moves the current thread to the tail and refills its slice.
//! - Nothing ready: [`Kernel::pick_next`] returns `None` and the glue idles (WFI) until an
//!   interrupt.
//!
//! Invariant: the bitmap bit of a priority is set iff its queue is non-empty. Only one CPU runs
//! threads for now (see the lock design in the module root).

use super::Kernel;
use super::memory::{Store, ThreadRef};
use super::regs::Schedule;
use super::regs::SyscallRegs;
use super::thread::{Queue, Thread, ThreadState};

/// Timer ticks in one time slice.
pub const TIME_SLICE_TICKS: u32 = 5;

/// Number of priorities.
pub const PRIORITIES: usize = 256;

/// The ready queues and the current thread.
pub struct Scheduler {
    ready: [Queue; PRIORITIES],
    bitmap: [u64; PRIORITIES / 64],
    current: Option<ThreadRef>,
}

impl Scheduler {
    /// No thread ready, none running.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            ready: [Queue::EMPTY; PRIORITIES],
            bitmap: [0; PRIORITIES / 64],
            current: None,
        }
    }

    /// The running thread.
    #[must_use]
    pub const fn current(&self) -> Option<ThreadRef> {
        self.current
    }

    pub(super) fn queue(&mut self, priority: u8) -> &mut Queue {
        // A u8 indexes 256 queues: always in range.
        &mut self.ready[usize::from(priority)]
    }

    #[inline]
    fn update_bit(&mut self, priority: u8) {
        let (word, bit) = (usize::from(priority) / 64, priority % 64);
        let empty = self.ready[usize::from(priority)].is_empty();
        if empty {
            self.bitmap[word] &= !(1 << bit);
        } else {
            self.bitmap[word] |= 1 << bit;
        }
    }

    #[inline]
    fn highest(&self) -> Option<u8> {
        let (word, bits) = self
            .bitmap
            .iter()
            .enumerate()
            .rev()
            .find(|(_, w)| **w != 0)?;
        Some((word * 64 + 63 - bits.leading_zeros() as usize) as u8)
    }

    #[inline]
    pub(super) fn push(&mut self, threads: &mut Store<Thread>, thread: ThreadRef, priority: u8) {
        self.queue(priority).push_back(threads, thread);
        self.update_bit(priority);
    }

    #[inline]
    pub(super) fn remove(&mut self, threads: &mut Store<Thread>, thread: ThreadRef) {
        let Ok(priority) = threads.get(thread).map(|t| t.priority) else {
            return;
        };
        self.queue(priority).remove(threads, thread);
        self.update_bit(priority);
    }

    /// The best ready thread.
    pub(super) fn best(&self) -> Option<ThreadRef> {
        self.ready[usize::from(self.highest()?)].front()
    }

    /// The thread the glue says is running.
    pub(super) fn set_current(&mut self, thread: ThreadRef) {
        self.current = Some(thread);
    }

    /// A destroyed thread is no longer current.
    pub(super) fn forget(&mut self, thread: ThreadRef) {
        if self.current == Some(thread) {
            self.current = None;
        }
    }

    /// Every queued thread with the priority of its queue (for invariant checks).
    #[cfg(any(test, feature = "invariants"))]
    pub(super) fn queued<'a>(
        &'a self,
        threads: &'a Store<Thread>,
        limit: usize,
    ) -> impl Iterator<Item = (u8, ThreadRef)> + 'a {
        self.ready
            .iter()
            .enumerate()
            .flat_map(move |(p, q)| q.iter(threads, limit).map(move |t| (p as u8, t)))
    }
}

impl core::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Scheduler")
            .field("ready", &ReadyQueues(&self.ready))
            .field("current", &self.current)
            .finish()
    }
}

/// The non-empty ready queues, by priority.
struct ReadyQueues<'a>(&'a [Queue; PRIORITIES]);

impl core::fmt::Debug for ReadyQueues<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_map()
            .entries(self.0.iter().enumerate().filter(|(_, q)| !q.is_empty()))
            .finish()
    }
}

impl Default for Scheduler {
    fn default() -> Self {
        Self::new()
    }
}

impl Kernel {
    /// Makes an unqueued thread ready (tail of its priority's queue).
    pub(super) fn make_ready(&mut self, thread: ThreadRef) {
        self.ready_after(thread, |_| {});
    }

    /// Wakes the unqueued, blocked `thread` with `regs` as its syscall results: [`Kernel::set_result`]
    /// and [`Kernel::make_ready`] in one lookup (signal and IPC paths).
    #[inline]
    pub(super) fn wake_with(&mut self, thread: ThreadRef, regs: SyscallRegs) {
        self.ready_after(thread, |t| {
            regs.write_to(&mut t.glue.context);
            t.regs_pending = true;
        });
    }

    /// Applies `first` to `thread`, then makes it ready if it is not (one lookup).
    #[inline]
    fn ready_after(&mut self, thread: ThreadRef, first: impl FnOnce(&mut Thread)) {
        let Ok(t) = self.threads.get_mut(thread) else {
            return;
        };
        first(t);
        if t.state == ThreadState::Ready {
            return;
        }
        t.state = ThreadState::Ready;
        if t.slice == 0 {
            t.slice = TIME_SLICE_TICKS;
        }
        let priority = t.priority;
        self.sched.push(&mut self.threads, thread, priority);
    }

    /// Moves a ready thread to the tail of its queue with a fresh slice.
    fn rotate(&mut self, thread: ThreadRef) {
        let Ok(t) = self.threads.get_mut(thread) else {
            return;
        };
        if t.state == ThreadState::Ready {
            t.slice = TIME_SLICE_TICKS;
            let priority = t.priority;
            self.sched
                .queue(priority)
                .move_to_back(&mut self.threads, thread);
        }
    }

    /// Chooses the thread to run on this CPU and makes it current; `None` means idle.
    pub fn pick_next(&mut self) -> Option<ThreadRef> {
        let next = self.sched.best();
        self.sched.current = next;
        next
    }

    /// Whether the current thread should keep running after a kernel entry.
    pub(super) fn decide(&self) -> Schedule {
        match self.sched.current {
            Some(current) if self.sched.best() == Some(current) => Schedule::Resume,
            _ => Schedule::Switch,
        }
    }

    /// One timer tick on this CPU: charges the current thread's slice and preempts it when the slice
    /// is used up (or a better thread is ready).
    pub fn timer_tick(&mut self) -> Schedule {
        let Some(current) = self.sched.current else {
            return self.decide();
        };
        let expired = match self.threads.get_mut(current) {
            Ok(t) if t.state == ThreadState::Ready => {
                t.slice = t.slice.saturating_sub(1);
                t.slice == 0
            }
            _ => false,
        };
        if expired {
            self.rotate(current);
        }
        self.decide()
    }

    /// The current thread gives up the rest of its slice.
    pub(super) fn yield_current(&mut self, thread: ThreadRef) {
        self.rotate(thread);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn highest_finds_the_top_bit() {
        let mut s = Scheduler::new();
        assert_eq!(s.highest(), None);
        s.bitmap[1] = 1 << 3;
        s.bitmap[0] = 1;
        assert_eq!(s.highest(), Some(67));
        s.bitmap[3] = 1 << 63;
        assert_eq!(s.highest(), Some(255));
    }
}

//! Queues inside one address space, and the notification word.
//!
//! **Within one address space** both ends of a queue are trusted code of the same service, so the
//! queue need not validate anything: [`LocalQueue`] is `heapless::spsc::Queue`, a lock-free SPSC queue
//! whose `const fn new` lets it be a `static` in a `no_std` service (no heap), split into a producer and a
//! consumer handed to two tasks (e.g. a receive loop queueing MMIO exits for a device-model task).
//! `ringbuf` would serve as well here, but adds nothing over heapless for this, and neither may cross an
//! address space: their layouts are not fixed and they trust the peer's indices, so a hostile peer could
//! make the reader use slots never written. Across address spaces use [`crate::ring`].
//!
//! [`NotificationWord`] is the asynchronous notification of the design: a word of bits that senders OR
//! into and a waiter takes whole (seL4's notification object). The kernel keeps one per notification
//! object; the hosted transport and single-address-space code use it directly.

use core::sync::atomic::{AtomicU64, Ordering};

/// A fixed-capacity SPSC queue for use inside one address space (holds `N - 1` items).
pub type LocalQueue<T, const N: usize> = heapless::spsc::Queue<T, N>;
/// The producing end of a [`LocalQueue`].
pub type LocalProducer<'a, T> = heapless::spsc::Producer<'a, T>;
/// The consuming end of a [`LocalQueue`].
pub type LocalConsumer<'a, T> = heapless::spsc::Consumer<'a, T>;

/// A notification word: bits are OR-ed in by `signal` and taken (and cleared) by `take`.
#[derive(Debug, Default)]
pub struct NotificationWord(AtomicU64);

impl NotificationWord {
    /// A word with no bits set.
    #[must_use]
    pub const fn new() -> Self {
        Self(AtomicU64::new(0))
    }

    /// Sets `bits`; returns whether the word was empty before (the signaller must then wake a waiter).
    pub fn signal(&self, bits: u64) -> bool {
        // Release: what the signaller wrote before signalling is visible to whoever takes the bits.
        self.0.fetch_or(bits, Ordering::Release) == 0
    }

    /// Takes every bit set so far (0 if none), clearing the word.
    pub fn take(&self) -> u64 {
        // Acquire pairs with `signal`'s Release.
        self.0.swap(0, Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_static_local_queue_hands_items_between_threads() {
        static QUEUE: std::sync::Mutex<LocalQueue<u32, 8>> =
            std::sync::Mutex::new(LocalQueue::new());
        let mut queue = QUEUE.lock().unwrap();
        let (mut producer, mut consumer) = queue.split();
        std::thread::scope(|scope| {
            scope.spawn(move || {
                for i in 0..1000 {
                    while producer.enqueue(i).is_err() {
                        std::thread::yield_now();
                    }
                }
            });
            for i in 0..1000 {
                let item = loop {
                    if let Some(item) = consumer.dequeue() {
                        break item;
                    }
                    std::thread::yield_now();
                };
                assert_eq!(item, i);
            }
        });
    }

    #[test]
    fn notification_bits_accumulate_until_taken() {
        let word = NotificationWord::new();
        assert!(word.signal(0b01));
        assert!(!word.signal(0b10), "already pending: no second wake-up");
        assert_eq!(word.take(), 0b11);
        assert_eq!(word.take(), 0);
    }
}

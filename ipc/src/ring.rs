//! A single-producer single-consumer ring in memory shared between two address spaces, for bulk data.
//!
//! The layout is fixed so both sides, possibly built separately, agree on it: `#[repr(C)]`, zerocopy
//! `FromBytes` (any bytes are a valid, if possibly inconsistent, ring), offsets and sizes const-asserted:
//!
//! | offset | field | written by |
//! |---|---|---|
//! | 0 | `magic`, `version`, `capacity`, `slot_bytes` | the creator, before sharing |
//! | 16 | `flags` (broken bits) | either side |
//! | 64 | `head`: messages published (free-running) | the producer |
//! | 128 | `tail`: messages consumed (free-running) | the consumer |
//! | 192 | `capacity` slots: `length: u32`, reserved `u32`, `WORDS` × `u64` of data | the producer |
//!
//! **The peer is hostile.** Each side keeps its own index privately and only *reads* the peer's, and it
//! validates the peer's index on every read: it may only move forward, and never by more than the
//! capacity allows (`head − tail ≤ capacity`). A slot is read only between the consumer's private tail
//! and a validated head, and its `length` is checked against the slot size before any byte is copied,
//! so a hostile producer can never make the consumer read a slot it did not publish or read past a slot.
//! Any violation is a [`RingError`] and marks the ring broken for good (locally, and in `flags` so an
//! honest peer stops too). The capacity and slot size used for indexing are the reader's own
//! compile-time constants; the header's copies are only checked against them when attaching.
//!
//! **No unsafe and no data race**: every shared word, slot data included, is an atomic, so a peer
//! scribbling on a slot while it is being copied yields garbage data (which the protocol above must
//! validate anyway), never undefined behaviour.
//!
//! **Memory ordering**: the producer writes a slot's words (`Relaxed`) and then publishes it with a
//! `Release` store of `head`; the consumer's `Acquire` load of `head` makes those writes visible before
//! it reads the slot. The consumer frees a slot with a `Release` store of `tail` after copying it out; the
//! producer's `Acquire` load of `tail` orders that copy before it overwrites the slot. Between address
//! spaces these are the same AArch64 instructions (LDAR/STLR), on memory both map Normal write-back
//! inner-shareable, so the orderings hold across the boundary as they do between threads.
//!
//! Wake-ups are not the ring's business: the producer signals a notification after publishing, and the
//! consumer drains the ring when woken.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use zerocopy::{FromBytes, IntoBytes, KnownLayout};

/// "cvRG", little-endian.
pub const RING_MAGIC: u32 = u32::from_le_bytes(*b"cvRG");
/// The layout version.
pub const RING_VERSION: u32 = 1;

const BROKEN_BY_PRODUCER: u32 = 1 << 0;
const BROKEN_BY_CONSUMER: u32 = 1 << 1;

/// The ring's header: configuration, then each index on its own 64-byte cache line.
#[derive(Debug, FromBytes, IntoBytes, KnownLayout)]
#[repr(C)]
pub struct RingHeader {
    /// [`RING_MAGIC`] once initialised.
    pub magic: AtomicU32,
    /// [`RING_VERSION`].
    pub version: AtomicU32,
    /// Number of slots.
    pub capacity: AtomicU32,
    /// Data bytes per slot.
    pub slot_bytes: AtomicU32,
    /// Broken bits.
    pub flags: AtomicU32,
    reserved: [AtomicU32; 11],
    /// Messages published by the producer (free-running, wraps at 2^32).
    pub head: AtomicU32,
    head_line: [AtomicU32; 15],
    /// Messages consumed by the consumer (free-running).
    pub tail: AtomicU32,
    tail_line: [AtomicU32; 15],
}

/// One slot: a length and `WORDS` words of data.
#[derive(Debug, FromBytes, KnownLayout)]
#[repr(C)]
pub struct RingSlot<const WORDS: usize> {
    /// Bytes of `data` in use.
    pub length: AtomicU32,
    reserved: AtomicU32,
    /// The message bytes, little-endian in words.
    pub data: [AtomicU64; WORDS],
}

/// The shared region: header and `SLOTS` slots of `WORDS` words each. `SLOTS` is a power of two (so the
/// free-running indices wrap consistently) and at most 2^16.
#[derive(Debug, FromBytes, KnownLayout)]
#[repr(C)]
pub struct Ring<const SLOTS: usize, const WORDS: usize> {
    /// The header.
    pub header: RingHeader,
    /// The slots.
    pub slots: [RingSlot<WORDS>; SLOTS],
}

const _: () = {
    assert!(core::mem::offset_of!(RingHeader, flags) == 16);
    assert!(core::mem::offset_of!(RingHeader, head) == 64);
    assert!(core::mem::offset_of!(RingHeader, tail) == 128);
    assert!(core::mem::size_of::<RingHeader>() == 192);
    assert!(core::mem::size_of::<RingSlot<4>>() == 40);
    assert!(core::mem::offset_of!(Ring<8, 4>, slots) == 192);
};

/// Why a ring operation failed.
///
/// # Errors
/// - Peer violations, after which the ring is broken: [`RingError::BadHeader`], [`RingError::BadIndex`],
///   [`RingError::BadLength`]; and [`RingError::Broken`] for every later call.
/// - Local conditions, which leave the ring usable: [`RingError::Full`], [`RingError::TooLarge`],
///   [`RingError::BufferTooSmall`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingError {
    /// The header's magic, version, capacity or slot size is not this side's.
    BadHeader,
    /// The peer's index went backwards or past the capacity.
    BadIndex,
    /// A published slot's length is larger than a slot.
    BadLength,
    /// The ring was broken by an earlier violation (of either side).
    Broken,
    /// No free slot (the consumer has not caught up).
    Full,
    /// The message is larger than a slot.
    TooLarge,
    /// The caller's buffer is smaller than the next message (which stays in the ring).
    BufferTooSmall {
        /// The next message's length.
        needed: usize,
    },
}

impl<const SLOTS: usize, const WORDS: usize> Ring<SLOTS, WORDS> {
    const LAYOUT_OK: () =
        assert!(SLOTS.is_power_of_two() && SLOTS <= 1 << 16 && WORDS > 0 && WORDS <= 1 << 16);

    /// Data bytes per slot.
    pub const SLOT_BYTES: usize = WORDS * 8;

    /// Writes the header of a fresh (zeroed) region; done by its creator before the region is shared.
    pub fn initialise(&self) {
        let () = Self::LAYOUT_OK;
        let header = &self.header;
        header.version.store(RING_VERSION, Ordering::Relaxed);
        header.capacity.store(SLOTS as u32, Ordering::Relaxed);
        header
            .slot_bytes
            .store(Self::SLOT_BYTES as u32, Ordering::Relaxed);
        header.flags.store(0, Ordering::Relaxed);
        header.head.store(0, Ordering::Relaxed);
        header.tail.store(0, Ordering::Relaxed);
        // Publishes the fields above to a side that attaches after seeing the magic.
        header.magic.store(RING_MAGIC, Ordering::Release);
    }

    fn check_header(&self) -> Result<(), RingError> {
        let () = Self::LAYOUT_OK;
        let header = &self.header;
        let ok = header.magic.load(Ordering::Acquire) == RING_MAGIC
            && header.version.load(Ordering::Relaxed) == RING_VERSION
            && header.capacity.load(Ordering::Relaxed) as usize == SLOTS
            && header.slot_bytes.load(Ordering::Relaxed) as usize == Self::SLOT_BYTES;
        if !ok {
            return Err(RingError::BadHeader);
        }
        if header.flags.load(Ordering::Relaxed) != 0 {
            return Err(RingError::Broken);
        }
        Ok(())
    }

    /// The slot a free-running index names.
    fn slot(&self, index: u32) -> &RingSlot<WORDS> {
        // SLOTS is a power of two no larger than 2^16, so this is in bounds and wraps consistently.
        &self.slots[index as usize % SLOTS]
    }
}

/// Validates a peer-written index `seen` against the last value `last` this side accepted and its own
/// index `own`. The valid values lie on a window of at most `SLOTS` positions: for a peer `head`, from
/// `last` up to `own_tail + SLOTS`; for a peer `tail`, from `last` up to `own_head`.
fn peer_moved(last: u32, seen: u32, limit_from_last: u32) -> Result<u32, RingError> {
    if seen.wrapping_sub(last) <= limit_from_last {
        Ok(seen)
    } else {
        Err(RingError::BadIndex)
    }
}

/// The producer's end, in the address space that writes messages.
#[derive(Debug)]
pub struct Producer<'a, const SLOTS: usize, const WORDS: usize> {
    ring: &'a Ring<SLOTS, WORDS>,
    head: u32,
    tail: u32,
    broken: bool,
}

impl<'a, const SLOTS: usize, const WORDS: usize> Producer<'a, SLOTS, WORDS> {
    /// Attaches to an initialised ring. Only one producer may use a ring at a time.
    ///
    /// # Errors
    /// [`RingError::BadHeader`] when the header does not describe this ring type; [`RingError::BadIndex`]
    /// when the indices are inconsistent; [`RingError::Broken`] when it was broken before.
    pub fn attach(ring: &'a Ring<SLOTS, WORDS>) -> Result<Self, RingError> {
        ring.check_header()?;
        let head = ring.header.head.load(Ordering::Relaxed);
        let tail = ring.header.tail.load(Ordering::Acquire);
        if head.wrapping_sub(tail) as usize > SLOTS {
            return Err(RingError::BadIndex);
        }
        Ok(Self {
            ring,
            head,
            tail,
            broken: false,
        })
    }

    fn fail(&mut self, error: RingError) -> RingError {
        self.broken = true;
        self.ring
            .header
            .flags
            .fetch_or(BROKEN_BY_PRODUCER, Ordering::Relaxed);
        error
    }

    /// Publishes one message.
    ///
    /// # Errors
    /// [`RingError::Full`], [`RingError::TooLarge`], or a peer violation (the ring is then broken).
    pub fn push(&mut self, message: &[u8]) -> Result<(), RingError> {
        if self.broken || self.ring.header.flags.load(Ordering::Relaxed) != 0 {
            self.broken = true;
            return Err(RingError::Broken);
        }
        if message.len() > Ring::<SLOTS, WORDS>::SLOT_BYTES {
            return Err(RingError::TooLarge);
        }
        if self.head.wrapping_sub(self.tail) as usize == SLOTS {
            // Acquire: the consumer's reads of the slots it freed happen before we overwrite them.
            let seen = self.ring.header.tail.load(Ordering::Acquire);
            let in_flight = self.head.wrapping_sub(self.tail);
            self.tail = peer_moved(self.tail, seen, in_flight).map_err(|e| self.fail(e))?;
            if self.head.wrapping_sub(self.tail) as usize == SLOTS {
                return Err(RingError::Full);
            }
        }
        let slot = self.ring.slot(self.head);
        for (word, chunk) in slot.data.iter().zip(message.chunks(8)) {
            let mut bytes = [0u8; 8];
            bytes[..chunk.len()].copy_from_slice(chunk);
            word.store(u64::from_le_bytes(bytes), Ordering::Relaxed);
        }
        slot.length.store(message.len() as u32, Ordering::Relaxed);
        self.head = self.head.wrapping_add(1);
        // Release: the slot's contents are visible to a consumer that sees the new head.
        self.ring.header.head.store(self.head, Ordering::Release);
        Ok(())
    }
}

/// The consumer's end, in the address space that reads messages.
#[derive(Debug)]
pub struct Consumer<'a, const SLOTS: usize, const WORDS: usize> {
    ring: &'a Ring<SLOTS, WORDS>,
    head: u32,
    tail: u32,
    broken: bool,
}

impl<'a, const SLOTS: usize, const WORDS: usize> Consumer<'a, SLOTS, WORDS> {
    /// Attaches to an initialised ring. Only one consumer may use a ring at a time.
    ///
    /// # Errors
    /// As [`Producer::attach`].
    pub fn attach(ring: &'a Ring<SLOTS, WORDS>) -> Result<Self, RingError> {
        ring.check_header()?;
        let tail = ring.header.tail.load(Ordering::Relaxed);
        let head = ring.header.head.load(Ordering::Acquire);
        if head.wrapping_sub(tail) as usize > SLOTS {
            return Err(RingError::BadIndex);
        }
        Ok(Self {
            ring,
            head,
            tail,
            broken: false,
        })
    }

    fn fail(&mut self, error: RingError) -> RingError {
        self.broken = true;
        self.ring
            .header
            .flags
            .fetch_or(BROKEN_BY_CONSUMER, Ordering::Relaxed);
        error
    }

    /// Takes the next message into `out`, returning its length, or `None` when the ring is empty.
    ///
    /// # Errors
    /// [`RingError::BufferTooSmall`] (the message stays), or a peer violation (the ring is then broken).
    pub fn pop(&mut self, out: &mut [u8]) -> Result<Option<usize>, RingError> {
        if self.broken || self.ring.header.flags.load(Ordering::Relaxed) != 0 {
            self.broken = true;
            return Err(RingError::Broken);
        }
        if self.head == self.tail {
            // Acquire: the producer's slot writes happen before our reads of the slots it published.
            let seen = self.ring.header.head.load(Ordering::Acquire);
            let room = SLOTS as u32 - self.head.wrapping_sub(self.tail);
            self.head = peer_moved(self.head, seen, room).map_err(|e| self.fail(e))?;
            if self.head == self.tail {
                return Ok(None);
            }
        }
        let slot = self.ring.slot(self.tail);
        let length = slot.length.load(Ordering::Relaxed) as usize;
        if length > Ring::<SLOTS, WORDS>::SLOT_BYTES {
            return Err(self.fail(RingError::BadLength));
        }
        let out = out
            .get_mut(..length)
            .ok_or(RingError::BufferTooSmall { needed: length })?;
        for (word, chunk) in slot.data.iter().zip(out.chunks_mut(8)) {
            let bytes = word.load(Ordering::Relaxed).to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        self.tail = self.tail.wrapping_add(1);
        // Release: our reads of the slot happen before a producer that sees this tail reuses it.
        self.ring.header.tail.store(self.tail, Ordering::Release);
        Ok(Some(length))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::FromZeros;

    type Small = Ring<4, 2>;

    fn fresh() -> Small {
        let ring = Small::new_zeroed();
        ring.initialise();
        ring
    }

    #[test]
    fn messages_pass_in_order_and_the_ring_fills_and_drains() {
        let ring = fresh();
        let mut producer = Producer::attach(&ring).unwrap();
        let mut consumer = Consumer::attach(&ring).unwrap();
        let mut out = [0u8; 16];
        for round in 0..3u8 {
            for i in 0..4u8 {
                producer
                    .push(&[round, i, 9][..usize::from(i) % 3 + 1])
                    .unwrap();
            }
            assert_eq!(producer.push(&[1]), Err(RingError::Full));
            for i in 0..4u8 {
                let length = consumer.pop(&mut out).unwrap().unwrap();
                assert_eq!(&out[..length], &[round, i, 9][..usize::from(i) % 3 + 1]);
            }
            assert_eq!(consumer.pop(&mut out), Ok(None));
        }
        assert_eq!(producer.push(&[0; 17]), Err(RingError::TooLarge));
    }

    #[test]
    fn a_head_beyond_capacity_breaks_the_ring_for_both_sides() {
        let ring = fresh();
        let mut producer = Producer::attach(&ring).unwrap();
        let mut consumer = Consumer::attach(&ring).unwrap();
        ring.header.head.store(5, Ordering::Release);
        assert_eq!(consumer.pop(&mut [0; 16]), Err(RingError::BadIndex));
        assert_eq!(consumer.pop(&mut [0; 16]), Err(RingError::Broken));
        assert_eq!(producer.push(&[1]), Err(RingError::Broken));
        assert_eq!(Consumer::attach(&ring).unwrap_err(), RingError::Broken);
    }

    #[test]
    fn a_head_that_goes_backwards_or_a_bad_length_breaks_the_ring() {
        let ring = fresh();
        let mut producer = Producer::attach(&ring).unwrap();
        let mut consumer = Consumer::attach(&ring).unwrap();
        producer.push(&[1]).unwrap();
        producer.push(&[2]).unwrap();
        assert_eq!(consumer.pop(&mut [0; 16]), Ok(Some(1)));
        ring.header.head.store(0, Ordering::Release);
        // The consumer still has one validated message; it rejects the bad head when it next looks.
        assert_eq!(consumer.pop(&mut [0; 16]), Ok(Some(1)));
        assert_eq!(consumer.pop(&mut [0; 16]), Err(RingError::BadIndex));

        let ring = fresh();
        let mut producer = Producer::attach(&ring).unwrap();
        let mut consumer = Consumer::attach(&ring).unwrap();
        producer.push(&[1]).unwrap();
        ring.slots[0].length.store(17, Ordering::Relaxed);
        assert_eq!(consumer.pop(&mut [0; 32]), Err(RingError::BadLength));
    }

    #[test]
    fn a_short_buffer_keeps_the_message_and_a_bad_tail_breaks_the_producer() {
        let ring = fresh();
        let mut producer = Producer::attach(&ring).unwrap();
        let mut consumer = Consumer::attach(&ring).unwrap();
        producer.push(&[1, 2, 3]).unwrap();
        assert_eq!(
            consumer.pop(&mut [0; 2]),
            Err(RingError::BufferTooSmall { needed: 3 })
        );
        assert_eq!(consumer.pop(&mut [0; 3]), Ok(Some(3)));
        for _ in 0..4 {
            producer.push(&[0]).unwrap();
        }
        // A tail past the producer's head claims slots were consumed that were never published.
        ring.header.tail.store(9, Ordering::Release);
        assert_eq!(producer.push(&[0]), Err(RingError::BadIndex));
    }

    #[test]
    fn attach_checks_the_header_against_the_type() {
        let ring = Small::new_zeroed();
        assert_eq!(Producer::attach(&ring).unwrap_err(), RingError::BadHeader);
        ring.initialise();
        ring.header.slot_bytes.store(8, Ordering::Relaxed);
        assert_eq!(Consumer::attach(&ring).unwrap_err(), RingError::BadHeader);
    }

    #[test]
    fn threads_stream_through_the_ring() {
        let ring = fresh();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let mut producer = Producer::attach(&ring).unwrap();
                for i in 0u32..10_000 {
                    while producer.push(&i.to_le_bytes()) == Err(RingError::Full) {
                        std::thread::yield_now();
                    }
                }
            });
            let mut consumer = Consumer::attach(&ring).unwrap();
            let mut out = [0u8; 16];
            for i in 0u32..10_000 {
                let length = loop {
                    if let Some(length) = consumer.pop(&mut out).unwrap() {
                        break length;
                    }
                    std::thread::yield_now();
                };
                assert_eq!(&out[..length], &i.to_le_bytes());
            }
        });
    }
}

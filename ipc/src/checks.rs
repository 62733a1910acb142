//! Properties every decoder of untrusted bytes must hold, shared by the property tests and the
//! cargo-fuzz targets (feature `checks`). Each function takes arbitrary bytes, must never panic on
//! its own account, and asserts (panics) only when a property is violated.
//!
//! - [`message_info`]: a raw message-info word either is rejected or round-trips field by field.
//! - [`request`] / [`reply`]: a hostile message either is rejected with a typed error or decodes to a
//!   value that re-encodes to a message decoding to the same value (one message, one meaning).
//! - [`fault_message`] / [`fault_reply`] / [`guest_call`]: a hostile message-info word and four
//!   message words either are refused or decode to a value that encodes back to exactly that word
//!   and the words it uses (the fixed layouts the kernel sends and decodes).
//! - [`ring`]: a hostile producer interleaved with an honest one never makes the consumer return more
//!   than a slot, never un-breaks a broken ring, and without hostile writes the ring is a FIFO.

#[cfg(feature = "postcard")]
use core::fmt::Debug;

use crate::abi::MessageInfo;
#[cfg(feature = "postcard")]
use crate::abi::{IpcBuffer, MAX_CAPS, MSG_MAX_BYTES};
#[cfg(feature = "postcard")]
use crate::protocol::{self, CallError, Generation, Protocol};
use crate::ring::{Consumer, Producer, Ring, RingError};

/// Checks one raw message-info word.
pub fn message_info(raw: u64) {
    let Ok(info) = MessageInfo::decode(raw) else {
        return;
    };
    assert!(info.length() <= MSG_MAX_BYTES && info.extra_caps() <= MAX_CAPS);
    let rebuilt = MessageInfo::new(info.label(), info.length(), info.extra_caps())
        .and_then(|built| built.with_caps_unwrapped(info.caps_unwrapped()))
        .expect("a decoded word's fields are in range");
    assert_eq!(rebuilt, info);
}

/// Takes a little-endian number from the front of `data`.
fn take<const N: usize>(data: &mut &[u8]) -> [u8; N] {
    let mut bytes = [0u8; N];
    let n = data.len().min(N);
    bytes[..n].copy_from_slice(&data[..n]);
    *data = &data[n..];
    bytes
}

/// Builds a hostile message: a control byte (capabilities, unwrapped bits, foreign label), capability
/// kinds, then the payload.
#[cfg(feature = "postcard")]
fn hostile_message(mut data: &[u8], label: u64) -> (MessageInfo, IpcBuffer) {
    let [control] = take::<1>(&mut data);
    let kinds = take::<MAX_CAPS>(&mut data);
    let mut buffer = IpcBuffer::default();
    let length = data.len().min(MSG_MAX_BYTES);
    buffer.bytes_mut()[..length].copy_from_slice(&data[..length]);
    let caps = usize::from(control & 0b11);
    for (i, kind) in kinds.iter().enumerate() {
        buffer.caps[i] = i as u64 + 1;
        buffer.cap_kinds[i] = u64::from(*kind % 16);
    }
    let label = if control & 0x80 != 0 {
        label ^ u64::from(control)
    } else {
        label
    };
    let info = MessageInfo::new(label, length, caps)
        .and_then(|info| info.with_caps_unwrapped((control >> 2) & 0b111 & ((1 << caps) - 1)))
        .expect("built within range");
    buffer.badge = u64::from(control);
    (info, buffer)
}

/// Checks the request decoder of protocol `P` on hostile bytes; returns whether they decoded.
#[cfg(feature = "postcard")]
pub fn request<P: Protocol>(data: &[u8]) -> bool
where
    P::Request: PartialEq + Debug,
{
    let server = Generation::new(1);
    let (info, buffer) = hostile_message(data, u64::from(P::ID.raw()));
    let Ok((request, context)) = protocol::decode_request::<P>(info, &buffer, server) else {
        return false;
    };
    assert_eq!(
        info.label(),
        u64::from(P::ID.raw()),
        "only this protocol's label decodes"
    );
    assert!(context.received().len() <= info.extra_caps());
    let mut again = IpcBuffer::default();
    let info = protocol::encode_request::<P>(&request, server, &[], &mut again)
        .expect("a decoded request fits again");
    let (decoded, _) = protocol::decode_request::<P>(info, &again, server).expect("re-encoded");
    assert_eq!(decoded, request);
    true
}

/// Checks the reply decoder of protocol `P` on hostile bytes; returns whether they decoded.
#[cfg(feature = "postcard")]
pub fn reply<P: Protocol>(mut data: &[u8]) -> bool
where
    P::Reply: PartialEq + Debug,
{
    let status = u16::from_le_bytes(take::<2>(&mut data));
    let expected = Generation::new(u32::from(take::<1>(&mut data)[0] % 3));
    let (info, buffer) = hostile_message(data, u64::from(status));
    let mut learned = expected;
    match protocol::decode_reply::<P>(info, &buffer, &mut learned) {
        Ok((reply, received)) => {
            assert_eq!(info.label(), 0, "only a success status carries a reply");
            assert!(received.len() <= info.extra_caps());
            assert_ne!(learned, Generation::ANY);
            let mut again = IpcBuffer::default();
            let info = protocol::encode_reply::<P>(Ok(&reply), &[], learned, &mut again);
            let mut same = learned;
            let (decoded, _) =
                protocol::decode_reply::<P>(info, &again, &mut same).expect("re-encoded");
            assert_eq!((decoded, same), (reply, learned));
            true
        }
        Err(CallError::ServerRestarted(new)) => {
            assert!(expected != Generation::ANY && learned == new);
            false
        }
        Err(_) => false,
    }
}

type Shared = Ring<4, 2>;

/// One run of [`ring`]: both ends, and what an honest FIFO would hold while no hostile store happened.
struct RingRun<'a> {
    ring: &'a Shared,
    producer: Producer<'a, 4, 2>,
    consumer: Consumer<'a, 4, 2>,
    model: heapless::Deque<([u8; 16], usize), 4>,
    hostile: bool,
    broken: bool,
    counter: u8,
}

impl RingRun<'_> {
    fn push(&mut self, length: u8) {
        self.counter = self.counter.wrapping_add(1);
        let length = usize::from(length) % 17;
        let message = [self.counter; 16];
        let pushed = self.producer.push(&message[..length]);
        if pushed.is_ok() && !self.hostile {
            assert!(
                self.model.push_back((message, length)).is_ok(),
                "pushed past capacity"
            );
        }
    }

    fn hostile_store(&mut self, op: u8, slot: u8, value: u32) {
        let relaxed = core::sync::atomic::Ordering::Relaxed;
        let slot = &self.ring.slots[usize::from(slot) % 4];
        match op {
            1 => self.ring.header.head.store(value, relaxed),
            2 => self.ring.header.tail.store(value, relaxed),
            3 => slot.length.store(value, relaxed),
            _ => slot.data[0].store(u64::from(value), relaxed),
        }
        self.hostile = true;
    }

    fn pop(&mut self, room: u8) {
        let mut out = [0u8; 16];
        let room = usize::from(room) % 17;
        let popped = self.consumer.pop(&mut out[..room]);
        if self.broken {
            assert_eq!(popped, Err(RingError::Broken), "a broken ring stays broken");
        }
        match popped {
            Ok(Some(length)) => {
                assert!(length <= room && length <= Shared::SLOT_BYTES);
                if !self.hostile {
                    let (message, expected) = self.model.pop_front().expect("popped from empty");
                    assert_eq!(&out[..length], &message[..expected]);
                }
            }
            Ok(None) => assert!(self.hostile || self.model.is_empty(), "lost a message"),
            Err(RingError::BufferTooSmall { needed }) => assert!(needed > room),
            Err(RingError::BadIndex | RingError::BadLength | RingError::Broken) => {
                assert!(self.hostile, "an honest ring broke");
                self.broken = true;
            }
            Err(other) => panic!("a consumer cannot fail with {other:?}"),
        }
    }
}

/// Checks the ring consumer against a hostile producer. Each operation is a byte and its arguments
/// (one byte, one `u32`): an honest push, a hostile store to `head`, `tail`, a slot's length or data,
/// or a pop.
pub fn ring(mut data: &[u8]) {
    let ring = <Shared as zerocopy::FromZeros>::new_zeroed();
    ring.initialise();
    let (Ok(producer), Ok(consumer)) = (Producer::attach(&ring), Consumer::attach(&ring)) else {
        unreachable!("a freshly initialised ring attaches");
    };
    let mut run = RingRun {
        ring: &ring,
        producer,
        consumer,
        model: heapless::Deque::new(),
        hostile: false,
        broken: false,
        counter: 0,
    };
    while let [op, rest @ ..] = data {
        data = rest;
        let [argument] = take::<1>(&mut data);
        let value = u32::from_le_bytes(take::<4>(&mut data));
        match op % 6 {
            0 => run.push(argument),
            5 => run.pop(argument),
            store => run.hostile_store(store, argument, value),
        }
    }
}

/// Checks the fixed-layout guest call and its result (`protocols::guest_call`): a hostile
/// message-info word and four words either are refused or decode to a value that encodes back to
/// the same word and the words it uses (one message, one meaning), and a decoded result is the
/// `Resolution` it converts back from.
pub fn guest_call(mut data: &[u8]) {
    use crate::protocols::guest_call::{CallResult, GuestCall};
    let raw = u64::from_le_bytes(take(&mut data));
    let words = core::array::from_fn(|_| u64::from_le_bytes(take(&mut data)));
    let Ok(info) = MessageInfo::decode(raw) else {
        return;
    };
    if let Some(call) = GuestCall::decode(info, words) {
        assert_eq!(call.encode(), (info, words));
        assert_eq!(GuestCall::from_fault(&call.fault()), Some(call));
    }
    if let Some(result) = CallResult::decode(info, words) {
        let (again, values) = result.encode();
        let used = usize::from(result.count);
        assert_eq!(again, info);
        assert_eq!(values[..used], words[..used]);
        assert_eq!(
            CallResult::from_resolution(&result.resolution()),
            Some(result)
        );
    }
}

/// A hostile fixed-layout message: a control byte, a shape byte, label bits and four words.
/// Control bit 0 set steers the label near the fault layout's: bits 7:3 pick a known kind of
/// either direction or a guest call's, bit 1 the direction, bit 2 version 2 (else any), so the
/// decoders' checks past the kind are reached. The shape byte's bit 7 attaches a capability, bit
/// 6 allows any length below 48 bytes (else a multiple of 8 up to 32), bits 5:0 the length.
fn fixed_message(mut data: &[u8]) -> (MessageInfo, [u64; 4]) {
    use crate::protocols::fault::{MessageKind, ReplyKind};
    use crate::protocols::guest_call::{REPLY_LABEL, REQUEST_LABEL};
    let [control, shape] = take::<2>(&mut data);
    let raw = u64::from_le_bytes(take(&mut data));
    let words = core::array::from_fn(|_| u64::from_le_bytes(take(&mut data)));
    let reply = control & 0b10 != 0;
    let label = if control & 1 == 0 {
        raw & MessageInfo::MAX_LABEL
    } else {
        let kinds = MessageKind::ALL.iter().map(|kind| kind.code());
        let kinds = kinds.chain(ReplyKind::ALL.iter().map(|kind| kind.code()));
        let count = MessageKind::ALL.len() + ReplyKind::ALL.len() + 1;
        match kinds
            .cycle()
            .take(count)
            .nth(usize::from(control >> 3) % count)
        {
            Some(kind) => {
                let version = if control & 0b100 != 0 {
                    2
                } else {
                    (raw >> 24) & 0x7f
                };
                let direction = if reply { 1 << 31 } else { 0 };
                u64::from(kind) << 32 | direction | version << 24 | (raw & 0xff_ffff)
            }
            // The last: a guest call's own labels, request or reply.
            None => (if reply { REPLY_LABEL } else { REQUEST_LABEL }) | (raw & 0x1_ffff),
        }
    };
    let length = if shape & 0x40 != 0 {
        usize::from(shape & 0x3f) % 48
    } else {
        usize::from(shape % 5) * 8
    };
    let caps = usize::from(shape >> 7);
    let info = MessageInfo::new(label, length, caps).unwrap_or_else(|_| {
        MessageInfo::new(0, 0, 0).expect("an empty message-info word is valid")
    });
    (info, words)
}

/// The words a fixed-layout message of `info` uses.
fn used(info: MessageInfo) -> usize {
    info.length().div_ceil(8).min(4)
}

/// Checks the fault message decoder (`protocols::fault::FaultMessage::decode`, what a VMM or
/// supervisor receives): refused, or exactly what the encoder makes of the decoded value, and a
/// decoded data abort is consistent with its ESR (as `GuestFault::data_abort` makes one).
/// Returns whether it decoded.
pub fn fault_message(data: &[u8]) -> bool {
    use crate::protocols::fault::{DataAccess, FaultMessage, GuestFault};
    let (info, words) = fixed_message(data);
    let Ok(message) = FaultMessage::decode(info, words) else {
        return false;
    };
    let (again, encoded) = message.encode();
    assert_eq!(again, info, "{message:?}");
    assert_eq!(encoded[..used(info)], words[..used(info)]);
    if let FaultMessage::Guest(GuestFault::DataAbort {
        access,
        esr,
        write_value,
        ..
    }) = message
    {
        let from_esr = DataAccess::from_iss(esr.raw() as u32 & 0x1ff_ffff);
        assert_eq!(access, from_esr);
        assert_eq!(write_value.is_some(), from_esr.is_some_and(|a| a.write));
    }
    true
}

/// Checks the two fault reply decoders (`decode_guest_reply`, `decode_service_reply`: what the
/// kernel decodes): each refuses, or decodes to a reply its encoder makes exactly that message of;
/// only an error reply is accepted by both. Returns whether either decoded it.
pub fn fault_reply(data: &[u8]) -> bool {
    use crate::protocols::fault::{
        decode_guest_reply, decode_service_reply, encode_guest_reply, encode_service_reply,
    };
    let (info, words) = fixed_message(data);
    let guest = decode_guest_reply(info, words);
    let service = decode_service_reply(info, words);
    if let Ok(reply) = &guest {
        let (again, encoded) = encode_guest_reply(reply);
        assert_eq!(again, info, "{reply:?}");
        assert_eq!(encoded[..used(info)], words[..used(info)]);
    }
    if let Ok(reply) = service {
        let (again, encoded) = encode_service_reply(reply);
        assert_eq!(again, info, "{reply:?}");
        assert_eq!(encoded[..used(info)], words[..used(info)]);
    }
    let decoded = guest.is_ok() || service.is_ok();
    if let (Ok(guest), Ok(service)) = (guest, service) {
        assert!(guest.is_err() && guest.err() == service.err());
    }
    decoded
}

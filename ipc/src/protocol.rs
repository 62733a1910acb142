//! Protocol machinery: the wire header, versions, generations, request/reply encoding and the pieces
//! that the `protocol!` macro's client stubs and server dispatch are built from.
//!
//! A protocol message is `[WireHeader (8 bytes, zerocopy)] [postcard payload]` in the message registers:
//! - **request**: label = [`ProtocolId`]; header = the client's [`Version`] and the server
//!   [`Generation`] it believes it is talking to; payload = the protocol's `Request` enum;
//! - **reply**: label = 0 for success, else a [`WireError`] code saying why the server rejected the
//!   request; header = the server's version and generation; payload (success only) = the `Reply` enum,
//!   whose variant for each method is `Result<T, E>` with the protocol's own error enum `E`.
//!
//! Every decoder here takes hostile bytes: a short, malformed or over-long message is a [`WireError`],
//! never a panic, and trailing bytes after the postcard payload are rejected (so one message has exactly
//! one encoding).

use core::marker::PhantomData;

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use zerocopy::byteorder::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::abi::{IpcBuffer, MAX_CAPS, MSG_MAX_BYTES, MessageInfo};
use crate::cap::{AnyCap, Badge, CPtr, Cap, Endpoint, ObjectKind, ObjectType, WrongObjectType};
use crate::transport::{Transport, TransportError};

/// A protocol's number: the label of its requests, so one endpoint can serve several protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProtocolId(u16);

impl ProtocolId {
    /// The memory manager's protocol.
    pub const MEMMGR: Self = Self(1);
    /// The nested stage-2 walker's protocol.
    pub const S2WALK: Self = Self(2);
    /// The device broker's protocol.
    pub const DEVBROKER: Self = Self(3);
    /// A VMM's protocol.
    pub const VMM: Self = Self(4);
    // 5 was the kernel's fault messages until they became a fixed layout (`protocols::fault`); it
    // is not reused, so an old sender's message cannot be taken for another protocol's.
    /// Protocols of services outside `ipc/` start here.
    pub const FIRST_EXTERNAL: u16 = 0x100;

    /// A protocol id.
    #[must_use]
    pub const fn new(raw: u16) -> Self {
        Self(raw)
    }

    /// The raw number.
    #[must_use]
    pub const fn raw(self) -> u16 {
        self.0
    }
}

const _: () = {
    let ids = [
        ProtocolId::MEMMGR.0,
        ProtocolId::S2WALK.0,
        ProtocolId::DEVBROKER.0,
        ProtocolId::VMM.0,
    ];
    let mut i = 0;
    while i < ids.len() {
        assert!(ids[i] != 0 && ids[i] < ProtocolId::FIRST_EXTERNAL);
        let mut j = i + 1;
        while j < ids.len() {
            assert!(ids[i] != ids[j], "duplicate protocol id");
            j += 1;
        }
        i += 1;
    }
};

/// A protocol version. Within one major version, a minor version only appends request variants and
/// methods (postcard numbers enum variants by position), so a server accepts any request of its major
/// version whose minor is not newer than its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Version {
    /// Incompatible changes.
    pub major: u8,
    /// Compatible additions.
    pub minor: u8,
}

impl Version {
    /// A version.
    #[must_use]
    pub const fn new(major: u8, minor: u8) -> Self {
        Self { major, minor }
    }

    const fn to_wire(self) -> u16 {
        ((self.major as u16) << 8) | self.minor as u16
    }

    const fn from_wire(raw: u16) -> Self {
        Self {
            major: (raw >> 8) as u8,
            minor: raw as u8,
        }
    }

    /// Whether a server of this version accepts a request from a client of version `client`.
    #[must_use]
    pub const fn accepts(self, client: Self) -> bool {
        client.major == self.major && client.minor <= self.minor
    }
}

/// A server instance's generation: bumped each time the server restarts, so a client holding state in
/// the old instance (grants, sessions) is told instead of silently talking to a stranger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Generation(u32);

impl Generation {
    /// "Whichever instance answers": a client that holds no state in the server yet. Servers never use it.
    pub const ANY: Self = Self(0);

    /// A generation; a server's own is never [`Generation::ANY`].
    #[must_use]
    pub const fn new(raw: u32) -> Self {
        Self(raw)
    }

    /// The raw number.
    #[must_use]
    pub const fn raw(self) -> u32 {
        self.0
    }
}

/// A handle to a service, as a supervisor hands it to a client: the endpoint capability and the
/// generation of the server instance behind it. A client built from it ([`ClientCore::new`] with
/// [`ServiceHandle::generation`]) is told when that instance is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceHandle {
    endpoint: Cap<Endpoint>,
    generation: Generation,
}

impl ServiceHandle {
    /// A handle to the server instance `generation` behind `endpoint`.
    #[must_use]
    pub const fn new(endpoint: Cap<Endpoint>, generation: Generation) -> Self {
        Self {
            endpoint,
            generation,
        }
    }

    /// The endpoint capability.
    #[must_use]
    pub const fn endpoint(self) -> Cap<Endpoint> {
        self.endpoint
    }

    /// The server instance's generation.
    #[must_use]
    pub const fn generation(self) -> Generation {
        self.generation
    }
}

/// The fixed header in front of every protocol payload.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct WireHeader {
    /// [`Version`], major in the high byte.
    pub version: U16,
    /// Reserved, zero.
    pub flags: U16,
    /// [`Generation`]: the one the client expects (request) or the server's own (reply).
    pub generation: U32,
}

/// Size of [`WireHeader`].
pub const HEADER_BYTES: usize = core::mem::size_of::<WireHeader>();
/// Payload bytes left for postcard after the header.
pub const MAX_PAYLOAD_BYTES: usize = MSG_MAX_BYTES - HEADER_BYTES;

const _: () = assert!(HEADER_BYTES == 8);

crate::stable_codes! {
    /// Why a protocol message was rejected; a server sends the code as its reply label.
    ///
    /// # Errors
    /// Each variant is one way a message can be malformed or unacceptable.
    pub enum WireError: u16 {
        /// Shorter than the header.
        Truncated = 1,
        /// The label is not this protocol's id.
        WrongProtocol = 2,
        /// The client's version is not accepted by the server (or the reply's by the client).
        UnsupportedVersion = 3,
        /// The client expects a server generation that is not the one running.
        StaleGeneration = 4,
        /// The payload is not a valid postcard encoding of the expected enum.
        Malformed = 5,
        /// Bytes follow the postcard payload.
        TrailingBytes = 6,
        /// Reserved header flags are set.
        ReservedFlags = 7,
        /// The message does not fit in the message registers.
        TooLarge = 8,
        /// A transferred capability's kind is not a known object kind.
        BadCapKind = 9,
        /// A reply's status label is not a known code.
        BadStatus = 10,
    }
}

/// Encodes `header` and `payload` into `buffer`, returning the payload length.
fn encode<T: Serialize>(
    header: WireHeader,
    payload: &T,
    buffer: &mut IpcBuffer,
) -> Result<usize, WireError> {
    let bytes = buffer.bytes_mut();
    bytes[..HEADER_BYTES].copy_from_slice(header.as_bytes());
    let used =
        postcard::to_slice(payload, &mut bytes[HEADER_BYTES..]).map_err(|_| WireError::TooLarge)?;
    Ok(HEADER_BYTES + used.len())
}

/// Splits a payload into its header and the postcard bytes.
///
/// # Errors
/// [`WireError::Truncated`] or [`WireError::ReservedFlags`].
pub fn split_header(payload: &[u8]) -> Result<(&WireHeader, &[u8]), WireError> {
    let (header, rest) = WireHeader::ref_from_prefix(payload).map_err(|_| WireError::Truncated)?;
    if header.flags.get() != 0 {
        return Err(WireError::ReservedFlags);
    }
    Ok((header, rest))
}

/// Decodes exactly one postcard value from `bytes`.
///
/// # Errors
/// [`WireError::Malformed`] or [`WireError::TrailingBytes`].
pub fn decode_exact<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, WireError> {
    let (value, rest) = postcard::take_from_bytes(bytes).map_err(|_| WireError::Malformed)?;
    if rest.is_empty() {
        Ok(value)
    } else {
        Err(WireError::TrailingBytes)
    }
}

/// A protocol's constants, implemented by the `Protocol` marker that `protocol!` generates.
pub trait Protocol {
    /// The protocol's id (its requests' label).
    const ID: ProtocolId;
    /// The protocol's version.
    const VERSION: Version;
    /// The request enum.
    type Request: Serialize + DeserializeOwned;
    /// The reply enum.
    type Reply: Serialize + DeserializeOwned;
}

/// Encodes a request of protocol `P` into `buffer`, with capabilities to transfer.
///
/// # Errors
/// [`WireError::TooLarge`] when the request does not fit.
pub fn encode_request<P: Protocol>(
    request: &P::Request,
    expected: Generation,
    caps: &[CPtr],
    buffer: &mut IpcBuffer,
) -> Result<MessageInfo, WireError> {
    let header = WireHeader {
        version: U16::new(P::VERSION.to_wire()),
        flags: U16::new(0),
        generation: U32::new(expected.0),
    };
    let length = encode(header, request, buffer)?;
    for (slot, cap) in buffer.caps.iter_mut().zip(caps) {
        *slot = cap.raw();
    }
    MessageInfo::new(u64::from(P::ID.0), length, caps.len()).map_err(|_| WireError::TooLarge)
}

/// The capabilities a message transferred, with the kinds the kernel attested, by position (a
/// [`Transferred`] index); `None` where a capability arrived unwrapped, as a badge rather than a slot
/// (the protocols here never send a server its own endpoint, so there is nothing typed to hand out).
///
/// # Errors
/// [`WireError::BadCapKind`] when a kind is not an [`ObjectKind`].
pub fn received_caps(info: MessageInfo, buffer: &IpcBuffer) -> Result<ReceivedCaps, WireError> {
    let mut caps = ReceivedCaps::new();
    for i in 0..info.extra_caps() {
        if info.caps_unwrapped() & (1 << i) != 0 {
            // Cannot overflow: at most MAX_CAPS iterations.
            let _ = caps.push(None);
            continue;
        }
        let kind = u16::try_from(buffer.cap_kinds[i])
            .ok()
            .and_then(ObjectKind::from_code);
        let kind = kind.ok_or(WireError::BadCapKind)?;
        // Cannot overflow: at most MAX_CAPS iterations.
        let _ = caps.push(Some(AnyCap::new(CPtr::new(buffer.caps[i]), kind)));
    }
    Ok(caps)
}

/// The capabilities one message transferred, by position.
pub type ReceivedCaps = heapless::Vec<Option<AnyCap>, MAX_CAPS>;

/// What a handler learns about the message it is serving, and how it attaches capabilities to its reply.
#[derive(Debug)]
pub struct Context {
    badge: Badge,
    received: ReceivedCaps,
    reply_caps: heapless::Vec<CPtr, MAX_CAPS>,
}

/// Attaching a capability to a reply failed.
///
/// # Errors
/// Returned by [`Context::grant`] when [`MAX_CAPS`] are already attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyCaps;

impl Context {
    /// A context for a message from a client with `badge` that transferred `received`.
    #[must_use]
    pub fn new(badge: Badge, received: ReceivedCaps) -> Self {
        Self {
            badge,
            received,
            reply_caps: heapless::Vec::new(),
        }
    }

    /// The badge of the capability the client called through: who is asking.
    #[must_use]
    pub fn badge(&self) -> Badge {
        self.badge
    }

    /// Capabilities the request transferred, by position, with attested kinds (`None`: unwrapped).
    #[must_use]
    pub fn received(&self) -> &[Option<AnyCap>] {
        &self.received
    }

    /// Attaches `cap` to the reply; the returned index goes into the reply payload.
    ///
    /// # Errors
    /// [`TooManyCaps`] when the reply already carries [`MAX_CAPS`].
    pub fn grant<T: ObjectType>(&mut self, cap: Cap<T>) -> Result<Transferred<T>, TooManyCaps> {
        let index = self.reply_caps.len() as u8;
        self.reply_caps.push(cap.cptr()).map_err(|_| TooManyCaps)?;
        Ok(Transferred {
            index,
            kind: PhantomData,
        })
    }

    /// Capabilities attached to the reply.
    #[must_use]
    pub fn reply_caps(&self) -> &[CPtr] {
        &self.reply_caps
    }
}

/// A capability of type `T` that travels beside a payload: in the payload it is only an index into
/// the message's capability slots; the receiver turns it into a `Cap<T>` through the kernel's attested kind.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Transferred<T: ObjectType> {
    index: u8,
    #[serde(skip)]
    kind: PhantomData<T>,
}

impl<T: ObjectType> Clone for Transferred<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T: ObjectType> Copy for Transferred<T> {}

impl<T: ObjectType> Transferred<T> {
    /// The index into the message's transferred capabilities.
    #[must_use]
    pub const fn index(self) -> u8 {
        self.index
    }
}

/// Decodes a request of protocol `P` for a server of generation `server` (never [`Generation::ANY`]).
///
/// # Errors
/// [`WireError`] when the message is not an acceptable request of `P`.
pub fn decode_request<P: Protocol>(
    info: MessageInfo,
    buffer: &IpcBuffer,
    server: Generation,
) -> Result<(P::Request, Context), WireError> {
    if info.label() != u64::from(P::ID.0) {
        return Err(WireError::WrongProtocol);
    }
    let (header, rest) = split_header(buffer.payload(info))?;
    if !P::VERSION.accepts(Version::from_wire(header.version.get())) {
        return Err(WireError::UnsupportedVersion);
    }
    let expected = Generation(header.generation.get());
    if expected != Generation::ANY && expected != server {
        return Err(WireError::StaleGeneration);
    }
    let request = decode_exact(rest)?;
    let context = Context::new(Badge::new(buffer.badge), received_caps(info, buffer)?);
    Ok((request, context))
}

/// Encodes a server's reply (or its rejection of the request) into `buffer`. Never fails: a reply that
/// does not fit becomes a [`WireError::TooLarge`] rejection.
pub fn encode_reply<P: Protocol>(
    reply: Result<&P::Reply, WireError>,
    caps: &[CPtr],
    server: Generation,
    buffer: &mut IpcBuffer,
) -> MessageInfo {
    let header = WireHeader {
        version: U16::new(P::VERSION.to_wire()),
        flags: U16::new(0),
        generation: U32::new(server.0),
    };
    let encoded = reply.and_then(|reply| encode(header, reply, buffer));
    let (status, length, caps) = match encoded {
        Ok(length) => (0, length, caps),
        Err(error) => {
            buffer.bytes_mut()[..HEADER_BYTES].copy_from_slice(header.as_bytes());
            (u64::from(error.code()), HEADER_BYTES, &[][..])
        }
    };
    for (slot, cap) in buffer.caps.iter_mut().zip(caps) {
        *slot = cap.raw();
    }
    // Cannot fail (length ≤ MSG_MAX_BYTES, caps ≤ MAX_CAPS, status < 2^16); should it ever, a
    // header-less rejection is the answer that cannot be wrong.
    MessageInfo::new(status, length, caps.len()).unwrap_or(REJECT_TOO_LARGE)
}

/// A rejection without a header, checked at compile time.
const REJECT_TOO_LARGE: MessageInfo =
    match MessageInfo::new(WireError::TooLarge.code() as u64, 0, 0) {
        Ok(info) => info,
        Err(_) => panic!("a header-less rejection is a valid message-info word"),
    };

/// Why a client's call failed, other than the service's own error.
///
/// # Errors
/// - [`CallError::Transport`]: the call did not complete.
/// - [`CallError::Encode`]: the request could not be encoded (too large).
/// - [`CallError::Rejected`]: the server rejected the request with this code.
/// - [`CallError::BadReply`]: the reply is malformed.
/// - [`CallError::ServerRestarted`]: the server is a new instance; state held in the old one is gone.
/// - [`CallError::ReplyMismatch`]: the reply is for a different method.
/// - [`CallError::NoSuchCap`]: a transferred capability index or kind does not match the reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallError {
    /// The transport failed.
    Transport(TransportError),
    /// The request could not be encoded.
    Encode(WireError),
    /// The server rejected the request.
    Rejected(WireError),
    /// The reply could not be decoded.
    BadReply(WireError),
    /// The server restarted; this is its new generation (the client now expects it).
    ServerRestarted(Generation),
    /// The reply's variant does not answer the request's method.
    ReplyMismatch,
    /// A transferred capability is missing or of the wrong kind.
    NoSuchCap(Option<WrongObjectType>),
}

impl From<TransportError> for CallError {
    fn from(error: TransportError) -> Self {
        Self::Transport(error)
    }
}

/// A client method's error: the service's own (`E`) or the call's.
///
/// # Errors
/// [`Error::Service`] is the service's answer; [`Error::Call`] means the call itself failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error<E> {
    /// The service answered with this error.
    Service(E),
    /// The call failed.
    Call(CallError),
}

impl<E> From<CallError> for Error<E> {
    fn from(error: CallError) -> Self {
        Self::Call(error)
    }
}

/// Decodes a server's reply to a request of protocol `P`, from hostile bytes, for a client that
/// expects server instance `expected`; learns the generation when `expected` is [`Generation::ANY`], and
/// updates it when the server restarted.
///
/// # Errors
/// [`CallError::ServerRestarted`], [`CallError::Rejected`] or [`CallError::BadReply`].
pub fn decode_reply<P: Protocol>(
    reply: MessageInfo,
    buffer: &IpcBuffer,
    expected: &mut Generation,
) -> Result<(P::Reply, ReceivedCaps), CallError> {
    let (header, rest) = split_header(buffer.payload(reply)).map_err(CallError::BadReply)?;
    let server = Generation(header.generation.get());
    if server == Generation::ANY {
        return Err(CallError::BadReply(WireError::StaleGeneration));
    }
    if *expected != server {
        let restarted = *expected != Generation::ANY;
        *expected = server;
        if restarted {
            return Err(CallError::ServerRestarted(server));
        }
    }
    if reply.label() != 0 {
        let code = u16::try_from(reply.label())
            .ok()
            .and_then(WireError::from_code);
        return Err(CallError::Rejected(
            code.ok_or(CallError::BadReply(WireError::BadStatus))?,
        ));
    }
    if Version::from_wire(header.version.get()).major != P::VERSION.major {
        return Err(CallError::BadReply(WireError::UnsupportedVersion));
    }
    let value = decode_exact(rest).map_err(CallError::BadReply)?;
    let received = received_caps(reply, buffer).map_err(CallError::BadReply)?;
    Ok((value, received))
}

/// The protocol-independent part of a client stub: transport, expected generation, message buffer and
/// the capabilities the last reply transferred.
#[derive(Debug)]
pub struct ClientCore<T> {
    transport: T,
    generation: Generation,
    buffer: IpcBuffer,
    send_caps: heapless::Vec<CPtr, MAX_CAPS>,
    received: ReceivedCaps,
}

impl<T: Transport> ClientCore<T> {
    /// A client of the server instance `generation` ([`Generation::ANY`] before any state is held).
    pub fn new(transport: T, generation: Generation) -> Self {
        Self {
            transport,
            generation,
            buffer: IpcBuffer::default(),
            send_caps: heapless::Vec::new(),
            received: heapless::Vec::new(),
        }
    }

    /// The generation this client expects; after [`CallError::ServerRestarted`] it is the new one.
    pub fn generation(&self) -> Generation {
        self.generation
    }

    /// Attaches a capability to the next request.
    ///
    /// # Errors
    /// [`TooManyCaps`] when [`MAX_CAPS`] are already attached.
    pub fn attach<O: ObjectType>(&mut self, cap: Cap<O>) -> Result<(), TooManyCaps> {
        self.send_caps.push(cap.cptr()).map_err(|_| TooManyCaps)
    }

    /// Takes a capability that the last reply transferred.
    ///
    /// # Errors
    /// [`CallError::NoSuchCap`] when the index is out of range or the kernel-attested kind is not `O`.
    pub fn take<O: ObjectType>(&self, transferred: Transferred<O>) -> Result<Cap<O>, CallError> {
        let any = self
            .received
            .get(usize::from(transferred.index))
            .copied()
            .flatten()
            .ok_or(CallError::NoSuchCap(None))?;
        any.downcast()
            .map_err(|wrong| CallError::NoSuchCap(Some(wrong)))
    }

    /// Sends `request` and decodes the reply; the building block of the generated stubs.
    ///
    /// # Errors
    /// [`CallError`] when the call or the reply fails at any layer.
    pub async fn call<P: Protocol>(&mut self, request: &P::Request) -> Result<P::Reply, CallError> {
        self.received.clear();
        let caps = core::mem::take(&mut self.send_caps);
        let info = encode_request::<P>(request, self.generation, &caps, &mut self.buffer)
            .map_err(CallError::Encode)?;
        let reply = self.transport.call(info, &mut self.buffer).await?;
        let (value, received) = decode_reply::<P>(reply, &self.buffer, &mut self.generation)?;
        self.received = received;
        Ok(value)
    }
}

#[cfg(test)]
#[allow(
    dead_code,
    reason = "the test protocol's generated client and handler are not exercised here"
)]
mod tests {
    use super::*;
    use crate::stable_codes;

    stable_codes! {
        /// Test errors.
        pub enum BigError: u16 {
            /// Never.
            Never = 1,
        }
    }

    crate::protocol! {
        /// A protocol whose replies can exceed the message registers.
        protocol Big {
            id: ProtocolId::new(0x1ff),
            version: Version::new(2, 3),
            error: BigError,
        }
        /// Returns two arrays of the given word.
        fn big(word: u64) -> ([u64; 32], [u64; 32]) as Big;
    }

    #[test]
    fn versions_accept_older_minors_of_the_same_major_only() {
        let server = Version::new(2, 3);
        assert!(server.accepts(Version::new(2, 0)) && server.accepts(Version::new(2, 3)));
        assert!(!server.accepts(Version::new(2, 4)) && !server.accepts(Version::new(1, 3)));
        assert_eq!(Version::from_wire(server.to_wire()), server);
    }

    #[test]
    fn a_reply_too_large_for_the_registers_becomes_a_rejection() {
        let mut buffer = IpcBuffer::default();
        let small = Reply::Big(Ok(([1; 32], [1; 32])));
        let info = encode_reply::<Big>(Ok(&small), &[], Generation::new(4), &mut buffer);
        assert_eq!(info.label(), 0);
        let huge = Reply::Big(Ok(([u64::MAX; 32], [u64::MAX; 32])));
        let info = encode_reply::<Big>(Ok(&huge), &[CPtr::new(3)], Generation::new(4), &mut buffer);
        assert_eq!(info.label(), u64::from(WireError::TooLarge.code()));
        assert_eq!((info.length(), info.extra_caps()), (HEADER_BYTES, 0));
        let mut expected = Generation::new(4);
        let decoded = decode_reply::<Big>(info, &buffer, &mut expected);
        assert_eq!(
            decoded.unwrap_err(),
            CallError::Rejected(WireError::TooLarge)
        );
    }

    #[test]
    fn received_capabilities_keep_their_positions_around_unwrapped_ones() {
        let mut buffer = IpcBuffer {
            caps: [11, 12, 13],
            cap_kinds: [0, u64::from(ObjectKind::Frame.code()), 0],
            ..IpcBuffer::default()
        };
        let info = MessageInfo::new(0, 0, 2)
            .unwrap()
            .with_caps_unwrapped(0b01)
            .unwrap();
        let received = received_caps(info, &buffer).unwrap();
        assert_eq!(
            received.as_slice(),
            &[None, Some(AnyCap::new(CPtr::new(12), ObjectKind::Frame))]
        );
        buffer.cap_kinds[1] = 99;
        assert_eq!(received_caps(info, &buffer), Err(WireError::BadCapKind));
    }

    #[test]
    fn a_request_for_another_generation_is_stale_but_any_is_accepted() {
        let mut buffer = IpcBuffer::default();
        let request = Request::Big { word: 5 };
        let info = encode_request::<Big>(&request, Generation::new(7), &[], &mut buffer).unwrap();
        assert_eq!(
            decode_request::<Big>(info, &buffer, Generation::new(8)).unwrap_err(),
            WireError::StaleGeneration
        );
        assert_eq!(
            decode_request::<Big>(info, &buffer, Generation::new(7))
                .unwrap()
                .0,
            request
        );
        let info = encode_request::<Big>(&request, Generation::ANY, &[], &mut buffer).unwrap();
        assert_eq!(
            decode_request::<Big>(info, &buffer, Generation::new(8))
                .unwrap()
                .0,
            request
        );
        buffer.bytes_mut()[2] = 1;
        assert_eq!(
            decode_request::<Big>(info, &buffer, Generation::new(8)).unwrap_err(),
            WireError::ReservedFlags
        );
    }
}

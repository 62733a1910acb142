//! The ping/pong test protocol, declared once with `capvisor_ipc::protocol!` for both services
//! (each includes this file with `#[path]`): requests, replies, client stub and server dispatch
//! all come from this one declaration.

use capvisor_ipc::cap::Notification;
use capvisor_ipc::protocol::{ProtocolId, Transferred, Version};

/// Where `pong` maps the frame `ping` sends, and where `ping` maps it too.
pub const SHARED: u64 = 0x1_0000_0000;

/// The value `pong` writes into the shared frame.
pub const SHARED_VALUE: u64 = 0x1234_5678;

/// `pong`'s generation (a single instance that never restarts).
pub const GENERATION: capvisor_ipc::protocol::Generation =
    capvisor_ipc::protocol::Generation::new(1);

capvisor_ipc::stable_codes! {
    /// Why `pong` refused a request.
    pub enum PongError: u16 {
        /// Ping 0 has no answer.
        Zero = 1,
        /// The request did not carry a capability of the kind it needs.
        MissingCapability = 2,
        /// The kernel refused what the request asked for (pong prints the kernel's error).
        Refused = 3,
        /// `touch` before any frame was shared.
        NothingShared = 4,
    }
}

capvisor_ipc::protocol! {
    /// The ping/pong test protocol.
    protocol PingPong {
        id: ProtocolId::new(0x110),
        version: Version::new(1, 0),
        error: PongError,
    }
    /// Answers `n` with `n * 10`.
    fn ping(n: u64) -> u64 as Ping;
    /// Signals the notification capability the request carries (attached, first); returns the
    /// bits the signal set (the capability's badge).
    fn notify() -> u64 as Notify;
    /// Maps the frame capability the request carries at [`SHARED`] and writes [`SHARED_VALUE`].
    fn share() -> () as Share;
    /// Grants the caller the notification pong made from its own untyped memory.
    fn doorbell() -> Transferred<Notification> as Doorbell;
    /// Signals the notification again and reads the shared frame: after `ping` revoked them the
    /// signal fails and the read faults, so this request is sent one-way and never answered.
    fn touch() -> u64 as Touch;
}

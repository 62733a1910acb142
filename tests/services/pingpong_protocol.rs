//! The ping/pong test protocol, defined once for both services (included by each with
//! `#[path]`): message labels and the IPA where both map the frame `ping` sends.

/// A call `pong` answers at once.
pub const PING: u64 = 1;
/// Carries a notification capability, which `pong` signals.
pub const NOTIFY: u64 = 2;
/// Carries a frame capability, which `pong` maps at [`SHARED`] and writes.
pub const FRAME: u64 = 3;
/// Asks `pong` to touch the frame again after `ping` revoked it (which must fault).
pub const TOUCH: u64 = 4;
/// Where the shared frame is mapped, in both services.
pub const SHARED: u64 = 0x1_0000_0000;

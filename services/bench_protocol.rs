//! The protocol between `bench` and its peer `bench-echo`, defined once for both services
//! (included by each with `#[path]`): message labels.

/// Carries two notification capabilities: the one the peer waits on, the one it signals.
pub const SETUP: u64 = 1;
/// A call the peer answers at once with an empty reply.
pub const ECHO: u64 = 2;
/// A send (word 0 = rounds): the peer waits on the first notification and signals the second,
/// `rounds` times.
pub const NOTIFY: u64 = 3;

//! capvisor's typed IPC: message layouts and protocols shared by the kernel, services and the SDK.
//!
//! Principles:
//! - **Fixed layouts are zerocopy types** ([`abi::IpcBuffer`], [`abi::MessageInfo`],
//!   [`protocol::WireHeader`], [`ring::RingHeader`]): no casting by hand, offsets const-asserted.
//! - **Service-to-service payloads are postcard** (feature `postcard`, on by default), encoded into and
//!   decoded from fixed buffers: no allocation anywhere in the `no_std` build.
//! - **What the EL2 kernel sends and decodes is fixed layout**: invocations, fault messages
//!   ([`protocols::fault`]) and guest calls ([`protocols::guest_call`]) are a label and words in the
//!   message registers. The kernel builds this crate without `postcard`, so neither serde nor postcard
//!   is in the trusted base.
//! - **Bytes from another address space are hostile**: every decoder returns an error for bad input and
//!   never panics; a shared ring's peer-written indices are validated on every use.
//! - **One declaration per interface** ([`protocol!`]) yields the request and reply enums, the client
//!   stub and the server dispatch. Errors that cross an interface have stable, const-checked numbers
//!   ([`stable_codes!`]).
//! - **No `unsafe`**: shared memory is reached through atomics only.
//!
//! The seL4 conventions this follows (message registers, badges, capability transfer, reply
//! capabilities) are described in [`abi`] and in `docs/ipc.md`.
#![cfg_attr(not(any(test, feature = "hosted")), no_std)]
#![forbid(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

#[cfg(feature = "postcard")]
#[doc(hidden)]
pub use serde as __serde;

mod codes;
#[cfg(feature = "postcard")]
mod protocol_macro;

pub mod abi;
pub mod bootinfo;
pub mod cap;
#[cfg(feature = "checks")]
pub mod checks;
pub mod esr;
#[cfg(feature = "hosted")]
pub mod hosted;
pub mod local;
pub mod memory;
#[cfg(feature = "postcard")]
pub mod protocol;
pub mod protocols;
pub mod ring;
pub mod transport;
pub mod types;

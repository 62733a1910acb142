//! The system protocols.
//!
//! The services' protocols (feature `postcard`) are each declared once with `protocol!`: each module
//! holds its argument and result types, its error enum (stable codes) and the generated `Request`,
//! `Reply`, `Client`, `Handler`, `dispatch`, `handle` and `serve`. The kernel's fault messages
//! ([`fault`], [`guest_call`]) are fixed layouts of a label and message-register words, with one
//! encoder and one checked decoder per direction, and no serde.

#[cfg(feature = "postcard")]
pub mod devbroker;
pub mod fault;
pub mod guest_call;
#[cfg(feature = "postcard")]
pub mod memmgr;
#[cfg(feature = "postcard")]
pub mod s2walk;
#[cfg(feature = "postcard")]
pub mod vmm;

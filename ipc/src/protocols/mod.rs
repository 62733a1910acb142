//! The system protocols, each declared once with [`protocol!`](crate::protocol!).
//!
//! Each module holds its argument and result types, its error enum (stable codes) and the generated
//! `Request`, `Reply`, `Client`, `Handler`, `dispatch`, `handle` and `serve`.

pub mod devbroker;
pub mod fault;
pub mod guest_call;
pub mod memmgr;
pub mod s2walk;
pub mod vmm;

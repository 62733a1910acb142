//! The host-testable core of capvisor's EL2 kernel: pure decoding and policy-free checks that the
//! kernel binary (`main.rs`, aarch64 only) wraps with register accesses.
//!
//! Principles: nothing here touches hardware, so all of it is unit-tested on the x86_64 host;
//! the kernel binary's `arch` module is the only place with assembly and system registers. The
//! one `unsafe` module, `object::memory`, places kernel objects in the memory their untyped paid
//! for; everything else is safe code.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod bootargs;
pub mod context;
pub mod exception;
pub mod idregs;
pub use capvisor_ipc::esr;
pub mod memmap;
pub mod object;
pub mod platform;
pub mod stage2;
pub mod vgic;
pub mod vsysreg;

//! The runtime of capvisor EL0 services: the entry point, system-call wrappers and panic
//! handling, for services written against `capvisor_rt::service!`.
//!
//! A service is a `no_std` binary crate whose `main.rs` is:
//!
//! ```ignore
//! #![cfg_attr(target_os = "none", no_std, no_main)]
//! capvisor_rt::service!(run);
//! fn run() -> u64 { capvisor_rt::debug_write("hello\n"); 0 }
//! ```
//!
//! plus a `build.rs` that passes the runtime's linker script (see `capvisor new service`). On the
//! host (for `cargo test --workspace`) the same crate builds as an ordinary program whose system
//! calls print to stdout, so its pure logic can be unit-tested.
//!
//! A service's entry function returning, or panicking, stops that service (the kernel reports it); the
//! rest of the system goes on.
#![cfg_attr(target_os = "none", no_std)]

mod line;
pub use line::Line;

#[cfg(target_os = "none")]
mod target;
#[cfg(target_os = "none")]
pub use target::*;
/// Typed system calls (bare metal only: the host build has no kernel).
#[cfg(target_os = "none")]
pub mod sys;
pub use capvisor_ipc::abi::{KernelError, MessageInfo};
pub use capvisor_ipc::cap::{CPtr, Rights};

#[cfg(not(target_os = "none"))]
mod host;
#[cfg(not(target_os = "none"))]
pub use host::*;

/// Declares the service's entry function: `fn() -> u64`, whose result is its exit status.
#[macro_export]
macro_rules! service {
    ($run:path) => {
        #[cfg(target_os = "none")]
        #[unsafe(no_mangle)]
        extern "Rust" fn __capvisor_service_main() -> u64 {
            $run()
        }

        #[cfg(not(target_os = "none"))]
        fn main() {
            std::process::exit($run() as i32)
        }
    };
}

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
//! A service written with typed IPC is async instead (`docs/ipc.md`, "Writing a typed service"):
//!
//! ```ignore
//! #![cfg_attr(target_os = "none", no_std, no_main)]
//! capvisor_rt::service_async!(main);
//! async fn main() -> u64 { /* protocol clients and serve loops over capvisor_rt::ipc */ 0 }
//! ```
//!
//! Its future runs on an `embassy-executor` raw executor ([`executor`]); transports over the
//! `svc` syscalls are in [`ipc`].
//!
//! A service's entry function returning, or panicking, stops that service (the kernel reports it); the
//! rest of the system goes on.
#![cfg_attr(target_os = "none", no_std)]

mod line;
pub use line::Line;

/// Typed clients for the system services (memmgr, devbroker, s2walk, VMM).
pub mod clients;
/// The host tests' one fake kernel (host only).
#[cfg(not(target_os = "none"))]
pub mod fake;
pub mod kernel;
#[cfg(target_os = "none")]
mod target;
pub mod window;
#[cfg(target_os = "none")]
pub use target::*;
/// The async runtime of EL0 services (bare metal only).
#[cfg(target_os = "none")]
pub mod executor;
/// The EL0 transport for `capvisor_ipc` protocols (bare metal only).
#[cfg(target_os = "none")]
pub mod ipc;
/// Typed system calls (bare metal only: the host build has no kernel).
#[cfg(target_os = "none")]
pub mod sys;
/// A second thread in the service's address space (bare metal only).
#[cfg(target_os = "none")]
pub mod thread;
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

/// Declares the service's async entry function: `async fn() -> u64`, whose result is its exit
/// status. On the bare-metal target it runs as the first task of [`executor::run`]; on the host it
/// runs with a plain `block_on`, as an ordinary program.
#[macro_export]
macro_rules! service_async {
    ($main:path) => {
        #[cfg(target_os = "none")]
        #[unsafe(no_mangle)]
        extern "Rust" fn __capvisor_service_main() -> u64 {
            $crate::executor::run($main())
        }

        #[cfg(not(target_os = "none"))]
        fn main() {
            std::process::exit($crate::block_on($main()) as i32)
        }
    };
}

//! capvisor's EL2 kernel: boot, the platform, and (as the work grows) traps, the world switch,
//! capability-checked IPC and TLB/cache maintenance.
//!
//! Built for `aarch64-unknown-none-softfloat` by `capvisor build`; on the host this binary is a
//! stub so that workspace-wide `cargo` commands work. Principles: the kernel decides no policy;
//! every unexpected event is reported on the console with what and where, then the machine stops
//! with a failure status, never a hang.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![deny(unsafe_op_in_unsafe_fn)]

#[cfg(target_os = "none")]
mod arch;
#[cfg(target_os = "none")]
mod console;
#[cfg(target_os = "none")]
mod devicetree;
#[cfg(target_os = "none")]
mod exit;
#[cfg(target_os = "none")]
mod glue;
#[cfg(target_os = "none")]
mod kmain;
#[cfg(target_os = "none")]
mod selftest;
#[cfg(target_os = "none")]
mod smp;

#[cfg(target_os = "none")]
pub use kmain::load_base;

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!(
        "capvisor-kernel runs at EL2 on aarch64; build and boot it with `capvisor run` \
         (it is built for aarch64-unknown-none-softfloat)"
    );
    std::process::exit(2);
}

//! The runtime of capvisor's bare-metal test guests: small EL1 programs, each checking one
//! stage-2 rule of `DESIGN.md` from inside a guest, run by a VMM service under the hypervisor (or
//! directly on QEMU, where the hypervisor's part is absent).
//!
//! A guest is a `no_std` binary crate whose `main.rs` is:
//!
//! ```ignore
//! #![cfg_attr(target_os = "none", no_std, no_main)]
//! capvisor_guest_rt::guest!("name", run);
//! fn run() -> capvisor_guest_rt::Outcome { capvisor_guest_rt::Outcome::Pass }
//! ```
//!
//! plus a `build.rs` passing [`guest.ld`](../guest.ld) to the linker. The runtime supplies the arm64
//! `Image` header, the entry code (stack, `.bss`, vectors), the console, PSCI calls and stage-1
//! MMU helpers, and prints the result line of the guest contract (`docs/guests.md`); for the
//! hostile guests (`docs/hostile-guests.md`) also probes of single instructions (`probe!`), a
//! hook for every vector, trips to EL0 (`el0::run`) and the command line (`bootargs`).
//!
//! Principles: everything the guest contract fixes is a constant in [`contract`], defined once;
//! descriptor, register-value and instruction encodings are pure functions tested on the host
//! ([`stage1`], [`encode`]); assembly and system registers live only in the bare-metal `target`
//! module.
#![cfg_attr(target_os = "none", no_std)]

pub mod contract;
pub mod encode;
pub mod fdt;
pub mod stage1;

#[cfg(target_os = "none")]
mod target;
#[cfg(target_os = "none")]
pub use target::*;

/// How a guest's test ended: the runtime prints `guest <name>: PASS`, `… FAIL <reason>` or
/// `… SKIP <reason>`, then powers off with PSCI `SYSTEM_OFF`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The rule held.
    Pass,
    /// The rule was broken; the reason is one line.
    Fail(&'static str),
    /// The test cannot run here (e.g. no VMM); the reason is one line.
    Skip(&'static str),
}

/// Declares a guest: its name in result lines and its test function, `fn() -> Outcome`.
///
/// On the host (for `cargo test --workspace`) the crate builds as a program that explains that
/// guests run only on aarch64.
#[macro_export]
macro_rules! guest {
    ($name:literal, $run:path) => {
        #[cfg(target_os = "none")]
        #[unsafe(no_mangle)]
        extern "Rust" fn __capvisor_guest_main() -> $crate::Outcome {
            $run()
        }

        #[cfg(target_os = "none")]
        #[unsafe(no_mangle)]
        extern "Rust" fn __capvisor_guest_name() -> &'static str {
            $name
        }

        #[cfg(not(target_os = "none"))]
        fn main() {
            println!(
                "guest {}: a bare-metal EL1 test guest; it runs only on aarch64, built by \
                 `capvisor build` (see docs/guests.md)",
                $name
            );
        }
    };
}

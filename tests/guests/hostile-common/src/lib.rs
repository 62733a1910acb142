//! What the hostile test guests share (`docs/hostile-guests.md`): the role a guest plays, from
//! its command line (the manifest's `cmdline`, so one crate serves as attacker and victim); the
//! GICv3 CPU interface and the GIC registers the VMM emulates; the generic timers; and the
//! syndrome encodings the guests compare with.
//!
//! Principles: encodings are pure functions tested on the host ([`encode`]); register access
//! lives in the bare-metal `target` module, one `unsafe` block per access with its reason.
#![cfg_attr(target_os = "none", no_std)]

pub mod encode;

#[cfg(target_os = "none")]
mod target;
#[cfg(target_os = "none")]
pub use target::*;

/// The first word of a command line: the guest's role (`""` if none).
#[must_use]
pub fn first_word(bootargs: &str) -> &str {
    bootargs.split_whitespace().next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_role_is_the_first_word() {
        assert_eq!(first_word("victim"), "victim");
        assert_eq!(first_word("  attack-wfi extra"), "attack-wfi");
        assert_eq!(first_word(""), "");
    }
}

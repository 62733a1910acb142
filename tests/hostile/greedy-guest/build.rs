//! Links the guest with the guest runtime's linker script, position-independent (shared by every
//! test guest).

include!("../../guests/rt/guest-build.rs");

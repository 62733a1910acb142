//! Links the guest with the guest runtime's linker script, position-independent (shared by every
//! test guest).

include!("../rt/guest-build.rs");

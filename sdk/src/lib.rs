//! The capvisor SDK library: building images from manifests and booting them in QEMU, shared by
//! the `capvisor` command and the integration tests.
#![forbid(unsafe_code)]

pub mod bench;
pub mod doctor;
pub mod guests;
pub mod image;
pub mod inspect;
pub mod kernel;
pub mod new_service;
pub mod plan;
pub mod qemu;
pub mod s2walk_cmd;
pub mod services;
pub mod symbols;
pub mod toolchain;

use std::path::PathBuf;

/// The workspace this SDK was built from (where the kernel's sources and `images/` are), unless
/// `CAPVISOR_ROOT` names another.
#[must_use]
pub fn workspace_root() -> PathBuf {
    if let Some(root) = std::env::var_os("CAPVISOR_ROOT") {
        return PathBuf::from(root);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("sdk/ has a parent")
        .to_path_buf()
}

//! capvisor image manifests (`images/<name>.toml`): parsing and validation.
//!
//! A manifest declares everything a system image holds: the kernel's options, what the platform
//! must provide, the devices and carve-outs used, the EL0 services and the capabilities each is
//! granted, and the guests with their kernels, memory, vCPUs and passthroughs. The reference is
//! `docs/manifest.md`.
//!
//! Principles:
//! - **Nothing is built from a manifest that has not fully passed.** [`parse`] returns a
//!   [`Manifest`] only when every check holds; the image builder never sees a half-valid one.
//! - **Every error points at the mistake**: `file:LINE:COLUMN: error: field: message`, with the
//!   field path and what was expected. Shape errors (syntax, unknown or missing fields, wrong
//!   types) stop at the first; semantic errors are all collected and reported together.
//! - **Closed sets are closed**: unknown fields, features, capability kinds and memory types are
//!   errors listing the valid choices, never ignored.
//! - **Requirements are data**: [`Manifest::requirements`] packs the CPU features and sizes the
//!   system needs, with stable bit numbers, for the kernel to check at boot.
//!
//! This crate runs on the host only.
#![forbid(unsafe_code)]

mod error;
mod feature;
mod locate;
mod model;
mod read;
mod schema;
mod validate;

use std::path::Path;

pub use capvisor_ipc::memory::MemoryType;
pub use error::{ErrorKind, Location, ManifestError, ManifestErrors};
pub use feature::{Feature, FeatureSet, Requirements};
pub use model::{
    Board, Capability, Carveout, CarveoutPassthrough, CrateRef, DEFAULT_MEMMGR, DEFAULT_PA_BITS,
    DEFAULT_STACK, Device, DeviceLocator, GRANT_KINDS, Guest, GuestKernel, Kernel, LogLevel,
    MAX_VCPUS, Manifest, PA_BITS, PAGE_SIZE, Passthrough, Platform, SPI_RANGE, Selftest, Service,
};

/// Reads and validates the manifest at `path`.
///
/// Relative paths inside it (guest kernels, initrds, crate directories) are resolved against the
/// directory `path` is in.
///
/// # Errors
/// [`ErrorKind::Io`] when the file cannot be read; otherwise as [`parse`].
pub fn load(path: &Path) -> Result<Manifest, ManifestErrors> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, path),
        Err(error) => Err(ManifestErrors(vec![ManifestError {
            file: path.to_path_buf(),
            location: None,
            field: String::new(),
            kind: ErrorKind::Io {
                message: error.to_string(),
            },
        }])),
    }
}

/// Validates manifest `text`, which was read from `path` (used in error messages and to resolve
/// relative paths; it need not exist).
///
/// # Errors
/// One [`ManifestError`] for a TOML syntax error or a document that does not fit the schema
/// (unknown or missing field, wrong type, unknown choice); otherwise one for each semantic
/// mistake, sorted by position: see [`ErrorKind`] for the full list.
pub fn parse(text: &str, path: &Path) -> Result<Manifest, ManifestErrors> {
    let raw = read::read(text, path)?;
    validate::check(raw, text, path).map_err(ManifestErrors)
}

//! The architecture layer (AArch64 only).

pub mod aarch64;

pub use aarch64::boot;

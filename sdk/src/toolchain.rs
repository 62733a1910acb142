//! Finding a compiler that can build capvisor's bare-metal crates for
//! `aarch64-unknown-none-softfloat`.
//!
//! Bare-metal crates are built with `-Z build-std` (`core` rebuilt from source, position-
//! independent like the rest of the kernel) under `RUSTC_BOOTSTRAP=1`. Two toolchains can do it
//! (see `docs/dependencies.md` and `scripts/setup.sh`): rustup's own compiler with its `rust-src`
//! component, or Debian's `rustc-web` with `rust-web-src` when rustup cannot download. Either
//! links with the `rust-lld` that rustup's host toolchain ships.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The bare-metal target triple.
pub const TARGET: &str = "aarch64-unknown-none-softfloat";

/// A way to build bare-metal crates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Toolchain {
    /// The `rustc` to use.
    pub rustc: PathBuf,
    /// A short name for messages and the target directory: `rustup` or `debian`.
    pub name: &'static str,
    /// rustup's `rust-lld`, the linker.
    pub linker: PathBuf,
}

/// Why no toolchain was found.
#[derive(Debug)]
pub struct NoToolchain(pub String);

impl std::fmt::Display for NoToolchain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NoToolchain {}

fn sysroot(rustc: &Path) -> Option<PathBuf> {
    let out = Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

fn has_core_source(sysroot: &Path) -> bool {
    sysroot
        .join("lib/rustlib/src/rust/library/core/Cargo.toml")
        .is_file()
}

/// Finds the toolchain to use: `CAPVISOR_RUSTC` if set, else rustup's compiler with `rust-src`,
/// else Debian's `/usr/bin/rustc` with its library source.
///
/// # Errors
///
/// [`NoToolchain`], saying what is missing and how to install it.
pub fn find() -> Result<Toolchain, NoToolchain> {
    let host_rustc = PathBuf::from(std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into()));
    let host_sysroot = sysroot(&host_rustc).ok_or_else(|| {
        NoToolchain("no working `rustc` on PATH: install Rust with rustup first".into())
    })?;
    let linker = host_sysroot.join("lib/rustlib/x86_64-unknown-linux-gnu/bin/rust-lld");
    if !linker.is_file() {
        return Err(NoToolchain(format!(
            "rust-lld not found at {}: capvisor links with the rust-lld that rustup's toolchain ships",
            linker.display()
        )));
    }
    let candidates: Vec<(PathBuf, &'static str)> = match std::env::var_os("CAPVISOR_RUSTC") {
        Some(r) => vec![(PathBuf::from(r), "custom")],
        None => vec![
            (host_rustc, "rustup"),
            (PathBuf::from("/usr/bin/rustc"), "debian"),
        ],
    };
    for (rustc, name) in candidates {
        if sysroot(&rustc).is_some_and(|s| has_core_source(&s)) {
            return Ok(Toolchain {
                rustc,
                name,
                linker,
            });
        }
    }
    Err(NoToolchain(
        "no Rust compiler with its library source for building `core`: run `scripts/setup.sh` \
         (it tries `rustup component add rust-src`, then Debian's `rustc-web rust-web-src`)"
            .into(),
    ))
}

impl Toolchain {
    /// A `cargo build` command for the bare-metal target, release profile, into `target_dir`;
    /// the caller adds what to build (`-p NAME` or `--manifest-path FILE`).
    #[must_use]
    pub fn cargo_build(&self, workspace: &Path, target_dir: &Path) -> Command {
        let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        cmd.current_dir(workspace)
            .env("RUSTC", &self.rustc)
            .env("RUSTC_BOOTSTRAP", "1")
            .env(
                "CARGO_TARGET_AARCH64_UNKNOWN_NONE_SOFTFLOAT_LINKER",
                &self.linker,
            )
            // Variables a surrounding `cargo test` sets for the host must not leak into this
            // build.
            .env_remove("RUSTC_WRAPPER")
            .env_remove("RUSTC_WORKSPACE_WRAPPER")
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_BUILD_RUSTFLAGS")
            .env_remove("CARGO_LLVM_COV")
            .args(["build", "--release", "--target", TARGET])
            .arg("--target-dir")
            .arg(target_dir)
            .args(["-Z", "build-std=core,compiler_builtins"])
            .args(["-Z", "build-std-features=compiler-builtins-mem"]);
        cmd
    }
}

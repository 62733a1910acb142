//! `capvisor doctor`: checks that this machine can build and boot capvisor images, and says how
//! to fix what is missing.

use crate::qemu::DEBIAN_UBOOT;
use crate::toolchain;
use std::process::Command;

/// One check's outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// What was checked.
    pub what: &'static str,
    /// Whether capvisor cannot work without it.
    pub required: bool,
    /// What was found (`Ok`) or what is wrong and how to fix it (`Err`).
    pub result: Result<String, String>,
}

fn version_of(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_owned()
    })
}

fn qemu() -> Result<String, String> {
    let fix = "run scripts/setup.sh (installs qemu-system-arm 10 from Debian bookworm-backports)";
    let version = version_of("qemu-system-aarch64", &["--version"])
        .ok_or_else(|| format!("qemu-system-aarch64 not found: {fix}"))?;
    let major: u32 = version
        .split("version ")
        .nth(1)
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major >= 10 {
        Ok(version)
    } else {
        Err(format!(
            "{version} is older than 10 (no CPU model with FWB and DIC, no FEAT_NV2): {fix}"
        ))
    }
}

/// Runs every check.
#[must_use]
pub fn checks() -> Vec<Check> {
    vec![
        Check {
            what: "Rust (cargo)",
            required: true,
            result: version_of("cargo", &["--version"])
                .ok_or_else(|| "cargo not found: install Rust with rustup".into()),
        },
        Check {
            what: "bare-metal aarch64 builds (core source + rust-lld)",
            required: true,
            result: toolchain::find()
                .map(|t| format!("{} compiler {}", t.name, t.rustc.display()))
                .map_err(|e| e.to_string()),
        },
        Check {
            what: "QEMU 10",
            required: true,
            result: qemu(),
        },
        Check {
            what: "U-Boot for QEMU virt (booti path)",
            required: false,
            result: if std::path::Path::new(DEBIAN_UBOOT).is_file() {
                Ok(DEBIAN_UBOOT.into())
            } else {
                Err("not installed: run scripts/setup.sh (Debian's u-boot-qemu)".into())
            },
        },
        Check {
            what: "cargo-nextest (test runner)",
            required: false,
            result: version_of("cargo", &["nextest", "--version"])
                .ok_or_else(|| "not installed: ./test.sh falls back to cargo test".into()),
        },
        Check {
            what: "cargo-fuzz (fuzzing)",
            required: false,
            result: version_of("cargo", &["fuzz", "--version"]).ok_or_else(|| {
                "not installed: scripts/fuzz.sh installs it (cargo install --locked cargo-fuzz)"
                    .into()
            }),
        },
    ]
}

/// Prints the checks; returns whether every required one passed.
#[must_use]
pub fn report(checks: &[Check]) -> bool {
    let mut ok = true;
    for check in checks {
        match &check.result {
            Ok(found) => println!("  ok       {:<52} {found}", check.what),
            Err(problem) => {
                let tag = if check.required {
                    "MISSING"
                } else {
                    "optional"
                };
                println!("  {tag:<8} {:<52} {problem}", check.what);
                ok &= !check.required;
            }
        }
    }
    if ok {
        println!("capvisor doctor: ready to build and boot images");
    } else {
        println!("capvisor doctor: something required is missing (see above)");
    }
    ok
}

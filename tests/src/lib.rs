//! Shared helpers for capvisor's QEMU integration tests: build an image (once per test process),
//! boot it with a time limit, and what each CPU model really reports.

use capvisor::image::{self, BuiltImage};
use capvisor::qemu::{self, Outcome, RunConfig};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub mod expect;

/// The workspace root.
#[must_use]
pub fn root() -> PathBuf {
    capvisor::workspace_root()
}

/// Builds the image of the manifest at `manifest` (relative to the workspace root, or
/// absolute) into `target/images/`, panicking with the error.
#[must_use]
pub fn build(manifest: &str) -> BuiltImage {
    let root = root();
    let path = root.join(manifest);
    image::build(&root, &path, None).unwrap_or_else(|e| panic!("building {manifest}: {e}"))
}

/// Builds the image of manifest text `toml` written to a fresh temporary directory.
#[must_use]
pub fn build_text(name: &str, toml: &str) -> BuiltImage {
    let dir = root().join("target/test-manifests");
    std::fs::create_dir_all(&dir).expect("create target/test-manifests");
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, toml).expect("write manifest");
    image::build(&root(), &path, None).unwrap_or_else(|e| panic!("building {name}: {e}"))
}

/// Boots `image` on `cpu` with `smp` CPUs, 60 s at most, console captured (not echoed unless
/// `CAPVISOR_TEST_ECHO` is set).
#[must_use]
pub fn boot(image: &Path, cpu: &str, smp: u32) -> Outcome {
    boot_with(image, cpu, smp, &[])
}

/// Boots `image` on `cpu` until the console shows `text` (a guest shell's prompt, after which
/// the guest waits for input), 120 s at most.
#[must_use]
pub fn boot_until(image: &Path, cpu: &str, text: &str) -> Outcome {
    let mut config = RunConfig::new(image);
    config.cpu = cpu.into();
    config.timeout = Some(Duration::from_secs(120));
    config.echo = std::env::var_os("CAPVISOR_TEST_ECHO").is_some();
    config.stop_at = Some(text.into());
    qemu::run(&config, None).unwrap_or_else(|e| panic!("{e}"))
}

/// [`boot`] with `extra` QEMU arguments (e.g. `-device virtio-rng-device`).
#[must_use]
pub fn boot_with(image: &Path, cpu: &str, smp: u32, extra: &[&str]) -> Outcome {
    let mut config = RunConfig::new(image);
    config.cpu = cpu.into();
    config.smp = smp;
    config.timeout = Some(Duration::from_secs(60));
    config.echo = std::env::var_os("CAPVISOR_TEST_ECHO").is_some();
    config.extra = extra.iter().map(|&arg| arg.to_owned()).collect();
    qemu::run(&config, None).unwrap_or_else(|e| panic!("{e}"))
}

/// Boots `image` through U-Boot's `booti` (Debian's u-boot-qemu), as a board would.
#[must_use]
pub fn boot_uboot(image: &Path, cpu: &str) -> Outcome {
    let mut config = RunConfig::new(image);
    config.cpu = cpu.into();
    config.timeout = Some(Duration::from_secs(90));
    config.echo = std::env::var_os("CAPVISOR_TEST_ECHO").is_some();
    config.uboot = Some(qemu::DEBIAN_UBOOT.into());
    qemu::run(&config, None).unwrap_or_else(|e| panic!("{e}"))
}

/// The platform line each model must print: the values QEMU 10.0.2 implements (MIDR from QEMU's
/// CPU definitions; the rest as in `shared/TOOLCHAIN.md`'s table, read by an independent probe).
#[must_use]
pub fn expected_platform_line(cpu: &str) -> &'static str {
    match cpu {
        "cortex-a57" => {
            "capvisor: platform midr=0x411fd070 fwb=0 dic=0 idc=0 vhe=0 pa_bits=44 vmid_bits=8 nv=0 gic=v3"
        }
        "neoverse-n1" => {
            "capvisor: platform midr=0x414fd0c1 fwb=0 dic=0 idc=0 vhe=1 pa_bits=48 vmid_bits=16 nv=0 gic=v3"
        }
        "cortex-a710" => {
            "capvisor: platform midr=0x412fd471 fwb=1 dic=0 idc=1 vhe=1 pa_bits=40 vmid_bits=16 nv=0 gic=v3"
        }
        "neoverse-v1" => {
            "capvisor: platform midr=0x411fd402 fwb=1 dic=1 idc=1 vhe=1 pa_bits=48 vmid_bits=16 nv=2 gic=v3"
        }
        "max" => {
            "capvisor: platform midr=0xf0510 fwb=1 dic=1 idc=1 vhe=1 pa_bits=52 vmid_bits=16 nv=2 gic=v3"
        }
        other => panic!("no expectation for CPU model {other}"),
    }
}

/// Asserts that the console has a line equal to `line`, showing the console if not.
pub fn assert_line(outcome: &Outcome, line: &str) {
    assert!(
        outcome.console.lines().any(|l| l.trim_end() == line),
        "expected the line\n  {line}\nin the console:\n{}",
        outcome.console
    );
}

/// Asserts that the system ended with status 0 (it powered off after success), showing the
/// console if not.
pub fn assert_exited_ok(outcome: &Outcome) {
    assert_eq!(
        outcome.ending,
        qemu::Ending::Exited(0),
        "console:\n{}",
        outcome.console
    );
}

/// Asserts that the console contains `text`, showing the console if not.
pub fn assert_contains(outcome: &Outcome, text: &str) {
    assert!(
        outcome.console.contains(text),
        "expected {text:?} in the console:\n{}",
        outcome.console
    );
}

/// Builds the test guest crate `package` (under `tests/guests/`) for the bare-metal target and
/// flattens it into an arm64 `Image` at `target/guests/<package>.img`, panicking with the error.
#[must_use]
pub fn build_guest(package: &str) -> PathBuf {
    let root = root();
    let toolchain = capvisor::toolchain::find().unwrap_or_else(|e| panic!("{e}"));
    let image = capvisor::guests::build_package(&root, &toolchain, package)
        .unwrap_or_else(|e| panic!("{e}"));
    let dir = root.join("target/guests");
    std::fs::create_dir_all(&dir).expect("create target/guests");
    let path = dir.join(format!("{package}.img"));
    std::fs::write(&path, image).expect("write the guest Image");
    path
}

/// How a guest booted directly on QEMU ended: its console and QEMU's exit status (`None` when
/// the 60 s limit killed it).
#[derive(Clone, Debug)]
pub struct GuestRun {
    /// Everything the guest printed.
    pub console: String,
    /// QEMU's exit status.
    pub status: Option<i32>,
}

/// Boots the guest `Image` at `image` on bare `qemu-system-aarch64 -M virt -cpu <cpu>` (no
/// hypervisor: the guest starts at EL1, and QEMU answers PSCI calls made with `hvc`).
#[must_use]
pub fn boot_guest_native(image: &Path, cpu: &str) -> GuestRun {
    let output = std::process::Command::new("timeout")
        .args([
            "60",
            "qemu-system-aarch64",
            "-M",
            "virt",
            "-cpu",
            cpu,
            "-m",
            "128M",
        ])
        .args([
            "-display",
            "none",
            "-monitor",
            "none",
            "-serial",
            "stdio",
            "-no-reboot",
        ])
        .arg("-kernel")
        .arg(image)
        .output()
        .unwrap_or_else(|e| panic!("running qemu-system-aarch64: {e}"));
    let console = String::from_utf8_lossy(&output.stdout).into_owned();
    if std::env::var_os("CAPVISOR_TEST_ECHO").is_some() {
        print!("{console}");
    }
    let status = output.status.code().filter(|&code| code != 124);
    GuestRun { console, status }
}

//! The north star's first half: Debian's own arm64 Linux kernel (bookworm, 6.1), unmodified,
//! boots as a guest under capvisor to a busybox shell — at EL1 behind stage-2 tables, its RAM from
//! svc-memmgr, its device tree, PSCI, console, GICv3 distributor and redistributor from svc-vmm,
//! its virtual timer and CPU interface from the kernel's GIC virtualization.
//!
//! `scripts/linux-guest.sh` (run by `./test.sh` through `scripts/setup.sh`) makes the kernel and
//! initramfs from Debian packages (docs/linux-guest.md); `images/linux.toml` is the image.

use capvisor::qemu::Ending;
use capvisor_tests::{assert_contains, boot_until, build, root};

#[test]
fn debian_linux_boots_to_a_shell_under_capvisor_on_cortex_a57() {
    boots_to_a_shell("cortex-a57", "62.50MHz");
}

/// `max` has pointer authentication, SVE, MTE and more: the kernel hides what it does not switch
/// (`capvisor_kernel::idregs`), and Linux runs without them.
#[test]
fn debian_linux_boots_to_a_shell_under_capvisor_on_max() {
    let console = boots_to_a_shell("max", "1000.00MHz");
    for hidden in [
        "CPU features: detected: Address authentication",
        "SVE: maximum available vector length",
    ] {
        assert!(!console.contains(hidden), "{hidden:?} in:\n{console}");
    }
}

/// Two vCPUs: the secondary starts through PSCI `CPU_ON` with its own redistributor, and the
/// IPIs between them (SGIs through the VMM) let both run.
#[test]
fn debian_linux_brings_up_two_vcpus() {
    let console = boots_to_a_shell_with("images/linux-smp.toml", "cortex-a57", "62.50MHz");
    for line in [
        "[vmm] vmm: starting guest linux: 2 vCPU(s), RAM 0x40000000..0x50000000",
        "GICv3: CPU1: found redistributor 1 region 0:0x00000000080c0000",
        "CPU1: Booted secondary processor 0x0000000001",
        "SMP: Total of 2 processors activated.",
    ] {
        assert!(console.contains(line), "{line:?} not in:\n{console}");
    }
}

/// Boots `images/linux.toml` on `cpu` to the shell prompt, checks the milestones and returns the
/// console.
fn boots_to_a_shell(cpu: &str, timer: &str) -> String {
    let console = boots_to_a_shell_with("images/linux.toml", cpu, timer);
    let start = "[vmm] vmm: starting guest linux: 1 vCPU(s), RAM 0x40000000..0x50000000";
    assert!(console.contains(start), "{start:?} not in:\n{console}");
    console
}

/// [`boots_to_a_shell`] for the image of `manifest`.
fn boots_to_a_shell_with(manifest: &str, cpu: &str, timer: &str) -> String {
    for file in ["Image", "initramfs.cpio"] {
        let path = root().join("target/linux-guest").join(file);
        assert!(
            path.is_file(),
            "{} is missing: run scripts/linux-guest.sh (./test.sh does)",
            path.display()
        );
    }
    let built = build(manifest);
    let outcome = boot_until(&built.path, cpu, "/ # ");
    assert_eq!(
        outcome.ending,
        Ending::Reached,
        "no shell prompt:\n{}",
        outcome.console
    );
    for line in [
        "Linux version 6.1.0-",
        "Machine model: capvisor guest",
        "psci: PSCIv1.1 detected in firmware.",
        "GICv3: 64 SPIs implemented",
        "GICv3: CPU0: found redistributor 0 region 0:0x00000000080a0000",
        &format!("arch_timer: cp15 timer(s) running at {timer} (virt)."),
        "Run /init as init process",
        "[vmm] capvisor-linux: userspace up",
        "[vmm] Linux (none) 6.1.0-",
        "[vmm] / # ",
    ] {
        assert_contains(&outcome, line);
    }
    // Time went on: the kernel's clock (driven by the virtual timer's interrupts) passed one
    // second before userspace started.
    let run_init = outcome
        .console
        .lines()
        .find(|l| l.contains("Run /init as init process"))
        .expect("Run /init");
    let seconds: f64 = run_init
        .split('[')
        .nth(2)
        .and_then(|t| t.split(']').next())
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or_else(|| panic!("no timestamp in {run_init:?}"));
    assert!(seconds > 1.0, "{run_init}");
    outcome.console
}

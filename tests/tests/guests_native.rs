//! The test guests booted directly on QEMU, without the hypervisor (`-M virt -cpu max`: each
//! starts at EL1 and QEMU itself is the PSCI firmware behind `hvc`): every guest must pass there,
//! so that a failure under capvisor is capvisor's. The reset guest has no VMM to reload it and
//! must say it skips; the abort guest checks the syndrome QEMU gives for an unmapped address,
//! which is the one the guest contract asks VMMs to inject (docs/guests.md).

use capvisor_image::{EntryKind, GuestConfig};
use capvisor_tests::{GuestRun, boot_guest_native, build_guest, root};

fn run(package: &str) -> GuestRun {
    let image = build_guest(package);
    boot_guest_native(&image, "max")
}

fn assert_result(run: &GuestRun, line: &str) {
    assert!(
        run.console.lines().any(|l| l.trim_end() == line),
        "expected the line\n  {line}\nin the console:\n{}",
        run.console
    );
    assert_eq!(
        run.status,
        Some(0),
        "QEMU did not power off:\n{}",
        run.console
    );
}

#[test]
fn mmu_guest_passes() {
    assert_result(&run("guest-mmu"), "guest mmu: PASS");
}

#[test]
fn icache_guest_passes() {
    assert_result(&run("guest-icache"), "guest icache: PASS");
}

#[test]
fn pages_guest_passes_and_measures() {
    let run = run("guest-pages");
    assert_result(&run, "guest pages: PASS");
    assert!(
        run.console.contains("guest pages: touched 518 pages"),
        "{}",
        run.console
    );
    for bench in ["guest pages: bench s2_fault ", "guest pages: bench hvc "] {
        let line = run.console.lines().find(|l| l.starts_with(bench));
        let fields: Vec<&str> = line.map_or(vec![], |l| l[bench.len()..].split(' ').collect());
        assert!(
            fields.len() == 2 && fields.iter().all(|f| f.parse::<u64>().is_ok()),
            "no `{bench}<ticks> <count>` line in:\n{}",
            run.console
        );
    }
}

#[test]
fn reset_guest_skips_without_a_vmm() {
    assert_result(
        &run("guest-reset"),
        "guest reset: SKIP no VMM (boot count 0)",
    );
}

#[test]
fn abort_guest_sees_the_contract_syndrome() {
    let run = run("guest-abort");
    assert_result(&run, "guest abort: PASS");
    assert!(
        run.console.contains(
            "load from 0x1000000000: ESR_EL1=0x96000010 (EC 0x25, DFSC 0x10) FAR_EL1=0x1000000000"
        ),
        "{}",
        run.console
    );
}

/// The SDK's guest entries for `tests/images/guest-mmu.toml`: the kernel is the Image the guest
/// crate flattens to, and the configuration names the manifest's services by index.
#[test]
fn image_entries_of_a_guest_manifest() {
    let root = root();
    let toolchain = capvisor::toolchain::find().unwrap_or_else(|e| panic!("{e}"));
    let manifest = root.join("tests/images/guest-mmu.toml");
    let entries = capvisor::guests::entries_of_file(&root, &toolchain, &manifest)
        .unwrap_or_else(|e| panic!("{e}"));
    let kinds: Vec<(EntryKind, &str)> = entries.iter().map(|e| (e.kind, e.name.as_str())).collect();
    assert_eq!(
        kinds,
        [(EntryKind::GuestKernel, "mmu"), (EntryKind::Guest, "mmu")]
    );
    let image = std::fs::read(build_guest("guest-mmu")).expect("the guest Image");
    assert_eq!(entries[0].bytes, image);
    let config = GuestConfig::decode(&entries[1].bytes, 2).expect("a valid configuration");
    assert_eq!((config.memmgr, config.vmm, config.vcpus), (0, 1, 1));
    assert_eq!((config.ram_base, config.ram_size), (0x4000_0000, 16 << 20));
}

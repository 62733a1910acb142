//! Guests under capvisor: each test guest (tests/guests/, docs/guests.md) runs at EL1 behind
//! stage-2 tables, its faults handled by `svc-vmm` and its RAM by `svc-memmgr`, on CPU models
//! that differ in exactly the features the stage-2 rules depend on:
//!
//! | model | FWB | DIC |
//! |---|---|---|
//! | cortex-a57, neoverse-n1 | no | no |
//! | cortex-a710 | yes | no |
//! | max | yes | yes |
//!
//! Besides the guest's own verdict, each test reads the kernel's per-VM counters (printed when
//! the system ends) and asserts that the maintenance the memory manager chose differs exactly as
//! DESIGN.md's rules say: PoC cleans only without FWB (rule 1), I-cache invalidation on
//! instruction faults only without DIC (rule 2), and a reset that unmaps everything only without
//! FWB (the vCPU-reset rule).

use capvisor_tests::{assert_contains, assert_exited_ok, boot, build};

const MODELS: [&str; 4] = ["cortex-a57", "neoverse-n1", "cortex-a710", "max"];

fn fwb(cpu: &str) -> bool {
    matches!(cpu, "cortex-a710" | "max")
}

fn dic(cpu: &str) -> bool {
    cpu == "max"
}

/// The counters of every VM, from the kernel's `capvisor: vmN stats: key=value ...` lines.
fn stats(console: &str) -> Vec<std::collections::BTreeMap<String, u64>> {
    console
        .lines()
        .filter_map(|line| {
            line.split(" stats: ")
                .nth(1)
                .filter(|_| line.contains("capvisor: vm"))
        })
        .map(|rest| {
            rest.split_whitespace()
                .filter_map(|kv| {
                    let (key, value) = kv.split_once('=')?;
                    Some((key.to_owned(), value.parse().ok()?))
                })
                .collect()
        })
        .collect()
}

/// Boots guest image `name` on `cpu`, asserts the guest passed, and returns its VM's counters.
fn run(name: &str, cpu: &str) -> std::collections::BTreeMap<String, u64> {
    run_with_console(name, cpu).0
}

/// [`run`], also returning the console.
fn run_with_console(name: &str, cpu: &str) -> (std::collections::BTreeMap<String, u64>, String) {
    let built = build(&format!("tests/images/guest-{name}.toml"));
    let outcome = boot(&built.path, cpu, 1);
    assert_contains(&outcome, &format!("guest {name}: PASS"));
    assert_exited_ok(&outcome);
    let mut all = stats(&outcome.console);
    assert_eq!(
        all.len(),
        1,
        "one VM's counters expected:\n{}",
        outcome.console
    );
    (all.remove(0), outcome.console)
}

/// The 64-bit FNV-1a hash, as the guest computes it (tests/guests/guest-boot).
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[test]
fn the_command_line_and_the_initrd_reach_the_guest_through_its_device_tree() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let manifest = capvisor_manifest::load(&root.join("tests/images/guest-boot.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    let guest = &manifest.guests[0];
    let initrd = std::fs::read(guest.initrd.as_ref().expect("the manifest has an initrd"))
        .expect("read the initrd");
    let first_line = std::str::from_utf8(initrd.split(|&b| b == b'\n').next().unwrap()).unwrap();
    // Without FWB (the initrd's pages are cleaned to PoC when they enter the VM) and with it.
    for cpu in ["cortex-a57", "max"] {
        let (stats, console) = run_with_console("boot", cpu);
        let bootargs = format!("guest boot: bootargs: {}\n", guest.cmdline);
        assert!(
            console.contains(&bootargs),
            "{bootargs:?} not in:\n{console}"
        );
        // On the first 2 MiB boundary after the kernel (loaded at RAM base + 2 MiB).
        let line = format!(
            "guest boot: initrd: {} bytes at 0x40400000, fnv1a64 {:#018x}, first line: \
             {first_line}\n",
            initrd.len(),
            fnv1a64(&initrd)
        );
        assert!(console.contains(&line), "{line:?} not in:\n{console}");
        assert_eq!(stats["clean_poc"] > 0, !fwb(cpu), "{cpu}: {stats:?}");
    }
}

#[test]
fn ram_identity_places_guest_ram_at_ipa_equals_pa_and_the_guest_runs_there() {
    for cpu in ["cortex-a57", "max"] {
        let built = build("tests/images/guest-boot-identity.toml");
        let outcome = boot(&built.path, cpu, 1);
        assert_contains(&outcome, "guest boot: PASS");
        assert_exited_ok(&outcome);
        let console = &outcome.console;
        // The memory manager's identity range, the VMM's RAM and the guest's device tree agree,
        // and it is not the contract's IPA.
        let ram = console
            .lines()
            .find_map(|line| line.split("memmgr: guest boot: RAM ").nth(1))
            .unwrap_or_else(|| panic!("no identity RAM line:\n{console}"));
        let range = ram.split(' ').next().unwrap();
        let (start, end) = range.split_once("..").unwrap();
        assert_ne!(start, "0x40000000", "{ram}");
        assert_contains(
            &outcome,
            &format!("vmm: starting guest boot: 1 vCPU(s), RAM {range}"),
        );
        assert_contains(&outcome, &format!("guest boot: memory: {start}..{end}"));
        assert_contains(
            &outcome,
            &format!("guest boot: RAM at IPA = PA {start}, not at the contract's IPA 0x40000000"),
        );
    }
}

#[test]
fn the_virtual_timer_and_sgis_reach_the_guest_through_its_virtual_cpu_interface() {
    for cpu in MODELS {
        let (_, console) = run_with_console("irq", cpu);
        assert!(
            console.contains(
                "guest irq: 5 virtual timer interrupts (INTID 27), none before its deadline: true"
            ),
            "{cpu}:\n{console}"
        );
        assert!(
            console.contains("guest irq: SGI 5 sent to itself through ICC_SGI1R_EL1 and taken"),
            "{cpu}:\n{console}"
        );
    }
}

#[test]
fn two_guests_take_their_own_virtual_interrupts_while_they_share_the_cpu() {
    let built = build("tests/images/guests-irq-two.toml");
    for cpu in ["cortex-a57", "max"] {
        let outcome = boot(&built.path, cpu, 1);
        for vmm in ["vmm-a", "vmm-b"] {
            assert_contains(
                &outcome,
                &format!("[{vmm}] guest irq: 5 virtual timer interrupts (INTID 27)"),
            );
            assert_contains(&outcome, &format!("[{vmm}] guest irq: PASS"));
        }
        assert_exited_ok(&outcome);
    }
}

#[test]
fn a_guest_sees_no_feature_whose_state_is_not_switched_and_keeps_its_own_debug_registers() {
    // `max` has SVE, SME, MTE, pointer authentication, a PMU and 52-bit addresses: the kernel
    // hides them; `cortex-a57` has none of the first ones to hide.
    for cpu in ["cortex-a57", "max"] {
        let (_, console) = run_with_console("features", cpu);
        let line = "guest features: sve=0 sme=0 mte=0 pauth=0 pmu=0 spe=0 trace=0 pa_range=1";
        assert!(console.contains(line), "{cpu}:\n{console}");
        assert!(
            console.contains("guest features: MDSCR_EL1 after setting MDE: 0x8000"),
            "{cpu}:\n{console}"
        );
    }
}

#[test]
fn mmu_off_and_on_sees_guest_ram_on_every_model() {
    for cpu in MODELS {
        let stats = run("mmu", cpu);
        // Rule 1: a PoC clean before each first mapping without FWB, never with it.
        if fwb(cpu) {
            assert_eq!(stats["clean_poc"], 0, "{cpu}: {stats:?}");
        } else {
            assert!(stats["clean_poc"] > 0, "{cpu}: {stats:?}");
        }
    }
}

#[test]
fn code_written_at_run_time_executes_and_icache_maintenance_follows_dic() {
    for cpu in MODELS {
        let stats = run("icache", cpu);
        // Rule 2: an instruction fault invalidates the I-cache unless DIC.
        if dic(cpu) {
            assert_eq!(stats["icache"], 0, "{cpu}: {stats:?}");
        } else {
            assert!(stats["icache"] > 0, "{cpu}: {stats:?}");
        }
        if fwb(cpu) {
            assert_eq!(stats["clean_poc"], 0, "{cpu}: {stats:?}");
        }
    }
}

#[test]
fn touching_many_pages_maps_ram_on_demand_with_blocks() {
    for cpu in ["cortex-a57", "max"] {
        let stats = run("pages", cpu);
        assert!(
            stats["map_blocks"] > 0,
            "{cpu}: 2 MiB blocks expected: {stats:?}"
        );
    }
}

#[test]
fn reset_with_rewritten_memory_is_seen_with_the_mmu_off() {
    for cpu in MODELS {
        let built = build("tests/images/guest-reset.toml");
        let outcome = boot(&built.path, cpu, 1);
        assert_contains(&outcome, "guest reset: boot 1");
        assert_contains(&outcome, "guest reset: PASS");
        let stats = stats(&outcome.console).remove(0);
        // The vCPU-reset rule (seed 002): without FWB every mapping is dropped, so refaults clean
        // to PoC again; with FWB mappings stay and only the I-cache is invalidated, unless DIC.
        let policy = match (fwb(cpu), dic(cpu)) {
            (false, _) => "DropAllMappings",
            (true, false) => "InvalidateInstructionCache",
            (true, true) => "Nothing",
        };
        assert_contains(&outcome, policy);
        if fwb(cpu) {
            assert_eq!(stats["clean_poc"], 0, "{cpu}: {stats:?}");
        } else {
            assert!(stats["unmaps"] > 0, "{cpu}: {stats:?}");
            assert!(stats["clean_poc"] > 0, "{cpu}: {stats:?}");
        }
        if !dic(cpu) {
            assert!(stats["icache"] > 0, "{cpu}: {stats:?}");
        } else {
            assert_eq!(stats["icache"], 0, "{cpu}: {stats:?}");
        }
    }
}

#[test]
fn an_unmapped_ipa_gets_the_exact_abort_injected() {
    for cpu in ["cortex-a57", "max"] {
        run("abort", cpu);
    }
}

#[test]
fn two_guests_run_at_once_and_cannot_see_each_others_memory() {
    let built = build("tests/images/guests-two.toml");
    for cpu in ["cortex-a57", "max"] {
        let outcome = boot(&built.path, cpu, 1);
        let passes = outcome.console.matches("guest isolation: PASS").count();
        assert_eq!(
            passes, 2,
            "{cpu}: both guests must pass:\n{}",
            outcome.console
        );
        let vms = stats(&outcome.console);
        assert_eq!(vms.len(), 2, "{cpu}: two VMs:\n{}", outcome.console);
        assert_ne!(
            vms[0]["vmid"], vms[1]["vmid"],
            "{cpu}: separate VMIDs: {vms:?}"
        );
        assert!(
            vms.iter().all(|vm| vm["vmid"] != 0),
            "{cpu}: VMID 0 is never used: {vms:?}"
        );
    }
}

/// The `[start, end)` of identity-mapped guest RAM, from the guest's own line
/// `guest hygiene: RAM <start>..<end> at IPA = PA: …`.
fn identity_ram(console: &str) -> (u64, u64) {
    let line = console
        .lines()
        .find_map(|line| line.split("guest hygiene: RAM ").nth(1))
        .unwrap_or_else(|| panic!("no RAM line in:\n{console}"));
    let range = line.split(' ').next().unwrap_or_default();
    let parse = |hex: &str| u64::from_str_radix(hex.trim_start_matches("0x"), 16).unwrap();
    let (start, end) = range.split_once("..").expect("a range");
    (parse(start), parse(end))
}

#[test]
fn identity_mapped_ram_reaches_the_guest_zeroed_whatever_dram_held() {
    // Issue 14, item 6: RAM given with `ram_identity` leaves the kernel's map at boot, and was
    // handed to the guest as DRAM held it. A first boot finds where that RAM is (the layout is
    // the same on every model: it depends on the image and QEMU's RAM only); then QEMU's
    // `-device loader` plants a secret there — above the guest's image and past its device
    // tree — before the hypervisor starts, and the guest, reading with its MMU off (so from
    // memory, not from a cache line; cortex-a57 has no FEAT_S2FWB), must see only zeroes.
    let built = build("tests/images/guest-hygiene.toml");
    let first = boot(&built.path, "cortex-a57", 1);
    assert_contains(&first, "guest hygiene: PASS");
    let (start, end) = identity_ram(&first.console);
    let secret: Vec<u8> = b"capvisor issue 14 secret: never to be read by a guest. "
        .iter()
        .copied()
        .cycle()
        .take(4096)
        .collect();
    let dir = capvisor_tests::root().join("target/test-secrets");
    std::fs::create_dir_all(&dir).expect("create target/test-secrets");
    let file = dir.join("identity-ram.bin");
    std::fs::write(&file, &secret).expect("write the secret");
    let file = file.display();
    let loaders = [start + (4 << 20), end - 0x1000]
        .map(|addr| format!("loader,file={file},addr={addr:#x},force-raw=on"));
    let extra = ["-device", &loaders[0], "-device", &loaders[1]];
    for cpu in ["cortex-a57", "max"] {
        let outcome = capvisor_tests::boot_with(&built.path, cpu, 1, &extra);
        assert_eq!(
            identity_ram(&outcome.console),
            (start, end),
            "{cpu}: the secret must be planted in the guest's RAM"
        );
        assert!(
            !outcome.console.contains("capvisor issue"),
            "{cpu}: the guest read the planted secret:\n{}",
            outcome.console
        );
        assert_contains(&outcome, "non-zero words");
        assert_contains(&outcome, "guest hygiene: PASS");
        assert_exited_ok(&outcome);
    }
}

#[test]
fn psci_and_smccc_calls_are_answered_as_the_specifications_say() {
    // Issue 14, item 8: AFFINITY_INFO (it was NOT_SUPPORTED), PSCI_FEATURES listing it, the
    // SMC32 rule (W registers only), SMCCC_ARCH_FEATURES (mandatory in SMCCC 1.1; it was
    // NOT_SUPPORTED) — the guest checks those itself — and the Spectre workaround answers, which
    // depend on the CPU: cortex-a57 has no mitigation to offer (CSV2 = 0, no firmware), `max`
    // (FEAT_CSV2_3) is not affected.
    for (cpu, workarounds) in [
        (
            "cortex-a57",
            "features wa1=-1 wa2=-1 wa3=-1, calls wa1=-1 wa2=-1 wa3=-1",
        ),
        (
            "max",
            "features wa1=1 wa2=-1 wa3=1, calls wa1=0 wa2=-1 wa3=0",
        ),
    ] {
        let (_, console) = run_with_console("psci", cpu);
        assert!(
            console.contains("guest psci: vCPU 1 started, was ON, called CPU_OFF and is OFF"),
            "{cpu}:\n{console}"
        );
        let line = format!("guest psci: smccc workarounds: {workarounds}");
        assert!(
            console.contains(&line),
            "{cpu}: expected {line:?} in:\n{console}"
        );
        assert!(console.contains(", 0 failed"), "{cpu}:\n{console}");
    }
}

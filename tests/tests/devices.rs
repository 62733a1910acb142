//! The device broker (issue #6) on the CPU models that differ in exactly the features the
//! cacheable-PFNMAP rule (DESIGN.md stage-2 rule 4) depends on:
//!
//! | model | FEAT_S2FWB | CTR_EL0.DIC | the cacheable grant |
//! |---|---|---|---|
//! | cortex-a57, neoverse-n1 | no | no | refused, naming both |
//! | cortex-a710 | yes | no | refused, naming CTR_EL0.DIC |
//! | max | yes | yes | granted: the guest reads and writes it cacheably |
//!
//! One image (`tests/images/guest-passthrough.toml`, the carve-out passthrough `optional`) boots
//! on all of them. On every model the guest drives the PL031 RTC the broker passed through
//! (Device-nGnRE at IPA = PA), and an instruction fetch from it is an abort (rule 7). Behind the
//! broker, `tests/images/bad-broker.toml` asks the kernel directly for what the rules forbid
//! (rules 4, 5, 7, and 8: a 2 MiB block of uncached device memory), and the kernel refuses it
//! itself (defence in depth). Over the broker's protocol,
//! `tests/images/device-client.toml` asks for a private grant of the RTC, which is refused
//! (rule 6), then a shared one, which is made.
//!
//! A device that DMAs needs its guest's RAM at IPA = PA (no IOMMU): `tests/images/guest-dma.toml`
//! passes QEMU's virtio-mmio entropy device through to a `ram_identity` guest, which gives it the
//! physical addresses of its rings and buffer, takes the device's interrupt (forwarded by the
//! kernel through a hardware-linked list register) and finds the device's DMA in its RAM. The
//! manifest accepts that the device can DMA to all physical memory (`unprotected_dma`, without
//! which `capvisor build` refuses it: `tests/tests/sdk_dma.rs`), and the broker says so in one
//! boot-log line.

use capvisor_tests::{assert_contains, assert_exited_ok, boot, boot_with, build};

const MODELS: [&str; 4] = ["cortex-a57", "neoverse-n1", "cortex-a710", "max"];

/// FEAT_S2FWB and CTR_EL0.DIC as QEMU 10 implements them (tests/tests/guests.rs).
fn features(cpu: &str) -> (bool, bool) {
    (matches!(cpu, "cortex-a710" | "max"), cpu == "max")
}

/// What the broker's refusal names on `cpu`, or `None` where the grant is made.
fn missing(cpu: &str) -> Option<&'static str> {
    match features(cpu) {
        (true, true) => None,
        (false, false) => Some("FEAT_S2FWB and CTR_EL0.DIC"),
        (false, true) => Some("FEAT_S2FWB"),
        (true, false) => Some("CTR_EL0.DIC"),
    }
}

#[test]
fn one_image_passes_through_the_rtc_everywhere_and_the_cacheable_pfnmap_only_with_fwb_and_dic() {
    let built = build("tests/images/guest-passthrough.toml");
    for cpu in MODELS {
        let outcome = boot(&built.path, cpu, 1);
        let (fwb, dic) = features(cpu);
        // The model is the one the table says (the kernel's platform line).
        assert_contains(
            &outcome,
            &format!("fwb={} dic={}", u8::from(fwb), u8::from(dic)),
        );
        // The inventory: the RTC is listed as held; what the kernel keeps is only named.
        assert_contains(&outcome, "devbroker: device pl031@9010000 [arm,pl031]");
        assert_contains(&outcome, "(held: 'rtc')");
        assert_contains(
            &outcome,
            "devbroker: kept by the kernel, not brokered: pl011@9000000 (console), \
             intc@8000000 (GIC), timer (timer)",
        );
        // The RTC: Device-nGnRE at IPA = PA, one 4 KiB page, never executable.
        assert_contains(
            &outcome,
            "devbroker: granted 'rtc' to guest 'passthrough': 0x9010000..0x9011000 Device-nGnRE at IPA = PA, \
             1 x 4 KiB frame(s), read/write, never executable",
        );
        assert_contains(&outcome, "guest passthrough: rtc: PrimeCell ID");
        // The GPIO controller: Normal non-cacheable, as its grant asks (rule 3), in 4 KiB
        // frames (rule 8), and the guest reads its ID through that mapping.
        assert_contains(
            &outcome,
            "devbroker: granted 'gpio' to guest 'passthrough': 0x9030000..0x9031000 Normal non-cacheable",
        );
        assert_contains(&outcome, "guest passthrough: gpio: PrimeCell ID");
        // The PL031 and PL061 cannot master the bus: no DMA warning for them (issue 14, item 7).
        assert!(
            !outcome.console.contains("can DMA to all physical memory"),
            "{cpu}:\n{}",
            outcome.console
        );
        // Rule 7 for both uncached types: neither page is ever executable.
        assert_contains(
            &outcome,
            "guest passthrough: execute from 0x9010000: ESR_EL1=0x86000010",
        );
        assert_contains(
            &outcome,
            "guest passthrough: execute from 0x9030000: ESR_EL1=0x86000010",
        );
        match missing(cpu) {
            Some(missing) => {
                assert_contains(
                    &outcome,
                    &format!(
                        "devbroker: refused cacheable grant of 'cacheable_pfnmap' to guest 'passthrough': \
                         the platform lacks {missing} (optional: the system runs without it)"
                    ),
                );
                assert_contains(&outcome, "guest passthrough: cacheable region not granted");
            }
            None => {
                assert_contains(
                    &outcome,
                    "devbroker: granted 'cacheable_pfnmap' to guest 'passthrough': 0x70000000..0x70200000 \
                     Normal write-back at IPA = PA",
                );
                assert_contains(&outcome, "guest passthrough: cacheable region granted");
            }
        }
        assert_contains(&outcome, "guest passthrough: PASS");
        assert_exited_ok(&outcome);
    }
}

#[test]
fn the_kernel_refuses_a_buggy_brokers_cacheable_mapping_without_fwb_and_dic() {
    let built = build("tests/images/bad-broker.toml");
    for cpu in MODELS {
        let outcome = boot(&built.path, cpu, 1);
        let write_back = if missing(cpu).is_some() {
            "bad-broker: write-back read/write: refused with CacheableDeviceUnsupported"
        } else {
            "bad-broker: write-back read/write: mapped"
        };
        assert_contains(&outcome, write_back);
        // Rule 5: cacheable memory is never mapped uncached, whatever the platform.
        assert_contains(
            &outcome,
            "bad-broker: Device-nGnRE read/write: refused with MismatchedAttributes",
        );
        assert_contains(
            &outcome,
            "bad-broker: Normal non-cacheable read/write: refused with MismatchedAttributes",
        );
        // Rule 7: never executable (rule 4 answers first where write-back itself is refused).
        let execute = if missing(cpu).is_some() {
            "bad-broker: write-back read/execute: refused with CacheableDeviceUnsupported"
        } else {
            "bad-broker: write-back read/execute: refused with ExecuteFromDevice"
        };
        assert_contains(&outcome, execute);
        // Rule 8: uncached device memory is never a block mapping, even where base and size
        // would allow one (QEMU virt's flash, 64 MiB at 0); its 4 KiB pages map.
        assert_contains(
            &outcome,
            "bad-broker: 2 MiB block of 'flash' Device-nGnRE read/write: refused with UncachedBlock",
        );
        assert_contains(
            &outcome,
            "bad-broker: 4 KiB page of 'flash' Device-nGnRE read/write: mapped",
        );
        assert_exited_ok(&outcome);
    }
}

#[test]
fn the_broker_refuses_a_private_grant_of_device_memory_over_ipc_and_makes_the_shared_one() {
    let built = build("tests/images/device-client.toml");
    for cpu in MODELS {
        let outcome = boot(&built.path, cpu, 1);
        // The RTC is the broker's and no guest's, so a client may ask for it.
        assert_contains(
            &outcome,
            "device-client: region 0 at 0x9010000, 0x1000 bytes",
        );
        // Rule 6: a private (copy-on-write) grant of device memory is refused, whatever the
        // platform, with the protocol's own error.
        assert_contains(
            &outcome,
            "device-client: private grant of the RTC refused: PrivateDeviceMapping",
        );
        // The shared grant is the device itself: it maps and the RTC answers through it.
        assert_contains(
            &outcome,
            "device-client: shared grant of the RTC: 0x1000 bytes, Device-nGnRE",
        );
        assert_contains(
            &outcome,
            "device-client: RTC PrimeCell ID 0xb105f00d through the shared grant",
        );
        assert_contains(&outcome, "device-client: released the RTC; PASS");
        assert_exited_ok(&outcome);
    }
}

#[test]
fn a_passed_through_virtio_device_dmas_into_guest_ram_mapped_at_ipa_equals_pa() {
    let built = build("tests/images/guest-dma.toml");
    for cpu in ["cortex-a57", "max"] {
        let outcome = boot_with(&built.path, cpu, 1, &["-device", "virtio-rng-device"]);
        assert_contains(
            &outcome,
            "devbroker: granted 'virtio' to guest 'dma': 0xa003000..0xa004000 Device-nGnRE at IPA = PA",
        );
        // A bus master: the manifest accepts its DMA (`unprotected_dma`), and the boot log says
        // what that means in one line (issue 14, item 7).
        capvisor_tests::assert_line(
            &outcome,
            "[devbroker] devbroker: device 'virtio' given to guest 'dma' can DMA to all physical \
             memory (unprotected_dma: no IOMMU)",
        );
        // The kernel took the RAM out of its map and the memory manager maps it at IPA = PA.
        let console = &outcome.console;
        let ram = console
            .lines()
            .find_map(|line| line.split("memmgr: guest dma: RAM ").nth(1))
            .unwrap_or_else(|| panic!("no identity RAM line:\n{console}"));
        let range = ram.split(' ').next().unwrap();
        assert!(
            ram.ends_with(" at IPA = PA, from its own untyped")
                && !range.starts_with("0x40000000.."),
            "{ram}"
        );
        assert_contains(
            &outcome,
            &format!("vmm: starting guest dma: 1 vCPU(s), RAM {range}"),
        );
        assert_contains(
            &outcome,
            "guest dma: virtio-mmio entropy device at 0xa003e00, version 1",
        );
        // Its interrupt (SPI 47: INTID 79) is forwarded to vCPU 0 and reaches the guest's driver.
        assert_contains(&outcome, "vmm: guest dma: interrupt 79 forwarded to vCPU 0");
        assert_contains(
            &outcome,
            "guest dma: interrupt 79 from the device taken and acknowledged",
        );
        assert_contains(
            &outcome,
            "guest dma: 256 bytes of entropy by DMA into IPA = PA",
        );
        assert_contains(&outcome, "guest dma: PASS");
        assert_exited_ok(&outcome);
    }
}

#[test]
fn a_device_missing_on_this_board_stops_the_boot_plan_naming_it() {
    let built = build("tests/images/device-missing.toml");
    let outcome = boot(&built.path, "max", 1);
    assert_contains(
        &outcome,
        "[init] init: cannot carry out the boot plan: device 'sensor' (manifest line 9): its \
         device region: no such device on this board (step 0: device untyped of compatible \
         \"acme,no-such-sensor\" (uncached) into p0)",
    );
    assert!(
        !outcome.console.contains("[devbroker]"),
        "nothing starts:\n{}",
        outcome.console
    );
    assert_eq!(
        outcome.ending,
        capvisor::qemu::Ending::Exited(4),
        "console:\n{}",
        outcome.console
    );
}

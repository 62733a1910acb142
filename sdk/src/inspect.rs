//! `capvisor inspect IMAGEFILE`: what is inside an image, checked as the kernel checks it.

use capvisor_image::plan::Plan;
use capvisor_image::service::ServiceImage;
use capvisor_image::{
    BootConfig, EntryKind, Feature, FeatureSet, GuestConfig, ImageView, SelfTest, devices,
};
use std::fmt::Write;

/// A report of the image in `bytes`, or why it is not a valid capvisor image.
///
/// # Errors
///
/// The image error (bad magic, checksum mismatch, truncated, ...), as the kernel would report it.
pub fn report(bytes: &[u8]) -> Result<String, String> {
    let view = ImageView::parse(bytes).map_err(|e| e.to_string())?;
    let mut out = String::new();
    let h = &view.header;
    let _ = writeln!(out, "capvisor image, layout version {}", h.version);
    let _ = writeln!(
        out,
        "  arm64 Image header: text_offset {:#x}, image_size {:#x} ({} KiB), flags {:#x}",
        view.linux.text_offset,
        view.linux.image_size,
        view.linux.image_size / 1024,
        view.linux.flags
    );
    let _ = writeln!(
        out,
        "  kernel: {} bytes checksummed (read-only part), CRC-32 {:#010x} (ok)",
        h.kernel_ro_size, h.kernel_crc32
    );
    if h.payload_offset == 0 {
        let _ = writeln!(out, "  payload: none");
    } else {
        let _ = writeln!(
            out,
            "  payload: {} bytes at {:#x}, CRC-32 {:#010x} (ok)",
            h.payload_size, h.payload_offset, h.payload_crc32
        );
    }
    for (i, entry) in view.entries().enumerate() {
        let _ = writeln!(
            out,
            "  entry {i}: {:<13} {:<24} {} bytes",
            kind_name(entry.kind),
            format!("\"{}\"", entry.name),
            entry.bytes.len()
        );
    }
    let config = view.boot_config().map_err(|e| e.to_string())?;
    describe_config(&mut out, &config);
    describe_services(&mut out, &view)?;
    describe_guests(&mut out, &view, &config)?;
    describe_devices(&mut out, &view, &config)?;
    describe_plan(&mut out, &view)?;
    Ok(out)
}

/// The manifest's services, in manifest order: the image's service entries without the init
/// the SDK added first (there is one more entry than the manifest has services then).
fn manifest_services<'a>(view: &ImageView<'a>, config: &BootConfig) -> Vec<&'a str> {
    let all: Vec<&str> = view
        .entries()
        .filter(|e| e.kind == EntryKind::Service)
        .map(|e| e.name)
        .collect();
    let skip = all.len().saturating_sub(config.services as usize);
    all[skip..].to_vec()
}

/// One line per service entry, checked as the kernel and init check it.
fn describe_services(out: &mut String, view: &ImageView<'_>) -> Result<(), String> {
    for (index, entry) in view
        .entries()
        .filter(|e| e.kind == EntryKind::Service)
        .enumerate()
    {
        let image = ServiceImage::decode(entry.bytes)
            .map_err(|e| format!("service \"{}\": {e}", entry.name))?;
        let _ = writeln!(
            out,
            "  service \"{}\"{}: entry {:#x}, {} page(s) in {} segment(s), stack {} KiB",
            entry.name,
            if index == 0 { " (the root)" } else { "" },
            image.header.entry,
            image.page_count(),
            image.segments().len(),
            image.header.stack_size >> 10
        );
    }
    Ok(())
}

/// The boot plan, one line per step, checked as init checks it.
fn describe_plan(out: &mut String, view: &ImageView<'_>) -> Result<(), String> {
    let Some(entry) = view.entries().find(|e| e.kind == EntryKind::BootPlan) else {
        return Ok(());
    };
    let plan = Plan::decode(entry.bytes, view.header.payload_size)
        .map_err(|e| format!("boot plan: {e}"))?;
    let _ = writeln!(
        out,
        "  boot plan: {} step(s), {} plan slot(s), {}",
        plan.len(),
        plan.header.slot_count,
        if plan.supervised() {
            "init supervises the services (the manifest's first service)"
        } else {
            "init added by the SDK"
        }
    );
    for (index, step) in plan.steps().enumerate() {
        let owner = plan
            .name(step.owner)
            .map_or_else(|| "?".to_string(), ToString::to_string);
        let _ = writeln!(
            out,
            "    {index}: {owner}: {} ({})",
            step.op,
            step.purpose.text()
        );
    }
    Ok(())
}

fn kind_name(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::BootConfig => "boot-config",
        EntryKind::Service => "service",
        EntryKind::GuestKernel => "guest-kernel",
        EntryKind::GuestInitrd => "guest-initrd",
        EntryKind::GuestDtb => "guest-dtb",
        EntryKind::Manifest => "manifest",
        EntryKind::Guest => "guest",
        EntryKind::GuestCmdline => "guest-cmdline",
        EntryKind::BootPlan => "boot-plan",
        EntryKind::BootInfo => "boot-info",
    }
}

/// One line per guest, its configuration checked as its VMM checks it.
fn describe_guests(
    out: &mut String,
    view: &ImageView<'_>,
    config: &BootConfig,
) -> Result<(), String> {
    let services = config.services as usize;
    for entry in view.entries().filter(|e| e.kind == EntryKind::Guest) {
        let config = GuestConfig::decode(entry.bytes, services)
            .map_err(|e| format!("guest \"{}\": {e}", entry.name))?;
        let has = |kind| {
            view.entries()
                .any(|e| e.kind == kind && e.name == entry.name)
        };
        let ram = if config.ram_identity() {
            "identity-mapped".to_string()
        } else {
            format!("at IPA {:#x}", config.ram_base)
        };
        let _ = writeln!(
            out,
            "  guest \"{}\": {} vCPU(s), {} KiB RAM {ram}, VMM service {}, memmgr service {}, \
             kernel {}, initrd {}, dtb {}",
            entry.name,
            config.vcpus,
            config.ram_size / 1024,
            config.vmm,
            config.memmgr,
            if has(EntryKind::GuestKernel) {
                "yes"
            } else {
                "MISSING"
            },
            if has(EntryKind::GuestInitrd) {
                "yes"
            } else {
                "no"
            },
            if has(EntryKind::GuestDtb) {
                "yes"
            } else {
                "no"
            },
        );
        let cmdline = view
            .entries()
            .find(|e| e.kind == EntryKind::GuestCmdline && e.name == entry.name);
        if let Some(cmdline) = cmdline {
            let text = capvisor_image::check_cmdline(cmdline.bytes)
                .map_err(|e| format!("guest \"{}\": {e}", entry.name))?;
            out.pop();
            let _ = writeln!(out, ", cmdline {text:?}");
        }
    }
    Ok(())
}

/// One line per device or carve-out of the `devices` entry, checked as the kernel checks it.
fn describe_devices(
    out: &mut String,
    view: &ImageView<'_>,
    config: &BootConfig,
) -> Result<(), String> {
    let services = manifest_services(view, config);
    let guests = view
        .entries()
        .filter(|e| e.kind == EntryKind::Guest)
        .collect::<Vec<_>>();
    let entry = view
        .entries()
        .find(|e| e.kind == EntryKind::Manifest && e.name == devices::DEVICES_ENTRY);
    let Some(entry) = entry else {
        return Ok(());
    };
    let records = devices::decode(entry.bytes, services.len())
        .map_err(|e| format!("entry \"{}\": {e}", devices::DEVICES_ENTRY))?;
    for record in records {
        let place = if record.is_carveout() {
            format!(
                "carve-out {:#x}..{:#x}",
                record.base,
                record.base + record.size
            )
        } else if record.flags & devices::FLAG_COMPATIBLE != 0 {
            format!("compatible \"{}\"", record.locator())
        } else {
            format!("path {}", record.locator())
        };
        let kind = match (record.cacheable(), record.flags & devices::FLAG_RAM != 0) {
            (true, _) => ", cacheable",
            (false, true) => ", RAM",
            (false, false) => "",
        };
        let holder = services
            .get(record.service as usize)
            .map_or("none".to_string(), |s| format!("\"{s}\""));
        let guest = match guests.get(record.guest as usize) {
            None => "not passed through".to_string(),
            Some(guest) => format!(
                "passed through to guest \"{}\" as {}{}{}",
                guest.name,
                ["device-ngnre", "normal-nc", "normal-wb"][record.memtype as usize],
                if record.flags & devices::FLAG_OPTIONAL != 0 {
                    " (optional)"
                } else {
                    ""
                },
                if record.flags & devices::FLAG_UNPROTECTED_DMA != 0 {
                    ", unprotected DMA to all physical memory accepted"
                } else {
                    ""
                }
            ),
        };
        let _ = writeln!(
            out,
            "  device \"{}\": {place}{kind}, held by {holder}, {guest}",
            record.name()
        );
    }
    Ok(())
}

fn describe_config(out: &mut String, config: &BootConfig) {
    let selftest = match SelfTest::from_u32(config.selftest) {
        Some(SelfTest::None) | None => "none",
        Some(SelfTest::DataAbort) => "data-abort",
        Some(SelfTest::Undefined) => "undefined",
        Some(SelfTest::Panic) => "panic",
    };
    let levels = ["?", "error", "warn", "info", "debug", "trace"];
    let _ = writeln!(
        out,
        "  boot config: selftest {selftest}, log {}",
        levels.get(config.log_level as usize).unwrap_or(&"?")
    );
    let required = FeatureSet(config.required_features);
    let names: Vec<&str> = Feature::ALL
        .into_iter()
        .filter(|&f| required.contains(f))
        .map(Feature::name)
        .collect();
    let _ = writeln!(
        out,
        "  requires: features [{}], min_pa_bits {}, min_cpus {}",
        names.join(", "),
        config.min_pa_bits,
        config.min_cpus
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use capvisor_image::writer::{FlatKernel, NewEntry, write_image};
    use capvisor_image::{ARM64_IMAGE_MAGIC, LinuxImageHeader};
    use zerocopy::IntoBytes;

    fn image() -> Vec<u8> {
        let mut bytes = vec![0u8; 8192];
        let linux = LinuxImageHeader {
            code0: 0,
            code1: 0,
            text_offset: 0,
            image_size: 0,
            flags: 0,
            res2: 0,
            res3: 0,
            res4: 0,
            magic: ARM64_IMAGE_MAGIC,
            res5: 0,
        };
        bytes[..64].copy_from_slice(linux.as_bytes());
        let kernel = FlatKernel {
            bytes,
            ro_size: 4096,
            mem_size: 8192,
        };
        let config = BootConfig {
            required_features: FeatureSet::EMPTY.with(Feature::Fwb).0,
            services: 2,
            ..BootConfig::default()
        };
        let code = capvisor_image::service::NewSegment {
            ipa: 0x20_0000,
            pages: 1,
            access: capvisor_image::service::ACCESS_READ | capvisor_image::service::ACCESS_EXECUTE,
            data: vec![1; 10],
        };
        let service = |name: &str| NewEntry {
            kind: EntryKind::Service,
            name: name.into(),
            bytes: capvisor_image::service::encode(
                0x20_0000,
                16 << 10,
                std::slice::from_ref(&code),
            ),
        };
        let guest = capvisor_image::GuestConfig {
            version: 1,
            vcpus: 2,
            vmm: 0,
            memmgr: 1,
            flags: 0,
            reserved0: 0,
            ram_base: 0x4000_0000,
            ram_size: 16 << 20,
            reserved: [0; 4],
        };
        let guest_entry = |kind, bytes| NewEntry {
            kind,
            name: "mmu".into(),
            bytes,
        };
        let entries = [
            NewEntry::boot_config(&config),
            service("hello"),
            service("memmgr"),
            guest_entry(EntryKind::GuestKernel, vec![0; 64]),
            guest_entry(EntryKind::Guest, guest.as_bytes().to_vec()),
            NewEntry {
                kind: EntryKind::Manifest,
                name: devices::DEVICES_ENTRY.into(),
                bytes: records().as_bytes().to_vec(),
            },
        ];
        write_image(&kernel, &entries).unwrap()
    }

    fn records() -> [devices::DeviceRecord; 2] {
        let mut rtc = devices::record("rtc", "arm,pl031");
        rtc.flags = devices::FLAG_COMPATIBLE | devices::FLAG_UNPROTECTED_DMA;
        rtc.service = 1;
        rtc.guest = 0;
        let mut pfnmap = devices::record("pfnmap", "");
        pfnmap.flags = devices::FLAG_CARVEOUT | devices::FLAG_CACHEABLE | devices::FLAG_OPTIONAL;
        pfnmap.base = 0x7000_0000;
        pfnmap.size = 0x20_0000;
        pfnmap.memtype = devices::MEMTYPE_NORMAL_WB;
        pfnmap.service = 1;
        pfnmap.guest = 0;
        [rtc, pfnmap]
    }

    #[test]
    fn reports_devices() {
        let text = report(&image()).unwrap();
        assert!(
            text.contains(
                "device \"rtc\": compatible \"arm,pl031\", held by \"memmgr\", passed through to \
                 guest \"mmu\" as device-ngnre, unprotected DMA to all physical memory accepted\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "device \"pfnmap\": carve-out 0x70000000..0x70200000, cacheable, held by \
                 \"memmgr\", passed through to guest \"mmu\" as normal-wb (optional)\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn reports_entries_and_requirements() {
        let text = report(&image()).unwrap();
        assert!(text.contains("entry 1: service       \"hello\""), "{text}");
        assert!(text.contains("requires: features [fwb]"), "{text}");
        assert!(
            text.contains(
                "guest \"mmu\": 2 vCPU(s), 16384 KiB RAM at IPA 0x40000000, VMM service 0, \
                 memmgr service 1, kernel yes, initrd no, dtb no"
            ),
            "{text}"
        );
    }

    #[test]
    fn refuses_corruption() {
        let mut bytes = image();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(
            report(&bytes)
                .unwrap_err()
                .contains("payload checksum mismatch")
        );
    }
}

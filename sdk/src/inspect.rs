//! `capvisor inspect IMAGEFILE`: what is inside an image, checked as the kernel checks it.

use capvisor_image::{BootConfig, EntryKind, Feature, FeatureSet, ImageView, SelfTest};
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
    Ok(out)
}

fn kind_name(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::BootConfig => "boot-config",
        EntryKind::ServiceElf => "service-elf",
        EntryKind::GuestKernel => "guest-kernel",
        EntryKind::GuestInitrd => "guest-initrd",
        EntryKind::GuestDtb => "guest-dtb",
        EntryKind::Manifest => "manifest",
    }
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
            ..BootConfig::default()
        };
        let svc = NewEntry {
            kind: EntryKind::ServiceElf,
            name: "hello".into(),
            bytes: vec![1; 10],
        };
        write_image(&kernel, &[NewEntry::boot_config(&config), svc]).unwrap()
    }

    #[test]
    fn reports_entries_and_requirements() {
        let text = report(&image()).unwrap();
        assert!(text.contains("entry 1: service-elf   \"hello\""), "{text}");
        assert!(text.contains("requires: features [fwb]"), "{text}");
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

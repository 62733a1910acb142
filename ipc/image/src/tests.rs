//! Tests of the image layout: write, parse, and refuse corruption.

use super::*;
use crate::writer::{FlatKernel, NewEntry, write_image};
use zerocopy::IntoBytes;

fn kernel() -> FlatKernel {
    let mut bytes = vec![0u8; 8192];
    let linux = LinuxImageHeader {
        code0: 0x1400_0020,
        code1: 0xd503_201f,
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
    for (i, b) in bytes[CHECKSUM_START..].iter_mut().enumerate() {
        *b = (i * 7) as u8;
    }
    FlatKernel {
        bytes,
        ro_size: 4096,
        mem_size: 3 * 4096 + 100,
    }
}

fn sample() -> Vec<u8> {
    let config = BootConfig {
        selftest: SelfTest::Undefined as u32,
        required_features: FeatureSet::EMPTY.with(Feature::Fwb).0,
        ..BootConfig::default()
    };
    let svc = NewEntry {
        kind: EntryKind::Service,
        name: "memmgr".into(),
        bytes: vec![0x7f, b'E', b'L', b'F', 1, 2, 3],
    };
    write_image(&kernel(), &[NewEntry::boot_config(&config), svc]).unwrap()
}

#[test]
fn crc32_matches_zlib() {
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    assert_eq!(crc32(b""), 0);
    // Eight bytes a step and the tail agree with the byte-at-a-time definition, at every length
    // and alignment.
    let bytes: Vec<u8> = (0..600u32).map(|i| (i * 131 + 7) as u8).collect();
    for start in 0..8 {
        for end in start..bytes.len() {
            let slice = &bytes[start..end];
            assert_eq!(
                crc32(slice),
                crate::crc::crc32_bytewise(slice),
                "{start}..{end}"
            );
        }
    }
}

#[test]
fn round_trip() {
    let image = sample();
    let view = ImageView::parse(&image).unwrap();
    // The payload starts a 2 MiB block, and the image's footprint ends one.
    assert_eq!(view.header.payload_offset, PAYLOAD_ALIGN);
    assert!(view.header.payload_size < PAYLOAD_ALIGN);
    assert_eq!(view.linux.image_size, 2 * PAYLOAD_ALIGN);
    assert!(view.linux.image_size >= image.len() as u64);
    let entries: Vec<_> = view.entries().collect();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[1].name, "memmgr");
    assert_eq!(entries[1].bytes, &[0x7f, b'E', b'L', b'F', 1, 2, 3]);
    let config = view.boot_config().unwrap();
    assert_eq!(config.selftest, SelfTest::Undefined as u32);
    assert!(FeatureSet(config.required_features).contains(Feature::Fwb));
}

#[test]
fn writable_data_is_not_checked() {
    // The kernel's data (between ro_size and the payload) changes as it runs.
    let mut image = sample();
    image[5000] ^= 0xff;
    assert!(ImageView::parse(&image).is_ok());
}

#[test]
fn corruption_is_refused() {
    let image = sample();
    let mut bad = image.clone();
    bad[200] ^= 1;
    assert!(matches!(
        ImageView::parse(&bad),
        Err(ImageError::KernelChecksum { .. })
    ));
    let mut bad = image.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert!(matches!(
        ImageView::parse(&bad),
        Err(ImageError::PayloadChecksum { .. })
    ));
    let bad = &image[..image.len() - 1];
    assert!(matches!(
        ImageView::parse(bad),
        Err(ImageError::Truncated { .. })
    ));
    let mut bad = image.clone();
    bad[56] = 0;
    assert_eq!(
        ImageView::parse(&bad).unwrap_err(),
        ImageError::NotArm64Image
    );
    let mut bad = image;
    bad[64] = b'X';
    assert_eq!(ImageView::parse(&bad).unwrap_err(), ImageError::NotCapvisor);
}

#[test]
fn parse_never_panics_on_prefixes_and_flips() {
    let image = sample();
    for len in 0..image.len().min(300) {
        let _ = ImageView::parse(&image[..len]);
    }
    // The headers, the kernel, and the payload's table and entries: where a flip can mislead.
    let payload = PAYLOAD_ALIGN as usize;
    let field = CAPVISOR_HEADER_OFFSET + core::mem::offset_of!(CapvisorHeader, payload_crc32);
    for i in (0..256).chain(payload..payload + 256) {
        let mut bad = image.clone();
        bad[i] = bad[i].wrapping_add(0x55);
        if i >= payload {
            // A payload whose checksum matches again: the table and entries are what is tested.
            let crc = crc32(&bad[payload..]);
            bad[field..field + 4].copy_from_slice(&crc.to_le_bytes());
        }
        if let Ok(view) = ImageView::parse(&bad) {
            let _ = view.entries().count();
            let _ = view.boot_config();
        }
    }
}

#[test]
fn guest_payloads_take_whole_blocks_and_services_whole_pages() {
    let entry = |kind, len| NewEntry {
        kind,
        name: "g".into(),
        bytes: vec![1; len],
    };
    let entries = [
        entry(EntryKind::Guest, 72),
        entry(EntryKind::GuestKernel, 5000),
        entry(EntryKind::GuestCmdline, 10),
        entry(EntryKind::Service, 4097),
        entry(EntryKind::GuestInitrd, 3 << 20),
    ];
    let offsets = writer::layout(&entries);
    assert_eq!(offsets[1], PAYLOAD_ALIGN);
    // Nothing else shares the kernel's last block.
    assert_eq!(offsets[2], 2 * PAYLOAD_ALIGN);
    assert_eq!(offsets[3], 2 * PAYLOAD_ALIGN + 4096);
    assert_eq!(offsets[4], 3 * PAYLOAD_ALIGN);
    let image = write_image(&kernel(), &entries).unwrap();
    let view = ImageView::parse(&image).unwrap();
    // The initrd's last block is not padded; the image's footprint covers it.
    assert_eq!(view.header.payload_size, 9 << 20);
    assert_eq!(view.linux.image_size, 6 * PAYLOAD_ALIGN);
}

#[test]
fn feature_names_round_trip() {
    for f in Feature::ALL {
        assert_eq!(Feature::from_name(f.name()), Some(f));
    }
    let set = FeatureSet::EMPTY.with(Feature::Fwb).with(Feature::Dic);
    let have = FeatureSet::EMPTY.with(Feature::Fwb);
    assert_eq!(
        set.missing_from(have).iter().collect::<Vec<_>>(),
        vec![Feature::Dic]
    );
    assert_eq!(FeatureSet(1 << 40).unknown_bits(), 1 << 40);
}

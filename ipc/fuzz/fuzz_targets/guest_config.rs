//! Fuzzes `GuestConfig::decode` (the image's guest entries, read by VMMs): arbitrary bytes and
//! service counts are refused or decode to a configuration that re-encodes to the same bytes and
//! satisfies every documented invariant, never a panic.
#![no_main]

use capvisor_image::{GUEST_CONFIG_VERSION, GUEST_FLAG_RAM_IDENTITY, GuestConfig, MAX_GUEST_VCPUS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the image's service count (0 to 255), the rest is the entry.
    let Some((&services, bytes)) = data.split_first() else {
        return;
    };
    let services = usize::from(services);
    let Ok(config) = GuestConfig::decode(bytes, services) else {
        return;
    };
    assert_eq!(config.to_bytes(), bytes, "decode must not reinterpret bytes");
    assert_eq!(config.version, GUEST_CONFIG_VERSION);
    assert!((1..=MAX_GUEST_VCPUS).contains(&config.vcpus));
    assert!((config.vmm as usize) < services && (config.memmgr as usize) < services);
    assert_ne!(config.vmm, config.memmgr);
    assert_eq!(config.flags & !GUEST_FLAG_RAM_IDENTITY, 0);
    assert!(config.reserved0 == 0 && config.reserved == [0; 4]);
    assert!(config.ram_size != 0 && (config.ram_base | config.ram_size) % 4096 == 0);
    assert!(config.ram_base.checked_add(config.ram_size).is_some());
});

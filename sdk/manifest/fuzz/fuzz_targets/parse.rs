//! Fuzz target: `capvisor_manifest::parse` on arbitrary text never panics; every error it reports
//! has a location inside the text and renders as one line; and every manifest it accepts holds
//! the invariants the image builder relies on.
#![no_main]

use std::path::Path;

use capvisor_manifest::{Capability, Manifest, PAGE_SIZE, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse(text, Path::new("fuzz/manifest.toml")) {
        Ok(manifest) => check_invariants(&manifest),
        Err(errors) => {
            assert!(!errors.errors().is_empty());
            let lines = text.split('\n').count();
            for error in errors.errors() {
                let location = error.location.expect("parse errors have a location");
                assert!(location.line >= 1 && location.line <= lines);
                assert!(location.column >= 1);
                assert_eq!(error.to_string().lines().count(), 1);
            }
        }
    }
});

fn page_multiple(size: u64) -> bool {
    size != 0 && size % PAGE_SIZE == 0
}

/// What a valid manifest guarantees: sizes are pages, references resolve, carve-outs are disjoint.
fn check_invariants(manifest: &Manifest) {
    for service in &manifest.services {
        assert!(page_multiple(service.memory) && page_multiple(service.stack));
        for cap in &service.caps {
            match cap {
                Capability::Endpoint(name) => assert!(manifest.service(name).is_some()),
                Capability::Device(name) => assert!(manifest.device(name).is_some()),
                Capability::Carveout(name) => assert!(manifest.carveout(name).is_some()),
                Capability::Untyped(size) => assert!(page_multiple(*size)),
                Capability::Irq(irq) => assert!((32..=1019).contains(irq)),
            }
        }
    }
    for guest in &manifest.guests {
        assert!(page_multiple(guest.memory));
        assert!((1..=8).contains(&guest.vcpus));
        assert!(manifest.service(&guest.vmm).is_some());
        for passthrough in &guest.devices {
            assert!(manifest.device(&passthrough.device).is_some());
        }
    }
    for (index, a) in manifest.carveouts.iter().enumerate() {
        assert!(page_multiple(a.size) && a.base % PAGE_SIZE == 0);
        for b in &manifest.carveouts[index + 1..] {
            assert!(a.base + a.size <= b.base || b.base + b.size <= a.base);
        }
    }
}

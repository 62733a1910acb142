//! `capvisor build` and DMA (issue 14, item 7): capvisor drives no IOMMU, so a device that may
//! master the bus, once passed through to a guest, can DMA to all physical memory. The build
//! refuses such a passthrough unless the manifest accepts it with `unprotected_dma = true`, with
//! an error naming the device, the guest and the fix; with it, the image builds and records the
//! acknowledgement for the device broker (`FLAG_UNPROTECTED_DMA`).

use capvisor_image::devices::{self, DEVICES_ENTRY};
use capvisor_image::{EntryKind, ImageView};

/// `tests/images/guest-dma.toml`'s system, its passthrough written as `passthrough`.
fn manifest(name: &str, passthrough: &str) -> String {
    format!(
        r#"
name = "{name}"

[[device]]
name = "virtio"
path = "/virtio_mmio@a003e00"

[[service]]
name = "devbroker"
crate = "svc-devbroker"
priority = 220
memory = "1M"
caps = [{{ device = "virtio" }}]

[[service]]
name = "memmgr"
crate = "svc-memmgr"
priority = 200
memory = "1M"
caps = [{{ untyped = "64M" }}]

[[service]]
name = "vmm"
crate = "svc-vmm"
priority = 100
memory = "1M"
caps = [{{ endpoint = "memmgr" }}, {{ endpoint = "devbroker" }}]

[[guest]]
name = "dma"
crate = "guest-dma"
memory = "16M"
vmm = "vmm"
ram_identity = true
devices = [{passthrough}]
"#
    )
}

/// Builds manifest `text` as `name`.toml.
fn build(name: &str, text: &str) -> Result<capvisor::image::BuiltImage, String> {
    let root = capvisor_tests::root();
    let dir = root.join("target/test-manifests");
    std::fs::create_dir_all(&dir).expect("create target/test-manifests");
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).expect("write manifest");
    capvisor::image::build(&root, &path, None)
}

#[test]
fn a_dma_capable_passthrough_needs_unprotected_dma_and_the_error_says_so() {
    let error = build(
        "dma-unacknowledged",
        &manifest("dma-unacknowledged", r#"{ device = "virtio" }"#),
    )
    .expect_err("a bus master passed through without unprotected_dma must be refused");
    assert!(
        error.contains("dma-unacknowledged.toml:35:23: error: guest[0].devices[0].device: "),
        "{error}"
    );
    for part in [
        "device `virtio` passed through to guest `dma` may master the bus",
        "with no IOMMU it could DMA to all physical memory",
        "add `unprotected_dma = true` to this passthrough",
    ] {
        assert!(error.contains(part), "{part:?} not in: {error}");
    }

    let built = build(
        "dma-acknowledged",
        &manifest(
            "dma-acknowledged",
            r#"{ device = "virtio", unprotected_dma = true }"#,
        ),
    )
    .unwrap_or_else(|error| panic!("{error}"));
    let bytes = std::fs::read(&built.path).expect("read the image");
    let image = ImageView::parse(&bytes).expect("a valid image");
    let entry = image
        .entries()
        .find(|e| e.kind == EntryKind::Manifest && e.name == DEVICES_ENTRY)
        .expect("a devices entry");
    let records = devices::decode(entry.bytes, 3).expect("valid records");
    assert_eq!(records.len(), 1);
    assert_ne!(records[0].flags & devices::FLAG_UNPROTECTED_DMA, 0);
}

//! The validated model of a complete manifest: every field read, defaults applied, paths joined,
//! requirements packed.

use std::path::{Path, PathBuf};

use capvisor_ipc::memory::MemoryType;
use capvisor_manifest::{
    Board, Capability, CarveoutPassthrough, CrateRef, DEFAULT_STACK, DeviceLocator, Feature,
    GuestKernel, LogLevel, Passthrough, Selftest, load, parse,
};

#[test]
fn complete_manifest_reads_every_field() {
    let manifest = load(Path::new("tests/accepted/linux-passthrough.toml"))
        .unwrap_or_else(|errors| panic!("{errors}"));
    assert_eq!(manifest.name, "linux-passthrough");
    assert_eq!(manifest.dir, PathBuf::from("tests/accepted"));
    assert_eq!(manifest.kernel.selftest, Selftest::None);
    assert_eq!(manifest.kernel.log, LogLevel::Debug);
    assert_eq!(manifest.platform.board, Board::QemuVirt);
    assert_eq!(manifest.platform.min_pa_bits, Some(40));

    let requirements = manifest.requirements();
    let features: Vec<Feature> = requirements.features.iter().collect();
    assert_eq!(
        features,
        [Feature::Fwb, Feature::Dic, Feature::Vmid16, Feature::Gicv3]
    );
    assert_eq!(requirements.features.bits(), 0b100_0001_0011);
    assert_eq!((requirements.min_pa_bits, requirements.min_cpus), (40, 2));

    let uart = manifest.device("uart1").expect("uart1");
    assert_eq!(
        uart.locator,
        DeviceLocator::Path("/pl011@9040000".to_owned())
    );
    assert!(!uart.cacheable);
    assert!(manifest.device("accel").expect("accel").cacheable);

    let pfnmap = manifest.carveout("pfnmap").expect("pfnmap");
    assert_eq!((pfnmap.base, pfnmap.size), (0x1_0000_0000, 64 << 20));
    assert!(pfnmap.cacheable_pfnmap);
    assert_eq!(manifest.carveout("shared").expect("shared").size, 0x20_0000);

    let memmgr = manifest.service("memmgr").expect("memmgr");
    assert_eq!(memmgr.crate_ref, CrateRef::Name("memmgr".to_owned()));
    assert_eq!(
        (memmgr.priority, memmgr.memory, memmgr.stack),
        (200, 512 << 10, 32 << 10)
    );
    assert_eq!(
        memmgr.caps,
        [
            Capability::Untyped(1 << 30),
            Capability::Carveout("shared".to_owned())
        ]
    );
    let s2walk = manifest.service("s2walk").expect("s2walk");
    assert_eq!(
        s2walk.crate_ref,
        CrateRef::Path(PathBuf::from("tests/accepted/../../../../services/s2walk"))
    );
    assert_eq!(s2walk.stack, DEFAULT_STACK);
    assert!(!s2walk.start);
    assert!(manifest.service("devbroker").expect("devbroker").start);

    let linux = manifest.guest("linux").expect("linux");
    assert_eq!(
        linux.kernel,
        GuestKernel::Image(PathBuf::from("tests/accepted/../fixtures/Image"))
    );
    assert_eq!(linux.memmgr, "memmgr");
    assert_eq!(
        linux.initrd.as_deref(),
        Some(Path::new("tests/accepted/../fixtures/initrd.cpio"))
    );
    assert_eq!(linux.dtb, None);
    assert_eq!(linux.cmdline, "console=ttyAMA0 earlycon");
    assert_eq!(
        (linux.memory, linux.vcpus, linux.ram_identity),
        (512 << 20, 4, false)
    );
    assert_eq!(linux.vmm, "vmm-linux");
    assert_eq!(
        linux.carveouts,
        [CarveoutPassthrough {
            carveout: "pfnmap".to_owned(),
            optional: false,
        }]
    );
    assert_eq!(
        linux.devices,
        [
            Passthrough {
                device: "uart1".to_owned(),
                memtype: MemoryType::DeviceNgnre,
                irqs: true,
                optional: false,
                unprotected_dma: true,
            },
            Passthrough {
                device: "accel".to_owned(),
                memtype: MemoryType::NormalWriteBack,
                irqs: false,
                optional: false,
                unprotected_dma: true,
            },
        ]
    );
}

#[test]
fn defaults_apply_to_a_minimal_manifest() {
    let manifest = parse("name = \"m\"\n", Path::new("m.toml")).expect("minimal manifest");
    assert_eq!(manifest.kernel.selftest, Selftest::None);
    assert_eq!(manifest.kernel.log, LogLevel::Info);
    assert_eq!(manifest.description, None);
    assert_eq!(manifest.dir, PathBuf::new());
    let requirements = manifest.requirements();
    assert!(requirements.features.is_empty());
    assert_eq!((requirements.min_pa_bits, requirements.min_cpus), (0, 1));
}

#[test]
fn an_unreadable_file_is_an_io_error_without_location() {
    let errors = load(Path::new("tests/accepted/does-not-exist.toml")).expect_err("missing file");
    let error = &errors.errors()[0];
    assert_eq!(error.location, None);
    let rendered = error.to_string();
    assert!(
        rendered
            .starts_with("tests/accepted/does-not-exist.toml: error: cannot read the manifest: "),
        "{rendered}"
    );
}

#[test]
fn columns_count_characters_not_bytes() {
    let text = "description = \"größe\" ; name = \"x\"\n";
    let errors = parse(text, Path::new("u.toml")).expect_err("trailing garbage");
    let location = errors.errors()[0].location.expect("location");
    let byte_column = text.find(';').expect("semicolon") + 1;
    assert_eq!(
        location.column,
        byte_column - 2,
        "two 2-byte characters precede the error"
    );
}

#[test]
fn the_reference_example_is_valid_but_for_the_guest_files() {
    let reference = std::fs::read_to_string("../../docs/manifest.md").expect("docs/manifest.md");
    let example = reference
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a toml example in docs/manifest.md");
    // As if the example were images/example.toml: the guest kernel and initrd are build outputs
    // that do not exist here; everything else must hold.
    let errors = parse(example, Path::new("../../images/example.toml"))
        .expect_err("the example's guest files are not built here");
    let fields: Vec<&str> = errors.errors().iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["guest[0].kernel", "guest[0].initrd"], "{errors}");
    assert!(
        errors
            .errors()
            .iter()
            .all(|e| matches!(e.kind, capvisor_manifest::ErrorKind::FileNotFound { .. })),
        "{errors}"
    );
}

//! Golden tests: every manifest under `tests/rejected/` fails with exactly the errors in its
//! `.expected` file; every manifest under `tests/accepted/` and the repository's images load.
//!
//! `BLESS=1 cargo test -p capvisor-manifest --test golden` rewrites the `.expected` files from the
//! current output; review the diff before committing it.

use std::fs;
use std::path::{Path, PathBuf};

use std::collections::BTreeSet;

use capvisor_manifest::{ErrorKind, Selftest, load};

/// The manifests in `dir` (relative to this crate, so that paths in messages are stable).
fn manifests(dir: &str) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|error| panic!("{dir}: {error}"))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    paths.sort();
    paths
}

fn bless() -> bool {
    std::env::var_os("BLESS").is_some_and(|value| value == "1")
}

#[test]
fn rejected_manifests_give_their_expected_errors() {
    let cases = manifests("tests/rejected");
    assert!(cases.len() >= 14, "only {} rejected cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let expected_path = case.with_extension("expected");
        let actual = match load(case) {
            Ok(manifest) => format!("accepted: {manifest:?}\n"),
            Err(errors) => format!("{errors}\n"),
        };
        if bless() {
            fs::write(&expected_path, &actual).expect("write .expected");
            continue;
        }
        let expected = fs::read_to_string(&expected_path).unwrap_or_default();
        if actual != expected {
            failures.push(format!(
                "{}:\n--- expected\n{expected}--- actual\n{actual}",
                case.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The name of an error kind. The match is exhaustive, so a new kind does not compile until it is
/// named here; list it in `required` below too, and give it a golden test.
fn kind_name(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Io { .. } => "Io",
        ErrorKind::Syntax { .. } => "Syntax",
        ErrorKind::UnknownField { .. } => "UnknownField",
        ErrorKind::MissingField => "MissingField",
        ErrorKind::WrongType { .. } => "WrongType",
        ErrorKind::UnknownValue { .. } => "UnknownValue",
        ErrorKind::Schema { .. } => "Schema",
        ErrorKind::InvalidName { .. } => "InvalidName",
        ErrorKind::DuplicateName { .. } => "DuplicateName",
        ErrorKind::UnknownFeature { .. } => "UnknownFeature",
        ErrorKind::DuplicateFeature { .. } => "DuplicateFeature",
        ErrorKind::InvalidPaBits { .. } => "InvalidPaBits",
        ErrorKind::OutOfRange { .. } => "OutOfRange",
        ErrorKind::InvalidSize { .. } => "InvalidSize",
        ErrorKind::ZeroSize => "ZeroSize",
        ErrorKind::UnalignedSize { .. } => "UnalignedSize",
        ErrorKind::UnalignedAddress { .. } => "UnalignedAddress",
        ErrorKind::NegativeAddress { .. } => "NegativeAddress",
        ErrorKind::TooLarge { .. } => "TooLarge",
        ErrorKind::RegionOutOfRange { .. } => "RegionOutOfRange",
        ErrorKind::Overlap { .. } => "Overlap",
        ErrorKind::UnknownService { .. } => "UnknownService",
        ErrorKind::UnknownDevice { .. } => "UnknownDevice",
        ErrorKind::UnknownCarveout { .. } => "UnknownCarveout",
        ErrorKind::NotOneGrant { .. } => "NotOneGrant",
        ErrorKind::NotOneLocator => "NotOneLocator",
        ErrorKind::NotOneKernel => "NotOneKernel",
        ErrorKind::VmmIsMemmgr { .. } => "VmmIsMemmgr",
        ErrorKind::DeviceNotCacheable { .. } => "DeviceNotCacheable",
        ErrorKind::CacheableNeedsFeatures { .. } => "CacheableNeedsFeatures",
        ErrorKind::FileNotFound { .. } => "FileNotFound",
        ErrorKind::SharedVmm { .. } => "SharedVmm",
        ErrorKind::PassedThroughTwice { .. } => "PassedThroughTwice",
        ErrorKind::IrqTwice { .. } => "IrqTwice",
        ErrorKind::OptionalNotCacheable => "OptionalNotCacheable",
        ErrorKind::InvalidCmdline { .. } => "InvalidCmdline",
        ErrorKind::NeedsGeneratedDeviceTree => "NeedsGeneratedDeviceTree",
        ErrorKind::HeldTwice { .. } => "HeldTwice",
        ErrorKind::PassthroughNotHeld { .. } => "PassthroughNotHeld",
        ErrorKind::UnprotectedDma { .. } => "UnprotectedDma",
        ErrorKind::NeedlessUnprotectedDma { .. } => "NeedlessUnprotectedDma",
    }
}

#[test]
fn every_manifest_error_kind_has_a_golden_test() {
    let seen: BTreeSet<&str> = manifests("tests/rejected")
        .iter()
        .filter_map(|case| load(case).err())
        .flat_map(|errors| errors.into_iter().map(|error| kind_name(&error.kind)))
        .collect();
    // `Io` cannot come from a manifest's text (see tests/model.rs); `Schema` is the fallback for
    // reader messages of no known shape, which no manifest is known to produce.
    let required = [
        "Syntax",
        "UnknownField",
        "MissingField",
        "WrongType",
        "UnknownValue",
        "InvalidName",
        "DuplicateName",
        "UnknownFeature",
        "DuplicateFeature",
        "InvalidPaBits",
        "OutOfRange",
        "InvalidSize",
        "ZeroSize",
        "UnalignedSize",
        "UnalignedAddress",
        "NegativeAddress",
        "TooLarge",
        "RegionOutOfRange",
        "Overlap",
        "UnknownService",
        "UnknownDevice",
        "UnknownCarveout",
        "NotOneGrant",
        "NotOneLocator",
        "NotOneKernel",
        "VmmIsMemmgr",
        "DeviceNotCacheable",
        "CacheableNeedsFeatures",
        "FileNotFound",
        "SharedVmm",
        "PassedThroughTwice",
        "IrqTwice",
        "OptionalNotCacheable",
        "InvalidCmdline",
        "NeedsGeneratedDeviceTree",
        "HeldTwice",
        "PassthroughNotHeld",
        "UnprotectedDma",
        "NeedlessUnprotectedDma",
    ];
    let untested: Vec<&str> = required
        .into_iter()
        .filter(|kind| !seen.contains(kind))
        .collect();
    assert!(untested.is_empty(), "no golden test gives {untested:?}");
}

#[test]
fn every_expected_file_has_its_manifest() {
    for entry in fs::read_dir("tests/rejected").expect("tests/rejected") {
        let path = entry.expect("directory entry").path();
        if path.extension().is_some_and(|ext| ext == "expected") {
            assert!(
                path.with_extension("toml").is_file(),
                "orphan {}",
                path.display()
            );
        }
    }
}

#[test]
fn accepted_manifests_load() {
    let cases = manifests("tests/accepted");
    assert!(!cases.is_empty());
    for case in cases {
        if let Err(errors) = load(&case) {
            panic!("{} was rejected:\n{errors}", case.display());
        }
    }
}

#[test]
fn repository_images_load_with_their_selftests() {
    let root = Path::new("../..");
    let images = [
        ("images/hello.toml", Selftest::None),
        ("tests/images/fault-data-abort.toml", Selftest::DataAbort),
        ("tests/images/fault-undefined.toml", Selftest::Undefined),
        ("tests/images/fault-panic.toml", Selftest::Panic),
    ];
    for (image, selftest) in images {
        let manifest = load(&root.join(image)).unwrap_or_else(|errors| panic!("{errors}"));
        assert_eq!(manifest.kernel.selftest, selftest, "{image}");
        assert!(
            manifest.services.is_empty() && manifest.guests.is_empty(),
            "{image}"
        );
    }
}

//! Property tests: no input panics the parser, every error points inside the text, and manifests
//! generated from arbitrary valid values read back as those values.

use std::path::Path;

use capvisor_manifest::{Capability, ErrorKind, Manifest, ManifestErrors, PAGE_SIZE, parse};
use proptest::prelude::*;

const ACCEPTED: &str = include_str!("accepted/linux-passthrough.toml");

/// Parses `text` and checks what every error must satisfy: a location inside the text (or just
/// past its end), and a one-line rendering naming the file.
fn parse_checked(text: &str) -> Result<Manifest, ManifestErrors> {
    let file = Path::new("tests/accepted/prop.toml");
    let result = parse(text, file);
    if let Err(errors) = &result {
        assert!(!errors.errors().is_empty());
        let lines = text.split('\n').count();
        for error in errors.errors() {
            let location = error.location.expect("parse errors have locations");
            assert!(location.line >= 1 && location.line <= lines, "{error}");
            assert!(location.column >= 1, "{error}");
            let rendered = error.to_string();
            assert!(
                rendered.starts_with("tests/accepted/prop.toml:"),
                "{rendered}"
            );
            assert_eq!(rendered.lines().count(), 1, "{rendered:?}");
        }
    }
    result
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        let _ = parse_checked(&text);
    }

    #[test]
    fn toml_like_text_never_panics(
        text in r#"(\[\[?(service|guest|device|carveout|kernel|platform)\]\]?\n|[a-z_]{1,10} = ("[a-z0-9./ -]{0,12}"|[0-9]{1,6}|true|\[\{ [a-z]{1,8} = "[a-z]{1,6}" \}\])\n){0,12}"#
    ) {
        let _ = parse_checked(&text);
    }

    /// Damaging a valid manifest anywhere gives an error or a manifest, never a panic.
    #[test]
    fn damaged_manifest_never_panics(
        at in 0..ACCEPTED.len(),
        cut in 0usize..8,
        insert in "[\\[\\]{}=,\"'a-z0-9\n #.]{0,4}",
    ) {
        let mut text = ACCEPTED.to_owned();
        let mut start = at;
        while !text.is_char_boundary(start) {
            start -= 1;
        }
        let mut end = (start + cut).min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.replace_range(start..end, &insert);
        let _ = parse_checked(&text);
    }

    /// A service written with arbitrary valid values reads back as those values.
    #[test]
    fn generated_services_read_back(
        priority in 0u8..=255,
        pages in 1u64..=4096,
        unit in 0usize..3,
        irq in 32u32..=1019,
        untyped_mib in 1u64..=1024,
    ) {
        let (memory_text, memory) = match unit {
            0 => (format!("{}", pages * PAGE_SIZE), pages * PAGE_SIZE),
            1 => (format!("\"{}K\"", pages * 4), pages * PAGE_SIZE),
            _ => (format!("\"{}M\"", pages), pages << 20),
        };
        let text = format!(
            "name = \"gen\"\n[[service]]\nname = \"svc\"\ncrate = \"svc\"\npriority = {priority}\n\
             memory = {memory_text}\ncaps = [{{ irq = {irq} }}, {{ untyped = \"{untyped_mib}M\" }}, \
             {{ endpoint = \"svc\" }}]\n"
        );
        let manifest = parse_checked(&text).unwrap_or_else(|errors| panic!("{errors}\n{text}"));
        let service = &manifest.services[0];
        prop_assert_eq!(service.priority, priority);
        prop_assert_eq!(service.memory, memory);
        prop_assert_eq!(
            &service.caps,
            &vec![
                Capability::Irq(irq),
                Capability::Untyped(untyped_mib << 20),
                Capability::Endpoint("svc".to_owned()),
            ]
        );
    }

    /// Any size that is not a page multiple is refused with the size it was given.
    #[test]
    fn unaligned_sizes_are_refused(bytes in 1u64..(1 << 40)) {
        prop_assume!(bytes % PAGE_SIZE != 0);
        let text = format!(
            "name = \"gen\"\n[[service]]\nname = \"svc\"\ncrate = \"svc\"\npriority = 1\n\
             memory = {bytes}\n"
        );
        let errors = parse_checked(&text).expect_err("unaligned size accepted");
        prop_assert_eq!(errors.errors().len(), 1);
        prop_assert_eq!(&errors.errors()[0].kind, &ErrorKind::UnalignedSize { size: bytes });
        prop_assert_eq!(errors.errors()[0].field.as_str(), "service[0].memory");
    }

    /// Carve-outs are accepted exactly when no two overlap; each one that overlaps an earlier one
    /// is reported once.
    #[test]
    fn carveout_overlaps_are_found(regions in prop::collection::vec((0u64..64, 1u64..8), 1..7)) {
        let mut text = String::from("name = \"gen\"\n");
        for (index, (page, pages)) in regions.iter().enumerate() {
            text.push_str(&format!(
                "[[carveout]]\nname = \"c{index}\"\nbase = {}\nsize = {}\n",
                0x4000_0000 + page * PAGE_SIZE,
                pages * PAGE_SIZE
            ));
        }
        let overlapping = (0..regions.len())
            .filter(|&later| {
                (0..later).any(|earlier| {
                    let (a, a_len) = regions[earlier];
                    let (b, b_len) = regions[later];
                    a < b + b_len && b < a + a_len
                })
            })
            .count();
        match parse_checked(&text) {
            Ok(manifest) => {
                prop_assert_eq!(overlapping, 0);
                prop_assert_eq!(manifest.carveouts.len(), regions.len());
            }
            Err(errors) => {
                prop_assert_eq!(errors.errors().len(), overlapping);
                for error in errors.errors() {
                    prop_assert!(matches!(error.kind, ErrorKind::Overlap { .. }), "{}", error);
                }
            }
        }
    }
}

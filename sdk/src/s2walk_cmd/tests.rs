//! End-to-end tests of the `capvisor s2walk` JSON contract, on strings.

use super::*;

/// Little-endian hex of descriptors laid out from a region's base.
fn words(ws: &[u64]) -> String {
    ws.iter()
        .map(|w| {
            w.to_le_bytes()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        })
        .collect()
}

/// 4KB, 39-bit IPA from level 1, PS 40 bits: L1 table 0x1000, L2 0x2000, L3 0x3000.
fn case_4k(leaf: u64, ipa: &str, access: &str) -> String {
    let mut l1 = vec![0u64; 2];
    l1[1] = 0x2003;
    let mut l2 = vec![0u64; 3];
    l2[2] = 0x3003;
    let mut l3 = vec![0u64; 4];
    l3[3] = leaf;
    format!(
        r#"{{"vtcr":"0x20059","vttbr":"0x1000","pa_bits":48,"memory":[{{"base":"0x1000","hex":"{}"}},{{"base":"0x2000","hex":"{}"}},{{"base":"0x3000","hex":"{}"}}],"ipa":"{ipa}","access":"{access}"}}"#,
        words(&l1),
        words(&l2),
        words(&l3)
    )
}

const IPA: &str = "0x40403045";

#[test]
fn page_walk_answers_the_contract() {
    let leaf = 0x4000_0000 | (1 << 10) | (0b11 << 6) | (0xf << 2) | 0b11;
    let out = answer(&case_4k(leaf, IPA, "read")).expect("well formed");
    assert_eq!(
        out,
        [
            r#"{"result":"ok","pa":"0x40000045","level":3,"size":"0x1000","r":true,"w":true,"x_el1":true,"x_el0":true,"memattr":"0xf"}"#
        ]
    );
}

#[test]
fn faults_answer_type_level_and_fsc() {
    let ro_xn = 0x4000_0000 | (1 << 10) | (0b01 << 6) | (1 << 54) | 0b11;
    let no_af = 0x4000_0000 | (0b11 << 6) | 0b11;
    let cases = [
        (
            case_4k(ro_xn, IPA, "write"),
            r#"{"result":"fault","type":"permission","level":3,"fsc":"0x0f"}"#,
        ),
        (
            case_4k(ro_xn, IPA, "exec_el0"),
            r#"{"result":"fault","type":"permission","level":3,"fsc":"0x0f"}"#,
        ),
        (
            case_4k(no_af, IPA, "read"),
            r#"{"result":"fault","type":"access_flag","level":3,"fsc":"0x0b"}"#,
        ),
        (
            case_4k(0, IPA, "read"),
            r#"{"result":"fault","type":"translation","level":3,"fsc":"0x07"}"#,
        ),
        (
            case_4k(1 << 41 | 0x403, IPA, "read"),
            r#"{"result":"fault","type":"address_size","level":3,"fsc":"0x03"}"#,
        ),
        // Level 1 index 0 has no descriptor in memory beyond the L1 region? It does (zero):
        (
            case_4k(0, "0x1000", "read"),
            r#"{"result":"fault","type":"translation","level":1,"fsc":"0x05"}"#,
        ),
        // IPA beyond 39 bits: translation fault at level 0.
        (
            case_4k(0, "0x8000000000", "read"),
            r#"{"result":"fault","type":"translation","level":0,"fsc":"0x04"}"#,
        ),
        // L1 index 2 is beyond the 16 bytes supplied at 0x1000: external abort at level 1.
        (
            case_4k(0, "0x80000000", "read"),
            r#"{"result":"fault","type":"external_abort","level":1,"fsc":"0x15"}"#,
        ),
    ];
    for (input, expected) in cases {
        assert_eq!(answer(&input).expect("well formed"), [expected], "{input}");
    }
}

#[test]
fn arrays_answer_one_line_per_case() {
    let leaf = 0x4000_0000 | (1 << 10) | (0b11 << 6) | 0b11;
    let input = format!(
        "[{},{}]",
        case_4k(leaf, IPA, "read"),
        case_4k(0, IPA, "read")
    );
    let out = answer(&input).expect("well formed");
    assert_eq!(out.len(), 2);
    assert!(out[0].starts_with(r#"{"result":"ok","pa":"0x40000045""#));
    assert_eq!(
        out[1],
        r#"{"result":"fault","type":"translation","level":3,"fsc":"0x07"}"#
    );
    assert_eq!(answer("[]").expect("empty is fine"), Vec::<String>::new());
}

fn errors_of(input: &str) -> Vec<CaseError> {
    match answer(input) {
        Err(InputError::Cases(errors)) => errors,
        other => panic!("expected case errors, got {other:?}"),
    }
}

#[test]
fn malformed_cases_name_case_and_field() {
    let good = case_4k(0, IPA, "read");
    let bad_vtcr = good.replace(r#""vtcr":"0x20059""#, r#""vtcr":"80019""#);
    let errors = errors_of(&format!("[{good},{bad_vtcr}]"));
    assert_eq!(errors.len(), 1);
    assert_eq!((errors[0].case, errors[0].field.as_str()), (1, "vtcr"));
    let text = InputError::Cases(errors).to_string();
    assert!(
        text.contains("case 1") && text.contains("\"vtcr\""),
        "{text}"
    );

    let bad = good
        .replace(r#""access":"read""#, r#""access":"fetch""#)
        .replace(r#""pa_bits":48"#, r#""pa_bits":47"#);
    let fields: Vec<_> = errors_of(&bad).into_iter().map(|e| e.field).collect();
    assert_eq!(fields, ["pa_bits", "access"]);

    let odd = good.replacen(r#""hex":""#, r#""hex":"0"#, 1);
    assert_eq!(errors_of(&odd)[0].field, "memory[0].hex");
    let missing = good.replace(r#","ipa":"0x40403045""#, "");
    assert_eq!(errors_of(&missing)[0].field, "ipa");
    let named = missing.replacen('{', r#"{"name":"no ipa","#, 1);
    assert!(errors_of(&named)[0].to_string().contains("\"no ipa\""));
    let feature = good.replacen('{', r#"{"features":{"lpa3":true},"#, 1);
    assert_eq!(errors_of(&feature)[0].field, "features.lpa3");
    assert!(matches!(answer("{"), Err(InputError::Syntax(_))));
    assert!(matches!(answer("3"), Err(InputError::Shape(_))));
    assert!(matches!(answer("[3]"), Err(InputError::Cases(_))));
}

#[test]
fn overlapping_regions_later_wins_and_reads_span_regions() {
    let mut mem = RegionMemory::default();
    mem.regions.push((0x1000, vec![0x11; 8]));
    mem.regions.push((0x1004, vec![0x22; 8]));
    assert_eq!(
        mem.read_u64(OutputAddr::new(0x1000)),
        Ok(0x2222_2222_1111_1111)
    );
    assert_eq!(
        mem.read_u64(OutputAddr::new(0x1008)),
        Err(ReadError::Unbacked)
    );
    assert_eq!(
        mem.read_u64(OutputAddr::new(u64::MAX - 3)),
        Err(ReadError::Unbacked)
    );
}

#[test]
fn dump_shows_the_tree() {
    let leaf = 0x4000_0000 | (1 << 10) | (0b01 << 6) | (1 << 54) | (0x5 << 2) | 0b11;
    let lines = dump(&case_4k(leaf, IPA, "read"), 1000).expect("well formed");
    let text = lines.join("\n");
    assert!(
        text.starts_with("case 0: 4KB granule, 39-bit IPA, 40-bit output, start level 1"),
        "{text}"
    );
    assert!(
        text.contains("L1[1] @0x1008 = 0x0000000000002003"),
        "{text}"
    );
    assert!(text.contains("table -> 0x2000"), "{text}");
    assert!(
        text.contains("page -> 0x40000000  r-----  memattr 0x5  af 1"),
        "{text}"
    );
    assert!(
        text.contains(r#"walk 0x40403045 Read: {"result":"ok""#),
        "{text}"
    );
    // A table whose every entry points back at itself: the budget bounds the dump.
    let table = "0310000000000000".repeat(512);
    let selfref = format!(
        r#"{{"vtcr":"0x20059","vttbr":"0x1000","pa_bits":48,"memory":[{{"base":"0x1000","hex":"{table}"}}]}}"#
    );
    let lines = dump(&selfref, 50).expect("well formed");
    assert_eq!(
        lines.len(),
        1 + 50 + 1,
        "header, 50 entries, the budget note"
    );
    assert!(
        lines
            .last()
            .is_some_and(|l| l.contains("stopped after reading 50 descriptors")),
        "{lines:?}"
    );
}

#[test]
fn lenient_spellings_are_accepted() {
    let leaf = 0x4000_0000 | (1 << 10) | (0b11 << 6) | 0b11;
    let strict = case_4k(leaf, IPA, "read");
    let expected = answer(&strict).expect("well formed");
    let lenient = strict
        .replace(r#""pa_bits":48"#, r#""pa_bits":"48""#)
        .replace(r#""hex":""#, r#""hex":"0x"#)
        .replace(r#""ipa":"0x40403045""#, r#""ipa":1077948485"#);
    assert_eq!(answer(&lenient).expect("still well formed"), expected);
}

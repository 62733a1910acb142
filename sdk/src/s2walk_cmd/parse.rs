//! Parsing `capvisor s2walk` cases: every field checked once, every problem named by case and
//! field, all problems reported together.

use super::{Case, CaseError, InputError, RegionMemory, pa_bits_of};
use s2walk::{Access, Ipa, Machine, Vtcr, Vttbr};
use serde_json::{Map, Value};

/// Collects the problems of one case.
struct Fields<'a> {
    case: usize,
    name: Option<String>,
    object: &'a Map<String, Value>,
    errors: Vec<CaseError>,
}

impl<'a> Fields<'a> {
    fn problem(&mut self, field: &str, problem: impl Into<String>) {
        self.errors.push(CaseError {
            case: self.case,
            name: self.name.clone(),
            field: field.to_string(),
            problem: problem.into(),
        });
    }

    fn get(&mut self, field: &str, required: bool) -> Option<&'a Value> {
        let value = self.object.get(field);
        if value.is_none() && required {
            self.problem(field, "missing");
        }
        value
    }

    fn u64_at(&mut self, path: &str, value: &Value) -> Option<u64> {
        match parse_u64(value) {
            Ok(v) => Some(v),
            Err(e) => {
                self.problem(path, e);
                None
            }
        }
    }

    fn u64_field(&mut self, field: &str, required: bool) -> Option<u64> {
        let value = self.get(field, required)?;
        self.u64_at(field, value)
    }
}

/// A 64-bit value: a hex string `"0x…"` (digits may be separated by `_`), or a JSON integer.
fn parse_u64(value: &Value) -> Result<u64, String> {
    match value {
        Value::String(s) => {
            let digits = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X"));
            let digits = digits.ok_or_else(|| format!("{s:?} is not a hex string starting 0x"))?;
            let clean: String = digits.chars().filter(|&c| c != '_').collect();
            if clean.is_empty() {
                return Err(format!("{s:?} has no digits"));
            }
            u64::from_str_radix(&clean, 16).map_err(|_| format!("{s:?} is not a 64-bit hex number"))
        }
        Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| format!("{n} is not a 64-bit unsigned integer")),
        other => Err(format!(
            "expected a hex string like \"0x1000\", found {other}"
        )),
    }
}

/// Little-endian bytes from hex digits (whitespace, `_` and a leading `0x` ignored).
fn parse_hex_bytes(text: &str) -> Result<Vec<u8>, String> {
    let text = text.trim_start();
    let text = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text);
    let digits: Vec<u8> = text
        .bytes()
        .filter(|b| !b.is_ascii_whitespace() && *b != b'_')
        .map(|b| match b {
            b'0'..=b'9' => Ok(b - b'0'),
            b'a'..=b'f' => Ok(b - b'a' + 10),
            b'A'..=b'F' => Ok(b - b'A' + 10),
            _ => Err(format!("{:?} is not a hex digit", char::from(b))),
        })
        .collect::<Result<_, _>>()?;
    if !digits.len().is_multiple_of(2) {
        return Err(format!(
            "{} hex digits: bytes need an even number",
            digits.len()
        ));
    }
    Ok(digits
        .chunks(2)
        .map(|pair| (pair[0] << 4) | pair[1])
        .collect())
}

fn parse_memory(f: &mut Fields<'_>) -> RegionMemory {
    let mut memory = RegionMemory::default();
    let Some(value) = f.get("memory", false) else {
        return memory;
    };
    let Some(regions) = value.as_array() else {
        f.problem(
            "memory",
            "expected an array of {\"base\":\"0x…\",\"hex\":\"…\"}",
        );
        return memory;
    };
    for (i, region) in regions.iter().enumerate() {
        let path = |field: &str| format!("memory[{i}].{field}");
        let Some(object) = region.as_object() else {
            f.problem(
                &format!("memory[{i}]"),
                "expected an object with \"base\" and \"hex\"",
            );
            continue;
        };
        let base = match object.get("base") {
            Some(v) => f.u64_at(&path("base"), v),
            None => {
                f.problem(&path("base"), "missing");
                None
            }
        };
        let bytes = match object
            .get("hex")
            .map(|v| v.as_str().ok_or("expected a string of hex digits"))
        {
            Some(Ok(text)) => parse_hex_bytes(text)
                .map_err(|e| f.problem(&path("hex"), e))
                .ok(),
            Some(Err(e)) => {
                f.problem(&path("hex"), e);
                None
            }
            None => {
                f.problem(&path("hex"), "missing");
                None
            }
        };
        if let (Some(base), Some(bytes)) = (base, bytes) {
            if bytes.len() as u128 + u128::from(base) > 1u128 << 64 {
                f.problem(
                    &path("hex"),
                    "region runs past the end of the 64-bit address space",
                );
            } else {
                memory.regions.push((base, bytes));
            }
        }
    }
    memory
}

const FEATURES: &str = "lpa2, ttst, xnx, hafdbs, fault_txsz_below_min, fault_txsz_above_max";

fn parse_machine(f: &mut Fields<'_>) -> Option<Machine> {
    let bits = f.get("pa_bits", true)?;
    let number = bits
        .as_u64()
        .or_else(|| bits.as_str().and_then(|s| s.trim().parse().ok()));
    let Some(pa_bits) = number.and_then(pa_bits_of) else {
        f.problem(
            "pa_bits",
            format!("{bits} is not a PA size (32, 36, 40, 42, 44, 48 or 52)"),
        );
        return None;
    };
    let mut machine = Machine::new(pa_bits);
    let Some(features) = f.get("features", false) else {
        return Some(machine);
    };
    let Some(features) = features.as_object() else {
        f.problem(
            "features",
            format!("expected an object of booleans ({FEATURES})"),
        );
        return None;
    };
    for (key, value) in features {
        let path = format!("features.{key}");
        let Some(on) = value.as_bool() else {
            f.problem(&path, "expected true or false");
            continue;
        };
        match key.as_str() {
            "lpa2" => machine.lpa2 = on,
            "ttst" => machine.ttst = on,
            "xnx" => machine.xnx = on,
            "hafdbs" => machine.hafdbs = on,
            "fault_txsz_below_min" => machine.fault_txsz_below_min = on,
            "fault_txsz_above_max" => machine.fault_txsz_above_max = on,
            _ => f.problem(&path, format!("unknown feature (known: {FEATURES})")),
        }
    }
    Some(machine)
}

fn parse_access(f: &mut Fields<'_>, required: bool) -> Option<Access> {
    let value = f.get("access", required)?;
    match value.as_str() {
        Some("read") => Some(Access::Read),
        Some("write") => Some(Access::Write),
        Some("exec_el1") => Some(Access::ExecEl1),
        Some("exec_el0") => Some(Access::ExecEl0),
        _ => {
            f.problem(
                "access",
                format!("{value} is not \"read\", \"write\", \"exec_el1\" or \"exec_el0\""),
            );
            None
        }
    }
}

fn parse_case(case: usize, value: &Value, require_query: bool) -> Result<Case, Vec<CaseError>> {
    let name = value
        .get("name")
        .and_then(Value::as_str)
        .map(str::to_string);
    let Some(object) = value.as_object() else {
        let problem = format!("expected a JSON object, found {value}");
        return Err(vec![CaseError {
            case,
            name,
            field: String::new(),
            problem,
        }]);
    };
    let mut f = Fields {
        case,
        name,
        object,
        errors: Vec::new(),
    };
    let vtcr = f.u64_field("vtcr", true);
    let vttbr = f.u64_field("vttbr", true);
    let machine = parse_machine(&mut f);
    let memory = parse_memory(&mut f);
    let ipa = f.u64_field("ipa", require_query);
    let access = parse_access(&mut f, require_query);
    match (vtcr, vttbr, machine, f.errors.is_empty()) {
        (Some(vtcr), Some(vttbr), Some(machine), true) => Ok(Case {
            name: f.name,
            machine,
            vtcr: Vtcr::new(vtcr),
            vttbr: Vttbr::new(vttbr),
            memory,
            query: ipa.zip(access).map(|(ipa, access)| (Ipa::new(ipa), access)),
        }),
        _ => Err(f.errors),
    }
}

/// Parses one case object or an array of them. With `require_query`, `ipa` and `access` are
/// required (walking); without, optional (dumping).
///
/// # Errors
/// [`InputError`]: not JSON, not objects, or every malformed field of every case.
pub fn parse_cases(input: &str, require_query: bool) -> Result<Vec<Case>, InputError> {
    let value: Value =
        serde_json::from_str(input).map_err(|e| InputError::Syntax(e.to_string()))?;
    let items = match value {
        Value::Array(items) => items,
        object @ Value::Object(_) => vec![object],
        other => {
            return Err(InputError::Shape(format!(
                "expected a case object or an array of them, found {other}"
            )));
        }
    };
    let mut cases = Vec::new();
    let mut errors = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match parse_case(i, item, require_query) {
            Ok(case) => cases.push(case),
            Err(mut e) => errors.append(&mut e),
        }
    }
    if errors.is_empty() {
        Ok(cases)
    } else {
        Err(InputError::Cases(errors))
    }
}

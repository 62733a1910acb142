//! `capvisor s2walk --dump`: each case's whole table tree, as the walk decodes it.

use super::{InputError, entry_line, parse_cases, result_json, visit_end_line};
use s2walk::{Granule, S2Config};

fn granule_name(granule: Granule) -> &'static str {
    match granule {
        Granule::K4 => "4KB",
        Granule::K16 => "16KB",
        Granule::K64 => "64KB",
    }
}

/// The dump of every case of `input`, as lines. A case may omit `ipa`/`access`; when it gives
/// them, the walk's JSON result follows its tree.
///
/// # Errors
/// [`InputError`] naming every malformed case and field.
pub fn dump(input: &str, budget: usize) -> Result<Vec<String>, InputError> {
    let mut lines = Vec::new();
    for (i, case) in parse_cases(input, false)?.iter().enumerate() {
        let name = case
            .name
            .as_ref()
            .map(|n| format!(" ({n:?})"))
            .unwrap_or_default();
        let config = match S2Config::new(&case.machine, case.vtcr, case.vttbr) {
            Ok(config) => config,
            Err(fault) => {
                lines.push(format!(
                    "case {i}{name}: VTCR_EL2 {:#x} is refused before any lookup: {} fault at level {} (fsc {:#04x})",
                    case.vtcr.get(),
                    fault.kind.name(),
                    fault.level,
                    fault.fsc()
                ));
                continue;
            }
        };
        lines.push(format!(
            "case {i}{name}: {} granule, {}-bit IPA, {}-bit output, start level {}, {} table(s) at {:#x}, VMID {}",
            granule_name(config.granule()),
            config.input_bits(),
            config.output_bits(),
            config.start_level(),
            config.concatenated_tables(),
            config.base(),
            case.vttbr.vmid().get(),
        ));
        if config.base_out_of_range() {
            lines.push(
                "  base above the output size: every walk is an address size fault at level 0"
                    .into(),
            );
        } else {
            let mut line = String::new();
            let end = config.visit(&case.memory, budget, |entry| {
                line.clear();
                entry_line(&mut line, config.start_level(), entry);
                lines.push(line.clone());
            });
            lines.extend(visit_end_line(end, budget));
        }
        if let Some((ipa, access)) = case.query {
            let result = config.walk(&case.memory, ipa, access);
            lines.push(format!(
                "  walk {:#x} {:?}: {}",
                ipa.get(),
                access,
                result_json(&result)
            ));
        }
    }
    Ok(lines)
}

//! `capvisor bench`: boots the benchmark image under QEMU `-icount shift=0` and reports the
//! instruction counts its service measured, each beside the floor measured in the same run.

use crate::image;
use crate::qemu::{self, Ending, RunConfig};
use std::path::Path;
use std::time::Duration;

/// One measured path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Result {
    /// The path's name (`null_syscall`, ...).
    pub name: String,
    /// Iterations measured.
    pub iterations: u64,
    /// Instructions per iteration, loop included.
    pub instructions: u64,
    /// Instructions per iteration of the same loop with nothing in it.
    pub floor: u64,
}

/// Parses the `bench: name=... iterations=... instructions=... floor=...` lines of a console.
#[must_use]
pub fn parse(console: &str) -> Vec<Result> {
    console
        .lines()
        .filter_map(|line| {
            // A guest's lines reach the console through its VMM's prefix and its own name
            // (`[vmm] guest bench: bench: name=…`): the fields start at `bench: name=`.
            let rest = &line[line.find("bench: name=")? + "bench: ".len()..];
            let field = |key: &str| {
                rest.split_whitespace()
                    .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
            };
            Some(Result {
                name: field("name")?.to_owned(),
                iterations: field("iterations")?.parse().ok()?,
                instructions: field("instructions")?.parse().ok()?,
                floor: field("floor")?.parse().ok()?,
            })
        })
        .collect()
}

/// The benchmark images: the services' (`images/bench.toml`: syscalls, IPC, notifications) and
/// the guest's (`images/bench-guest.toml`: guest exits through the EL0 VMM and memory manager).
pub const IMAGES: [&str; 2] = ["images/bench.toml", "images/bench-guest.toml"];

/// Builds and boots each benchmark image on `cpu` and returns their results, in order.
///
/// # Errors
///
/// A message when an image cannot be built, QEMU fails, or a benchmark does not finish.
pub fn run(workspace: &Path, cpu: &str) -> std::result::Result<Vec<Result>, String> {
    let mut results = Vec::new();
    for manifest in IMAGES {
        results.extend(run_image(workspace, manifest, cpu)?);
    }
    Ok(results)
}

fn run_image(
    workspace: &Path,
    manifest: &str,
    cpu: &str,
) -> std::result::Result<Vec<Result>, String> {
    let built = image::build(workspace, &workspace.join(manifest), None)?;
    let mut config = RunConfig::new(&built.path);
    config.cpu = cpu.into();
    config.icount = true;
    config.echo = false;
    config.timeout = Some(Duration::from_secs(300));
    let outcome = qemu::run(&config, None)?;
    if outcome.ending != Ending::Exited(0) || !outcome.console.contains("bench: done") {
        return Err(format!(
            "the benchmark {manifest} did not finish ({}); console:\n{}",
            outcome.ending.describe(),
            outcome.console
        ));
    }
    Ok(parse(&outcome.console))
}

/// The results as one JSON object.
#[must_use]
pub fn to_json(cpu: &str, results: &[Result]) -> String {
    let rows: Vec<serde_json::Value> = results
        .iter()
        .map(|r| {
            serde_json::json!({
                "name": r.name,
                "iterations": r.iterations,
                "instructions": r.instructions,
                "floor": r.floor,
                "net": r.instructions.saturating_sub(r.floor),
            })
        })
        .collect();
    serde_json::json!({
        "cpu": cpu,
        "qemu": "-icount shift=0,align=off,sleep=off -seed 1 -rtc base=2024-01-01T00:00:00,clock=vm",
        "unit": "instructions per iteration",
        "results": rows,
    })
    .to_string()
}

/// The results as a table.
#[must_use]
pub fn to_table(cpu: &str, results: &[Result]) -> String {
    let mut out = format!(
        "capvisor bench: -cpu {cpu}, QEMU -icount shift=0 (instructions per iteration)\n\
         {:<28} {:>12} {:>8} {:>8}\n",
        "path", "instructions", "floor", "net"
    );
    for r in results {
        out.push_str(&format!(
            "{:<28} {:>12} {:>8} {:>8}\n",
            r.name,
            r.instructions,
            r.floor,
            r.instructions.saturating_sub(r.floor)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prefixed_lines() {
        let console = "noise\n[bench] bench: name=null_syscall iterations=1000 instructions=141 floor=3\n\
                       [vmm] guest bench: bench: name=guest_hvc iterations=10 instructions=900 floor=4\n\
                       [bench] bench: done\n";
        let results = parse(console);
        assert_eq!(
            results,
            vec![
                Result {
                    name: "null_syscall".into(),
                    iterations: 1000,
                    instructions: 141,
                    floor: 3
                },
                Result {
                    name: "guest_hvc".into(),
                    iterations: 10,
                    instructions: 900,
                    floor: 4
                }
            ]
        );
        let json: serde_json::Value = serde_json::from_str(&to_json("max", &results)).unwrap();
        assert_eq!(json["results"][0]["net"], 138);
        assert!(to_table("max", &results).contains("null_syscall"));
    }
}

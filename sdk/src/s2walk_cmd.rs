//! `capvisor s2walk`: asks the nested stage-2 walker about hand-made tables (JSON in, one JSON
//! line per case out), or prints a whole table tree with `--dump`. See docs/s2walk.md.
//!
//! Contract, per case:
//! in `{"vtcr":"0x…","vttbr":"0x…","pa_bits":48,"memory":[{"base":"0x…","hex":"…"}],
//! "ipa":"0x…","access":"read"|"write"|"exec_el1"|"exec_el0"}` (optional: `"name"`, and
//! `"features"` overriding the modelled machine); out
//! `{"result":"ok","pa":"0x…","level":N,"size":"0x…","r":bool,"w":bool,"x_el1":bool,"x_el0":bool,"memattr":"0x…"}`
//! or `{"result":"fault","type":…,"level":N,"fsc":"0x…"}`. Malformed input: every problem is
//! named by case and field on standard error, nothing is printed, and the exit status is 2.

use s2walk::visit::{Entry, EntryKind, VisitEnd};
use s2walk::{
    Access, Fault, GuestMemory, Ipa, Machine, OutputAddr, PaBits, ReadError, S2Config, Translation,
    Vtcr, Vttbr,
};
use std::fmt::{self, Write as _};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

/// The arguments of `capvisor s2walk`.
#[derive(Debug, Clone, clap::Args)]
pub struct S2walkArgs {
    /// A JSON file of cases (one object, or an array of them); standard input when absent or `-`.
    pub input: Option<PathBuf>,
    /// Print each case's whole table tree in readable form instead of walking its IPA.
    #[arg(long)]
    pub dump: bool,
    /// With --dump: read at most this many descriptors per case (hostile trees stay bounded).
    #[arg(long, default_value_t = 100_000)]
    pub max_descriptors: usize,
}

/// What was wrong with one field of one case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseError {
    /// The case's index in the input (0 for a single object).
    pub case: usize,
    /// The case's `name`, when it has a readable one.
    pub name: Option<String>,
    /// The field, as a path (`memory[1].hex`); empty for the case itself.
    pub field: String,
    /// What is wrong with it.
    pub problem: String,
}

impl fmt::Display for CaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "case {}", self.case)?;
        if let Some(name) = &self.name {
            write!(f, " ({name:?})")?;
        }
        if self.field.is_empty() {
            write!(f, ": {}", self.problem)
        } else {
            write!(f, ": field \"{}\": {}", self.field, self.problem)
        }
    }
}

/// Why the input as a whole could not be answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputError {
    /// Not JSON at all.
    Syntax(String),
    /// Neither an object nor an array of objects.
    Shape(String),
    /// One or more malformed cases.
    Cases(Vec<CaseError>),
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Syntax(e) => write!(f, "input is not JSON: {e}"),
            Self::Shape(e) => write!(f, "input: {e}"),
            Self::Cases(errors) => {
                for (i, e) in errors.iter().enumerate() {
                    if i > 0 {
                        writeln!(f)?;
                    }
                    write!(f, "{e}")?;
                }
                Ok(())
            }
        }
    }
}

/// The bytes a case gives the walk: little-endian regions; later regions win where they
/// overlap; anything outside them is an External abort for the walk.
#[derive(Debug, Clone, Default)]
pub struct RegionMemory {
    regions: Vec<(u64, Vec<u8>)>,
}

impl RegionMemory {
    fn byte(&self, addr: u64) -> Option<u8> {
        self.regions.iter().rev().find_map(|(base, bytes)| {
            let offset = usize::try_from(addr.checked_sub(*base)?).ok()?;
            bytes.get(offset).copied()
        })
    }
}

impl GuestMemory for RegionMemory {
    fn read_u64(&self, addr: OutputAddr) -> Result<u64, ReadError> {
        let mut raw = [0u8; 8];
        for (i, slot) in (0u64..).zip(raw.iter_mut()) {
            let at = addr.get().checked_add(i).ok_or(ReadError::Unbacked)?;
            *slot = self.byte(at).ok_or(ReadError::Unbacked)?;
        }
        Ok(u64::from_le_bytes(raw))
    }
}

/// One parsed case.
#[derive(Debug, Clone)]
pub struct Case {
    /// Its `name`, if given.
    pub name: Option<String>,
    /// The machine the walk emulates.
    pub machine: Machine,
    /// VTCR_EL2.
    pub vtcr: Vtcr,
    /// VTTBR_EL2.
    pub vttbr: Vttbr,
    /// The memory the walk may read.
    pub memory: RegionMemory,
    /// The IPA to walk and the access to check (required unless dumping).
    pub query: Option<(Ipa, Access)>,
}

impl Case {
    /// Walks the case's IPA.
    fn walk(&self, ipa: Ipa, access: Access) -> Result<Translation, Fault> {
        S2Config::new(&self.machine, self.vtcr, self.vttbr)?.walk(&self.memory, ipa, access)
    }
}

mod parse;
pub use parse::parse_cases;

/// The JSON line for a walk's result, in the contract's field order.
#[must_use]
pub fn result_json(result: &Result<Translation, Fault>) -> String {
    match result {
        Ok(t) => format!(
            "{{\"result\":\"ok\",\"pa\":\"{:#x}\",\"level\":{},\"size\":\"{:#x}\",\"r\":{},\"w\":{},\"x_el1\":{},\"x_el0\":{},\"memattr\":\"{:#x}\"}}",
            t.oa.get(),
            t.level,
            t.size(),
            t.perms.read,
            t.perms.write,
            t.perms.exec_el1,
            t.perms.exec_el0,
            t.memattr
        ),
        Err(f) => format!(
            "{{\"result\":\"fault\",\"type\":\"{}\",\"level\":{},\"fsc\":\"{:#04x}\"}}",
            f.kind.name(),
            f.level,
            f.fsc()
        ),
    }
}

/// Answers every case of `input`: one JSON line each.
///
/// # Errors
/// [`InputError`] naming every malformed case and field; then nothing is answered.
pub fn answer(input: &str) -> Result<Vec<String>, InputError> {
    // With `require_query`, parse_cases rejected every case lacking `ipa` or `access`.
    let cases = parse_cases(input, true)?;
    Ok(cases
        .iter()
        .filter_map(|case| {
            case.query
                .map(|(ipa, access)| result_json(&case.walk(ipa, access)))
        })
        .collect())
}

mod dump;
pub use dump::dump;

fn read_input(path: Option<&PathBuf>) -> std::io::Result<String> {
    let mut text = String::new();
    match path {
        Some(p) if p.as_os_str() != "-" => text = std::fs::read_to_string(p)?,
        _ => {
            std::io::stdin().read_to_string(&mut text)?;
        }
    }
    Ok(text)
}

/// Runs `capvisor s2walk`: 0 when every case was answered, 2 for malformed input, 1 when the
/// input could not be read.
pub fn run(args: S2walkArgs) -> ExitCode {
    let text = match read_input(args.input.as_ref()) {
        Ok(text) => text,
        Err(e) => {
            let what = args
                .input
                .as_ref()
                .map_or("standard input".into(), |p| p.display().to_string());
            eprintln!("capvisor s2walk: cannot read {what}: {e}");
            return ExitCode::from(1);
        }
    };
    let output = if args.dump {
        dump(&text, args.max_descriptors)
    } else {
        answer(&text)
    };
    match output {
        Ok(lines) => {
            let mut out = std::io::stdout().lock();
            for line in lines {
                if writeln!(out, "{line}").is_err() {
                    return ExitCode::from(1);
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("capvisor s2walk: malformed input\n{e}");
            ExitCode::from(2)
        }
    }
}

/// Formats a dump line for one visited entry (used by [`dump`]).
fn entry_line(out: &mut String, start_level: i8, entry: &Entry) {
    let indent = usize::try_from(entry.level - start_level).unwrap_or(0) * 2;
    let value = match entry.kind {
        EntryKind::Unreadable => String::from("(unreadable)      "),
        _ => format!("{:#018x}", entry.descriptor),
    };
    let _ = write!(
        out,
        "  {:indent$}L{}[{}] @{:#x} = {value}  ipa {:#x} +{:#x}  ",
        "",
        entry.level,
        entry.index,
        entry.addr.get(),
        entry.ipa,
        1u64 << entry.size_bits,
    );
    let _ = match entry.kind {
        EntryKind::Table { next } => write!(out, "table -> {:#x}", next.get()),
        EntryKind::Leaf {
            oa,
            perms,
            memattr,
            af,
            contiguous,
        } => write!(
            out,
            "{} -> {:#x}  {}{}{}{}  memattr {:#x}  af {}{}",
            if entry.level == 3 { "page" } else { "block" },
            oa.get(),
            if perms.read { 'r' } else { '-' },
            if perms.write { 'w' } else { '-' },
            if perms.exec_el1 { "x1" } else { "--" },
            if perms.exec_el0 { "x0" } else { "--" },
            memattr,
            u8::from(af),
            if contiguous { "  contiguous" } else { "" },
        ),
        EntryKind::Reserved => write!(out, "reserved encoding at this level (translation fault)"),
        EntryKind::AddressSize { addr } => {
            write!(
                out,
                "address {:#x} above the output size (address size fault)",
                addr.get()
            )
        }
        EntryKind::Unreadable => write!(out, "unreadable (external abort); rest of table skipped"),
    };
}

fn visit_end_line(end: VisitEnd, budget: usize) -> Option<String> {
    match end {
        VisitEnd::Complete => None,
        VisitEnd::BudgetExhausted => {
            Some(format!("  ... stopped after reading {budget} descriptors"))
        }
    }
}

fn pa_bits_of(bits: u64) -> Option<PaBits> {
    u32::try_from(bits).ok().and_then(PaBits::from_bits)
}

#[cfg(test)]
mod tests;

//! Source locations for kernel addresses in console output (`ELR_EL2=… (kernel+0x…)`), so a
//! fault report names a file and line, not only an address.

use crate::qemu::Annotator;
use std::path::Path;

/// An annotator that resolves `kernel+0x…` offsets through the kernel ELF file's debug
/// information; `None` when the file cannot be read.
#[must_use]
pub fn kernel_annotator(elf: &Path) -> Option<Annotator> {
    let context = addr2line::Loader::new(elf).ok()?;
    Some(Box::new(move |line: &str| {
        let offset = parse_offset(line)?;
        let mut frames = context.find_frames(offset).ok()?;
        let mut chain = Vec::new();
        while let Ok(Some(frame)) = frames.next() {
            let function = frame
                .function
                .and_then(|f| f.demangle().ok().map(|name| name.into_owned()))
                .unwrap_or_else(|| "?".into());
            let at = frame.location.map_or_else(
                || "?".into(),
                |l| format!("{}:{}", l.file.unwrap_or("?"), l.line.unwrap_or(0)),
            );
            chain.push(format!("{function} at {at}"));
        }
        if chain.is_empty() {
            return None;
        }
        // Innermost (possibly inlined) frame first, as a debugger's backtrace shows it.
        Some(format!(
            "  -> kernel+{offset:#x}: {}",
            chain.join("\n     inlined into ")
        ))
    }))
}

/// The offset in a `(kernel+0x…)` marker.
fn parse_offset(line: &str) -> Option<u64> {
    let start = line.find("(kernel+0x")? + "(kernel+0x".len();
    let hex: String = line[start..]
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .collect();
    u64::from_str_radix(&hex, 16).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_offsets() {
        assert_eq!(
            super::parse_offset("ELR_EL2=0x40001234 (kernel+0x1234)  SPSR"),
            Some(0x1234)
        );
        assert_eq!(super::parse_offset("no marker"), None);
    }
}

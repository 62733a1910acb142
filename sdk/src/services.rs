//! Building an image's EL0 services: each manifest `[[service]]` crate, for the bare-metal
//! target, into the same target directory as the kernel.

use crate::kernel::target_dir;
use crate::toolchain::{TARGET, Toolchain};
use capvisor_manifest::{CrateRef, Manifest};
use std::path::{Path, PathBuf};

/// A built service.
#[derive(Clone, Debug)]
pub struct BuiltService {
    /// Its name in the manifest.
    pub name: String,
    /// Its ELF file.
    pub elf: PathBuf,
}

/// The package name in the `Cargo.toml` of crate directory `dir`.
fn package_name(dir: &Path) -> Result<String, String> {
    let path = dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let value: toml::Table = text
        .parse()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    value
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .map(str::to_owned)
        .ok_or_else(|| format!("{}: no [package] name", path.display()))
}

/// Builds every service of `manifest`, in manifest order.
///
/// # Errors
///
/// A message naming the service whose build failed.
pub fn build_all(
    workspace: &Path,
    toolchain: &Toolchain,
    manifest: &Manifest,
) -> Result<Vec<BuiltService>, String> {
    let mut built = Vec::new();
    for service in &manifest.services {
        let what = format!("service {}", service.name);
        let elf = build_crate(workspace, toolchain, &service.crate_ref, &what)?;
        built.push(BuiltService {
            name: service.name.clone(),
            elf,
        });
    }
    Ok(built)
}

/// Builds the binary crate `crate_ref` for the bare-metal target and returns its ELF file;
/// `what` ("service x", "guest y") starts every message.
///
/// # Errors
///
/// A message when cargo fails or the crate has no binary of its package's name.
pub fn build_crate(
    workspace: &Path,
    toolchain: &Toolchain,
    crate_ref: &CrateRef,
    what: &str,
) -> Result<PathBuf, String> {
    let target = target_dir(workspace, toolchain);
    let mut cargo = toolchain.cargo_build(workspace, &target);
    let package = match crate_ref {
        CrateRef::Name(name) => {
            // Not --locked: a service just added (`capvisor new service`) is not in Cargo.lock
            // until cargo records it.
            cargo.args(["-p", name]);
            name.clone()
        }
        CrateRef::Path(dir) => {
            cargo.arg("--manifest-path").arg(dir.join("Cargo.toml"));
            package_name(dir)?
        }
    };
    let status = cargo
        .status()
        .map_err(|e| format!("{what}: could not run cargo: {e}"))?;
    if !status.success() {
        return Err(format!("{what}: cargo build failed ({status})"));
    }
    let elf = target.join(TARGET).join("release").join(&package);
    if !elf.is_file() {
        return Err(format!(
            "{what}: crate {package} built no binary named {package} (services and guests are \
             binary crates; see docs/services.md and docs/guests.md)"
        ));
    }
    Ok(elf)
}

/// The loadable part of an ELF64 little-endian file: its header, its program headers and the
/// bytes of its PT_LOAD segments, without sections (debug information stays in the file the
/// build left, for debuggers). What the kernel's loader reads is unchanged.
///
/// # Errors
///
/// A message when the file is not an ELF64 little-endian file with program headers.
pub fn loadable_elf(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let u16_at = |o: usize| {
        bytes
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u64_at = |o: usize| {
        bytes
            .get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
    };
    if bytes.get(..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1][..]) {
        return Err("not an ELF64 little-endian file".into());
    }
    let phoff = u64_at(0x20).ok_or("truncated ELF header")? as usize;
    let phentsize = u16_at(0x36).ok_or("truncated ELF header")? as usize;
    let phnum = u16_at(0x38).ok_or("truncated ELF header")? as usize;
    if phentsize != 56 || phnum == 0 {
        return Err("no ELF64 program headers".into());
    }
    let headers = bytes
        .get(phoff..phoff + phnum * 56)
        .ok_or("program headers lie outside the file")?;
    let mut out = bytes[..64].to_vec();
    // No section headers: e_shoff = 0, e_shnum = 0, e_shstrndx = 0; program headers follow.
    out[0x28..0x30].fill(0);
    out[0x3c..0x40].fill(0);
    out[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
    let mut table = headers.to_vec();
    let mut data = Vec::new();
    let data_start = 64 + table.len();
    for entry in table.chunks_exact_mut(56) {
        let p_type = u32::from_le_bytes(entry[0..4].try_into().unwrap_or([0; 4]));
        let offset = u64::from_le_bytes(entry[8..16].try_into().unwrap_or([0; 8])) as usize;
        let filesz = u64::from_le_bytes(entry[32..40].try_into().unwrap_or([0; 8])) as usize;
        if p_type != 1 {
            entry[32..40].fill(0);
            entry[8..16].fill(0);
            continue;
        }
        let segment = bytes
            .get(offset..offset + filesz)
            .ok_or("a segment lies outside the file")?;
        // Keep each segment at its offset modulo the page size, as loaders expect.
        let aligned = (data_start + data.len()).div_ceil(4096) * 4096 + offset % 4096;
        data.resize(aligned - data_start, 0);
        entry[8..16].copy_from_slice(&(aligned as u64).to_le_bytes());
        data.extend_from_slice(segment);
    }
    out.extend_from_slice(&table);
    out.extend_from_slice(&data);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::loadable_elf;

    #[test]
    fn refuses_what_is_not_elf64() {
        assert!(loadable_elf(b"not an elf").is_err());
        let mut header = vec![0x7f, b'E', b'L', b'F', 2, 1];
        header.resize(64, 0);
        assert!(loadable_elf(&header).is_err(), "no program headers");
    }
}

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

/// A service's ELF file laid out as the image carries it (`capvisor_image::service`): its
/// loadable segments as page-granular, page-aligned blobs, a page two segments share holding both
/// with the union of their permissions, and the stack of `stack` bytes. Nothing at boot parses
/// ELF: the kernel (for the root) and init (for the others) copy these pages as they are.
///
/// # Errors
///
/// A message when the file is not an AArch64 ELF64 executable with loadable segments, or when
/// its layout is one the image refuses (beyond the stack, too large, an entry point outside its
/// code).
pub fn service_image(elf: &[u8], stack: u64) -> Result<Vec<u8>, String> {
    use capvisor_image::service::{self, NewSegment, PAGE};
    use object::{Object, ObjectSegment};
    use std::collections::BTreeMap;
    let file = crate::kernel::parse_aarch64(elf)?;
    let mut pages: BTreeMap<u64, (u32, Vec<u8>)> = BTreeMap::new();
    for segment in file.segments() {
        let (start, size) = (segment.address(), segment.size());
        if size == 0 {
            continue;
        }
        let data = segment.data().map_err(|e| e.to_string())?;
        let flags = match segment.flags() {
            object::SegmentFlags::Elf { p_flags } => p_flags,
            _ => 0,
        };
        // ELF's PF_X, PF_W, PF_R (1, 2, 4) as the image's access bits (R 1, W 2, X 4).
        let access = u32::from(flags & 4 != 0)
            | u32::from(flags & 2 != 0) << 1
            | u32::from(flags & 1 != 0) << 2;
        let end = start
            .checked_add(size)
            .ok_or("a segment wraps the address space")?;
        let mut page = start & !(PAGE - 1);
        while page < end {
            let entry = pages
                .entry(page)
                .or_insert_with(|| (0, vec![0; PAGE as usize]));
            entry.0 |= access;
            let from = page.max(start);
            let to = (page + PAGE).min(start + data.len() as u64);
            if from < to {
                let source = &data[(from - start) as usize..(to - start) as usize];
                entry.1[(from - page) as usize..(to - page) as usize].copy_from_slice(source);
            }
            page += PAGE;
        }
    }
    // Runs of consecutive pages with the same access are one segment each.
    let mut segments: Vec<NewSegment> = Vec::new();
    for (ipa, (access, bytes)) in pages {
        match segments.last_mut() {
            Some(last) if last.access == access && last.ipa + last.pages * PAGE == ipa => {
                last.pages += 1;
                last.data.extend_from_slice(&bytes);
            }
            _ => segments.push(NewSegment {
                ipa,
                pages: 1,
                access,
                data: bytes,
            }),
        }
    }
    let bytes = service::encode(file.entry(), stack, &segments);
    service::ServiceImage::decode(&bytes).map_err(|e| e.to_string())?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::service_image;

    #[test]
    fn refuses_what_is_not_an_aarch64_elf_file() {
        assert!(service_image(b"not an elf", 65536).is_err());
        let mut header = vec![0x7f, b'E', b'L', b'F', 2, 1];
        header.resize(64, 0);
        assert!(service_image(&header, 65536).is_err());
    }
}

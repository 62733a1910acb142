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
    let target = target_dir(workspace, toolchain);
    let mut built = Vec::new();
    for service in &manifest.services {
        let mut cargo = toolchain.cargo_build(workspace, &target);
        let package = match &service.crate_ref {
            CrateRef::Name(name) => {
                cargo.args(["--locked", "-p", name]);
                name.clone()
            }
            CrateRef::Path(dir) => {
                cargo.arg("--manifest-path").arg(dir.join("Cargo.toml"));
                package_name(dir)?
            }
        };
        let status = cargo
            .status()
            .map_err(|e| format!("service {}: could not run cargo: {e}", service.name))?;
        if !status.success() {
            return Err(format!(
                "service {}: cargo build failed ({status})",
                service.name
            ));
        }
        let elf = target.join(TARGET).join("release").join(&package);
        if !elf.is_file() {
            return Err(format!(
                "service {}: crate {package} built no binary named {package} (a service is a \
                 binary crate; see docs/services.md)",
                service.name
            ));
        }
        built.push(BuiltService {
            name: service.name.clone(),
            elf,
        });
    }
    Ok(built)
}

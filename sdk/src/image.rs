//! Turning a manifest into an image file: the kernel, the boot configuration, the services and the
//! guests, with checksums the kernel verifies at boot.

use crate::kernel::{self, BuiltKernel};
use crate::{guests, services, toolchain};
use capvisor_image::writer::{NewEntry, write_image};
use capvisor_image::{BootConfig, EntryKind, SelfTest};
use capvisor_manifest::{LogLevel, Manifest, Selftest};
use std::path::{Path, PathBuf};

/// A built image.
#[derive(Clone, Debug)]
pub struct BuiltImage {
    /// The image file.
    pub path: PathBuf,
    /// The kernel it holds (its ELF file has the symbols).
    pub kernel: BuiltKernel,
    /// The manifest it was built from.
    pub manifest: Manifest,
}

/// The boot configuration a manifest asks for.
#[must_use]
pub fn boot_config(manifest: &Manifest) -> BootConfig {
    let requirements = manifest.requirements();
    BootConfig {
        selftest: match manifest.kernel.selftest {
            Selftest::None => SelfTest::None,
            Selftest::DataAbort => SelfTest::DataAbort,
            Selftest::Undefined => SelfTest::Undefined,
            Selftest::Panic => SelfTest::Panic,
        } as u32,
        log_level: match manifest.kernel.log {
            LogLevel::Error => 1,
            LogLevel::Warn => 2,
            LogLevel::Info => 3,
            LogLevel::Debug => 4,
            LogLevel::Trace => 5,
        },
        required_features: requirements.features.bits(),
        min_pa_bits: u32::from(requirements.min_pa_bits),
        min_cpus: u32::from(requirements.min_cpus),
        ..BootConfig::default()
    }
}

/// Builds the image `manifest_path` describes into `out` (default:
/// `target/images/<name>.img` in the workspace).
///
/// # Errors
///
/// A message saying what went wrong: manifest errors (each with file:line:column), a failed
/// kernel build, or an I/O error naming the file.
pub fn build(
    workspace: &Path,
    manifest_path: &Path,
    out: Option<&Path>,
) -> Result<BuiltImage, String> {
    let manifest = capvisor_manifest::load(manifest_path).map_err(|e| e.to_string())?;
    let toolchain = toolchain::find().map_err(|e| e.to_string())?;
    let kernel = kernel::build(workspace, &toolchain).map_err(|e| e.to_string())?;
    let mut entries = vec![NewEntry::boot_config(&boot_config(&manifest))];
    for service in services::build_all(workspace, &toolchain, &manifest)? {
        let elf =
            std::fs::read(&service.elf).map_err(|e| format!("{}: {e}", service.elf.display()))?;
        let bytes = services::loadable_elf(&elf)
            .map_err(|e| format!("service {}: {}: {e}", service.name, service.elf.display()))?;
        entries.push(NewEntry {
            kind: EntryKind::ServiceElf,
            name: service.name,
            bytes,
        });
    }
    entries.push(NewEntry {
        kind: EntryKind::Manifest,
        name: capvisor_image::grants::GRANTS_ENTRY.to_string(),
        bytes: capvisor_image::grants::encode(&grants(&manifest)?),
    });
    entries.push(NewEntry {
        kind: EntryKind::Manifest,
        name: capvisor_image::grants::UNTYPED_ENTRY.to_string(),
        bytes: capvisor_image::grants::encode_untyped(&untyped_grants(&manifest)?),
    });
    entries.push(NewEntry {
        kind: EntryKind::Manifest,
        name: capvisor_image::priorities::PRIORITIES_ENTRY.to_string(),
        bytes: manifest.services.iter().map(|s| s.priority).collect(),
    });
    entries.extend(guests::entries(workspace, &toolchain, &manifest)?);
    let bytes = write_image(&kernel.flat, &entries).map_err(|e| e.to_string())?;
    let path = out.map_or_else(
        || {
            workspace
                .join("target/images")
                .join(format!("{}.img", manifest.name))
        },
        Path::to_path_buf,
    );
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    // Written aside and renamed, so a QEMU already booting the previous file never reads a half.
    let partial = path.with_extension(format!("img.{}.partial", std::process::id()));
    std::fs::write(&partial, &bytes).map_err(|e| format!("{}: {e}", partial.display()))?;
    std::fs::rename(&partial, &path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(BuiltImage {
        path,
        kernel,
        manifest,
    })
}

/// The manifest's endpoint grants, by service index in image (manifest) order.
///
/// # Errors
/// A grant naming a service the manifest lacks (validation normally refuses it first).
pub fn grants(manifest: &Manifest) -> Result<Vec<capvisor_image::grants::Grant>, String> {
    let index = |name: &str| {
        let found = manifest.services.iter().position(|s| s.name == name);
        found
            .and_then(|i| u8::try_from(i).ok())
            .ok_or_else(|| format!("no service named '{name}' to grant an endpoint of"))
    };
    let mut grants = Vec::new();
    for (granter, service) in manifest.services.iter().enumerate() {
        for cap in &service.caps {
            if let capvisor_manifest::Capability::Endpoint(target) = cap {
                grants.push(capvisor_image::grants::Grant {
                    granter: u8::try_from(granter).map_err(|_| "too many services".to_string())?,
                    target: index(target)?,
                });
            }
        }
    }
    Ok(grants)
}

/// The manifest's untyped grants, split into power-of-two pieces, in manifest order.
///
/// # Errors
/// More than 256 services.
pub fn untyped_grants(
    manifest: &Manifest,
) -> Result<Vec<capvisor_image::grants::UntypedGrant>, String> {
    let mut grants = Vec::new();
    for (index, service) in manifest.services.iter().enumerate() {
        let index = u8::try_from(index).map_err(|_| "too many services".to_string())?;
        for cap in &service.caps {
            if let capvisor_manifest::Capability::Untyped(bytes) = cap {
                grants.extend(capvisor_image::grants::untyped_pieces(index, *bytes));
            }
        }
    }
    Ok(grants)
}

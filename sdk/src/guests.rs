//! An image's guests: each manifest `[[guest]]`'s kernel (an arm64 `Image` file, or a guest crate
//! built for the bare-metal target and flattened into one), its initrd, device tree and command
//! line, and its [`GuestConfig`], as payload entries named after the guest (`docs/guests.md`).
//! The kernel and the initrd are checked to fit the guest's memory where its VMM places them.

use crate::kernel::{check_relocations, flatten_linked_at, parse_aarch64, symbol};
use crate::services::build_crate;
use crate::toolchain::Toolchain;
use capvisor_image::writer::NewEntry;
use capvisor_image::{
    ARM64_IMAGE_MAGIC, EntryKind, GUEST_CONFIG_VERSION, GUEST_FLAG_RAM_IDENTITY, GUEST_RAM_BASE,
    GuestConfig, LinuxImageHeader, device_tree_ipa, initrd_ipa,
};
use capvisor_manifest::{Guest, GuestKernel, Manifest};
use object::Object;
use std::path::Path;

/// The payload entries of every guest of `manifest`, in manifest order: per guest its kernel,
/// its initrd, device tree and command line if declared, and its configuration.
///
/// # Errors
///
/// A message naming the guest whose kernel could not be built or read.
pub fn entries(
    workspace: &Path,
    toolchain: &Toolchain,
    manifest: &Manifest,
) -> Result<Vec<NewEntry>, String> {
    let mut entries = Vec::new();
    for guest in &manifest.guests {
        let entry = |kind, bytes| NewEntry {
            kind,
            name: guest.name.clone(),
            bytes,
        };
        let kernel = kernel(workspace, toolchain, guest)?;
        let initrd = guest.initrd.as_deref().map(read).transpose()?;
        check_fits(&kernel, initrd.as_deref().map(<[u8]>::len), guest.memory)
            .map_err(|e| format!("guest {}: {e}", guest.name))?;
        entries.push(entry(EntryKind::GuestKernel, kernel));
        if let Some(initrd) = initrd {
            entries.push(entry(EntryKind::GuestInitrd, initrd));
        }
        if let Some(dtb) = &guest.dtb {
            entries.push(entry(EntryKind::GuestDtb, read(dtb)?));
        }
        if !guest.cmdline.is_empty() {
            entries.push(entry(
                EntryKind::GuestCmdline,
                guest.cmdline.as_bytes().to_vec(),
            ));
        }
        let config = config(manifest, guest)?;
        entries.push(entry(EntryKind::Guest, config.to_bytes().to_vec()));
    }
    Ok(entries)
}

/// [`entries`] for the manifest file at `manifest_path`.
///
/// # Errors
///
/// The manifest's errors, or [`entries`]'s.
pub fn entries_of_file(
    workspace: &Path,
    toolchain: &Toolchain,
    manifest_path: &Path,
) -> Result<Vec<NewEntry>, String> {
    let manifest = capvisor_manifest::load(manifest_path).map_err(|e| e.to_string())?;
    entries(workspace, toolchain, &manifest)
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// The guest's kernel `Image`, checked to be one.
fn kernel(workspace: &Path, toolchain: &Toolchain, guest: &Guest) -> Result<Vec<u8>, String> {
    let what = format!("guest {}", guest.name);
    let bytes = match &guest.kernel {
        GuestKernel::Image(path) => read(path)?,
        GuestKernel::Crate(crate_ref) => {
            let elf = build_crate(workspace, toolchain, crate_ref, &what)?;
            flat_image(&read(&elf)?).map_err(|e| format!("{what}: {}: {e}", elf.display()))?
        }
    };
    check_image(&bytes).map_err(|e| format!("{what}: {e}"))?;
    Ok(bytes)
}

/// Builds the guest crate of workspace package `package` into an arm64 `Image`.
///
/// # Errors
///
/// A message when the build fails or its result is not a guest kernel.
pub fn build_package(
    workspace: &Path,
    toolchain: &Toolchain,
    package: &str,
) -> Result<Vec<u8>, String> {
    let crate_ref = capvisor_manifest::CrateRef::Name(package.into());
    let elf = build_crate(workspace, toolchain, &crate_ref, package)?;
    let image = flat_image(&read(&elf)?).map_err(|e| format!("{}: {e}", elf.display()))?;
    check_image(&image).map_err(|e| format!("{package}: {e}"))?;
    Ok(image)
}

/// Flattens a guest ELF file (the guest runtime's linker script: a static PIE linked at
/// `__image_start` = 0, whose entry code applies its relocations) into the arm64 `Image` a VMM
/// loads at any 2 MiB aligned RAM base + `text_offset`.
///
/// # Errors
///
/// A message when the file is not such an ELF file or has other dynamic relocations than
/// `R_AARCH64_RELATIVE` ones outside its read-only part.
pub fn flat_image(elf: &[u8]) -> Result<Vec<u8>, String> {
    let file = parse_aarch64(elf)?;
    let base = symbol(&file, "__image_start")?;
    let flat = flatten_linked_at(&file, base)?;
    if base != 0 {
        if file
            .dynamic_relocations()
            .is_some_and(|mut r| r.next().is_some())
        {
            return Err(
                "a guest linked at a fixed address must have no dynamic relocations".into(),
            );
        }
    } else {
        check_relocations(&file, flat.ro_size)?;
    }
    Ok(flat.bytes)
}

/// Checks that `bytes` start with an arm64 `Image` header (Linux
/// Documentation/arch/arm64/booting.rst) whose sizes fit.
///
/// # Errors
///
/// A message saying what is wrong.
pub fn check_image(bytes: &[u8]) -> Result<LinuxImageHeader, String> {
    let header = LinuxImageHeader::read(bytes)
        .ok_or_else(|| "the kernel is shorter than an arm64 Image header".to_string())?;
    if header.magic != ARM64_IMAGE_MAGIC {
        return Err("the kernel is not an arm64 Image (magic ARM\\x64 missing)".into());
    }
    if header.image_size != 0 && header.image_size < bytes.len() as u64 {
        return Err(format!(
            "the Image header's image_size {:#x} is smaller than the file ({:#x} bytes)",
            header.image_size,
            bytes.len()
        ));
    }
    Ok(header)
}

/// Checks that a kernel `Image` and an initrd of `initrd` bytes fit in `memory` bytes of guest RAM
/// where a VMM puts them (`docs/guests.md`): the kernel at `text_offset`, occupying its file or
/// its header's `image_size`, whichever is larger; the initrd on the next 2 MiB boundary; both
/// below the device tree's place in the last 2 MiB of RAM.
///
/// # Errors
///
/// A message with the sizes when they do not fit.
pub fn check_fits(kernel: &[u8], initrd: Option<usize>, memory: u64) -> Result<(), String> {
    let header = check_image(kernel)?;
    let room = device_tree_ipa(0, memory).unwrap_or(0);
    let kernel_bytes = header.image_size.max(kernel.len() as u64);
    let kernel_end = header.text_offset.saturating_add(kernel_bytes);
    if kernel_end > room {
        return Err(format!(
            "the kernel ({kernel_bytes:#x} bytes at offset {:#x}) does not fit in its memory \
             ({memory:#x} bytes, the last 2 MiB for the device tree)",
            header.text_offset
        ));
    }
    if let Some(size) = initrd {
        let start = initrd_ipa(header.text_offset, kernel_bytes).unwrap_or(u64::MAX);
        if start.saturating_add(size as u64) > room {
            return Err(format!(
                "the initrd ({size:#x} bytes, loaded at offset {start:#x}: the first 2 MiB \
                 boundary after the kernel) does not fit in its memory ({memory:#x} bytes, the \
                 last 2 MiB for the device tree)"
            ));
        }
    }
    Ok(())
}

/// The configuration of `guest`: service indices in image (manifest) order.
///
/// # Errors
///
/// A VMM or memory manager the manifest lacks (validation refuses it first).
pub fn config(manifest: &Manifest, guest: &Guest) -> Result<GuestConfig, String> {
    let index = |name: &str| {
        let found = manifest.services.iter().position(|s| s.name == name);
        found
            .and_then(|i| u32::try_from(i).ok())
            .ok_or_else(|| format!("guest {}: no service named '{name}'", guest.name))
    };
    Ok(GuestConfig {
        version: GUEST_CONFIG_VERSION,
        vcpus: u32::from(guest.vcpus),
        vmm: index(&guest.vmm)?,
        memmgr: index(&guest.memmgr)?,
        flags: if guest.ram_identity {
            GUEST_FLAG_RAM_IDENTITY
        } else {
            0
        },
        reserved0: 0,
        ram_base: if guest.ram_identity {
            0
        } else {
            GUEST_RAM_BASE
        },
        ram_size: guest.memory,
        reserved: [0; 4],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"
name = "g"
[[service]]
name = "vmm"
crate = "svc-vmm"
priority = 100
memory = "64K"
[[service]]
name = "memmgr"
crate = "svc-memmgr"
priority = 200
memory = "64K"
[[guest]]
name = "mmu"
crate = "guest-mmu"
memory = "16M"
vcpus = 2
vmm = "vmm"
"#;

    #[test]
    fn config_names_services_by_image_index() {
        let manifest = capvisor_manifest::parse(MANIFEST, Path::new("g.toml")).unwrap();
        let config = config(&manifest, &manifest.guests[0]).unwrap();
        assert_eq!((config.vmm, config.memmgr, config.vcpus), (0, 1, 2));
        assert_eq!((config.ram_base, config.ram_size), (0x4000_0000, 16 << 20));
        assert_eq!(GuestConfig::decode(config.to_bytes(), 2), Ok(config));
    }

    fn image(text_offset: u64, image_size: u64, len: usize) -> Vec<u8> {
        let mut bytes = vec![0u8; len.max(64)];
        bytes[8..16].copy_from_slice(&text_offset.to_le_bytes());
        bytes[16..24].copy_from_slice(&image_size.to_le_bytes());
        bytes[56..60].copy_from_slice(&ARM64_IMAGE_MAGIC.to_le_bytes());
        bytes
    }

    #[test]
    fn kernel_and_initrd_must_fit_where_the_vmm_puts_them() {
        let mib = 1 << 20;
        // Kernel at 2M, 3M with its BSS: the initrd goes at 6M, below the device tree at 14M.
        let kernel = image(2 * mib, 3 * mib, 0x1000);
        assert_eq!(
            check_fits(&kernel, Some(8 * mib as usize), 16 * mib),
            Ok(())
        );
        let too_big = check_fits(&kernel, Some(8 * mib as usize + 1), 16 * mib).unwrap_err();
        assert!(
            too_big.contains("initrd (0x800001 bytes, loaded at offset 0x600000"),
            "{too_big}"
        );
        // The file is larger than image_size says (0: unknown): the file counts; the device
        // tree takes the last whole 2 MiB.
        let kernel = image(2 * mib, 0, 0x40_0001);
        assert!(check_fits(&kernel, Some(1), 10 * mib).is_err());
        assert!(check_fits(&kernel, Some(1), 10 * mib + 1).is_err());
        assert!(check_fits(&kernel, Some(1), 12 * mib).is_ok());
        let huge = image(2 * mib, 64 * mib, 64);
        let error = check_fits(&huge, None, 16 * mib).unwrap_err();
        assert!(
            error.contains("the kernel (0x4000000 bytes at offset 0x200000)"),
            "{error}"
        );
    }

    #[test]
    fn check_image_wants_the_magic() {
        let mut bytes = vec![0u8; 64];
        assert!(check_image(&bytes).is_err());
        bytes[56..60].copy_from_slice(&ARM64_IMAGE_MAGIC.to_le_bytes());
        assert!(check_image(&bytes).is_ok());
        assert!(check_image(&bytes[..63]).is_err());
    }

    #[test]
    fn flat_image_refuses_non_elf() {
        assert!(flat_image(b"not an ELF file").is_err());
    }
}

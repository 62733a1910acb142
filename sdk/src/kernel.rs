//! Building the EL2 kernel and flattening its ELF file into the bytes an image loads.

use crate::toolchain::{TARGET, Toolchain};
use capvisor_image::writer::FlatKernel;
use object::read::elf::ElfFile64;
use object::{Object, ObjectSegment, ObjectSymbol, elf};
use std::path::{Path, PathBuf};

/// The kernel's ELF file and its flattened form.
#[derive(Clone, Debug)]
pub struct BuiltKernel {
    /// The linked ELF file, with symbols (for debuggers and symbolization).
    pub elf: PathBuf,
    /// The loadable bytes.
    pub flat: FlatKernel,
}

/// Why the kernel could not be built or used.
#[derive(Debug)]
pub enum KernelError {
    /// `cargo build` failed; its output was shown.
    Build(String),
    /// The ELF file is not what the kernel's linker script makes.
    Elf(String),
}

impl std::fmt::Display for KernelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Build(m) => write!(f, "building the kernel failed: {m}"),
            Self::Elf(m) => write!(f, "the kernel ELF file is unusable: {m}"),
        }
    }
}

impl std::error::Error for KernelError {}

/// Where bare-metal builds with `toolchain` go.
#[must_use]
pub fn target_dir(workspace: &Path, toolchain: &Toolchain) -> PathBuf {
    workspace
        .join("target")
        .join(format!("aarch64-{}", toolchain.name))
}

/// Builds the kernel (`capvisor-kernel`) for the bare-metal target and flattens it.
///
/// # Errors
///
/// [`KernelError`] when cargo fails or the result breaks the layout the boot code relies on.
pub fn build(workspace: &Path, toolchain: &Toolchain) -> Result<BuiltKernel, KernelError> {
    let target_dir = target_dir(workspace, toolchain);
    let status = toolchain
        .cargo_build(workspace, &target_dir)
        .args(["--locked", "-p", "capvisor-kernel"])
        .status()
        .map_err(|e| KernelError::Build(format!("could not run cargo: {e}")))?;
    if !status.success() {
        return Err(KernelError::Build(format!("cargo exited with {status}")));
    }
    let elf = target_dir.join(TARGET).join("release/capvisor-kernel");
    let data =
        std::fs::read(&elf).map_err(|e| KernelError::Elf(format!("{}: {e}", elf.display())))?;
    let flat = flatten(&data).map_err(KernelError::Elf)?;
    Ok(BuiltKernel { elf, flat })
}

/// Lays the ELF file's loadable segments out from address 0 and checks the relocations.
///
/// # Errors
///
/// A message when the file is not a position-independent aarch64 ELF linked at 0 by the
/// kernel's linker script, or has relocations the entry code cannot apply.
pub fn flatten(data: &[u8]) -> Result<FlatKernel, String> {
    let file = parse_aarch64(data)?;
    let flat = flatten_linked_at(&file, 0)?;
    check_relocations(&file, flat.ro_size)?;
    Ok(flat)
}

/// Parses an aarch64 ELF64 file.
///
/// # Errors
///
/// A message when it is not one.
pub(crate) fn parse_aarch64(data: &[u8]) -> Result<ElfFile64<'_, object::Endianness>, String> {
    let file = ElfFile64::<object::Endianness>::parse(data).map_err(|e| e.to_string())?;
    if file.architecture() != object::Architecture::Aarch64 {
        return Err("not an aarch64 ELF file".into());
    }
    Ok(file)
}

/// The address of symbol `name`.
///
/// # Errors
///
/// A message when the file does not define it.
pub(crate) fn symbol(file: &ElfFile64<'_, object::Endianness>, name: &str) -> Result<u64, String> {
    file.symbols()
        .find(|s| s.name() == Ok(name))
        .map(|s| s.address())
        .ok_or_else(|| format!("symbol {name} missing (not linked with a capvisor linker script?)"))
}

/// Lays the loadable segments of an ELF file linked at `base` out from offset 0, up to its
/// `__file_end` symbol, with the sizes its `__ro_end` and `__image_end` symbols give: the shape
/// of the kernel (linked at 0) and of a guest kernel (linked at its load address) alike.
///
/// # Errors
///
/// A message when a symbol is missing or a segment lies outside `base..__file_end`.
pub(crate) fn flatten_linked_at(
    file: &ElfFile64<'_, object::Endianness>,
    base: u64,
) -> Result<FlatKernel, String> {
    let symbol = |name: &str| {
        symbol(file, name)?
            .checked_sub(base)
            .ok_or_else(|| format!("symbol {name} lies below the link address {base:#x}"))
    };
    let (ro_end, image_end, file_end) = (
        symbol("__ro_end")?,
        symbol("__image_end")?,
        symbol("__file_end")?,
    );
    let mut bytes = vec![0u8; file_end as usize];
    for segment in file.segments() {
        let (addr, size) = (segment.address(), segment.size());
        let contents = segment.data().map_err(|e| e.to_string())?;
        if contents.is_empty() {
            // Zero-initialised memory only (.bss, a stack): nothing to place.
            continue;
        }
        let offset = addr
            .checked_sub(base)
            .ok_or_else(|| format!("segment at {addr:#x} lies below the link address {base:#x}"))?;
        if offset + contents.len() as u64 > file_end || size > image_end {
            return Err(format!("segment at {addr:#x} lies beyond __file_end"));
        }
        bytes[offset as usize..offset as usize + contents.len()].copy_from_slice(contents);
    }
    Ok(FlatKernel {
        bytes,
        ro_size: ro_end,
        mem_size: image_end,
    })
}

/// Checks that an ELF file linked as a static PIE at 0 has only `R_AARCH64_RELATIVE` dynamic
/// relocations, all at or above `ro_end` (the entry code applies exactly those).
pub(crate) fn check_relocations(
    file: &ElfFile64<'_, object::Endianness>,
    ro_end: u64,
) -> Result<(), String> {
    let Some(relocs) = file.dynamic_relocations() else {
        return Ok(());
    };
    for (offset, reloc) in relocs {
        let kind = match reloc.flags() {
            object::RelocationFlags::Elf { r_type } => r_type,
            _ => 0,
        };
        if kind != elf::R_AARCH64_RELATIVE {
            return Err(format!(
                "dynamic relocation of type {kind} at {offset:#x}: the entry code applies only \
                 R_AARCH64_RELATIVE"
            ));
        }
        if offset < ro_end {
            return Err(format!(
                "relocation at {offset:#x} falls in the read-only part (below {ro_end:#x}), which \
                 the image checksum covers: was code built without relocation-model=pie?"
            ));
        }
    }
    Ok(())
}

//! Turning a manifest into an image file: the kernel, the boot configuration, the services and the
//! guests, with checksums the kernel verifies at boot.

use crate::kernel::{self, BuiltKernel};
use crate::{guests, plan, services, toolchain};
use capvisor_image::devices::{self, DeviceRecord};
use capvisor_image::writer::{NewEntry, write_image};
use capvisor_image::{BootConfig, EntryKind, SelfTest};
use capvisor_manifest::{Capability, DeviceLocator, LogLevel, Manifest, MemoryType, Selftest};
use std::path::{Path, PathBuf};
use zerocopy::IntoBytes;

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
    let root_priority = if supervised(manifest) {
        manifest
            .services
            .first()
            .map_or(255, |s| u32::from(s.priority))
    } else {
        255
    };
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
        services: u32::try_from(manifest.services.len()).unwrap_or(u32::MAX),
        root_priority,
        ..BootConfig::default()
    }
}

/// The crate of the supervisor service (`services/init`).
pub const INIT_CRATE: &str = "svc-init";

/// Whether the image's first service is the supervisor, `svc-init` (docs/manifest.md).
#[must_use]
pub fn supervised(manifest: &Manifest) -> bool {
    manifest.services.first().is_some_and(|service| {
        matches!(&service.crate_ref, capvisor_manifest::CrateRef::Name(name) if name == INIT_CRATE)
    })
}

/// Builds the image `manifest_path` describes into `out` (default:
/// `target/images/<name>.img` in the workspace).
///
/// # Errors
///
/// A message saying what went wrong: manifest errors (each with file:line:column), a failed
/// kernel build, a plan that cannot be made, or an I/O error naming the file.
pub fn build(
    workspace: &Path,
    manifest_path: &Path,
    out: Option<&Path>,
) -> Result<BuiltImage, String> {
    let manifest = capvisor_manifest::load(manifest_path).map_err(|e| e.to_string())?;
    let toolchain = toolchain::find().map_err(|e| e.to_string())?;
    let kernel = kernel::build(workspace, &toolchain).map_err(|e| e.to_string())?;
    let entries = entries(workspace, &toolchain, &manifest)?;
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

/// The payload entries of `manifest`'s image: the boot configuration; the services, laid out
/// (init first: the SDK adds it when the manifest does not start with it); the devices record;
/// the guests' payloads; the boot-info pages; and last the boot plan.
fn entries(
    workspace: &Path,
    toolchain: &toolchain::Toolchain,
    manifest: &Manifest,
) -> Result<Vec<NewEntry>, String> {
    let supervised = supervised(manifest);
    let mut entries = vec![NewEntry::boot_config(&boot_config(manifest))];
    if !manifest.services.is_empty() && !supervised {
        let crate_ref = capvisor_manifest::CrateRef::Name(INIT_CRATE.into());
        let elf = services::build_crate(workspace, toolchain, &crate_ref, "init")?;
        let elf = std::fs::read(&elf).map_err(|e| format!("{}: {e}", elf.display()))?;
        let bytes = services::service_image(&elf, capvisor_manifest::DEFAULT_STACK)
            .map_err(|e| format!("init: {e}"))?;
        entries.push(NewEntry {
            kind: EntryKind::Service,
            name: "init".into(),
            bytes,
        });
    }
    let first_service = entries.len();
    let built = services::build_all(workspace, toolchain, manifest)?;
    for (service, built) in manifest.services.iter().zip(built) {
        let elf = std::fs::read(&built.elf).map_err(|e| format!("{}: {e}", built.elf.display()))?;
        let bytes = services::service_image(&elf, service.stack)
            .map_err(|e| format!("service {}: {}: {e}", service.name, built.elf.display()))?;
        entries.push(NewEntry {
            kind: EntryKind::Service,
            name: built.name,
            bytes,
        });
    }
    entries.push(NewEntry {
        kind: EntryKind::Manifest,
        name: devices::DEVICES_ENTRY.to_string(),
        bytes: device_records(manifest)?.as_bytes().to_vec(),
    });
    entries.extend(guests::entries(workspace, toolchain, manifest)?);
    add_plan(manifest, entries, (first_service, supervised))
}

/// Adds the boot-info pages and the boot plan to `entries` (the plan refers to where the
/// others are, so it is made once they are laid out, and goes last).
fn add_plan(
    manifest: &Manifest,
    mut entries: Vec<NewEntry>,
    (first_service, supervised): (usize, bool),
) -> Result<Vec<NewEntry>, String> {
    if manifest.services.is_empty() {
        return Ok(entries);
    }
    // The boot-info pages do not depend on where anything is in the payload: plan once to
    // learn them, lay everything out, then plan with the offsets.
    let draft = plan::plan(
        &inputs(manifest, &entries, None, (first_service, supervised)),
        supervised,
    )?;
    let mut info_entries = vec![0; manifest.services.len()];
    for (index, info) in draft.boot_infos.iter().enumerate() {
        if let Some(info) = info {
            info_entries[index] = entries.len();
            entries.push(NewEntry {
                kind: EntryKind::BootInfo,
                name: manifest.services[index].name.clone(),
                bytes: info.as_bytes().to_vec(),
            });
        }
    }
    entries.push(NewEntry {
        kind: EntryKind::BootPlan,
        name: capvisor_image::plan::PLAN_ENTRY.into(),
        bytes: Vec::new(),
    });
    let offsets = capvisor_image::writer::layout(&entries);
    let boot_infos = info_entries
        .iter()
        .map(|&entry| if entry == 0 { 0 } else { offsets[entry] })
        .collect();
    let layout = (offsets.as_slice(), boot_infos);
    let planned = plan::plan(
        &inputs(
            manifest,
            &entries,
            Some(layout),
            (first_service, supervised),
        ),
        supervised,
    )?;
    if let Some(last) = entries.last_mut() {
        last.bytes = planned.plan;
    }
    Ok(entries)
}

/// What the planner is given: the entries and, once laid out, their offsets (`None`: a draft).
fn inputs<'a>(
    manifest: &'a Manifest,
    entries: &'a [NewEntry],
    layout: Option<(&[u64], Vec<u64>)>,
    (first_service, supervised): (usize, bool),
) -> plan::Inputs<'a> {
    let offset = |index: usize| layout.as_ref().map_or(0, |(offsets, _)| offsets[index]);
    let placed = |index: usize| plan::Placed {
        offset: offset(index),
        bytes: &entries[index].bytes,
    };
    let find = |kind: EntryKind, name: &str| {
        entries
            .iter()
            .position(|e| e.kind == kind && e.name == name)
            .map(placed)
    };
    let services = (0..manifest.services.len())
        .map(|i| placed(first_service + i))
        .collect();
    let guests = manifest
        .guests
        .iter()
        .map(|guest| plan::GuestPayloads {
            kernel: find(EntryKind::GuestKernel, &guest.name).unwrap_or(plan::Placed {
                offset: 0,
                bytes: &[],
            }),
            dtb: find(EntryKind::GuestDtb, &guest.name),
            initrd: find(EntryKind::GuestInitrd, &guest.name),
            cmdline: find(EntryKind::GuestCmdline, &guest.name),
        })
        .collect();
    let payload_size = layout
        .as_ref()
        .and_then(|(offsets, _)| offsets.last().copied())
        .unwrap_or(u64::MAX);
    plan::Inputs {
        manifest,
        services,
        first_entry: u64::from(!supervised),
        guests,
        boot_infos: layout.map_or_else(Vec::new, |(_, infos)| infos),
        payload_size,
    }
}

/// The manifest's devices and carve-outs as the kernel reads them (`capvisor_image::devices`):
/// one record per `[[device]]` then per `[[carveout]]`, in manifest order, each with the first
/// service whose `caps` hold it and the guest it is passed through to.
///
/// # Errors
/// More than [`devices::MAX_DEVICES`] records, a locator longer than the record holds, or more
/// services or guests than an index can name.
pub fn device_records(manifest: &Manifest) -> Result<Vec<DeviceRecord>, String> {
    let holder = |held: &dyn Fn(&Capability) -> bool| -> Result<u32, String> {
        let index = manifest
            .services
            .iter()
            .position(|s| s.caps.iter().any(held));
        index.map_or(Ok(devices::NONE), |i| {
            u32::try_from(i).map_err(|_| "too many services".to_string())
        })
    };
    let guest_index = |i: usize| u32::try_from(i).map_err(|_| "too many guests".to_string());
    let mut records = Vec::new();
    for device in &manifest.devices {
        let (locator, compatible) = match &device.locator {
            DeviceLocator::Path(path) => (path.as_str(), false),
            DeviceLocator::Compatible(compatible) => (compatible.as_str(), true),
        };
        if locator.len() >= 80 {
            return Err(format!(
                "device '{}': the locator `{locator}` is longer than the image's 79 bytes",
                device.name
            ));
        }
        let mut record = devices::record(&device.name, locator);
        record.flags = if compatible {
            devices::FLAG_COMPATIBLE
        } else {
            0
        };
        if device.cacheable {
            record.flags |= devices::FLAG_CACHEABLE;
        }
        record.service = holder(&|cap| matches!(cap, Capability::Device(n) if *n == device.name))?;
        for (index, guest) in manifest.guests.iter().enumerate() {
            if let Some(passthrough) = guest.devices.iter().find(|p| p.device == device.name) {
                record.guest = guest_index(index)?;
                record.memtype = match passthrough.memtype {
                    MemoryType::DeviceNgnre => devices::MEMTYPE_DEVICE_NGNRE,
                    MemoryType::NormalNonCacheable => devices::MEMTYPE_NORMAL_NC,
                    MemoryType::NormalWriteBack => devices::MEMTYPE_NORMAL_WB,
                };
                if passthrough.optional {
                    record.flags |= devices::FLAG_OPTIONAL;
                }
                if passthrough.irqs {
                    record.flags |= devices::FLAG_IRQS;
                }
                if passthrough.unprotected_dma {
                    record.flags |= devices::FLAG_UNPROTECTED_DMA;
                }
            }
        }
        records.push(record);
    }
    for carveout in &manifest.carveouts {
        let mut record = devices::record(&carveout.name, "");
        record.flags = devices::FLAG_CARVEOUT;
        record.flags |= if carveout.cacheable_pfnmap {
            devices::FLAG_CACHEABLE
        } else {
            devices::FLAG_RAM
        };
        record.base = carveout.base;
        record.size = carveout.size;
        // A cacheable PFNMAP is mapped write-back (its owner maps it cacheable, rule 5); RAM
        // withheld from the kernel is RAM, write-back too.
        record.memtype = devices::MEMTYPE_NORMAL_WB;
        record.service =
            holder(&|cap| matches!(cap, Capability::Carveout(n) if *n == carveout.name))?;
        for (index, guest) in manifest.guests.iter().enumerate() {
            if let Some(passthrough) = guest.carveouts.iter().find(|c| c.carveout == carveout.name)
            {
                record.guest = guest_index(index)?;
                if passthrough.optional {
                    record.flags |= devices::FLAG_OPTIONAL;
                }
            }
        }
        records.push(record);
    }
    if records.len() > devices::MAX_DEVICES {
        return Err(format!(
            "{} devices and carve-outs, more than the image's {}",
            records.len(),
            devices::MAX_DEVICES
        ));
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_records_name_holder_guest_memtype_and_flags() {
        let text = r#"
name = "devices"
[[device]]
name = "rtc"
compatible = "arm,pl031"
[[device]]
name = "uart1"
path = "/pl011@9040000"
[[carveout]]
name = "pfnmap"
base = 0x7000_0000
size = "2M"
cacheable_pfnmap = true
[[service]]
name = "memmgr"
crate = "memmgr"
priority = 30
memory = "1M"
[[service]]
name = "devbroker"
crate = "devbroker"
priority = 40
memory = "1M"
caps = [{ device = "rtc" }, { carveout = "pfnmap" }]
[[service]]
name = "vmm"
crate = "vmm"
priority = 20
memory = "1M"
[[guest]]
name = "g"
crate = "guest-passthrough"
memory = "16M"
vmm = "vmm"
devices = [{ device = "rtc", memtype = "normal-nc" }]
carveouts = [{ carveout = "pfnmap", optional = true }]
"#;
        let manifest = capvisor_manifest::parse(text, std::path::Path::new("t.toml")).unwrap();
        let records = device_records(&manifest).unwrap();
        let decoded = devices::decode(records.as_bytes(), 3).unwrap();
        assert_eq!(decoded.len(), 3);
        let rtc = &decoded[0];
        assert_eq!((rtc.name(), rtc.locator()), ("rtc", "arm,pl031"));
        // Passed through with its interrupts (`irqs` defaults to true).
        assert_eq!(rtc.flags, devices::FLAG_COMPATIBLE | devices::FLAG_IRQS);
        assert_eq!((rtc.service, rtc.guest), (1, 0));
        assert_eq!(rtc.memtype, devices::MEMTYPE_NORMAL_NC);
        let uart = &decoded[1];
        assert_eq!((uart.locator(), uart.flags), ("/pl011@9040000", 0));
        assert_eq!((uart.service, uart.guest), (devices::NONE, devices::NONE));
        let pfnmap = &decoded[2];
        let flags = devices::FLAG_CARVEOUT | devices::FLAG_CACHEABLE | devices::FLAG_OPTIONAL;
        assert_eq!(pfnmap.flags, flags);
        assert_eq!((pfnmap.base, pfnmap.size), (0x7000_0000, 2 << 20));
        assert_eq!((pfnmap.service, pfnmap.guest), (1, 0));
        assert_eq!(pfnmap.memtype, devices::MEMTYPE_NORMAL_WB);
    }
}

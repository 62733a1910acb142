//! `[[guest]]`: the guests, their VMM and memory manager, kernel and boot files, and the
//! devices and carve-outs passed through to them.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;

use capvisor_ipc::memory::MemoryType;
use toml::Spanned;

use crate::error::ErrorKind;
use crate::feature::Feature;
use crate::model::{
    CarveoutPassthrough, DEFAULT_MEMMGR, Guest, GuestKernel, MAX_VCPUS, Passthrough,
};
use crate::schema::{RawCarveoutPassthrough, RawGuest, RawPassthrough, Table};

use super::Checker;
use super::regions::RegionKind;

impl Checker<'_> {
    pub(super) fn guests(&mut self, raw: &[Spanned<Table<RawGuest>>]) -> Vec<Guest> {
        self.unique_names("guest", raw.iter().map(|guest| &guest.get_ref().name));
        let mut vmm_of: BTreeMap<String, String> = BTreeMap::new();
        let mut guests = Vec::new();
        for (index, spanned) in raw.iter().enumerate() {
            let guest = spanned.get_ref();
            let prefix = format!("guest[{index}]");
            let vmm = self.known_service(&guest.vmm, format!("{prefix}.vmm"));
            if let Some(vmm) = &vmm {
                if let Some(other) = vmm_of.get(vmm) {
                    let kind = ErrorKind::SharedVmm {
                        service: vmm.clone(),
                        other_guest: other.clone(),
                    };
                    self.error(guest.vmm.span(), format!("{prefix}.vmm"), kind);
                } else {
                    vmm_of.insert(vmm.clone(), guest.name.get_ref().clone());
                }
            }
            let devices = guest
                .devices
                .iter()
                .enumerate()
                .filter_map(|(device_index, passthrough)| {
                    let field = format!("{prefix}.devices[{device_index}]");
                    self.passthrough(passthrough, field, guest.name.get_ref())
                })
                .collect();
            let memmgr = self.guest_memmgr(spanned, &prefix, vmm.as_deref());
            let mut guest = self.guest(spanned, &prefix, devices, vmm.unwrap_or_default());
            guest.memmgr = memmgr;
            guests.push(guest);
        }
        guests
    }

    /// A guest's memory manager: `memmgr`, or [`DEFAULT_MEMMGR`] (reported at the guest's table
    /// when it is not declared), a service other than its VMM.
    fn guest_memmgr(
        &mut self,
        spanned: &Spanned<Table<RawGuest>>,
        prefix: &str,
        vmm: Option<&str>,
    ) -> String {
        let field = format!("{prefix}.memmgr");
        let raw = spanned
            .get_ref()
            .memmgr
            .clone()
            .unwrap_or_else(|| Spanned::new(spanned.span(), DEFAULT_MEMMGR.to_owned()));
        let Some(memmgr) = self.known_service(&raw, field.clone()) else {
            return raw.get_ref().clone();
        };
        if vmm == Some(memmgr.as_str()) {
            let kind = ErrorKind::VmmIsMemmgr {
                service: memmgr.clone(),
            };
            self.error(raw.span(), field, kind);
        }
        memmgr
    }

    /// A guest's kernel: exactly one of an `Image` file and a guest crate.
    fn guest_kernel(&mut self, spanned: &Spanned<Table<RawGuest>>, prefix: &str) -> GuestKernel {
        let raw = spanned.get_ref();
        match (&raw.kernel, &raw.crate_name) {
            (Some(kernel), None) => {
                GuestKernel::Image(self.file(kernel, format!("{prefix}.kernel")))
            }
            (None, Some(name)) => {
                GuestKernel::Crate(self.crate_ref(name, format!("{prefix}.crate")))
            }
            (Some(kernel), Some(_)) => {
                self.error(kernel.span(), prefix.to_owned(), ErrorKind::NotOneKernel);
                GuestKernel::Image(PathBuf::new())
            }
            (None, None) => {
                self.error(spanned.span(), prefix.to_owned(), ErrorKind::NotOneKernel);
                GuestKernel::Image(PathBuf::new())
            }
        }
    }

    fn guest(
        &mut self,
        spanned: &Spanned<Table<RawGuest>>,
        prefix: &str,
        devices: Vec<Passthrough>,
        vmm: String,
    ) -> Guest {
        let raw = spanned.get_ref();
        let kernel = self.guest_kernel(spanned, prefix);
        let initrd = raw
            .initrd
            .as_ref()
            .map(|initrd| self.file(initrd, format!("{prefix}.initrd")));
        let dtb = raw
            .dtb
            .as_ref()
            .map(|dtb| self.file(dtb, format!("{prefix}.dtb")));
        let cmdline = self.guest_cmdline(raw, prefix, dtb.is_some());
        if let (Some(initrd), Some(_)) = (&raw.initrd, &dtb) {
            let field = format!("{prefix}.initrd");
            self.error(initrd.span(), field, ErrorKind::NeedsGeneratedDeviceTree);
        }
        let memory = self.size(&raw.memory, format!("{prefix}.memory"));
        let vcpus = raw.vcpus.as_ref().map_or(1, |vcpus| {
            let field = format!("{prefix}.vcpus");
            self.in_range(vcpus, field, 1, MAX_VCPUS.into())
                .unwrap_or(1) as u8
        });
        let carveouts = self.carveout_passthroughs(raw, prefix);
        Guest {
            name: raw.name.get_ref().clone(),
            kernel,
            initrd,
            dtb,
            cmdline,
            memory: memory.unwrap_or(0),
            vcpus,
            ram_identity: raw.ram_identity,
            devices,
            carveouts,
            vmm,
            memmgr: String::new(),
            line: self.line(&raw.name.span()),
        }
    }

    /// A guest's command line (empty when absent): text the image's check accepts, and only
    /// with the device tree the VMM generates (`has_dtb` false), since it goes into `/chosen`.
    fn guest_cmdline(&mut self, raw: &RawGuest, prefix: &str, has_dtb: bool) -> String {
        let Some(cmdline) = &raw.cmdline else {
            return String::new();
        };
        let field = format!("{prefix}.cmdline");
        if let Err(error) = capvisor_image::check_cmdline(cmdline.get_ref().as_bytes()) {
            let reason = error.to_string();
            self.error(
                cmdline.span(),
                field.clone(),
                ErrorKind::InvalidCmdline { reason },
            );
        }
        if has_dtb {
            self.error(cmdline.span(), field, ErrorKind::NeedsGeneratedDeviceTree);
        }
        cmdline.get_ref().clone()
    }

    /// The carve-outs passed through to a guest, each written as a name or as a table with
    /// `optional`.
    fn carveout_passthroughs(&mut self, raw: &RawGuest, prefix: &str) -> Vec<CarveoutPassthrough> {
        let mut carveouts = Vec::new();
        for (index, spanned) in raw.carveouts.iter().enumerate() {
            let field = format!("{prefix}.carveouts[{index}]");
            let (name, optional) = match spanned.get_ref() {
                RawCarveoutPassthrough::Name(name) => {
                    (Spanned::new(spanned.span(), name.clone()), None)
                }
                RawCarveoutPassthrough::Table(table) => {
                    (table.carveout.clone(), table.optional.as_ref())
                }
            };
            let Some(carveout) = self.known_carveout(&name, field.clone()) else {
                continue;
            };
            let guest = raw.name.get_ref();
            let span = name.span();
            if !self.pass_through(RegionKind::Carveout, &carveout, guest, span, field.clone()) {
                continue;
            }
            self.held_for_passthrough(
                RegionKind::Carveout,
                &carveout,
                guest,
                name.span(),
                field.clone(),
            );
            let cacheable = self.carveouts.get(&carveout) == Some(&true);
            let optional = self.optional(optional, cacheable, &field);
            if cacheable && !optional {
                self.cacheable_needs_features(name.span(), field);
            }
            carveouts.push(CarveoutPassthrough { carveout, optional });
        }
        carveouts
    }

    /// One device passed through to guest `guest`.
    fn passthrough(
        &mut self,
        raw: &RawPassthrough,
        field: String,
        guest: &str,
    ) -> Option<Passthrough> {
        let memtype: MemoryType = self.choice(raw.memtype.as_ref(), &format!("{field}.memtype"));
        let device = self.known_device(&raw.device, format!("{field}.device"))?;
        let span = raw.device.span();
        if !self.pass_through(
            RegionKind::Device,
            &device,
            guest,
            span,
            format!("{field}.device"),
        ) {
            return None;
        }
        self.held_for_passthrough(
            RegionKind::Device,
            &device,
            guest,
            raw.device.span(),
            format!("{field}.device"),
        );
        let cacheable = memtype == MemoryType::NormalWriteBack;
        let optional = self.optional(raw.optional.as_ref(), cacheable, &field);
        if cacheable {
            let span = raw.memtype.as_ref().map_or(0..0, Spanned::span);
            let field = format!("{field}.memtype");
            if !self.devices.get(&device).is_some_and(|d| d.cacheable) {
                let kind = ErrorKind::DeviceNotCacheable {
                    device: device.clone(),
                };
                self.error(span, field, kind);
            } else if !optional {
                self.cacheable_needs_features(span, field);
            }
        }
        let unprotected_dma = self.unprotected_dma(raw, &device, guest, &field);
        Some(Passthrough {
            device,
            memtype,
            irqs: raw.irqs,
            optional,
            unprotected_dma,
        })
    }

    /// A passthrough's `unprotected_dma`: required for a device that may master the bus (every
    /// device but one located by a `compatible` in `capvisor_image::devices::NO_BUS_MASTER`),
    /// which could then DMA to all physical memory, since capvisor drives no IOMMU; refused on one
    /// that cannot, where it would acknowledge nothing.
    fn unprotected_dma(
        &mut self,
        raw: &RawPassthrough,
        device: &str,
        guest: &str,
        field: &str,
    ) -> bool {
        let compatible = self.devices.get(device).and_then(|d| d.compatible.clone());
        let can_dma = !compatible
            .as_deref()
            .is_some_and(|c| capvisor_image::devices::cannot_master_bus(core::iter::once(c)));
        let acknowledged = raw
            .unprotected_dma
            .as_ref()
            .map(|a| (*a.get_ref(), a.span()));
        match (can_dma, acknowledged) {
            (true, Some((true, _))) => true,
            (true, written) => {
                // At `unprotected_dma = false` if it is written, else at the device.
                let (span, key) = written.map_or((raw.device.span(), "device"), |(_, span)| {
                    (span, "unprotected_dma")
                });
                let kind = ErrorKind::UnprotectedDma {
                    device: device.to_owned(),
                    guest: guest.to_owned(),
                    compatible,
                };
                self.error(span, format!("{field}.{key}"), kind);
                false
            }
            (false, Some((true, span))) => {
                let kind = ErrorKind::NeedlessUnprotectedDma {
                    device: device.to_owned(),
                    compatible: compatible.unwrap_or_default(),
                };
                self.error(span, format!("{field}.unprotected_dma"), kind);
                false
            }
            (false, _) => false,
        }
    }

    /// A passthrough's `optional`: only a cacheable passthrough can be refused by the platform
    /// (DESIGN.md rule 4), so on any other it would promise something that never happens.
    fn optional(&mut self, raw: Option<&Spanned<bool>>, cacheable: bool, field: &str) -> bool {
        let Some(raw) = raw else {
            return false;
        };
        if *raw.get_ref() && !cacheable {
            let field = format!("{field}.optional");
            self.error(raw.span(), field, ErrorKind::OptionalNotCacheable);
        }
        *raw.get_ref()
    }

    /// Refuses a cacheable mapping of device memory unless the platform requires FEAT_S2FWB and
    /// CTR_EL0.DIC (DESIGN.md, stage-2 rule 4): without both, the kernel would refuse it at run
    /// time, so the image could never work.
    fn cacheable_needs_features(&mut self, span: Range<usize>, field: String) {
        let missing: Vec<Feature> = [Feature::Fwb, Feature::Dic]
            .into_iter()
            .filter(|feature| !self.requires.contains(*feature))
            .collect();
        if !missing.is_empty() {
            self.error(span, field, ErrorKind::CacheableNeedsFeatures { missing });
        }
    }
}

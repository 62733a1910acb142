//! Semantic checks: from the manifest as written to a [`Manifest`], collecting every mistake.
//!
//! Each check records its error and goes on, so one run reports all that is wrong. Names are
//! gathered before references are resolved, so a reference to a service declared later in the file
//! is fine and a reference to an undeclared one is reported once, where it is written.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;

use crate::error::{ErrorKind, Location, ManifestError};
use crate::feature::{Feature, FeatureSet};
use crate::model::{
    Capability, Carveout, CarveoutPassthrough, Choice, CrateRef, DEFAULT_MEMMGR, DEFAULT_PA_BITS,
    DEFAULT_STACK, Device, DeviceLocator, Guest, GuestKernel, Kernel, MAX_VCPUS, Manifest, MemType,
    PA_BITS, PAGE_SIZE, Passthrough, Platform, SPI_RANGE, Service, choice_named,
};
use crate::schema::{
    RawCarveout, RawCarveoutPassthrough, RawDevice, RawGrant, RawGuest, RawKernel, RawManifest,
    RawPassthrough, RawPlatform, RawService, RawSize, Table,
};

/// The state of one validation run.
pub(crate) struct Checker<'a> {
    text: &'a str,
    file: &'a Path,
    dir: PathBuf,
    errors: Vec<ManifestError>,
    /// Bounds every size and region: `[platform].min_pa_bits` or [`DEFAULT_PA_BITS`].
    pa_bits: u8,
    /// Declared services, in order, for resolving references and listing them in messages.
    services: Vec<String>,
    /// Declared devices, each with whether it is declared `cacheable`.
    devices: BTreeMap<String, bool>,
    /// Declared carve-outs, each with whether it is a cacheable PFNMAP.
    carveouts: BTreeMap<String, bool>,
    /// `[platform].requires`, for the cacheable-mapping rule.
    requires: FeatureSet,
    /// Who holds each granted interrupt, to refuse a second grant.
    irq_holders: BTreeMap<u32, String>,
    /// Who holds each granted device and carve-out (keyed by kind and name), and where, to
    /// refuse a second holder and a passthrough that nobody holds.
    region_holders: BTreeMap<(RegionKind, String), (String, Location)>,
    /// The guest each device and carve-out is passed through to, and where, to refuse a second.
    passed_through: BTreeMap<(RegionKind, String), (String, Location)>,
}

/// A device or a carve-out: the two kinds of region a service holds and a guest is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum RegionKind {
    Device,
    Carveout,
}

impl RegionKind {
    /// The kind's name in messages.
    const fn what(self) -> &'static str {
        match self {
            Self::Device => "device",
            Self::Carveout => "carve-out",
        }
    }

    /// The grant key that gives it to a service.
    const fn grant_key(self) -> &'static str {
        match self {
            Self::Device => "device",
            Self::Carveout => "carveout",
        }
    }
}

/// Checks `raw` (read from `text`, the contents of `file`) and builds the manifest.
pub(crate) fn check(
    raw: RawManifest,
    text: &str,
    file: &Path,
) -> Result<Manifest, Vec<ManifestError>> {
    let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut checker = Checker {
        text,
        file,
        dir: dir.clone(),
        errors: Vec::new(),
        pa_bits: DEFAULT_PA_BITS,
        services: unique_names_of(&raw.service, |service| &service.name),
        devices: BTreeMap::new(),
        carveouts: BTreeMap::new(),
        requires: FeatureSet::EMPTY,
        irq_holders: BTreeMap::new(),
        region_holders: BTreeMap::new(),
        passed_through: BTreeMap::new(),
    };
    checker.name(&raw.name, "name");
    let kernel = checker.kernel(raw.kernel.as_deref().unwrap_or(&RawKernel::default()));
    let platform = checker.platform(raw.platform.as_deref().unwrap_or(&RawPlatform::default()));
    let devices = checker.devices(&raw.device);
    let carveouts = checker.carveouts(&raw.carveout);
    let services = checker.services(&raw.service);
    let guests = checker.guests(&raw.guest);
    let mut errors = checker.errors;
    if !errors.is_empty() {
        errors.sort_by_key(|error| error.location);
        return Err(errors);
    }
    Ok(Manifest {
        name: raw.name.into_inner(),
        description: raw.description,
        dir,
        kernel,
        platform,
        devices,
        carveouts,
        services,
        guests,
    })
}

/// The distinct names of `items`, in declaration order.
fn unique_names_of<T>(items: &[Spanned<T>], name: impl Fn(&T) -> &Spanned<String>) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for item in items {
        let name = name(item.get_ref()).get_ref();
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    names
}

impl Checker<'_> {
    fn location(&self, span: &Range<usize>) -> Location {
        Location::of_offset(self.text, span.start)
    }

    fn error(&mut self, span: Range<usize>, field: String, kind: ErrorKind) {
        self.errors.push(ManifestError {
            file: self.file.to_path_buf(),
            location: Some(self.location(&span)),
            field,
            kind,
        });
    }

    /// Checks a component name: non-empty ASCII letters, digits, `-` and `_`.
    fn name(&mut self, name: &Spanned<String>, field: &str) {
        let valid = !name.get_ref().is_empty()
            && name
                .get_ref()
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            let kind = ErrorKind::InvalidName {
                name: name.get_ref().clone(),
            };
            self.error(name.span(), field.to_owned(), kind);
        }
    }

    /// Checks the names of one kind of table for validity and uniqueness.
    fn unique_names<'n>(
        &mut self,
        what: &'static str,
        names: impl Iterator<Item = &'n Spanned<String>>,
    ) {
        let mut first: BTreeMap<&str, Location> = BTreeMap::new();
        for (index, name) in names.enumerate() {
            let field = format!("{what}[{index}].name");
            self.name(name, &field);
            let here = self.location(&name.span());
            if let Some(&first) = first.get(name.get_ref().as_str()) {
                let kind = ErrorKind::DuplicateName {
                    what,
                    name: name.get_ref().clone(),
                    first,
                };
                self.error(name.span(), field, kind);
            } else {
                first.insert(name.get_ref(), here);
            }
        }
    }

    /// An integer in `min..=max`, or an `OutOfRange` error.
    fn in_range(&mut self, value: &Spanned<i64>, field: String, min: i64, max: i64) -> Option<i64> {
        let found = *value.get_ref();
        if (min..=max).contains(&found) {
            return Some(found);
        }
        self.error(
            value.span(),
            field,
            ErrorKind::OutOfRange { found, min, max },
        );
        None
    }

    /// A memory size: parsed, non-zero, a page multiple, within the physical address space.
    fn size(&mut self, size: &Spanned<RawSize>, field: String) -> Option<u64> {
        let Some(bytes) = size.get_ref().bytes() else {
            let found = size.get_ref().written();
            self.error(size.span(), field, ErrorKind::InvalidSize { found });
            return None;
        };
        let kind = if bytes == 0 {
            ErrorKind::ZeroSize
        } else if bytes % PAGE_SIZE != 0 {
            ErrorKind::UnalignedSize { size: bytes }
        } else if bytes > 1 << self.pa_bits {
            ErrorKind::TooLarge {
                value: bytes,
                pa_bits: self.pa_bits,
            }
        } else {
            return Some(bytes);
        };
        self.error(size.span(), field, kind);
        None
    }

    /// A file named relative to the manifest's directory, which must exist.
    fn file(&mut self, path: &Spanned<String>, field: String) -> PathBuf {
        let joined = self.dir.join(path.get_ref());
        if !joined.is_file() {
            let kind = ErrorKind::FileNotFound {
                path: joined.clone(),
            };
            self.error(path.span(), field, kind);
        }
        joined
    }

    /// A word from a closed set, or the set's default when absent.
    fn choice<T: Choice>(&mut self, raw: Option<&Spanned<String>>, field: &str) -> T {
        let Some(raw) = raw else {
            return T::default();
        };
        if let Some(choice) = choice_named(raw.get_ref()) {
            return choice;
        }
        let kind = ErrorKind::UnknownValue {
            found: raw.get_ref().clone(),
            expected: T::CHOICES
                .iter()
                .map(|(name, _)| (*name).to_owned())
                .collect(),
        };
        self.error(raw.span(), field.to_owned(), kind);
        T::default()
    }

    fn kernel(&mut self, raw: &RawKernel) -> Kernel {
        Kernel {
            selftest: self.choice(raw.selftest.as_ref(), "kernel.selftest"),
            log: self.choice(raw.log.as_ref(), "kernel.log"),
        }
    }

    fn platform(&mut self, raw: &RawPlatform) -> Platform {
        let mut requires = FeatureSet::EMPTY;
        for (index, name) in raw.requires.iter().enumerate() {
            let field = format!("platform.requires[{index}]");
            match Feature::from_name(name.get_ref()) {
                Some(feature) if requires.contains(feature) => {
                    self.error(name.span(), field, ErrorKind::DuplicateFeature { feature });
                }
                Some(feature) => requires = requires.with(feature),
                None => {
                    let found = name.get_ref().clone();
                    self.error(name.span(), field, ErrorKind::UnknownFeature { found });
                }
            }
        }
        self.requires = requires;
        let min_pa_bits = raw.min_pa_bits.as_ref().and_then(|bits| {
            let valid = PA_BITS
                .iter()
                .find(|&&valid| i64::from(valid) == *bits.get_ref());
            if valid.is_none() {
                let kind = ErrorKind::InvalidPaBits {
                    found: *bits.get_ref(),
                };
                self.error(bits.span(), "platform.min_pa_bits".to_owned(), kind);
            }
            valid.copied()
        });
        self.pa_bits = min_pa_bits.unwrap_or(DEFAULT_PA_BITS);
        let min_cpus = raw.min_cpus.as_ref().map_or(1, |cpus| {
            let field = "platform.min_cpus".to_owned();
            self.in_range(cpus, field, 1, i64::from(u8::MAX))
                .map_or(1, |cpus| cpus as u8)
        });
        Platform {
            board: self.choice(raw.board.as_ref(), "platform.board"),
            requires,
            min_pa_bits,
            min_cpus,
        }
    }

    fn devices(&mut self, raw: &[Spanned<Table<RawDevice>>]) -> Vec<Device> {
        self.unique_names("device", raw.iter().map(|device| &device.get_ref().name));
        let mut devices = Vec::new();
        for (index, spanned) in raw.iter().enumerate() {
            let device = spanned.get_ref();
            self.devices
                .entry(device.name.get_ref().clone())
                .or_insert(device.cacheable);
            let locator = match (&device.path, &device.compatible) {
                (Some(path), None) => DeviceLocator::Path(path.get_ref().clone()),
                (None, Some(compatible)) => DeviceLocator::Compatible(compatible.get_ref().clone()),
                _ => {
                    let field = format!("device[{index}]");
                    self.error(spanned.span(), field, ErrorKind::NotOneLocator);
                    continue;
                }
            };
            devices.push(Device {
                name: device.name.get_ref().clone(),
                locator,
                cacheable: device.cacheable,
            });
        }
        devices
    }

    fn carveouts(&mut self, raw: &[Spanned<Table<RawCarveout>>]) -> Vec<Carveout> {
        self.unique_names(
            "carveout",
            raw.iter().map(|carveout| &carveout.get_ref().name),
        );
        let mut carveouts: Vec<(Carveout, Location)> = Vec::new();
        for (index, spanned) in raw.iter().enumerate() {
            let carveout = spanned.get_ref();
            self.carveouts
                .entry(carveout.name.get_ref().clone())
                .or_insert(carveout.cacheable_pfnmap);
            let base = self.carveout_base(&carveout.base, index);
            let size = self.size(&carveout.size, format!("carveout[{index}].size"));
            let (Some(base), Some(size)) = (base, size) else {
                continue;
            };
            let end = base.saturating_add(size);
            if end > 1 << self.pa_bits {
                let kind = ErrorKind::RegionOutOfRange {
                    end,
                    pa_bits: self.pa_bits,
                };
                self.error(
                    carveout.size.span(),
                    format!("carveout[{index}].size"),
                    kind,
                );
                continue;
            }
            let overlapped = carveouts
                .iter()
                .find(|(other, _)| base < other.base + other.size && other.base < end);
            if let Some((other, other_location)) = overlapped {
                let kind = ErrorKind::Overlap {
                    other: other.name.clone(),
                    other_location: *other_location,
                };
                self.error(
                    carveout.base.span(),
                    format!("carveout[{index}].base"),
                    kind,
                );
            }
            let built = Carveout {
                name: carveout.name.get_ref().clone(),
                base,
                size,
                cacheable_pfnmap: carveout.cacheable_pfnmap,
            };
            carveouts.push((built, self.location(&carveout.base.span())));
        }
        carveouts
            .into_iter()
            .map(|(carveout, _)| carveout)
            .collect()
    }

    fn carveout_base(&mut self, base: &Spanned<i64>, index: usize) -> Option<u64> {
        let field = format!("carveout[{index}].base");
        let Ok(address) = u64::try_from(*base.get_ref()) else {
            let kind = ErrorKind::NegativeAddress {
                found: *base.get_ref(),
            };
            self.error(base.span(), field, kind);
            return None;
        };
        if address % PAGE_SIZE != 0 {
            let kind = ErrorKind::UnalignedAddress { address };
            self.error(base.span(), field, kind);
            return None;
        }
        Some(address)
    }

    fn services(&mut self, raw: &[Spanned<Table<RawService>>]) -> Vec<Service> {
        self.unique_names("service", raw.iter().map(|service| &service.get_ref().name));
        raw.iter()
            .enumerate()
            .map(|(index, service)| self.service(service.get_ref(), index))
            .collect()
    }

    fn service(&mut self, raw: &RawService, index: usize) -> Service {
        let prefix = format!("service[{index}]");
        let crate_ref = self.crate_ref(&raw.crate_ref, format!("{prefix}.crate"));
        let priority = self
            .in_range(&raw.priority, format!("{prefix}.priority"), 0, 255)
            .unwrap_or(0) as u8;
        let memory = self.size(&raw.memory, format!("{prefix}.memory"));
        let stack = raw.stack.as_ref().map_or(Some(DEFAULT_STACK), |stack| {
            self.size(stack, format!("{prefix}.stack"))
        });
        let caps = raw
            .caps
            .iter()
            .enumerate()
            .filter_map(|(cap_index, grant)| {
                let field = format!("{prefix}.caps[{cap_index}]");
                self.grant(grant, field, raw.name.get_ref())
            })
            .collect();
        Service {
            name: raw.name.get_ref().clone(),
            crate_ref,
            priority,
            memory: memory.unwrap_or(0),
            stack: stack.unwrap_or(0),
            start: raw.start,
            caps,
        }
    }

    /// A crate path (containing `/` or starting with `.`), which must hold a `Cargo.toml`, or a
    /// workspace package name.
    fn crate_ref(&mut self, raw: &Spanned<String>, field: String) -> CrateRef {
        let text = raw.get_ref();
        if text.contains('/') || text.starts_with('.') {
            let dir = self.dir.join(text);
            let cargo_toml = dir.join("Cargo.toml");
            if !cargo_toml.is_file() {
                let kind = ErrorKind::FileNotFound { path: cargo_toml };
                self.error(raw.span(), field, kind);
            }
            CrateRef::Path(dir)
        } else {
            self.name(raw, &field);
            CrateRef::Name(text.clone())
        }
    }

    /// One capability grant of service `holder`.
    fn grant(
        &mut self,
        grant: &Spanned<Table<RawGrant>>,
        field: String,
        holder: &str,
    ) -> Option<Capability> {
        let raw = grant.get_ref();
        let present: Vec<String> = [
            ("endpoint", raw.endpoint.is_some()),
            ("device", raw.device.is_some()),
            ("irq", raw.irq.is_some()),
            ("untyped", raw.untyped.is_some()),
            ("carveout", raw.carveout.is_some()),
        ]
        .into_iter()
        .filter(|(_, present)| *present)
        .map(|(kind, _)| kind.to_owned())
        .collect();
        if present.len() != 1 {
            let kind = ErrorKind::NotOneGrant { found: present };
            self.error(grant.span(), field, kind);
            return None;
        }
        if let Some(service) = &raw.endpoint {
            let field = format!("{field}.endpoint");
            return self.known_service(service, field).map(Capability::Endpoint);
        }
        if let Some(device) = &raw.device {
            let field = format!("{field}.device");
            let device = self.known_device(device, field.clone())?;
            let span = raw.device.as_ref().map_or(0..0, Spanned::span);
            self.hold(RegionKind::Device, &device, holder, span, field);
            return Some(Capability::Device(device));
        }
        if let Some(irq) = &raw.irq {
            return self
                .irq(irq, format!("{field}.irq"), holder)
                .map(Capability::Irq);
        }
        if let Some(size) = &raw.untyped {
            let field = format!("{field}.untyped");
            return self.size(size, field).map(Capability::Untyped);
        }
        let carveout = raw.carveout.as_ref()?;
        let field = format!("{field}.carveout");
        let name = self.known_carveout(carveout, field.clone())?;
        self.hold(RegionKind::Carveout, &name, holder, carveout.span(), field);
        Some(Capability::Carveout(name))
    }

    /// Records that service `holder` is granted the device or carve-out `name`, or refuses a
    /// second holder: the kernel gives a region to one service (the device broker, which maps
    /// its passthroughs), so a second grant would silently give it nothing.
    fn hold(
        &mut self,
        kind: RegionKind,
        name: &str,
        holder: &str,
        span: Range<usize>,
        field: String,
    ) {
        let key = (kind, name.to_owned());
        if let Some((other, other_location)) = self.region_holders.get(&key) {
            let error = ErrorKind::HeldTwice {
                what: kind.what(),
                name: name.to_owned(),
                service: holder.to_owned(),
                other_service: other.clone(),
                other_location: *other_location,
            };
            self.error(span, field, error);
            return;
        }
        let location = self.location(&span);
        self.region_holders
            .insert(key, (holder.to_owned(), location));
    }

    /// Records that the device or carve-out `name` is passed through to `guest`, or refuses a
    /// second passthrough: the image names one guest per region (`capvisor_image::devices`), so
    /// a second would silently replace the first. Returns whether it was the first.
    fn pass_through(
        &mut self,
        kind: RegionKind,
        name: &str,
        guest: &str,
        span: Range<usize>,
        field: String,
    ) -> bool {
        let key = (kind, name.to_owned());
        if let Some((other_guest, other_location)) = self.passed_through.get(&key) {
            let error = ErrorKind::PassedThroughTwice {
                what: kind.what(),
                name: name.to_owned(),
                other_guest: other_guest.clone(),
                other_location: *other_location,
            };
            self.error(span, field, error);
            return false;
        }
        let location = self.location(&span);
        self.passed_through
            .insert(key, (guest.to_owned(), location));
        true
    }

    /// Refuses a passthrough of a device or carve-out that no service holds: the holder (the
    /// device broker) is what maps a passthrough into its guest, so without one the guest would
    /// silently go without it.
    fn held_for_passthrough(
        &mut self,
        kind: RegionKind,
        name: &str,
        guest: &str,
        span: Range<usize>,
        field: String,
    ) {
        if self.region_holders.contains_key(&(kind, name.to_owned())) {
            return;
        }
        let error = ErrorKind::PassthroughNotHeld {
            what: kind.what(),
            grant_key: kind.grant_key(),
            name: name.to_owned(),
            guest: guest.to_owned(),
        };
        self.error(span, field, error);
    }

    fn irq(&mut self, irq: &Spanned<i64>, field: String, holder: &str) -> Option<u32> {
        let (min, max) = SPI_RANGE;
        let number = self.in_range(irq, field.clone(), min.into(), max.into())? as u32;
        if let Some(other) = self.irq_holders.get(&number) {
            let kind = ErrorKind::IrqTwice {
                irq: number,
                other: other.clone(),
            };
            self.error(irq.span(), field, kind);
            return None;
        }
        self.irq_holders.insert(number, holder.to_owned());
        Some(number)
    }

    fn known_service(&mut self, name: &Spanned<String>, field: String) -> Option<String> {
        if self.services.contains(name.get_ref()) {
            return Some(name.get_ref().clone());
        }
        let kind = ErrorKind::UnknownService {
            name: name.get_ref().clone(),
            known: self.services.clone(),
        };
        self.error(name.span(), field, kind);
        None
    }

    fn known_device(&mut self, name: &Spanned<String>, field: String) -> Option<String> {
        if self.devices.contains_key(name.get_ref()) {
            return Some(name.get_ref().clone());
        }
        let kind = ErrorKind::UnknownDevice {
            name: name.get_ref().clone(),
            known: self.devices.keys().cloned().collect(),
        };
        self.error(name.span(), field, kind);
        None
    }

    fn known_carveout(&mut self, name: &Spanned<String>, field: String) -> Option<String> {
        if self.carveouts.contains_key(name.get_ref()) {
            return Some(name.get_ref().clone());
        }
        let kind = ErrorKind::UnknownCarveout {
            name: name.get_ref().clone(),
            known: self.carveouts.keys().cloned().collect(),
        };
        self.error(name.span(), field, kind);
        None
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

    fn guests(&mut self, raw: &[Spanned<Table<RawGuest>>]) -> Vec<Guest> {
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
        let cmdline = raw.cmdline.as_ref().map_or_else(String::new, |cmdline| {
            let field = format!("{prefix}.cmdline");
            if let Err(error) = capvisor_image::check_cmdline(cmdline.get_ref().as_bytes()) {
                let reason = error.to_string();
                self.error(
                    cmdline.span(),
                    field.clone(),
                    ErrorKind::InvalidCmdline { reason },
                );
            }
            if dtb.is_some() {
                self.error(cmdline.span(), field, ErrorKind::NeedsGeneratedDeviceTree);
            }
            cmdline.get_ref().clone()
        });
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
        }
    }

    /// One device passed through to guest `guest`.
    fn passthrough(
        &mut self,
        raw: &RawPassthrough,
        field: String,
        guest: &str,
    ) -> Option<Passthrough> {
        let memtype: MemType = self.choice(raw.memtype.as_ref(), &format!("{field}.memtype"));
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
        let cacheable = memtype == MemType::NormalWb;
        let optional = self.optional(raw.optional.as_ref(), cacheable, &field);
        if cacheable {
            let span = raw.memtype.as_ref().map_or(0..0, Spanned::span);
            let field = format!("{field}.memtype");
            if self.devices.get(&device) != Some(&true) {
                let kind = ErrorKind::DeviceNotCacheable {
                    device: device.clone(),
                };
                self.error(span, field, kind);
            } else if !optional {
                self.cacheable_needs_features(span, field);
            }
        }
        Some(Passthrough {
            device,
            memtype,
            irqs: raw.irqs,
            optional,
        })
    }
}

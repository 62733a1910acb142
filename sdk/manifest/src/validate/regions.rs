//! Devices and carve-outs: each declared once, held by one service (the device broker, which
//! maps it) and passed through to one guest at most.

use std::ops::Range;

use toml::Spanned;

use crate::error::{ErrorKind, Location};
use crate::model::{Carveout, Device, DeviceLocator, PAGE_SIZE};
use crate::schema::{RawCarveout, RawDevice, Table};

use super::{Checker, DeclaredDevice};

/// A device or a carve-out: the two kinds of region a service holds and a guest is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum RegionKind {
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

impl Checker<'_> {
    pub(super) fn devices(&mut self, raw: &[Spanned<Table<RawDevice>>]) -> Vec<Device> {
        self.unique_names("device", raw.iter().map(|device| &device.get_ref().name));
        let mut devices = Vec::new();
        for (index, spanned) in raw.iter().enumerate() {
            let device = spanned.get_ref();
            self.devices
                .entry(device.name.get_ref().clone())
                .or_insert(DeclaredDevice {
                    cacheable: device.cacheable,
                    compatible: device.compatible.as_ref().map(|c| c.get_ref().clone()),
                });
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
                line: self.line(&device.name.span()),
            });
        }
        devices
    }

    pub(super) fn carveouts(&mut self, raw: &[Spanned<Table<RawCarveout>>]) -> Vec<Carveout> {
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
                line: self.line(&carveout.name.span()),
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

    /// Records that service `holder` is granted the device or carve-out `name`, or refuses a
    /// second holder: the kernel gives a region to one service (the device broker, which maps
    /// its passthroughs), so a second grant would silently give it nothing.
    pub(super) fn hold(
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
    pub(super) fn pass_through(
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
    pub(super) fn held_for_passthrough(
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
}

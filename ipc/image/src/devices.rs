//! The manifest's devices and carve-outs, with who holds them, as the kernel reads them at boot:
//! the payload entry of kind `Manifest` named [`DEVICES_ENTRY`] holds one [`DeviceRecord`] per
//! `[[device]]` and `[[carveout]]` (`docs/manifest.md`).
//!
//! The kernel finds each device in the device tree (by path or `compatible`), takes each
//! carve-out out of its RAM map, and gives the region as device untyped memory to the service
//! whose manifest holds it (`caps = [{ device = "…" }]` / `{ carveout = "…" }`: the device broker),
//! with its memory attributes: uncached (Device-nGnRE; Normal non-cacheable too when the
//! passthrough asks for `normal-nc`), or cacheable for a `cacheable` device or a
//! `cacheable_pfnmap` carve-out. When a guest passes the region through, the holder also gets that
//! guest's `Vm` capability to map it, and the record says with which memory type.

use crate::nul_padded as text;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The name of the devices entry.
pub const DEVICES_ENTRY: &str = "devices";
/// The most records an image may carry.
pub const MAX_DEVICES: usize = 16;
/// `DeviceRecord::index` value for "none" (no service holds it, no guest has it).
pub const NONE: u32 = u32::MAX;

/// `flags`: the locator is a `compatible` string (else a node path).
pub const FLAG_COMPATIBLE: u32 = 1 << 0;
/// `flags`: the region may be mapped cacheable (a `cacheable` device, a cacheable PFNMAP).
pub const FLAG_CACHEABLE: u32 = 1 << 1;
/// `flags`: a carve-out (`base` and `size` say where; there is no locator).
pub const FLAG_CARVEOUT: u32 = 1 << 2;
/// `flags`: a carve-out that is ordinary RAM withheld from the kernel (not a PFNMAP).
pub const FLAG_RAM: u32 = 1 << 3;
/// `flags`: the guest's passthrough is optional: when the platform refuses it (e.g. a cacheable
/// mapping without FEAT_S2FWB and CTR_EL0.DIC) the system boots without it, and the refusal is
/// reported, naming what is missing.
pub const FLAG_OPTIONAL: u32 = 1 << 4;
/// `flags`: the guest's passthrough takes the device's interrupts (its device-tree node's SPIs,
/// forwarded to the guest's vCPU 0 as the same virtual INTIDs).
pub const FLAG_IRQS: u32 = 1 << 5;
/// `flags`: the manifest acknowledges that the guest's passthrough of this device can DMA to
/// all physical memory (`unprotected_dma = true`): capvisor drives no IOMMU, so nothing confines
/// a bus master's accesses. `capvisor build` refuses a passthrough of a device that may master
/// the bus without it ([`cannot_master_bus`]).
pub const FLAG_UNPROTECTED_DMA: u32 = 1 << 6;

/// The device-tree `compatible` strings of devices that cannot master the bus, so cannot DMA:
/// every other device is taken to be DMA-capable. Each is an AMBA APB peripheral that only
/// answers accesses (its TRM lists no bus-master interface; the PL011's DMA interface only
/// signals requests to a separate DMA controller): the PL011 UART (ARM DDI 0183), the PL031
/// real-time clock (ARM DDI 0224) and the PL061 GPIO controller (ARM DDI 0190).
pub const NO_BUS_MASTER: [&str; 3] = ["arm,pl011", "arm,pl031", "arm,pl061"];

/// Whether a device whose device-tree node's `compatible` list is `compatible` (its strings, or
/// just the one the manifest names) cannot master the bus: one of them is in [`NO_BUS_MASTER`].
/// A device located any other way (by path, where the SDK does not know the node) is taken to
/// be DMA-capable.
#[must_use]
pub fn cannot_master_bus<'a>(mut compatible: impl Iterator<Item = &'a str>) -> bool {
    compatible.any(|c| NO_BUS_MASTER.contains(&c))
}

/// Passthrough memory types (`memtype`), as the manifest spells them.
pub const MEMTYPE_DEVICE_NGNRE: u32 = 0;
/// `normal-nc`.
pub const MEMTYPE_NORMAL_NC: u32 = 1;
/// `normal-wb`.
pub const MEMTYPE_NORMAL_WB: u32 = 2;

/// One device or carve-out. Little-endian, 144 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct DeviceRecord {
    /// The manifest name, NUL padded.
    pub name: [u8; 32],
    /// The device-tree node path or `compatible` string, NUL padded (empty for a carve-out).
    pub locator: [u8; 80],
    /// `FLAG_*` bits.
    pub flags: u32,
    /// The service that holds it (image order), or [`NONE`].
    pub service: u32,
    /// The guest it is passed through to (image order of `Guest` entries), or [`NONE`].
    pub guest: u32,
    /// The passthrough's memory type (`MEMTYPE_*`).
    pub memtype: u32,
    /// A carve-out's physical base (0 for a device).
    pub base: u64,
    /// A carve-out's size (0 for a device).
    pub size: u64,
}

const _: () = assert!(size_of::<DeviceRecord>() == 144);

/// Why a devices entry was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceError {
    /// Not a whole number of records, or more than [`MAX_DEVICES`].
    Length,
    /// Record `index` has unknown flag bits, an unknown memory type, a service index beyond the
    /// image's services, a carve-out that is empty, unaligned or wraps, or a name or locator that
    /// is not UTF-8.
    Record(usize),
}

impl core::fmt::Display for DeviceError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Length => f.write_str("the devices entry is not a whole number of records"),
            Self::Record(index) => write!(f, "device record {index} is malformed"),
        }
    }
}

impl DeviceRecord {
    /// The name.
    #[must_use]
    pub fn name(&self) -> &str {
        text(&self.name).unwrap_or("?")
    }

    /// The locator.
    #[must_use]
    pub fn locator(&self) -> &str {
        text(&self.locator).unwrap_or("")
    }

    /// Whether it is a carve-out.
    #[must_use]
    pub const fn is_carveout(&self) -> bool {
        self.flags & FLAG_CARVEOUT != 0
    }

    /// Whether it may be mapped cacheable.
    #[must_use]
    pub const fn cacheable(&self) -> bool {
        self.flags & FLAG_CACHEABLE != 0
    }

    fn check(&self, services: usize) -> bool {
        let known = FLAG_COMPATIBLE
            | FLAG_CACHEABLE
            | FLAG_CARVEOUT
            | FLAG_RAM
            | FLAG_OPTIONAL
            | FLAG_IRQS
            | FLAG_UNPROTECTED_DMA;
        let service_ok = self.service == NONE || (self.service as usize) < services;
        let region_ok = if self.is_carveout() {
            self.size != 0
                && (self.base | self.size) & 0xfff == 0
                && self.base.checked_add(self.size).is_some()
        } else {
            self.base == 0 && self.size == 0 && !self.locator().is_empty()
        };
        // A carve-out is memory, not a bus master: it has no DMA to acknowledge.
        let dma_ok = !self.is_carveout() || self.flags & FLAG_UNPROTECTED_DMA == 0;
        self.flags & !known == 0
            && dma_ok
            && self.memtype <= MEMTYPE_NORMAL_WB
            && service_ok
            && region_ok
            && text(&self.name).is_some()
            && text(&self.locator).is_some()
    }
}

/// Decodes and checks a devices entry for an image of `services` services.
///
/// # Errors
/// [`DeviceError`] for a malformed entry.
pub fn decode(bytes: &[u8], services: usize) -> Result<&[DeviceRecord], DeviceError> {
    let records = <[DeviceRecord]>::ref_from_bytes(bytes).map_err(|_| DeviceError::Length)?;
    if records.len() > MAX_DEVICES {
        return Err(DeviceError::Length);
    }
    match records.iter().position(|r| !r.check(services)) {
        Some(index) => Err(DeviceError::Record(index)),
        None => Ok(records),
    }
}

/// A record with its text fields filled (for the SDK and tests).
#[must_use]
pub fn record(name: &str, locator: &str) -> DeviceRecord {
    let mut record = DeviceRecord::new_zeroed();
    let n = name.len().min(record.name.len());
    record.name[..n].copy_from_slice(&name.as_bytes()[..n]);
    let n = locator.len().min(record.locator.len());
    record.locator[..n].copy_from_slice(&locator.as_bytes()[..n]);
    record.service = NONE;
    record.guest = NONE;
    record
}

use zerocopy::FromZeros;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_decode_and_bad_ones_are_refused() {
        let mut rtc = record("rtc", "arm,pl031");
        rtc.flags = FLAG_COMPATIBLE;
        rtc.service = 2;
        rtc.guest = 0;
        let mut carve = record("coherent", "");
        carve.flags = FLAG_CARVEOUT | FLAG_CACHEABLE | FLAG_OPTIONAL;
        carve.base = 0x7000_0000;
        carve.size = 0x20_0000;
        carve.service = 2;
        carve.memtype = MEMTYPE_NORMAL_WB;
        let records = [rtc, carve];
        let decoded = decode(records.as_bytes(), 3).unwrap();
        assert_eq!(decoded, &records);
        assert_eq!(decoded[0].locator(), "arm,pl031");
        assert!(decoded[1].is_carveout() && decoded[1].cacheable());
        // A service index beyond the image, an unaligned carve-out, a device without a
        // locator, unknown flags, a truncated entry: refused.
        assert_eq!(decode(records.as_bytes(), 2), Err(DeviceError::Record(0)));
        let mut bad = records;
        bad[1].base += 1;
        assert_eq!(decode(bad.as_bytes(), 3), Err(DeviceError::Record(1)));
        let mut bad = records;
        bad[0].locator = [0; 80];
        assert_eq!(decode(bad.as_bytes(), 3), Err(DeviceError::Record(0)));
        let mut bad = records;
        bad[0].flags |= 1 << 9;
        assert_eq!(decode(bad.as_bytes(), 3), Err(DeviceError::Record(0)));
        assert_eq!(
            decode(&records.as_bytes()[1..], 3),
            Err(DeviceError::Length)
        );
        // The DMA acknowledgement is a device's; a carve-out with it is refused.
        let mut acknowledged = records;
        acknowledged[0].flags |= FLAG_UNPROTECTED_DMA;
        assert!(decode(acknowledged.as_bytes(), 3).is_ok());
        acknowledged[1].flags |= FLAG_UNPROTECTED_DMA;
        assert_eq!(
            decode(acknowledged.as_bytes(), 3),
            Err(DeviceError::Record(1))
        );
    }

    #[test]
    fn only_the_listed_bus_slaves_cannot_master_the_bus() {
        for compatible in NO_BUS_MASTER {
            assert!(cannot_master_bus([compatible].into_iter()));
        }
        // A node's list: any listed string is enough ("arm,pl031", "arm,primecell").
        assert!(cannot_master_bus(
            ["arm,primecell", "arm,pl031"].into_iter()
        ));
        for compatible in ["virtio,mmio", "arm,primecell", "arm,pl330", "", "ARM,PL031"] {
            assert!(!cannot_master_bus([compatible].into_iter()), "{compatible}");
        }
        assert!(!cannot_master_bus(core::iter::empty()));
    }
}

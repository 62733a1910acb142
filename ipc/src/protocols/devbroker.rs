//! The device broker's protocol: list device regions, grant a region with a memory type, grant an IRQ.
//!
//! The broker owns the device regions and IRQs of the device tree and applies the passthrough policy
//! (DESIGN.md rules 3–6): a grant's memory type must be one the region allows, a cacheable grant of
//! device memory needs FEAT_S2FWB and CTR_EL0.DIC, and a private (copy-on-write) grant of device
//! memory is refused. Granted capabilities travel in the reply's capability slots; the payload names
//! them with [`Transferred`] indices.
//!
//! Version 2.0: `grant_region` takes a [`Sharing`] (1.0 had none, so its request layout changed).
//! Version 3.0: [`BrokerError::CacheableDeviceUnsupported`] is 16, the kernel's number (it was 4).

use serde::{Deserialize, Serialize};

use crate::cap::{DeviceFrame, IrqHandler};
use crate::protocol::{ProtocolId, Transferred, Version};
use crate::types::{Intid, MemoryType, PhysAddr, RegionId};

/// Regions returned by one [`Request::ListRegions`] (the payload must fit the message registers).
pub const REGIONS_PER_PAGE: usize = 8;

crate::stable_codes! {
    /// The device broker's errors.
    ///
    /// # Errors
    /// Each variant is one reason the broker refused.
    pub enum BrokerError: u16 {
        /// No such region.
        NoSuchRegion = 1,
        /// The region is already granted to another component.
        AlreadyGranted = 2,
        /// The memory type is not one the region allows (e.g. non-cacheable for a region its owner maps
        /// cacheable, or cacheable for plain MMIO).
        MemoryTypeRefused = 3,
        /// A cacheable device mapping needs FEAT_S2FWB and CTR_EL0.DIC, which this CPU lacks
        /// (`memory::CacheFeatures::cacheable_device`). The kernel's number for the same refusal,
        /// so it has one number wherever it is reported (4 before version 3.0).
        CacheableDeviceUnsupported = crate::abi::KernelError::CacheableDeviceUnsupported.code(),
        /// The caller's manifest entry does not include this device.
        NotPermitted = 5,
        /// No such interrupt, or it is not a passthrough interrupt.
        NoSuchIrq = 6,
        /// The region or IRQ is not granted to the caller.
        NotGranted = 7,
        /// A private (copy-on-write) mapping of device memory was asked for: device memory is only
        /// ever shared (DESIGN.md rule 6).
        PrivateDeviceMapping = 8,
    }
}

/// Whether a grant is the device memory itself or a private copy of it (DESIGN.md rule 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Sharing {
    /// The device memory itself, shared with the device: the only kind a broker grants.
    Shared,
    /// A private, copy-on-write mapping: always refused for device memory
    /// ([`BrokerError::PrivateDeviceMapping`]).
    Private,
}

/// What a region is and which memory types a grant of it may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionInfo {
    /// The broker's number for it.
    pub id: RegionId,
    /// Its physical base.
    pub base: PhysAddr,
    /// Its size in bytes.
    pub size: u64,
    /// Its owner maps it cacheable (e.g. coherent accelerator memory): only a write-back grant is possible.
    pub cacheable: bool,
    /// Normal non-cacheable is allowed as well as Device-nGnRE.
    pub allows_uncached: bool,
}

/// One page of the region list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionPage {
    /// Up to [`REGIONS_PER_PAGE`] regions.
    pub regions: heapless::Vec<RegionInfo, REGIONS_PER_PAGE>,
    /// The `start` for the next page, if there is one.
    pub next: Option<u32>,
}

/// A granted region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionGrant {
    /// The device-frame capability, in the reply's capability slots.
    pub frame: Transferred<DeviceFrame>,
    /// The memory type it carries.
    pub memory_type: MemoryType,
    /// Its size in bytes.
    pub size: u64,
}

crate::protocol! {
    /// The device broker's protocol.
    protocol DevBroker {
        id: ProtocolId::DEVBROKER,
        version: Version::new(3, 0),
        error: BrokerError,
    }
    /// Lists the regions the caller may ask for, from index `start`.
    fn list_regions(start: u32) -> RegionPage as ListRegions;
    /// Grants `region` mapped with `memory_type`, shared or (always refused) private.
    fn grant_region(region: RegionId, memory_type: MemoryType, sharing: Sharing) -> RegionGrant as GrantRegion;
    /// Grants the handler capability of interrupt `intid`.
    fn grant_irq(intid: Intid) -> Transferred<IrqHandler> as GrantIrq;
    /// Returns a region (the broker revokes the capability and every mapping derived from it).
    fn release_region(region: RegionId) -> () as ReleaseRegion;
}

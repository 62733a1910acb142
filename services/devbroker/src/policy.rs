//! The device broker's policy, apart from the kernel: which memory type a device region may be
//! mapped with, in frames of which size, and the passthrough grants the manifest asks for. The
//! runtime's typed [`Kernel`] performs the effects (the system calls on the target,
//! `capvisor_rt::fake::FakeKernel` in the tests), so every rule is checked on the host against the
//! same model of the kernel as the other services'.
//!
//! The rules (`DESIGN.md`, stage-2 memory attributes), in the order [`decide`] applies them:
//! - rule 6: a private (copy-on-write) mapping of device memory is refused: device memory is
//!   only ever shared, the guest's mapping is the device itself;
//! - rule 7: nothing is mapped executable; an instruction fetch from a device mapping faults
//!   and the guest's VMM reports it to the guest as an abort;
//! - rule 5: a region its owner maps cacheable is never mapped non-cacheable;
//! - a write-back mapping only of a region declared cacheable; Normal non-cacheable only where
//!   the grant allows it (rule 3; the region's untyped carries that permission too);
//! - rule 4: a cacheable mapping only if the platform has FEAT_S2FWB **and** CTR_EL0.DIC; the
//!   refusal names the missing feature(s);
//! - rule 8: non-cacheable device memory is mapped in 4 KiB pages only, never blocks; a
//!   cacheable region mapped write-back uses 2 MiB blocks where base and size allow.
//!
//! Guest passthroughs are mapped at IPA = PA, read/write, before the guests run (the broker's
//! priority is above the VMMs'). An optional passthrough that the platform refuses is reported
//! and the system goes on without it.
//!
//! DMA: capvisor drives no IOMMU, so a device that can master the bus, once a guest has it, can
//! read and write all physical memory. The broker reads each passed-through device's
//! `compatible` in the platform device tree: one not known to be unable to master the bus
//! (`capvisor_image::devices::NO_BUS_MASTER`) is granted only when the image accepts that
//! (`unprotected_dma`, which `capvisor build` requires), and then the boot log says so in one
//! line ([`Outcome::unprotected_dma`]).

use core::fmt;

use capvisor_image::devices;
use capvisor_ipc::abi::KernelError;
use capvisor_ipc::cap::{Cap, DeviceFrame, Rights, Untyped, Vm};
pub use capvisor_ipc::memory::{CacheFeatures, MissingFeatures};
use capvisor_ipc::protocol::Context;
pub use capvisor_ipc::protocols::devbroker::Sharing;
use capvisor_ipc::protocols::devbroker::{
    BrokerError, Handler, REGIONS_PER_PAGE, RegionGrant, RegionInfo, RegionPage,
};
use capvisor_ipc::types::{Intid, MemoryType, PhysAddr, RegionId};
use capvisor_rt::kernel::{Kernel, Space};

/// A 2 MiB block.
pub const BLOCK: u64 = 1 << 21;
/// Regions one broker holds (the boot-info page's limit).
pub const MAX_REGIONS: usize = capvisor_ipc::bootinfo::MAX_DEVICES;
/// Why a grant was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Rule 4: a cacheable mapping of device memory without these features.
    MissingFeatures(MissingFeatures),
    /// Rule 5: a region its owner maps cacheable, asked non-cacheable.
    CacheableAsUncached(MemoryType),
    /// Write-back asked of a region that is not declared cacheable.
    NotCacheable,
    /// Normal non-cacheable asked of a region whose grant allows Device-nGnRE only.
    UncachedNormalNotAllowed,
    /// Rule 6: a private (copy-on-write) mapping of device memory.
    PrivateDeviceMapping,
    /// Rule 7: an executable mapping of device memory.
    Executable,
    /// The device may master the bus, and the image does not accept that the guest can make it
    /// DMA to all physical memory (no `unprotected_dma`; `capvisor build` refuses such a
    /// manifest, so the image was not made by it).
    UnacknowledgedDma,
    /// The region does not fit the broker's free capability slots.
    NoSlots,
    /// The kernel refused (the broker's rules let it through; the kernel's did not).
    Kernel(KernelError),
}

impl Refusal {
    /// The protocol's error for it.
    #[must_use]
    pub const fn broker_error(self) -> BrokerError {
        match self {
            Self::MissingFeatures(_) => BrokerError::CacheableDeviceUnsupported,
            Self::PrivateDeviceMapping => BrokerError::PrivateDeviceMapping,
            Self::CacheableAsUncached(_)
            | Self::NotCacheable
            | Self::UncachedNormalNotAllowed
            | Self::Executable => BrokerError::MemoryTypeRefused,
            Self::UnacknowledgedDma | Self::NoSlots | Self::Kernel(_) => BrokerError::NotPermitted,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingFeatures(missing) => write!(f, "the platform lacks {missing}"),
            Self::CacheableAsUncached(asked) => write!(
                f,
                "the region is mapped cacheable by its owner and is never mapped {} \
                 (mismatched attributes)",
                asked.name()
            ),
            Self::NotCacheable => {
                f.write_str("the region is not declared cacheable; it is mapped uncached only")
            }
            Self::UncachedNormalNotAllowed => {
                f.write_str("the grant allows Device-nGnRE only, not Normal non-cacheable")
            }
            Self::PrivateDeviceMapping => {
                f.write_str("a private (copy-on-write) mapping of device memory is refused")
            }
            Self::Executable => f.write_str("device memory is never mapped executable"),
            Self::UnacknowledgedDma => f.write_str(
                "the device may master the bus, so DMA to all physical memory (no IOMMU), and the \
                 image does not accept that (no unprotected_dma)",
            ),
            Self::NoSlots => f.write_str("the broker has no free capability slots left for it"),
            Self::Kernel(error) => write!(f, "the kernel refused: {error:?}"),
        }
    }
}

/// The memory type of a boot-info `DeviceInfo::memtype` (the image's passthrough codes,
/// [`devices`]`::MEMTYPE_*`: 0 Device-nGnRE, 1 Normal non-cacheable, 2 Normal
/// write-back); an unknown code reads as the safest, Device-nGnRE.
#[must_use]
pub const fn memtype_from_boot_info(code: u32) -> MemoryType {
    match code {
        devices::MEMTYPE_NORMAL_NC => MemoryType::NormalNonCacheable,
        devices::MEMTYPE_NORMAL_WB => MemoryType::NormalWriteBack,
        _ => MemoryType::DeviceNgnre,
    }
}

/// A guest a region is passed through to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passthrough {
    /// Its image index.
    pub guest: u32,
    /// Its name, if the broker knows it.
    pub guest_name: Option<heapless::String<32>>,
    /// Its `Vm` capability.
    pub vm: Cap<Vm>,
    /// The memory type the manifest asks for.
    pub memtype: MemoryType,
    /// The manifest marks it optional (refused on this platform: report and go on).
    pub optional: bool,
    /// The device may master the bus (the broker's own reading of its device-tree
    /// `compatible`, `capvisor_image::devices::cannot_master_bus`; never a carve-out): once the
    /// guest has it, it can DMA to all physical memory.
    pub masters_bus: bool,
    /// The image accepts that (`unprotected_dma`).
    pub unprotected_dma: bool,
}

/// A device region or carve-out the broker holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    /// Its manifest name.
    pub name: heapless::String<32>,
    /// The device untyped covering it.
    pub untyped: Cap<Untyped>,
    /// Physical base.
    pub base: u64,
    /// Size in bytes (a page multiple).
    pub size: u64,
    /// Its owner maps it cacheable (a cacheable device or PFNMAP carve-out).
    pub cacheable: bool,
    /// A carve-out (not a device-tree device).
    pub carveout: bool,
    /// Normal non-cacheable is allowed besides Device-nGnRE.
    pub allows_uncached: bool,
    /// The guest the manifest passes it through to.
    pub passthrough: Option<Passthrough>,
}

/// How a region is mapped: `count` frames of `1 << bits` bytes, with `memtype`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramePlan {
    /// The memory type.
    pub memtype: MemoryType,
    /// log2 of the frame size: 12, or 21 for a cacheable region where base and size allow.
    pub bits: u32,
    /// How many frames.
    pub count: u64,
}

/// Decides whether `region` may be mapped with `asked`, and in which frames.
///
/// # Errors
/// The first rule (module doc) the request breaks.
pub fn decide(
    region: &Region,
    asked: MemoryType,
    sharing: Sharing,
    execute: bool,
    features: CacheFeatures,
) -> Result<FramePlan, Refusal> {
    if sharing == Sharing::Private {
        return Err(Refusal::PrivateDeviceMapping);
    }
    if execute {
        return Err(Refusal::Executable);
    }
    let cacheable = asked == MemoryType::NormalWriteBack;
    if region.cacheable && !cacheable {
        return Err(Refusal::CacheableAsUncached(asked));
    }
    if cacheable && !region.cacheable {
        return Err(Refusal::NotCacheable);
    }
    if asked == MemoryType::NormalNonCacheable && !region.allows_uncached {
        return Err(Refusal::UncachedNormalNotAllowed);
    }
    if cacheable {
        features
            .cacheable_device()
            .map_err(Refusal::MissingFeatures)?;
    }
    // Rule 8: only a cacheable mapping may use blocks.
    let blocks = cacheable && (region.base | region.size) & (BLOCK - 1) == 0;
    let bits = if blocks { 21 } else { 12 };
    Ok(FramePlan {
        memtype: asked,
        bits,
        count: region.size >> bits,
    })
}

/// The outcome of one passthrough grant, to report (its `Display` is the console line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome<'a> {
    /// The region.
    pub region: &'a Region,
    /// What it was passed through to.
    pub passthrough: &'a Passthrough,
    /// The frames mapped, or why not.
    pub result: Result<FramePlan, Refusal>,
}

struct Guest<'a>(&'a Passthrough);

impl fmt::Display for Guest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0.guest_name {
            Some(name) => write!(f, "'{name}'"),
            None => write!(f, "#{}", self.0.guest),
        }
    }
}

impl<'a> Outcome<'a> {
    /// The boot-log line of a device granted to a guest that can DMA to all physical memory, if
    /// this is one.
    #[must_use]
    pub fn unprotected_dma(&self) -> Option<UnprotectedDma<'a>> {
        (self.result.is_ok() && self.passthrough.masters_bus).then_some(UnprotectedDma {
            region: self.region,
            passthrough: self.passthrough,
        })
    }
}

/// A device a guest was given that can DMA to all physical memory (its `Display` is the one
/// console line that says so).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnprotectedDma<'a> {
    region: &'a Region,
    passthrough: &'a Passthrough,
}

impl fmt::Display for UnprotectedDma<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "devbroker: device '{}' given to guest {} can DMA to all physical memory \
             (unprotected_dma: no IOMMU)",
            self.region.name,
            Guest(self.passthrough)
        )
    }
}

impl fmt::Display for Outcome<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (region, guest) = (self.region, Guest(self.passthrough));
        match self.result {
            Ok(plan) => write!(
                f,
                "devbroker: granted '{}' to guest {guest}: {:#x}..{:#x} {} at IPA = PA, {} x {} \
                 KiB frame(s), read/write, never executable",
                region.name,
                region.base,
                region.base + region.size,
                plan.memtype.name(),
                plan.count,
                (1u64 << plan.bits) / 1024,
            ),
            Err(refusal) => {
                let cacheable = if self.passthrough.memtype == MemoryType::NormalWriteBack {
                    "cacheable "
                } else {
                    ""
                };
                write!(
                    f,
                    "devbroker: refused {cacheable}grant of '{}' to guest {guest}: {refusal}",
                    region.name
                )?;
                if self.passthrough.optional {
                    f.write_str(" (optional: the system runs without it)")
                } else {
                    f.write_str(" (required)")
                }
            }
        }
    }
}

/// Who has a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holder {
    /// Nobody yet.
    Free,
    /// Passed through to a guest by the manifest (granted or refused).
    Guest,
    /// Granted to a protocol client with this badge; `frame` is the broker's original, `copy`
    /// the slot the client's capability was copied from.
    Client {
        badge: u64,
        frame: Cap<DeviceFrame>,
        copy: Cap<DeviceFrame>,
    },
}

/// The broker: its regions, who has them, and the kernel.
#[derive(Debug)]
pub struct Broker<K> {
    kernel: K,
    features: CacheFeatures,
    regions: heapless::Vec<(Region, Holder), MAX_REGIONS>,
}

impl<K: Kernel> Broker<K> {
    /// A broker of `regions` (at most [`MAX_REGIONS`]; more are ignored).
    pub fn new(
        kernel: K,
        features: CacheFeatures,
        regions: impl IntoIterator<Item = Region>,
    ) -> Self {
        let mut held = heapless::Vec::new();
        for region in regions {
            let holder = if region.passthrough.is_some() {
                Holder::Guest
            } else {
                Holder::Free
            };
            let _ = held.push((region, holder));
        }
        Self {
            kernel,
            features,
            regions: held,
        }
    }

    /// The kernel (for tests).
    #[cfg(test)]
    pub fn kernel(&mut self) -> &mut K {
        &mut self.kernel
    }

    /// Maps every passthrough of the manifest into its guest and reports each outcome; returns
    /// whether every required (not optional) one was granted.
    pub fn grant_passthroughs(&mut self, mut report: impl FnMut(&Outcome<'_>)) -> bool {
        let mut all_required = true;
        for (region, _) in &self.regions {
            let Some(passthrough) = &region.passthrough else {
                continue;
            };
            let result = if passthrough.masters_bus && !passthrough.unprotected_dma {
                Err(Refusal::UnacknowledgedDma)
            } else {
                decide(
                    region,
                    passthrough.memtype,
                    Sharing::Shared,
                    false,
                    self.features,
                )
                .and_then(|plan| map_all(&mut self.kernel, region, passthrough.vm, plan))
            };
            all_required &= result.is_ok() || passthrough.optional;
            report(&Outcome {
                region,
                passthrough,
                result,
            });
        }
        all_required
    }
}

/// Maps `region` into `vm` at IPA = PA as `plan` says.
fn map_all(
    kernel: &mut impl Kernel,
    region: &Region,
    vm: Cap<Vm>,
    plan: FramePlan,
) -> Result<FramePlan, Refusal> {
    if kernel.free_slots() < plan.count {
        return Err(Refusal::NoSlots);
    }
    for index in 0..plan.count {
        let frame: Cap<DeviceFrame> = kernel
            .retype(region.untyped, plan.bits)
            .map_err(Refusal::Kernel)?;
        let ipa = region.base + (index << plan.bits);
        kernel
            .map(
                frame,
                Space::Vm(vm),
                ipa,
                Rights::READ_WRITE.word(),
                plan.memtype,
            )
            .map_err(Refusal::Kernel)?;
    }
    Ok(plan)
}

/// Revokes region untyped `untyped` (everything made from it goes, with its mappings, and the
/// kernel resets its watermark) and reuses `slots`, which that emptied; `false` when the kernel
/// refused (nothing changed).
fn take_back(kernel: &mut impl Kernel, untyped: Cap<Untyped>, slots: &[Cap<DeviceFrame>]) -> bool {
    if kernel.revoke(untyped).is_err() {
        return false;
    }
    for &slot in slots {
        kernel.reuse(slot);
    }
    true
}

impl<K: Kernel> Handler for Broker<K> {
    async fn list_regions(
        &mut self,
        _: &mut Context,
        start: u32,
    ) -> Result<RegionPage, BrokerError> {
        let mut regions = heapless::Vec::new();
        let start = start as usize;
        for (index, (region, _)) in self.regions.iter().enumerate().skip(start) {
            if regions.len() == REGIONS_PER_PAGE {
                return Ok(RegionPage {
                    regions,
                    next: u32::try_from(index).ok(),
                });
            }
            let _ = regions.push(RegionInfo {
                id: RegionId::new(index as u32),
                base: PhysAddr::new(region.base),
                size: region.size,
                cacheable: region.cacheable,
                allows_uncached: region.allows_uncached,
            });
        }
        Ok(RegionPage {
            regions,
            next: None,
        })
    }

    /// Grants a region that the manifest does not pass through to a guest, as one frame: the
    /// caller maps it itself (a copy of the broker's capability, revoked on release). A
    /// `Private` grant is refused by [`decide`] (rule 6): the frame is the device itself.
    async fn grant_region(
        &mut self,
        ctx: &mut Context,
        region: RegionId,
        memory_type: MemoryType,
        sharing: Sharing,
    ) -> Result<RegionGrant, BrokerError> {
        let features = self.features;
        let (held, holder) = self
            .regions
            .get_mut(region.raw() as usize)
            .ok_or(BrokerError::NoSuchRegion)?;
        if *holder != Holder::Free {
            return Err(BrokerError::AlreadyGranted);
        }
        let plan =
            decide(held, memory_type, sharing, false, features).map_err(Refusal::broker_error)?;
        // A protocol grant is one frame; larger regions go to guests through the manifest.
        if plan.count != 1 || self.kernel.free_slots() < 2 {
            return Err(BrokerError::NotPermitted);
        }
        let frame = self
            .kernel
            .retype(held.untyped, plan.bits)
            .map_err(|_| BrokerError::NotPermitted)?;
        let Ok(copy) = self.kernel.copy(frame) else {
            take_back(&mut self.kernel, held.untyped, &[frame]);
            return Err(BrokerError::NotPermitted);
        };
        let Ok(transferred) = ctx.grant(copy) else {
            take_back(&mut self.kernel, held.untyped, &[frame, copy]);
            return Err(BrokerError::NotPermitted);
        };
        *holder = Holder::Client {
            badge: ctx.badge().raw(),
            frame,
            copy,
        };
        Ok(RegionGrant {
            frame: transferred,
            memory_type,
            size: held.size,
        })
    }

    /// Interrupts reach guests with the virtual-interrupt work; until then the broker holds no
    /// interrupt handlers and guests poll their devices.
    async fn grant_irq(
        &mut self,
        _: &mut Context,
        _: Intid,
    ) -> Result<capvisor_ipc::protocol::Transferred<capvisor_ipc::cap::IrqHandler>, BrokerError>
    {
        Err(BrokerError::NoSuchIrq)
    }

    /// Takes a granted region back and makes it grantable again. The broker revokes the
    /// region's untyped, not just the frame it made: that deletes the frame, the client's copy
    /// and whatever was derived from it (copies the client made or passed on), with every mapping
    /// of them; with nothing paid from the untyped left, the kernel resets its watermark, so the
    /// next grant can retype the region's frame again. The two slots are reused.
    async fn release_region(
        &mut self,
        ctx: &mut Context,
        region: RegionId,
    ) -> Result<(), BrokerError> {
        let (held, holder) = self
            .regions
            .get_mut(region.raw() as usize)
            .ok_or(BrokerError::NoSuchRegion)?;
        match *holder {
            Holder::Client { badge, frame, copy } if badge == ctx.badge().raw() => {
                if !take_back(&mut self.kernel, held.untyped, &[frame, copy]) {
                    return Err(BrokerError::NotPermitted);
                }
                *holder = Holder::Free;
                Ok(())
            }
            _ => Err(BrokerError::NotGranted),
        }
    }
}

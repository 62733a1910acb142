//! The memory vocabulary of every layer: memory types, frame sizes, the platform's cache features
//! and the cacheable-device rule (DESIGN.md, stage-2 rules 1–8).
//!
//! Each is defined here once. The kernel (which builds this crate without `postcard`) checks
//! mappings with them, the memory manager and the device broker decide with them, the manifest
//! names them, and services pass them to the `Map` and `Retype` invocations by their codes.

#[cfg(feature = "postcard")]
use serde::{Deserialize, Serialize};

use crate::abi::KernelError;

/// A stage-2 memory type, as a frame capability carries it and a mapping asks for it (DESIGN.md
/// rules 1–8).
///
/// The discriminant is the code of the `Map` invocation's memory-type word ([`Self::code`]); 0 is
/// a valid code there, so this is not a `stable_codes!` enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "postcard", derive(Serialize, Deserialize))]
pub enum MemoryType {
    /// Normal write-back cacheable (RAM; cacheable device memory only with FEAT_S2FWB and CTR_EL0.DIC).
    NormalWriteBack = 0,
    /// Normal non-cacheable (a device region whose grant allows any uncached type).
    NormalNonCacheable = 1,
    /// Device-nGnRE (the default for device memory, rule 3).
    #[default]
    DeviceNgnre = 2,
}

impl MemoryType {
    /// Every type, in code order.
    pub const ALL: [Self; 3] = [
        Self::NormalWriteBack,
        Self::NormalNonCacheable,
        Self::DeviceNgnre,
    ];

    /// The code passed in the `Map` invocation.
    #[must_use]
    pub const fn code(self) -> u64 {
        self as u64
    }

    /// The type with this code.
    ///
    /// # Errors
    /// [`KernelError::InvalidArgument`] for any other code (what the kernel answers a `Map` with it).
    pub const fn from_code(code: u64) -> Result<Self, KernelError> {
        match code {
            0 => Ok(Self::NormalWriteBack),
            1 => Ok(Self::NormalNonCacheable),
            2 => Ok(Self::DeviceNgnre),
            _ => Err(KernelError::InvalidArgument),
        }
    }

    /// The Arm ARM's name, for messages.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::NormalWriteBack => "Normal write-back",
            Self::NormalNonCacheable => "Normal non-cacheable",
            Self::DeviceNgnre => "Device-nGnRE",
        }
    }
}

/// A frame's size: a 4 KiB page or a 2 MiB block (the 4K granule's level-3 page and level-2 block).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameSize {
    /// 4 KiB.
    Page4K,
    /// 2 MiB.
    Block2M,
}

impl FrameSize {
    /// Size in bytes.
    #[must_use]
    pub const fn bytes(self) -> u64 {
        match self {
            Self::Page4K => 1 << 12,
            Self::Block2M => 1 << 21,
        }
    }

    /// log2 of the size in bytes: the `Retype` size argument.
    #[must_use]
    pub const fn bits(self) -> u64 {
        match self {
            Self::Page4K => 12,
            Self::Block2M => 21,
        }
    }

    /// The size with `bits` = log2(bytes) (the `Retype` size argument).
    ///
    /// # Errors
    /// [`KernelError::RangeError`] for any other size.
    pub const fn from_bits(bits: u64) -> Result<Self, KernelError> {
        match bits {
            12 => Ok(Self::Page4K),
            21 => Ok(Self::Block2M),
            _ => Err(KernelError::RangeError),
        }
    }
}

/// The platform's features the stage-2 cache rules depend on (DESIGN.md rules 1, 2 and 4, seed 002).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheFeatures {
    /// FEAT_S2FWB: stage 2 can force write-back, so no clean to PoC is needed for a guest's RAM.
    pub fwb: bool,
    /// CTR_EL0.DIC: no instruction-cache invalidation is needed for coherence with data.
    pub dic: bool,
}

impl CacheFeatures {
    /// Neither feature (what is assumed before the platform is known: every cacheable device
    /// mapping is refused).
    pub const NONE: Self = Self {
        fwb: false,
        dic: false,
    };

    /// Rule 4: device memory may be mapped cacheable at stage 2 only with FEAT_S2FWB **and**
    /// CTR_EL0.DIC (without them the hypervisor would have to clean and invalidate memory it
    /// cannot reach by VA). The one statement of the rule: the kernel and the device broker both
    /// decide with it.
    ///
    /// # Errors
    /// [`MissingFeatures`] naming what this platform lacks.
    pub const fn cacheable_device(self) -> Result<(), MissingFeatures> {
        if self.fwb && self.dic {
            Ok(())
        } else {
            Err(MissingFeatures {
                fwb: !self.fwb,
                dic: !self.dic,
            })
        }
    }
}

/// What a platform lacks for a cacheable device mapping (rule 4); the refusal names it. Over IPC
/// it is [`KernelError::CacheableDeviceUnsupported`]'s number, from the kernel and the broker alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MissingFeatures {
    /// FEAT_S2FWB is missing.
    pub fwb: bool,
    /// CTR_EL0.DIC is missing.
    pub dic: bool,
}

impl core::fmt::Display for MissingFeatures {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match (self.fwb, self.dic) {
            (true, true) => "FEAT_S2FWB and CTR_EL0.DIC",
            (true, false) => "FEAT_S2FWB",
            _ => "CTR_EL0.DIC",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_others_are_refused() {
        for memtype in MemoryType::ALL {
            assert_eq!(MemoryType::from_code(memtype.code()), Ok(memtype));
        }
        assert_eq!(MemoryType::from_code(3), Err(KernelError::InvalidArgument));
        assert_eq!(MemoryType::default(), MemoryType::DeviceNgnre);
    }

    #[test]
    fn frame_sizes_round_trip_through_their_bits() {
        for size in [FrameSize::Page4K, FrameSize::Block2M] {
            assert_eq!(FrameSize::from_bits(size.bits()), Ok(size));
            assert_eq!(size.bytes(), 1 << size.bits());
        }
        assert_eq!(FrameSize::from_bits(13), Err(KernelError::RangeError));
    }

    #[test]
    fn a_cacheable_device_mapping_needs_fwb_and_dic() {
        let features = |fwb, dic| CacheFeatures { fwb, dic };
        assert_eq!(features(true, true).cacheable_device(), Ok(()));
        for (fwb, dic, missing) in [
            (false, false, "FEAT_S2FWB and CTR_EL0.DIC"),
            (false, true, "FEAT_S2FWB"),
            (true, false, "CTR_EL0.DIC"),
        ] {
            let refusal = features(fwb, dic).cacheable_device().unwrap_err();
            assert_eq!(refusal.to_string(), missing);
        }
    }
}

//! Platform features a system image may require, with stable bit numbers shared by the SDK
//! (which packs a manifest's `requires` list) and the kernel (which checks them at boot).

/// A CPU or platform feature an image can require.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Feature {
    /// FEAT_S2FWB: stage 2 forced write-back.
    Fwb = 0,
    /// CTR_EL0.DIC: no instruction cache invalidation needed for coherence.
    Dic = 1,
    /// CTR_EL0.IDC: no data cache clean needed for instruction coherence.
    Idc = 2,
    /// FEAT_VHE.
    Vhe = 3,
    /// 16-bit VMIDs (FEAT_VMID16).
    Vmid16 = 4,
    /// FEAT_NV (nested virtualization, first version) or better.
    Nv = 5,
    /// FEAT_NV2.
    Nv2 = 6,
    /// FEAT_XNX: separate EL0/EL1 execute-never at stage 2.
    Xnx = 7,
    /// FEAT_TLBIRANGE: TLB range invalidation.
    TlbiRange = 8,
    /// FEAT_ECV: enhanced counter virtualization.
    Ecv = 9,
    /// A GICv3 interrupt controller with its system-register CPU interface.
    GicV3 = 10,
}

impl Feature {
    /// Every feature, in bit order.
    pub const ALL: [Self; 11] = [
        Self::Fwb,
        Self::Dic,
        Self::Idc,
        Self::Vhe,
        Self::Vmid16,
        Self::Nv,
        Self::Nv2,
        Self::Xnx,
        Self::TlbiRange,
        Self::Ecv,
        Self::GicV3,
    ];

    /// The name used in manifests and messages.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Fwb => "fwb",
            Self::Dic => "dic",
            Self::Idc => "idc",
            Self::Vhe => "vhe",
            Self::Vmid16 => "vmid16",
            Self::Nv => "nv",
            Self::Nv2 => "nv2",
            Self::Xnx => "xnx",
            Self::TlbiRange => "tlbirange",
            Self::Ecv => "ecv",
            Self::GicV3 => "gicv3",
        }
    }

    /// The feature with this manifest name.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The architecture's name for it, for messages.
    #[must_use]
    pub const fn arch_name(self) -> &'static str {
        match self {
            Self::Fwb => "FEAT_S2FWB",
            Self::Dic => "CTR_EL0.DIC",
            Self::Idc => "CTR_EL0.IDC",
            Self::Vhe => "FEAT_VHE",
            Self::Vmid16 => "FEAT_VMID16",
            Self::Nv => "FEAT_NV",
            Self::Nv2 => "FEAT_NV2",
            Self::Xnx => "FEAT_XNX",
            Self::TlbiRange => "FEAT_TLBIRANGE",
            Self::Ecv => "FEAT_ECV",
            Self::GicV3 => "GICv3",
        }
    }
}

/// A set of [`Feature`]s, as a bit mask.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FeatureSet(pub u64);

impl FeatureSet {
    /// The empty set.
    pub const EMPTY: Self = Self(0);

    /// This set with `feature` added.
    #[must_use]
    pub const fn with(self, feature: Feature) -> Self {
        Self(self.0 | 1 << feature as u8)
    }

    /// Whether `feature` is in the set.
    #[must_use]
    pub const fn contains(self, feature: Feature) -> bool {
        self.0 & (1 << feature as u8) != 0
    }

    /// The features of `self` that `available` lacks.
    pub fn missing_from(self, available: Self) -> impl Iterator<Item = Feature> {
        Feature::ALL
            .into_iter()
            .filter(move |&f| self.contains(f) && !available.contains(f))
    }

    /// Bits that name no feature.
    #[must_use]
    pub const fn unknown_bits(self) -> u64 {
        self.0 & !((1 << Feature::ALL.len()) - 1)
    }
}

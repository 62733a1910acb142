//! Platform features a system image may require, with stable bit numbers: the one definition
//! shared by the manifest (which names them), the SDK (which packs a manifest's `requires` list
//! into the image) and the kernel (which checks them against the ID registers at boot).
//!
//! The bit numbers are part of the image format: a bit is never renumbered or reused; new
//! features take new bits. Names and registers follow the Arm ARM (DDI 0487).

use core::fmt;

/// A CPU or platform feature an image can require. The discriminant is its bit number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Feature {
    /// `fwb`: FEAT_S2FWB, stage 2 forced write-back (ID_AA64MMFR2_EL1.FWB).
    Fwb = 0,
    /// `dic`: no instruction-cache invalidation needed for coherence to PoU (CTR_EL0.DIC).
    Dic = 1,
    /// `idc`: no data-cache clean needed for instruction-to-data coherence (CTR_EL0.IDC).
    Idc = 2,
    /// `vhe`: FEAT_VHE (ID_AA64MMFR1_EL1.VH).
    Vhe = 3,
    /// `vmid16`: FEAT_VMID16, 16-bit VMIDs (ID_AA64MMFR1_EL1.VMIDBits).
    Vmid16 = 4,
    /// `nv`: FEAT_NV or better (ID_AA64MMFR2_EL1.NV).
    Nv = 5,
    /// `nv2`: FEAT_NV2 (ID_AA64MMFR2_EL1.NV).
    Nv2 = 6,
    /// `xnx`: FEAT_XNX, separate EL0/EL1 execute-never at stage 2 (ID_AA64MMFR1_EL1.XNX).
    Xnx = 7,
    /// `tlbirange`: FEAT_TLBIRANGE (ID_AA64ISAR0_EL1.TLB).
    TlbiRange = 8,
    /// `ecv`: FEAT_ECV, enhanced counter virtualization (ID_AA64MMFR0_EL1.ECV).
    Ecv = 9,
    /// `gicv3`: a GICv3 interrupt controller with its system-register CPU interface.
    Gicv3 = 10,
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
        Self::Gicv3,
    ];

    /// The manifest names of [`Feature::ALL`], in the same order.
    pub const NAMES: &'static [&'static str] = &[
        "fwb",
        "dic",
        "idc",
        "vhe",
        "vmid16",
        "nv",
        "nv2",
        "xnx",
        "tlbirange",
        "ecv",
        "gicv3",
    ];

    /// Its bit number in a [`FeatureSet`]; stable across releases.
    #[must_use]
    pub const fn bit(self) -> u32 {
        self as u32
    }

    /// The name used in a manifest's `requires` list.
    #[must_use]
    pub const fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    /// The feature a manifest name stands for.
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
            Self::Gicv3 => "GICv3",
        }
    }
}

// Position `n` of ALL and NAMES is the feature with bit `n`: checked at compile time.
const _: () = {
    assert!(Feature::ALL.len() == Feature::NAMES.len());
    let mut index = 0;
    while index < Feature::ALL.len() {
        assert!(Feature::ALL[index] as usize == index);
        index += 1;
    }
};

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of [`Feature`]s as a bit mask (`1 << feature.bit()`). Bits that name no feature are
/// kept, so a newer image's requirements are never silently dropped by an older reader.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FeatureSet(pub u64);

impl FeatureSet {
    /// The empty set.
    pub const EMPTY: Self = Self(0);

    /// The set with the given mask.
    #[must_use]
    pub const fn from_bits(bits: u64) -> Self {
        Self(bits)
    }

    /// The bit mask, for packing into the image.
    #[must_use]
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// This set with `feature` added.
    #[must_use]
    pub const fn with(self, feature: Feature) -> Self {
        Self(self.0 | 1 << feature.bit())
    }

    /// Whether `feature` is in the set.
    #[must_use]
    pub const fn contains(self, feature: Feature) -> bool {
        self.0 & (1 << feature.bit()) != 0
    }

    /// The features (and unknown bits) of `self` that `available` lacks.
    #[must_use]
    pub const fn missing_from(self, available: Self) -> Self {
        Self(self.0 & !available.0)
    }

    /// Whether the set is empty.
    #[must_use]
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The known features in the set, in bit order.
    pub fn iter(self) -> impl Iterator<Item = Feature> {
        Feature::ALL.into_iter().filter(move |&f| self.contains(f))
    }

    /// Bits that name no feature.
    #[must_use]
    pub const fn unknown_bits(self) -> u64 {
        self.0 & !((1 << Feature::ALL.len()) - 1)
    }
}

impl FromIterator<Feature> for FeatureSet {
    fn from_iter<I: IntoIterator<Item = Feature>>(features: I) -> Self {
        features.into_iter().fold(Self::EMPTY, Self::with)
    }
}

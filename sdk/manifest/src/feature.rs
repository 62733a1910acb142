//! CPU features an image can require, with stable bit numbers the kernel checks at boot.
//!
//! The bit numbers are part of the image format: the image builder packs [`Requirements`] into the
//! image, and the kernel compares them with what the ID registers report before it starts any
//! service, refusing with a message naming each missing feature. A bit is never renumbered or
//! reused; new features take new bits.

use std::fmt;

/// A CPU feature a system may require. The discriminant is the bit number in [`FeatureSet`].
///
/// Names and registers follow the Arm Architecture Reference Manual for A-profile (DDI 0487).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Feature {
    /// `fwb`: FEAT_S2FWB, stage 2 forced write-back (ID_AA64MMFR2_EL1.FWB).
    Fwb = 0,
    /// `dic`: no instruction-cache invalidation needed for coherence to PoU (CTR_EL0.DIC).
    Dic = 1,
    /// `idc`: no data-cache clean needed for instruction-to-data coherence (CTR_EL0.IDC).
    Idc = 2,
    /// `vhe`: FEAT_VHE, Virtualization Host Extensions (ID_AA64MMFR1_EL1.VH).
    Vhe = 3,
    /// `vmid16`: FEAT_VMID16, 16-bit VMIDs (ID_AA64MMFR1_EL1.VMIDBits).
    Vmid16 = 4,
    /// `nv`: FEAT_NV, nested virtualization (ID_AA64MMFR2_EL1.NV).
    Nv = 5,
    /// `nv2`: FEAT_NV2, enhanced nested virtualization (ID_AA64MMFR2_EL1.NV).
    Nv2 = 6,
    /// `xnx`: FEAT_XNX, separate EL0/EL1 execute-never at stage 2 (ID_AA64MMFR1_EL1.XNX).
    Xnx = 7,
    /// `tlbirange`: FEAT_TLBIRANGE, TLB range invalidation (ID_AA64ISAR0_EL1.TLB).
    TlbiRange = 8,
    /// `ecv`: FEAT_ECV, enhanced counter virtualization (ID_AA64MMFR0_EL1.ECV).
    Ecv = 9,
    /// `gicv3`: a GICv3 CPU interface reachable by system registers (ID_AA64PFR0_EL1.GIC).
    Gicv3 = 10,
}

impl Feature {
    /// Every feature, in bit order.
    pub const ALL: [Feature; 11] = [
        Feature::Fwb,
        Feature::Dic,
        Feature::Idc,
        Feature::Vhe,
        Feature::Vmid16,
        Feature::Nv,
        Feature::Nv2,
        Feature::Xnx,
        Feature::TlbiRange,
        Feature::Ecv,
        Feature::Gicv3,
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

    /// The bit number of this feature in a [`FeatureSet`]; stable across releases.
    pub const fn bit(self) -> u32 {
        self as u32
    }

    /// The name used in a manifest's `requires` list.
    pub const fn name(self) -> &'static str {
        Feature::NAMES[self as usize]
    }

    /// The feature a manifest name stands for.
    pub fn from_name(name: &str) -> Option<Feature> {
        Feature::ALL
            .into_iter()
            .find(|feature| feature.name() == name)
    }
}

// The tables above must agree: position `n` of ALL and NAMES is the feature with bit `n`. And the
// kernel reads the mask through `capvisor_image::Feature`, so every bit and name must be the same
// there: checked at compile time, not kept in sync by hand.
const _: () = {
    assert!(Feature::ALL.len() == Feature::NAMES.len());
    assert!(Feature::ALL.len() == capvisor_image::Feature::ALL.len());
    let mut index = 0;
    while index < Feature::ALL.len() {
        assert!(Feature::ALL[index] as usize == index);
        let image = capvisor_image::Feature::ALL[index];
        assert!(image as usize == index);
        assert!(same_str(Feature::ALL[index].name(), image.name()));
        index += 1;
    }
};

/// String equality usable in a constant.
const fn same_str(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut index = 0;
    while index < a.len() {
        if a[index] != b[index] {
            return false;
        }
        index += 1;
    }
    true
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of [`Feature`]s as a bit mask (`1 << feature.bit()`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FeatureSet(u64);

impl FeatureSet {
    /// The empty set.
    pub const EMPTY: FeatureSet = FeatureSet(0);

    /// The set with the given mask; bits that name no feature are kept, so that a newer image's
    /// requirements are never silently dropped by an older reader.
    pub const fn from_bits(bits: u64) -> FeatureSet {
        FeatureSet(bits)
    }

    /// The bit mask, for packing into the image.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// Whether `feature` is in the set.
    pub const fn contains(self, feature: Feature) -> bool {
        self.0 & (1 << feature.bit()) != 0
    }

    /// The set with `feature` added.
    pub const fn with(self, feature: Feature) -> FeatureSet {
        FeatureSet(self.0 | (1 << feature.bit()))
    }

    /// The features of `self` that `available` lacks.
    pub const fn missing_from(self, available: FeatureSet) -> FeatureSet {
        FeatureSet(self.0 & !available.0)
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The known features in the set, in bit order.
    pub fn iter(self) -> impl Iterator<Item = Feature> {
        Feature::ALL
            .into_iter()
            .filter(move |feature| self.contains(*feature))
    }
}

impl FromIterator<Feature> for FeatureSet {
    fn from_iter<I: IntoIterator<Item = Feature>>(features: I) -> Self {
        features
            .into_iter()
            .fold(FeatureSet::EMPTY, FeatureSet::with)
    }
}

/// What a system requires of the platform, in the form the kernel checks at boot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Requirements {
    /// Features that must all be present.
    pub features: FeatureSet,
    /// The smallest physical address size (ID_AA64MMFR0_EL1.PARange) the system accepts, in
    /// bits; 0 when the manifest sets none.
    pub min_pa_bits: u8,
    /// The smallest number of CPUs the system accepts (at least 1).
    pub min_cpus: u8,
}

impl Requirements {
    /// Packs the requirements into 16 little-endian bytes: the feature mask (8 bytes),
    /// `min_pa_bits`, `min_cpus`, and six zero bytes reserved for later fields.
    pub fn to_bytes(self) -> [u8; 16] {
        let mut bytes = [0; 16];
        bytes[..8].copy_from_slice(&self.features.bits().to_le_bytes());
        bytes[8] = self.min_pa_bits;
        bytes[9] = self.min_cpus;
        bytes
    }

    /// Unpacks [`Requirements::to_bytes`].
    pub fn from_bytes(bytes: [u8; 16]) -> Requirements {
        let mut mask = [0; 8];
        mask.copy_from_slice(&bytes[..8]);
        Requirements {
            features: FeatureSet::from_bits(u64::from_le_bytes(mask)),
            min_pa_bits: bytes[8],
            min_cpus: bytes[9],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_bits_are_stable() {
        for feature in Feature::ALL {
            assert_eq!(Feature::from_name(feature.name()), Some(feature));
        }
        // Bit numbers are an image-format contract: changing one breaks old images.
        assert_eq!(Feature::Fwb.bit(), 0);
        assert_eq!(Feature::Dic.bit(), 1);
        assert_eq!(Feature::Nv2.bit(), 6);
        assert_eq!(Feature::Gicv3.bit(), 10);
        assert_eq!(Feature::from_name("FWB"), None);
    }

    #[test]
    fn requirements_pack_and_unpack() {
        let requirements = Requirements {
            features: [Feature::Fwb, Feature::Nv2].into_iter().collect(),
            min_pa_bits: 40,
            min_cpus: 2,
        };
        let bytes = requirements.to_bytes();
        assert_eq!(bytes[0], 0b100_0001);
        assert_eq!(bytes[8], 40);
        assert_eq!(Requirements::from_bytes(bytes), requirements);
        let missing = requirements
            .features
            .missing_from(FeatureSet::EMPTY.with(Feature::Fwb));
        assert_eq!(missing.iter().collect::<Vec<_>>(), [Feature::Nv2]);
    }
}

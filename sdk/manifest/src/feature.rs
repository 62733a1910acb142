//! CPU features an image can require, with stable bit numbers the kernel checks at boot.
//!
//! The bit numbers are part of the image format: the image builder packs [`Requirements`] into the
//! image, and the kernel compares them with what the ID registers report before it starts any
//! service, refusing with a message naming each missing feature. A bit is never renumbered or
//! reused; new features take new bits.

// The one definition lives in the image layout crate, which the kernel reads too.
pub use capvisor_image::{Feature, FeatureSet};

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

//! The platform as the ID registers and the device tree describe it, and the one-line summary
//! the kernel prints at boot.
//!
//! Field positions are from the Arm ARM (DDI 0487 L.a), D24.2 "General system control
//! registers": ID_AA64MMFR0_EL1.PARange [3:0]; ID_AA64MMFR1_EL1.VMIDBits [7:4], .VH [11:8];
//! ID_AA64MMFR2_EL1.NV [27:24], .FWB [43:40]; CTR_EL0.IDC [28], .DIC [29].

use capvisor_image::{BootConfig, Feature, FeatureSet};
use core::fmt;

/// The raw ID register values the platform is decoded from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IdRegisters {
    /// MIDR_EL1.
    pub midr: u64,
    /// ID_AA64MMFR0_EL1.
    pub mmfr0: u64,
    /// ID_AA64MMFR1_EL1.
    pub mmfr1: u64,
    /// ID_AA64MMFR2_EL1.
    pub mmfr2: u64,
    /// CTR_EL0.
    pub ctr: u64,
    /// ID_AA64ISAR0_EL1.
    pub isar0: u64,
}

/// Which interrupt controller the device tree describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GicVersion {
    /// None found.
    None,
    /// GICv2 (`arm,cortex-a15-gic` and kin).
    V2,
    /// GICv3 (`arm,gic-v3`).
    V3,
}

/// What capvisor needs to know about the CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Platform {
    /// MIDR_EL1 as read.
    pub midr: u64,
    /// FEAT_S2FWB.
    pub fwb: bool,
    /// CTR_EL0.DIC: instruction cache invalidation to PoU not required for coherence.
    pub dic: bool,
    /// CTR_EL0.IDC: data cache clean to PoU not required for coherence.
    pub idc: bool,
    /// FEAT_VHE.
    pub vhe: bool,
    /// Implemented physical address size (PAMax), in bits.
    pub pa_bits: u8,
    /// VMID width, 8 or 16.
    pub vmid_bits: u8,
    /// ID_AA64MMFR2_EL1.NV: 0 none, 1 FEAT_NV, 2 FEAT_NV2.
    pub nv: u8,
    /// The interrupt controller.
    pub gic: GicVersion,
    /// FEAT_XNX (ID_AA64MMFR1_EL1.XNX [31:28]).
    pub xnx: bool,
    /// FEAT_TLBIRANGE (ID_AA64ISAR0_EL1.TLB [59:56] = 2).
    pub tlbi_range: bool,
    /// FEAT_ECV (ID_AA64MMFR0_EL1.ECV [63:60]).
    pub ecv: bool,
}

fn field(value: u64, shift: u32, bits: u32) -> u64 {
    (value >> shift) & ((1 << bits) - 1)
}

/// The physical address size for an ID_AA64MMFR0_EL1.PARange value (Arm ARM D24.2.74); values
/// the architecture reserves are taken as the largest defined size, 52 bits.
#[must_use]
pub fn pa_range_bits(parange: u64) -> u8 {
    match parange {
        0 => 32,
        1 => 36,
        2 => 40,
        3 => 42,
        4 => 44,
        5 => 48,
        _ => 52,
    }
}

impl Platform {
    /// Decodes the ID registers; `gic` comes from the device tree.
    #[must_use]
    pub fn decode(regs: &IdRegisters, gic: GicVersion) -> Self {
        Self {
            midr: regs.midr,
            fwb: field(regs.mmfr2, 40, 4) == 1,
            dic: field(regs.ctr, 29, 1) == 1,
            idc: field(regs.ctr, 28, 1) == 1,
            vhe: field(regs.mmfr1, 8, 4) == 1,
            pa_bits: pa_range_bits(field(regs.mmfr0, 0, 4)),
            vmid_bits: if field(regs.mmfr1, 4, 4) == 2 { 16 } else { 8 },
            nv: field(regs.mmfr2, 24, 4).min(2) as u8,
            gic,
            xnx: field(regs.mmfr1, 28, 4) == 1,
            tlbi_range: field(regs.isar0, 56, 4) == 2,
            ecv: field(regs.mmfr0, 60, 4) >= 1,
        }
    }

    /// The PARange encoding of `pa_bits`, capped at 48 bits (a 52-bit output needs FEAT_LPA's
    /// descriptor format, which capvisor does not use), for TCR_EL2.PS and VTCR_EL2.PS.
    #[must_use]
    pub fn ps_encoding(&self) -> u64 {
        match self.pa_bits {
            32 => 0,
            36 => 1,
            40 => 2,
            42 => 3,
            44 => 4,
            _ => 5,
        }
    }

    /// The features this platform has.
    #[must_use]
    pub fn features(&self) -> FeatureSet {
        let mut set = FeatureSet::EMPTY;
        let has = [
            (Feature::Fwb, self.fwb),
            (Feature::Dic, self.dic),
            (Feature::Idc, self.idc),
            (Feature::Vhe, self.vhe),
            (Feature::Vmid16, self.vmid_bits == 16),
            (Feature::Nv, self.nv >= 1),
            (Feature::Nv2, self.nv >= 2),
            (Feature::Xnx, self.xnx),
            (Feature::TlbiRange, self.tlbi_range),
            (Feature::Ecv, self.ecv),
            (Feature::Gicv3, self.gic == GicVersion::V3),
        ];
        for (feature, present) in has {
            if present {
                set = set.with(feature);
            }
        }
        set
    }

    /// Checks what an image requires against this platform and `cpus` online CPUs.
    ///
    /// # Errors
    ///
    /// [`Unmet`] naming the first requirement that does not hold.
    pub fn check(&self, config: &BootConfig, cpus: u32) -> Result<(), Unmet> {
        let required = FeatureSet(config.required_features);
        if let Some(feature) = required.missing_from(self.features()).iter().next() {
            return Err(Unmet::Feature(feature));
        }
        if u32::from(self.pa_bits) < config.min_pa_bits {
            return Err(Unmet::PaBits {
                need: config.min_pa_bits,
                have: self.pa_bits,
            });
        }
        if cpus < config.min_cpus {
            return Err(Unmet::Cpus {
                need: config.min_cpus,
                have: cpus,
            });
        }
        Ok(())
    }
}

/// A requirement of the image that the platform does not meet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unmet {
    /// A CPU feature is missing.
    Feature(Feature),
    /// The physical address size is too small.
    PaBits {
        /// Bits required.
        need: u32,
        /// Bits implemented.
        have: u8,
    },
    /// Too few CPUs.
    Cpus {
        /// CPUs required.
        need: u32,
        /// CPUs online.
        have: u32,
    },
}

impl fmt::Display for Unmet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Feature(feature) => write!(
                f,
                "the image requires {} (\"{}\"), which this CPU does not implement",
                feature.arch_name(),
                feature.name()
            ),
            Self::PaBits { need, have } => write!(
                f,
                "the image requires a physical address size of at least {need} bits; this CPU has {have}"
            ),
            Self::Cpus { need, have } => {
                write!(
                    f,
                    "the image requires at least {need} CPUs; {have} are online"
                )
            }
        }
    }
}

impl fmt::Display for Platform {
    /// The platform line, exactly:
    /// `capvisor: platform midr=0x<hex> fwb=<0|1> dic=<0|1> idc=<0|1> vhe=<0|1> pa_bits=<n>
    /// vmid_bits=<8|16> nv=<0|1|2> gic=v3`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let gic = match self.gic {
            GicVersion::None => "none",
            GicVersion::V2 => "v2",
            GicVersion::V3 => "v3",
        };
        write!(
            f,
            "capvisor: platform midr={:#x} fwb={} dic={} idc={} vhe={} pa_bits={} vmid_bits={} nv={} gic={}",
            self.midr,
            u8::from(self.fwb),
            u8::from(self.dic),
            u8::from(self.idc),
            u8::from(self.vhe),
            self.pa_bits,
            self.vmid_bits,
            self.nv,
            gic
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // What QEMU 10.0.2 reports for two models (read by an EL2 probe; see TOOLCHAIN.md).
    fn cortex_a57() -> IdRegisters {
        IdRegisters {
            midr: 0x411f_d070,
            mmfr0: 0x0000_0000_0000_1124,
            mmfr1: 0,
            mmfr2: 0,
            ctr: 0x8444_c004,
            isar0: 0x1_1120,
        }
    }

    #[test]
    fn decodes_cortex_a57() {
        let p = Platform::decode(&cortex_a57(), GicVersion::V3);
        assert_eq!(
            p.to_string(),
            "capvisor: platform midr=0x411fd070 fwb=0 dic=0 idc=0 vhe=0 pa_bits=44 vmid_bits=8 nv=0 gic=v3"
        );
        assert_eq!(p.ps_encoding(), 4);
    }

    #[test]
    fn decodes_fwb_dic_nv2_vmid16() {
        let regs = IdRegisters {
            midr: 0x000f_0510,
            mmfr0: 6,
            mmfr1: (1 << 8) | (2 << 4),
            mmfr2: (1 << 40) | (2 << 24),
            ctr: (1 << 29) | (1 << 28),
            isar0: 2 << 56,
        };
        let p = Platform::decode(&regs, GicVersion::V3);
        assert!(p.fwb && p.dic && p.idc && p.vhe);
        assert_eq!((p.pa_bits, p.vmid_bits, p.nv), (52, 16, 2));
        assert_eq!(
            p.ps_encoding(),
            5,
            "52-bit PA is used as 48 without FEAT_LPA descriptors"
        );
        assert!(p.features().contains(Feature::Nv2) && p.features().contains(Feature::Nv));
        assert!(p.tlbi_range && !p.xnx && !p.ecv);
    }

    #[test]
    fn requirements() {
        let p = Platform::decode(&cortex_a57(), GicVersion::V3);
        let mut config = BootConfig::default();
        assert_eq!(p.check(&config, 1), Ok(()));
        config.required_features = FeatureSet::EMPTY.with(Feature::Gicv3).with(Feature::Dic).0;
        assert_eq!(p.check(&config, 1), Err(Unmet::Feature(Feature::Dic)));
        assert!(
            Unmet::Feature(Feature::Dic)
                .to_string()
                .contains("CTR_EL0.DIC")
        );
        config.required_features = 0;
        config.min_pa_bits = 48;
        assert_eq!(
            p.check(&config, 1),
            Err(Unmet::PaBits { need: 48, have: 44 })
        );
        config.min_pa_bits = 0;
        config.min_cpus = 2;
        assert_eq!(p.check(&config, 1), Err(Unmet::Cpus { need: 2, have: 1 }));
        assert_eq!(p.check(&config, 2), Ok(()));
    }
}

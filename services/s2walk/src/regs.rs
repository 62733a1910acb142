//! The walk's inputs: typed VTCR_EL2/VTTBR_EL2 values, addresses, the implemented machine.
//!
//! Field positions are those of Arm DDI 0487 (L.a), D24.2 "VTCR_EL2, Virtualization Translation
//! Control Register" and "VTTBR_EL2, Virtualization Translation Table Base Register".

/// An intermediate physical address: the input of a stage-2 walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipa(u64);

impl Ipa {
    /// Wraps a raw IPA. Any value is accepted: bits above the input size make the walk fault.
    #[must_use]
    pub const fn new(raw: u64) -> Self {
        Self(raw)
    }

    /// The raw address.
    #[must_use]
    pub const fn get(self) -> u64 {
        self.0
    }
}

/// An address in the output space of a stage-2 walk: where its tables live and what it maps to.
///
/// For the host's own stage 2 this is a physical address; for a guest hypervisor's stage 2 it is
/// an IPA of that guest (an "L1 IPA").
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OutputAddr(u64);

impl OutputAddr {
    /// Wraps a raw output address.
    #[must_use]
    pub const fn new(raw: u64) -> Self {
        Self(raw)
    }

    /// The raw address.
    #[must_use]
    pub const fn get(self) -> u64 {
        self.0
    }
}

/// A VMID as held in VTTBR_EL2.VMID (bits \[63:48\]; 8-bit VMIDs use bits \[55:48\]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Vmid(u16);

impl Vmid {
    /// Wraps a raw VMID.
    #[must_use]
    pub const fn new(raw: u16) -> Self {
        Self(raw)
    }

    /// The raw VMID.
    #[must_use]
    pub const fn get(self) -> u16 {
        self.0
    }
}

/// The translation granule, from VTCR_EL2.TG0 (AArch64.S2DecodeTG0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Granule {
    /// 4KB granule (TG0 = 0b00).
    K4,
    /// 16KB granule (TG0 = 0b10).
    K16,
    /// 64KB granule (TG0 = 0b01).
    K64,
}

impl Granule {
    /// log2 of the granule size in bytes (TGxGranuleBits).
    #[must_use]
    pub const fn bits(self) -> u32 {
        match self {
            Self::K4 => 12,
            Self::K16 => 14,
            Self::K64 => 16,
        }
    }

    /// Decodes VTCR_EL2.TG0. The reserved value 0b11 is treated "as if it has been programmed to
    /// an IMPLEMENTATION DEFINED choice of the sizes that has been implemented" (VTCR_EL2.TG0);
    /// capvisor's choice is 4KB, the granule every implementation has (QEMU chooses the same).
    #[must_use]
    pub const fn from_tg0(tg0: u64) -> Self {
        match tg0 & 0b11 {
            0b01 => Self::K64,
            0b10 => Self::K16,
            _ => Self::K4,
        }
    }
}

/// The implemented physical address size, AArch64.PAMax(), from ID_AA64MMFR0_EL1.PARange.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PaBits {
    /// PARange 0b0000.
    Bits32,
    /// PARange 0b0001.
    Bits36,
    /// PARange 0b0010.
    Bits40,
    /// PARange 0b0011.
    Bits42,
    /// PARange 0b0100.
    Bits44,
    /// PARange 0b0101.
    Bits48,
    /// PARange 0b0110 (FEAT_LPA, or FEAT_LPA2).
    Bits52,
}

impl PaBits {
    /// All PARange values, smallest first.
    pub const ALL: [Self; 7] = [
        Self::Bits32,
        Self::Bits36,
        Self::Bits40,
        Self::Bits42,
        Self::Bits44,
        Self::Bits48,
        Self::Bits52,
    ];

    /// The PA size with this many bits, if it is a PARange value.
    #[must_use]
    pub const fn from_bits(bits: u32) -> Option<Self> {
        match bits {
            32 => Some(Self::Bits32),
            36 => Some(Self::Bits36),
            40 => Some(Self::Bits40),
            42 => Some(Self::Bits42),
            44 => Some(Self::Bits44),
            48 => Some(Self::Bits48),
            52 => Some(Self::Bits52),
            _ => None,
        }
    }

    /// The size in bits.
    #[must_use]
    pub const fn bits(self) -> u32 {
        match self {
            Self::Bits32 => 32,
            Self::Bits36 => 36,
            Self::Bits40 => 40,
            Self::Bits42 => 42,
            Self::Bits44 => 44,
            Self::Bits48 => 48,
            Self::Bits52 => 52,
        }
    }
}

/// What the machine a walk emulates implements, and its IMPLEMENTATION DEFINED choices.
///
/// A guest hypervisor sees the ID registers capvisor gives it; the walk must behave as hardware
/// with those registers would, so these come from the same place as the guest's ID registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Machine {
    /// AArch64.PAMax(). FEAT_LPA is taken to be implemented exactly when this is 52 bits.
    pub pa_bits: PaBits,
    /// FEAT_LPA2: VTCR_EL2.DS and VTCR_EL2.SL2 are honoured (else treated as 0).
    pub lpa2: bool,
    /// FEAT_TTST: small translation tables (SL0 = 0b11 with 4KB, larger maximum T0SZ).
    pub ttst: bool,
    /// FEAT_XNX: stage-2 XN\[0\] splits execute-never between EL1 and EL0.
    pub xnx: bool,
    /// FEAT_HAFDBS: VTCR_EL2.HA and VTCR_EL2.HD are honoured.
    pub hafdbs: bool,
    /// IMPLEMENTATION DEFINED "Fault on TxSZ value below minimum" (AArch64.S2TxSZFaults); with
    /// FEAT_LPA (52-bit PA) the fault is required regardless.
    pub fault_txsz_below_min: bool,
    /// IMPLEMENTATION DEFINED "Fault on TxSZ value above maximum" (AArch64.S2TxSZFaults).
    pub fault_txsz_above_max: bool,
}

impl Machine {
    /// A machine with this PA size and capvisor's defaults: FEAT_LPA2, FEAT_TTST, FEAT_XNX and
    /// FEAT_HAFDBS implemented, and an out-of-range T0SZ faulting at level 0 (QEMU's choice too).
    #[must_use]
    pub const fn new(pa_bits: PaBits) -> Self {
        Self {
            pa_bits,
            lpa2: true,
            ttst: true,
            xnx: true,
            hafdbs: true,
            fault_txsz_below_min: true,
            fault_txsz_above_max: true,
        }
    }

    /// FEAT_LPA (Have52BitPAExt()): implied by a 52-bit PARange in this model.
    #[must_use]
    pub const fn lpa(&self) -> bool {
        matches!(self.pa_bits, PaBits::Bits52)
    }
}

/// A raw VTCR_EL2 value with named fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Vtcr(u64);

impl Vtcr {
    /// Wraps a raw value; every bit pattern is accepted (reserved ones behave as the Arm ARM says).
    #[must_use]
    pub const fn new(raw: u64) -> Self {
        Self(raw)
    }

    /// The raw register value.
    #[must_use]
    pub const fn get(self) -> u64 {
        self.0
    }

    const fn field(self, lsb: u32, width: u32) -> u64 {
        (self.0 >> lsb) & ((1 << width) - 1)
    }

    /// T0SZ, bits \[5:0\].
    #[must_use]
    pub const fn t0sz(self) -> u32 {
        self.field(0, 6) as u32
    }

    /// SL0, bits \[7:6\].
    #[must_use]
    pub const fn sl0(self) -> u32 {
        self.field(6, 2) as u32
    }

    /// TG0, bits \[15:14\], decoded.
    #[must_use]
    pub const fn granule(self) -> Granule {
        Granule::from_tg0(self.field(14, 2))
    }

    /// PS, bits \[18:16\].
    #[must_use]
    pub const fn ps(self) -> u32 {
        self.field(16, 3) as u32
    }

    /// HA, bit \[21\].
    #[must_use]
    pub const fn ha(self) -> bool {
        self.field(21, 1) != 0
    }

    /// HD, bit \[22\].
    #[must_use]
    pub const fn hd(self) -> bool {
        self.field(22, 1) != 0
    }

    /// DS, bit \[32\] (FEAT_LPA2).
    #[must_use]
    pub const fn ds(self) -> bool {
        self.field(32, 1) != 0
    }

    /// SL2, bit \[33\] (FEAT_LPA2).
    #[must_use]
    pub const fn sl2(self) -> bool {
        self.field(33, 1) != 0
    }
}

/// A raw VTTBR_EL2 value with named fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Vttbr(u64);

impl Vttbr {
    /// Wraps a raw value.
    #[must_use]
    pub const fn new(raw: u64) -> Self {
        Self(raw)
    }

    /// The raw register value.
    #[must_use]
    pub const fn get(self) -> u64 {
        self.0
    }

    /// VMID, bits \[63:48\].
    #[must_use]
    pub const fn vmid(self) -> Vmid {
        Vmid((self.0 >> 48) as u16)
    }
}

/// The kind of access a walk is made for; instruction fetches are split by exception level
/// because FEAT_XNX gives EL1 and EL0 separate execute permissions at stage 2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// A data read.
    Read,
    /// A data write.
    Write,
    /// An instruction fetch at EL1.
    ExecEl1,
    /// An instruction fetch at EL0.
    ExecEl0,
}

impl Access {
    /// All access kinds.
    pub const ALL: [Self; 4] = [Self::Read, Self::Write, Self::ExecEl1, Self::ExecEl0];
}

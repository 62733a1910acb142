//! VTCR_EL2/VTTBR_EL2 decoded once into what the walk needs, with the configuration checks of
//! AArch64.S2Translate that do not depend on the input address.
//!
//! Arm DDI 0487 (L.a), J1.1.5 (aarch64/translation) pseudocode followed here:
//! AArch64.NSS2TTWParams (which fields are effective), AArch64.S2TxSZFaults,
//! AArch64.S2MinTxSZ, AArch64.MaxTxSZ, AArch64.S2StartLevel, AArch64.S2InvalidSL,
//! AArch64.S2InconsistentSL, AArch64.PhysicalAddressSize, AArch64.TTBaseAddress,
//! AArch64.BlockDescSupported. Where they give an IMPLEMENTATION DEFINED choice, [`Machine`]
//! makes it.

use crate::fault::{Fault, FaultKind};
use crate::regs::{Granule, Machine, PaBits, Vtcr, Vttbr};

/// The final lookup level (FINAL_LEVEL).
pub(crate) const FINAL_LEVEL: i8 = 3;

/// A decoded, validated stage-2 configuration: everything about a walk except its input address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct S2Config {
    pub(crate) granule: Granule,
    pub(crate) granule_bits: u32,
    pub(crate) stride: u32,
    pub(crate) start_level: i8,
    pub(crate) iasize: u32,
    pub(crate) oasize: u32,
    pub(crate) base: u64,
    pub(crate) base_out_of_range: bool,
    pub(crate) oa_low_mask: u64,
    /// Output-address bits above bit 47 kept elsewhere in a descriptor:
    /// `((desc >> high_shift) & high_mask) << high_pos`. With 64KB (FEAT_LPA), OA\[51:48\] is in
    /// bits \[15:12\]; with DS (FEAT_LPA2), OA\[51:50\] is in bits \[9:8\] (OA\[49:48\] stay in place).
    pub(crate) high_shift: u32,
    pub(crate) high_mask: u64,
    pub(crate) high_pos: u32,
    /// log2 of the entries a Contiguous run covers, by `level + 1` (0 where the bit is RES0).
    pub(crate) contiguous: [u8; 5],
    /// Bit `level + 1` is set where a block descriptor (0b01) is a leaf.
    pub(crate) block_levels: u8,
    pub(crate) ha: bool,
    pub(crate) hd: bool,
    pub(crate) xnx: bool,
}

/// The largest input address size a configuration may have (AArch64.S2MinTxSZ, as a size).
fn max_iasize(machine: &Machine, granule: Granule, ds: bool) -> u32 {
    let pamax = machine.pa_bits.bits();
    if machine.lpa() && granule != Granule::K64 && !ds {
        pamax.min(48)
    } else {
        pamax.min(52)
    }
}

/// The smallest input address size (AArch64.MaxTxSZ, as a size).
fn min_iasize(machine: &Machine, granule: Granule) -> u32 {
    match (machine.ttst, granule) {
        (true, Granule::K64) => 64 - 47,
        (true, _) => 64 - 48,
        (false, _) => 64 - 39,
    }
}

/// AArch64.S2TxSZFaults and the clamping that follows it in AArch64.S2Translate: the input
/// size T0SZ gives, `None` where it is out of range and the machine faults on that.
fn input_size(machine: &Machine, granule: Granule, ds: bool, t0sz: u32) -> Option<u32> {
    let (min, max) = (
        min_iasize(machine, granule),
        max_iasize(machine, granule, ds),
    );
    let requested = 64 - t0sz;
    if requested > max {
        // T0SZ below the minimum: a fault with FEAT_LPA, else IMPLEMENTATION DEFINED.
        (!(machine.fault_txsz_below_min || machine.lpa())).then_some(max)
    } else if requested < min {
        (!machine.fault_txsz_above_max).then_some(min)
    } else {
        Some(requested)
    }
}

/// AArch64.S2StartLevel for the 64-bit descriptor format; `None` for the reserved SL2:SL0
/// encodings, which AArch64.S2InvalidSL rejects before the start level is used.
fn start_level(granule: Granule, sl2: bool, sl0: u32) -> Option<i8> {
    match (granule, sl2, sl0) {
        (Granule::K4, false, 0b00) => Some(2),
        (Granule::K4, false, 0b01) => Some(1),
        (Granule::K4, false, 0b10) => Some(0),
        (Granule::K4, false, 0b11) => Some(3),
        (Granule::K4, true, 0b00) => Some(-1),
        (Granule::K4, true, _) => None,
        (_, _, sl0) => Some(3 - sl0 as i8),
    }
}

/// AArch64.S2InvalidSL: is this start level impossible on this machine? The limits come from
/// the implemented PA size (AArch64.PAMax), not from the guest's T0SZ (seed 001).
fn invalid_sl(machine: &Machine, granule: Granule, ds: bool, sl2: bool, sl0: u32) -> bool {
    let pamax = machine.pa_bits.bits();
    match (granule, sl2, sl0) {
        (Granule::K4, true, 0b00) => pamax < 52,
        (Granule::K4, true, _) => true,
        (Granule::K4, false, 0b10) => pamax < 44,
        (Granule::K4, false, 0b11) => !machine.ttst,
        (Granule::K4, false, _) => false,
        (Granule::K16, _, 0b11) => !ds || pamax < 52,
        (Granule::K16, _, 0b10) => pamax < 42,
        (Granule::K64, _, 0b11) => true,
        (Granule::K64, _, 0b10) => pamax < 44,
        (_, _, _) => false,
    }
}

/// AArch64.S2InconsistentSL: can `iasize` be resolved from `start` with at most 16 concatenated
/// tables at the start level?
fn inconsistent_sl(granule_bits: u32, stride: u32, start: i8, iasize: u32) -> bool {
    let levels = (FINAL_LEVEL - start) as u32;
    let min = levels * stride + granule_bits + 1;
    let max = min + (stride - 1) + 4;
    iasize < min || iasize > max
}

/// AArch64.PhysicalAddressSize: the output address size from VTCR_EL2.PS, capped by PAMax.
fn output_size(machine: &Machine, ps: u32, granule: Granule, ds: bool) -> u32 {
    let ps = match ps {
        0b000 => 32,
        0b001 => 36,
        0b010 => 40,
        0b011 => 42,
        0b100 => 44,
        0b101 => 48,
        0b110 => 52,
        _ => 56,
    };
    let pamax = machine.pa_bits.bits();
    let max = if machine.lpa() && (granule == Granule::K64 || ds) {
        pamax.min(52)
    } else {
        pamax.min(48)
    };
    ps.min(max)
}

/// AArch64.TTBaseAddress: the start-level table address, aligned to the table's size.
fn table_base(
    machine: &Machine,
    vttbr: u64,
    vtcr: Vtcr,
    ds: bool,
    shape: (Granule, u32, i8),
) -> u64 {
    let (granule, iasize, start) = shape;
    let granule_bits = granule.bits();
    let stride = granule_bits - 3;
    let levels = (FINAL_LEVEL - start) as u32;
    let mut tsize = iasize - (levels * stride + granule_bits) + 3;
    let base = if (machine.lpa() && granule == Granule::K64 && vtcr.ps() == 0b110) || ds {
        tsize = tsize.max(6);
        (((vttbr >> 2) & 0xf) << 48) | (vttbr & 0x0000_ffff_ffff_ffc0)
    } else {
        vttbr & 0x0000_ffff_ffff_fffe
    };
    base & !((1u64 << tsize) - 1)
}

/// AArch64.BlockDescSupported, as a mask with bit `level + 1` set per level allowing blocks.
fn block_levels(machine: &Machine, granule: Granule, ds: bool) -> u8 {
    let at = |level: i8| 1u8 << (level + 1);
    match granule {
        Granule::K4 => at(1) | at(2) | if ds { at(0) } else { 0 },
        Granule::K16 => at(2) | if ds { at(1) } else { 0 },
        Granule::K64 => {
            at(2)
                | if machine.pa_bits == PaBits::Bits52 {
                    at(1)
                } else {
                    0
                }
        }
    }
}

/// AArch64.ContiguousBit and ContiguousSize: log2 of the entries in a contiguous run per level
/// (index `level + 1`), 0 where the Contiguous bit is RES0 (4KB level 0, 16KB and 64KB level 1).
const fn contiguous_sizes(granule: Granule) -> [u8; 5] {
    match granule {
        Granule::K4 => [0, 0, 4, 4, 4],
        Granule::K16 => [0, 0, 0, 5, 7],
        Granule::K64 => [0, 0, 0, 5, 5],
    }
}

impl S2Config {
    /// Decodes and checks a stage-2 configuration as AArch64.S2Translate does before it walks.
    ///
    /// # Errors
    /// A level 0 translation fault when T0SZ is out of range and the machine faults on that
    /// (AArch64.S2TxSZFaults), or when the start level is invalid for the granule and PA size
    /// (AArch64.S2InvalidSL) or cannot resolve the input size (AArch64.S2InconsistentSL). The
    /// pseudocode reports all of these with `fault.level = 0`.
    pub fn new(machine: &Machine, vtcr: Vtcr, vttbr: Vttbr) -> Result<Self, Fault> {
        let level0 = Fault::new(FaultKind::Translation, 0);
        let granule = vtcr.granule();
        // AArch64.NSS2TTWParams: DS only with FEAT_LPA2 and a 4KB/16KB granule; SL2 only with
        // DS and 4KB; HD only when HA is effective.
        let ds = machine.lpa2 && granule != Granule::K64 && vtcr.ds();
        let sl2 = ds && granule == Granule::K4 && vtcr.sl2();
        let ha = machine.hafdbs && vtcr.ha();
        let hd = ha && vtcr.hd();

        let iasize = input_size(machine, granule, ds, vtcr.t0sz()).ok_or(level0)?;

        let granule_bits = granule.bits();
        let stride = granule_bits - 3;
        if invalid_sl(machine, granule, ds, sl2, vtcr.sl0()) {
            return Err(level0);
        }
        let start_level = start_level(granule, sl2, vtcr.sl0()).ok_or(level0)?;
        if inconsistent_sl(granule_bits, stride, start_level, iasize) {
            return Err(level0);
        }

        let oasize = output_size(machine, vtcr.ps(), granule, ds);
        let (high_shift, high_mask, high_pos) = match (granule, ds) {
            (Granule::K64, _) => (12, 0xf, 48),
            (_, true) => (8, 0b11, 50),
            (_, false) => (0, 0, 0),
        };
        let base = table_base(
            machine,
            vttbr.get(),
            vtcr,
            ds,
            (granule, iasize, start_level),
        );
        Ok(Self {
            granule,
            granule_bits,
            stride,
            start_level,
            iasize,
            oasize,
            base,
            base_out_of_range: base >> oasize != 0,
            oa_low_mask: if ds { (1 << 50) - 1 } else { (1 << 48) - 1 },
            high_shift,
            high_mask,
            high_pos,
            contiguous: contiguous_sizes(granule),
            block_levels: block_levels(machine, granule, ds),
            ha,
            hd,
            xnx: machine.xnx,
        })
    }

    /// The translation granule.
    #[must_use]
    pub const fn granule(&self) -> Granule {
        self.granule
    }

    /// The level the walk starts at (-1 to 3).
    #[must_use]
    pub const fn start_level(&self) -> i8 {
        self.start_level
    }

    /// The input (IPA) size in bits, after any clamping of T0SZ.
    #[must_use]
    pub const fn input_bits(&self) -> u32 {
        self.iasize
    }

    /// The output address size in bits (VTCR_EL2.PS capped by PAMax).
    #[must_use]
    pub const fn output_bits(&self) -> u32 {
        self.oasize
    }

    /// The start-level table's address (VTTBR_EL2.BADDR, aligned).
    #[must_use]
    pub const fn base(&self) -> u64 {
        self.base
    }

    /// Whether the start-level table's address is above the output size (a level 0 Address
    /// size fault on every walk).
    #[must_use]
    pub const fn base_out_of_range(&self) -> bool {
        self.base_out_of_range
    }

    /// How many tables are concatenated at the start level (1 to 16).
    #[must_use]
    pub const fn concatenated_tables(&self) -> u32 {
        let lsb = self.translation_bits(self.start_level);
        let entries_bits = self.iasize - lsb;
        if entries_bits > self.stride {
            1 << (entries_bits - self.stride)
        } else {
            1
        }
    }

    /// The number of input-address bits one descriptor at `level` maps (TranslationSize).
    #[must_use]
    pub const fn translation_bits(&self, level: i8) -> u32 {
        self.granule_bits + (FINAL_LEVEL - level) as u32 * self.stride
    }

    /// Whether a block descriptor (0b01) at `level` is a leaf rather than invalid.
    #[must_use]
    pub const fn block_allowed(&self, level: i8) -> bool {
        level >= -1 && level <= FINAL_LEVEL && self.block_levels & (1 << (level + 1)) != 0
    }
}

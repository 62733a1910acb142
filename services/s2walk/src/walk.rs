//! The fast stage-2 walk: one bounded loop over the levels of a decoded [`S2Config`].
//!
//! It computes what Arm DDI 0487 (L.a) J1.1.5 AArch64.S2Translate and AArch64.S2Walk compute for
//! a non-secure, 64-bit-descriptor stage 2 (the `reference` module transcribes those functions
//! literally, and the property tests hold the two equal). Per lookup: AArch64.S2SLTTEntryAddress /
//! AArch64.TTEntryAddress for the descriptor address, FetchDescriptor (a failed read is a
//! synchronous External abort on the walk at the level being read), AArch64.DecodeDescriptorType,
//! AArch64.NextTableBase with the Address size check of the next table, and at the leaf
//! AArch64.LeafBase, StageOA, AArch64.S2OAOutOfRange, the Access flag check,
//! AArch64.S2ApplyOutputPerms and AArch64.S2CheckPermissions.
//!
//! Not modelled (each is an IMPLEMENTATION DEFINED choice or a feature capvisor does not
//! expose to guest hypervisors): the Translation fault for a misprogrammed Contiguous bit
//! (AArch64.ContiguousBitFaults chooses "no fault"), FEAT_BBM's nT bit, FEAT_S2PIE/S2POE,
//! FEAT_D128, FEAT_HAFT, alignment faults (they depend on the access size, not on the tables),
//! big-endian table walks (SCTLR_EL2.EE is taken as 0).

use crate::config::{FINAL_LEVEL, S2Config};
use crate::fault::{Fault, FaultKind};
use crate::memory::GuestMemory;
use crate::regs::{Access, Ipa, Machine, OutputAddr, Vtcr, Vttbr};

/// Descriptor bit 10, AF.
const AF: u64 = 1 << 10;
/// Descriptor bit 51, DBM.
const DBM: u64 = 1 << 51;
/// Descriptor bits \[5:4\], MemAttr\[3:2\]: 0b00 is Device memory (HCR_EL2.FWB = 0).
const DEVICE_MASK: u64 = 0b11 << 4;
/// Descriptor bit 52, Contiguous.
const CONTIGUOUS: u64 = 1 << 52;

/// The stage-2 permissions of a mapping (what S2AP and XN allow, before any access is checked).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Permissions {
    /// S2AP\[0\]: data reads allowed.
    pub read: bool,
    /// S2AP\[1\] (or DBM with hardware dirty-state management): data writes allowed.
    pub write: bool,
    /// Instruction fetches at EL1 allowed (XN\[1:0\], FEAT_XNX).
    pub exec_el1: bool,
    /// Instruction fetches at EL0 allowed.
    pub exec_el0: bool,
}

impl Permissions {
    /// Whether these permissions allow `access` (AArch64.S2CheckPermissions: instruction
    /// fetches check only execute permission, data accesses only S2AP).
    #[must_use]
    pub const fn allow(&self, access: Access) -> bool {
        match access {
            Access::Read => self.read,
            Access::Write => self.write,
            Access::ExecEl1 => self.exec_el1,
            Access::ExecEl0 => self.exec_el0,
        }
    }

    /// What both `self` and `other` allow.
    #[must_use]
    pub const fn intersect(&self, other: &Self) -> Self {
        Self {
            read: self.read && other.read,
            write: self.write && other.write,
            exec_el1: self.exec_el1 && other.exec_el1,
            exec_el0: self.exec_el0 && other.exec_el0,
        }
    }
}

/// A successful walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Translation {
    /// The output address of the input address (StageOA).
    pub oa: OutputAddr,
    /// The level of the leaf descriptor.
    pub level: i8,
    /// log2 of the size of the block or page the leaf maps (TranslationSize).
    pub size_bits: u32,
    /// The leaf's permissions.
    pub perms: Permissions,
    /// The leaf's MemAttr\[3:0\] (descriptor bits \[5:2\]), raw.
    pub memattr: u8,
    /// The leaf descriptor as read (for callers that manage AF/dirty state in software).
    pub descriptor: u64,
    /// Where the leaf descriptor was read.
    pub descriptor_addr: OutputAddr,
}

impl Translation {
    /// The size in bytes of the block or page the leaf maps.
    #[must_use]
    pub const fn size(&self) -> u64 {
        1 << self.size_bits
    }
}

/// Sees each descriptor a walk reads (for callers that track which table pages a translation
/// depends on). The no-op observer `()` compiles away.
pub trait WalkObserver {
    /// Called after the descriptor at `addr` (read at `level`) was fetched.
    fn descriptor(&mut self, level: i8, addr: OutputAddr, descriptor: u64);
}

impl WalkObserver for () {
    #[inline(always)]
    fn descriptor(&mut self, _level: i8, _addr: OutputAddr, _descriptor: u64) {}
}

/// Decodes `vtcr`/`vttbr` and walks `ipa` for `access` in one call.
///
/// # Errors
/// The [`Fault`] hardware would report, with its level.
pub fn walk<M: GuestMemory>(
    machine: &Machine,
    vtcr: Vtcr,
    vttbr: Vttbr,
    mem: &M,
    ipa: Ipa,
    access: Access,
) -> Result<Translation, Fault> {
    S2Config::new(machine, vtcr, vttbr)?.walk(mem, ipa, access)
}

impl S2Config {
    /// Walks `ipa` for `access`.
    ///
    /// # Errors
    /// The [`Fault`] hardware would report, with its level.
    #[inline]
    pub fn walk<M: GuestMemory>(
        &self,
        mem: &M,
        ipa: Ipa,
        access: Access,
    ) -> Result<Translation, Fault> {
        self.walk_observed(mem, ipa, access, &mut ())
    }

    /// Walks `ipa` for `access`, showing `observer` every descriptor read.
    ///
    /// The loop runs at most five times (levels -1 to 3): each table descriptor moves one level
    /// deeper and a level 3 descriptor is always a page or invalid, so no table tree, however
    /// hostile (loops, self-references), can make it run longer.
    ///
    /// # Errors
    /// The [`Fault`] hardware would report, with its level.
    #[inline]
    pub fn walk_observed<M: GuestMemory, O: WalkObserver>(
        &self,
        mem: &M,
        ipa: Ipa,
        access: Access,
        observer: &mut O,
    ) -> Result<Translation, Fault> {
        let ipa = ipa.get();
        // AArch64.IPAIsOutOfRange, checked by AArch64.S2Translate at level 0.
        if ipa >> self.iasize != 0 {
            return Err(Fault::new(FaultKind::Translation, 0));
        }
        // AArch64.S2Walk: "Detect Address Size Fault by Descriptor Address" of the start level,
        // reported at level 0 whatever the start level (R_BFHQH states it for stage 1).
        if self.base_out_of_range {
            return Err(Fault::new(FaultKind::AddressSize, 0));
        }
        let mut level = self.start_level;
        let mut lsb = self.translation_bits(level);
        let start_entries = self.iasize - lsb;
        let mut addr = self.base | (((ipa >> lsb) & ((1 << start_entries) - 1)) << 3);
        let table_mask = (1u64 << self.stride) - 1;
        for _ in 0..5 {
            let desc = mem
                .read_u64(OutputAddr::new(addr))
                .map_err(|_| Fault::new(FaultKind::ExternalAbortOnWalk, level))?;
            observer.descriptor(level, OutputAddr::new(addr), desc);
            let table_or_page = desc & 0b11 == 0b11;
            if table_or_page && level < FINAL_LEVEL {
                let next = (desc & self.oa_low_mask & !((1 << self.granule_bits) - 1))
                    | self.high_bits(desc);
                if next >> self.oasize != 0 {
                    return Err(Fault::new(FaultKind::AddressSize, level));
                }
                level += 1;
                lsb -= self.stride;
                addr = next | (((ipa >> lsb) & table_mask) << 3);
            } else if table_or_page || (desc & 0b11 == 0b01 && self.block_allowed(level)) {
                return self.leaf(desc, addr, (level, lsb), ipa, access);
            } else {
                return Err(Fault::new(FaultKind::Translation, level));
            }
        }
        // Not reachable: the level reaches 3 within four iterations.
        Err(Fault::new(FaultKind::Translation, FINAL_LEVEL))
    }

    /// Output-address bits above bit 47 held elsewhere in the descriptor.
    #[inline(always)]
    pub(crate) fn high_bits(&self, desc: u64) -> u64 {
        ((desc >> self.high_shift) & self.high_mask) << self.high_pos
    }

    /// log2 of the number of entries a Contiguous run covers (AArch64.ContiguousBit and
    /// ContiguousSize), 0 when the bit is clear or RES0 at this level.
    #[inline(always)]
    pub(crate) fn contiguous_bits(&self, desc: u64, level: i8) -> u32 {
        if desc & CONTIGUOUS == 0 {
            return 0;
        }
        let index = usize::try_from(level + 1).unwrap_or(0);
        u32::from(self.contiguous.get(index).copied().unwrap_or(0))
    }

    /// AArch64.S2ApplyOutputPerms (with FEAT_XNX's XN\[1:0\] and FEAT_HAFDBS's DBM).
    #[inline(always)]
    pub(crate) fn permissions(&self, desc: u64) -> Permissions {
        let xn = desc & (1 << 54) != 0;
        let xnx = self.xnx && desc & (1 << 53) != 0;
        Permissions {
            read: desc & (1 << 6) != 0,
            write: desc & (1 << 7) != 0 || (self.hd && desc & DBM != 0),
            exec_el1: xn == xnx,
            exec_el0: !xn,
        }
    }

    /// The checks AArch64.S2Walk and AArch64.S2Translate make on a leaf, in their order.
    #[inline(always)]
    fn leaf(
        &self,
        desc: u64,
        addr: u64,
        (level, size_bits): (i8, u32),
        ipa: u64,
        access: Access,
    ) -> Result<Translation, Fault> {
        let base = (desc & self.oa_low_mask & !((1 << size_bits) - 1)) | self.high_bits(desc);
        let ia_msb = size_bits + self.contiguous_bits(desc, level);
        let low = (1u64 << ia_msb) - 1;
        let oa = (base & !low) | (ipa & low);
        if oa >> self.oasize != 0 {
            return Err(Fault::new(FaultKind::AddressSize, level));
        }
        if desc & AF == 0 && !self.ha {
            return Err(Fault::new(FaultKind::AccessFlag, level));
        }
        let perms = self.permissions(desc);
        // AArch64.S2CheckPermissions: an instruction fetch from memory stage 2 makes Device
        // (MemAttr[3:2] = 0b00 with HCR_EL2.FWB = 0) is a Permission fault whatever XN says.
        let fetch = matches!(access, Access::ExecEl1 | Access::ExecEl0);
        if !perms.allow(access) || (fetch && desc & DEVICE_MASK == 0) {
            return Err(Fault::new(FaultKind::Permission, level));
        }
        Ok(Translation {
            oa: OutputAddr::new(oa),
            level,
            size_bits,
            perms,
            memattr: ((desc >> 2) & 0xf) as u8,
            descriptor: desc,
            descriptor_addr: OutputAddr::new(addr),
        })
    }
}

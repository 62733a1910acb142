//! The guest's GICv3 distributor and redistributors, emulated as MMIO (GIC Architecture
//! Specification IHI 0069H, 12.9 "The GIC Distributor register descriptions", 12.10/12.11 the
//! redistributor's RD_base and SGI_base frames). The CPU interface is the hardware's virtual one
//! (the kernel switches it with the vCPU); what a guest configures here — enables, priorities,
//! groups, trigger modes, routing — is state the VMM keeps and a guest reads back, and decides
//! which interrupts the VMM forwards ([`Vgic::enabled`]).
//!
//! The model is the one QEMU `virt` presents to an EL1 guest, at the same addresses: affinity
//! routing always on (GICD_CTLR.ARE_NS reads one), no LPIs, no security extension (the guest sees
//! the non-secure view), [`SPIS`] shared interrupts, one redistributor per vCPU (128 KiB each,
//! the last one marked Last). Pending and active state lives in the vCPUs' list registers (and
//! the VMM's queue of SGIs waiting for one): the pending/active registers are answered from
//! them by the VMM ([`Vgic::state_word`], `vmm.rs`).

/// The distributor's IPA and size (QEMU `virt`).
pub const GICD_BASE: u64 = 0x0800_0000;
/// Bytes of the distributor frame.
pub const GICD_SIZE: u64 = 0x1_0000;
/// The first redistributor's IPA (QEMU `virt`).
pub const GICR_BASE: u64 = 0x080a_0000;
/// Bytes of one redistributor (RD_base and SGI_base frames, 64 KiB each).
pub const GICR_STRIDE: u64 = 0x2_0000;
/// Shared peripheral interrupts emulated: INTIDs 32 to 32 + SPIS - 1 (QEMU `virt`'s devices use
/// 33–79).
pub const SPIS: usize = 64;
/// The most vCPUs.
const MAX_VCPUS: usize = capvisor_ipc::bootinfo::MAX_GUEST_VCPUS;

/// GICD_CTLR bits a guest may set: EnableGrp0, EnableGrp1NS (IHI 0069H 12.9.4, non-secure
/// view without security extension: DS = 1).
const CTLR_ENABLES: u32 = 0b11;
/// GICD_CTLR.ARE_NS (affinity routing) and DS (no security extension): read as one.
const CTLR_FIXED: u32 = (1 << 4) | (1 << 6);
/// GICD_PIDR2 / GICR_PIDR2: ArchRev 3 (GICv3) in [7:4], and the JEP106 bits Arm uses.
const PIDR2: u32 = 0x3b;
/// GICD_IIDR / GICR_IIDR: implementer Arm (0x43b).
const IIDR: u32 = 0x43b;
/// GICR_WAKER.ProcessorSleep and ChildrenAsleep.
const WAKER_SLEEP: u32 = 1 << 1;
const WAKER_ASLEEP: u32 = 1 << 2;

/// One redistributor's state: the vCPU's SGIs and PPIs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Redistributor {
    waker: u32,
    group: u32,
    enabled: u32,
    priority: [u8; 32],
    /// ICFGR1: the PPIs' trigger modes (ICFGR0, the SGIs', is fixed edge: 0xaaaa_aaaa).
    config_ppi: u32,
}

impl Redistributor {
    const RESET: Self = Self {
        waker: WAKER_SLEEP,
        group: 0,
        enabled: 0,
        priority: [0; 32],
        config_ppi: 0,
    };
}

/// The emulated distributor and redistributors of one guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vgic {
    vcpus: usize,
    ctlr: u32,
    group: [u32; SPIS / 32],
    enabled: [u32; SPIS / 32],
    priority: [u8; SPIS],
    config: [u32; SPIS / 16],
    route: [u64; SPIS],
    redistributors: [Redistributor; MAX_VCPUS],
}

/// Where an address falls.
enum Frame {
    Distributor(u64),
    /// A vCPU's RD_base frame, at an offset.
    Rd(usize, u64),
    /// A vCPU's SGI_base frame, at an offset.
    Sgi(usize, u64),
}

impl Vgic {
    /// A distributor and `vcpus` redistributors at reset: everything disabled, the
    /// redistributors asleep.
    #[must_use]
    pub fn new(vcpus: u32) -> Self {
        Self {
            vcpus: (vcpus as usize).clamp(1, MAX_VCPUS),
            ctlr: 0,
            group: [0; SPIS / 32],
            enabled: [0; SPIS / 32],
            priority: [0; SPIS],
            config: [0; SPIS / 16],
            route: [0; SPIS],
            redistributors: [Redistributor::RESET; MAX_VCPUS],
        }
    }

    /// Back to the reset state, as at [`Vgic::new`] (a system reset). Not inlined into the
    /// VMM's async code, whose poll functions would otherwise carry the temporary.
    #[inline(never)]
    pub fn reset(&mut self) {
        *self = Self::new(self.vcpus as u32);
    }

    /// Bytes of the redistributor region for this guest's vCPUs.
    #[must_use]
    pub const fn redistributors_size(&self) -> u64 {
        GICR_STRIDE * self.vcpus as u64
    }

    fn frame(&self, ipa: u64) -> Option<Frame> {
        if let Some(offset) = ipa.checked_sub(GICD_BASE).filter(|o| *o < GICD_SIZE) {
            return Some(Frame::Distributor(offset));
        }
        let offset = ipa
            .checked_sub(GICR_BASE)
            .filter(|o| *o < self.redistributors_size())?;
        let (vcpu, within) = ((offset / GICR_STRIDE) as usize, offset % GICR_STRIDE);
        Some(if within < 0x1_0000 {
            Frame::Rd(vcpu, within)
        } else {
            Frame::Sgi(vcpu, within - 0x1_0000)
        })
    }

    /// Whether `ipa` is one of the GIC's registers.
    #[must_use]
    pub fn contains(&self, ipa: u64) -> bool {
        self.frame(ipa).is_some()
    }

    /// Whether interrupt `intid` is enabled for `vcpu`: its redistributor's enable for an SGI or
    /// PPI, the distributor's (and GICD_CTLR's group 1 enable) for an SPI.
    #[must_use]
    #[cfg_attr(
        not(test),
        allow(
            dead_code,
            reason = "for forwarding device SPIs, which is not built yet"
        )
    )]
    pub fn enabled(&self, vcpu: u32, intid: u32) -> bool {
        let bit = 1u32 << (intid % 32);
        match intid {
            0..32 => self
                .redistributors
                .get(vcpu as usize)
                .is_some_and(|r| r.enabled & bit != 0),
            _ => {
                let index = (intid as usize - 32) / 32;
                self.ctlr & 0b10 != 0 && self.enabled.get(index).is_some_and(|w| w & bit != 0)
            }
        }
    }

    /// Reads `size` (1, 2, 4 or 8) bytes at `ipa`; `None` if it is not a GIC register.
    #[must_use]
    pub fn read(&self, ipa: u64, size: u64) -> Option<u64> {
        if size == 8 && ipa.is_multiple_of(8) {
            let low = u64::from(self.read_word(&self.frame(ipa)?));
            let high = u64::from(self.read_word(&self.frame(ipa + 4)?));
            return Some(low | high << 32);
        }
        let word = u64::from(self.read_word(&self.frame(ipa & !3)?));
        let shift = (ipa & 3) * 8;
        let mask = if size >= 4 {
            u64::MAX
        } else {
            (1 << (size * 8)) - 1
        };
        Some((word >> shift) & mask)
    }

    /// Writes `size` bytes of `value` at `ipa`; `false` if it is not a GIC register.
    pub fn write(&mut self, ipa: u64, size: u64, value: u64) -> bool {
        if self.frame(ipa).is_none() {
            return false;
        }
        if size == 8 && ipa.is_multiple_of(8) {
            self.write(ipa, 4, value & 0xffff_ffff);
            self.write(ipa + 4, 4, value >> 32);
            return true;
        }
        let aligned = ipa & !3;
        let Some(frame) = self.frame(aligned) else {
            return false;
        };
        if size >= 4 {
            // A word (or wider) write that is not naturally aligned has no register to land in
            // (IHI 0069H 12.1.3: such accesses are UNPREDICTABLE): ignored.
            if ipa == aligned {
                self.write_word(&frame, value as u32);
            }
            return true;
        }
        // A narrower write (byte-accessible priority registers): only its byte lanes change.
        let shift = (ipa & 3) * 8;
        let mask = ((1u64 << (size * 8)) - 1) << shift;
        if is_priority(&frame) {
            let old = u64::from(self.read_word(&frame));
            let new = (old & !mask) | ((value << shift) & mask);
            self.write_word(&frame, new as u32);
        }
        true
    }

    fn read_word(&self, frame: &Frame) -> u32 {
        match *frame {
            Frame::Distributor(offset) => self.read_distributor(offset),
            Frame::Rd(vcpu, offset) => self.read_rd(vcpu, offset),
            Frame::Sgi(vcpu, offset) => self.read_sgi(vcpu, offset),
        }
    }

    fn write_word(&mut self, frame: &Frame, value: u32) {
        match *frame {
            Frame::Distributor(offset) => self.write_distributor(offset, value),
            Frame::Rd(vcpu, offset) => self.write_rd(vcpu, offset, value),
            Frame::Sgi(vcpu, offset) => self.write_sgi(vcpu, offset, value),
        }
    }

    fn read_distributor(&self, offset: u64) -> u32 {
        let spi_word = |base: u64| spi_index(offset, base, 32);
        match offset {
            0x0000 => self.ctlr | CTLR_FIXED,
            // ITLinesNumber: 32 × (N + 1) INTIDs; IDbits 9: 10-bit INTIDs (IHI 0069H 12.9.38).
            0x0004 => (SPIS / 32) as u32 | (9 << 19),
            0x0008 => IIDR,
            0xffe8 => PIDR2,
            0x0080..0x0100 => spi_word(0x0080).map_or(0, |i| self.group[i]),
            0x0100..0x0200 => spi_word(0x0100)
                .or_else(|| spi_word(0x0180))
                .map_or(0, |i| self.enabled[i]),
            0x0400..0x0800 => spi_byte(offset, 0x0400).map_or(0, |i| {
                u32::from_le_bytes(core::array::from_fn(|b| {
                    self.priority.get(i + b).copied().unwrap_or(0)
                }))
            }),
            0x0c00..0x0d00 => spi_index(offset, 0x0c00, 16).map_or(0, |i| self.config[i]),
            0x6000..0x8000 => {
                let n = (offset - 0x6000) / 8;
                match n.checked_sub(32).map(|i| i as usize).filter(|i| *i < SPIS) {
                    Some(i) if offset.is_multiple_of(8) => self.route[i] as u32,
                    Some(i) => (self.route[i] >> 32) as u32,
                    None => 0,
                }
            }
            _ => 0,
        }
    }

    fn write_distributor(&mut self, offset: u64, value: u32) {
        let spi_word = |base: u64| spi_index(offset, base, 32);
        match offset {
            0x0000 => self.ctlr = value & CTLR_ENABLES,
            0x0080..0x0100 => {
                if let Some(i) = spi_word(0x0080) {
                    self.group[i] = value;
                }
            }
            0x0100..0x0180 => {
                if let Some(i) = spi_word(0x0100) {
                    self.enabled[i] |= value;
                }
            }
            0x0180..0x0200 => {
                if let Some(i) = spi_word(0x0180) {
                    self.enabled[i] &= !value;
                }
            }
            0x0400..0x0800 => {
                if let Some(i) = spi_byte(offset, 0x0400) {
                    for (b, byte) in value.to_le_bytes().into_iter().enumerate() {
                        if let Some(p) = self.priority.get_mut(i + b) {
                            *p = byte;
                        }
                    }
                }
            }
            0x0c00..0x0d00 => {
                if let Some(i) = spi_index(offset, 0x0c00, 16) {
                    // Only Int_config (the odd bits) is writable: edge or level.
                    self.config[i] = value & 0xaaaa_aaaa;
                }
            }
            0x6000..0x8000 => {
                let n = (offset - 0x6000) / 8;
                if let Some(i) = n.checked_sub(32).map(|i| i as usize).filter(|i| *i < SPIS) {
                    let route = &mut self.route[i];
                    *route = if offset.is_multiple_of(8) {
                        (*route & !0xffff_ffff) | u64::from(value)
                    } else {
                        (*route & 0xffff_ffff) | u64::from(value) << 32
                    };
                }
            }
            _ => {}
        }
    }

    fn read_rd(&self, vcpu: usize, offset: u64) -> u32 {
        let redistributor = &self.redistributors[vcpu];
        match offset {
            0x0004 => IIDR,
            // GICR_TYPER (IHI 0069H 12.11.35): Processor_Number [23:8], Last [4]; the upper
            // word is the affinity, Aff0 = the vCPU's number.
            0x0008 => {
                let last = if vcpu + 1 == self.vcpus { 1 << 4 } else { 0 };
                ((vcpu as u32) << 8) | last
            }
            0x000c => vcpu as u32,
            0x0014 => {
                let sleep = redistributor.waker & WAKER_SLEEP;
                sleep | if sleep != 0 { WAKER_ASLEEP } else { 0 }
            }
            0xffe8 => PIDR2,
            _ => 0,
        }
    }

    fn write_rd(&mut self, vcpu: usize, offset: u64, value: u32) {
        if offset == 0x0014 {
            self.redistributors[vcpu].waker = value & WAKER_SLEEP;
        }
    }

    fn read_sgi(&self, vcpu: usize, offset: u64) -> u32 {
        let redistributor = &self.redistributors[vcpu];
        match offset {
            0x0080 => redistributor.group,
            0x0100 | 0x0180 => redistributor.enabled,
            0x0400..0x0420 => {
                let i = (offset - 0x0400) as usize;
                u32::from_le_bytes(core::array::from_fn(|b| redistributor.priority[i + b]))
            }
            0x0c00 => 0xaaaa_aaaa,
            0x0c04 => redistributor.config_ppi,
            _ => 0,
        }
    }

    fn write_sgi(&mut self, vcpu: usize, offset: u64, value: u32) {
        let redistributor = &mut self.redistributors[vcpu];
        match offset {
            0x0080 => redistributor.group = value,
            0x0100 => redistributor.enabled |= value,
            0x0180 => redistributor.enabled &= !value,
            0x0400..0x0420 => {
                let i = (offset - 0x0400) as usize;
                redistributor.priority[i..i + 4].copy_from_slice(&value.to_le_bytes());
            }
            // SGIs are edge-triggered; only the PPIs' Int_config bits are writable.
            0x0c04 => redistributor.config_ppi = value & 0xaaaa_aaaa,
            _ => {}
        }
    }
}

/// A pending/active register (GICD_/GICR_ ISPENDR, ICPENDR, ISACTIVER, ICACTIVER; IHI 0069H
/// 12.9.23-12.9.30, 12.11.24-12.11.31): the state lives in the vCPUs' list registers, so the VMM
/// answers these with the kernel's view of them (`vmm.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateRegister {
    /// ISPENDR: reads pending, a write makes interrupts pending.
    SetPending,
    /// ICPENDR: reads pending, a write clears pending.
    ClearPending,
    /// ISACTIVER: reads active, a write makes interrupts active.
    SetActive,
    /// ICACTIVER: reads active, a write clears active.
    ClearActive,
}

/// A pending/active register word: which register, the first of the 32 INTIDs it covers, and
/// the vCPU whose redistributor it is in (`None`: the distributor's, for SPIs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateWord {
    /// The register.
    pub register: StateRegister,
    /// The INTID of bit 0.
    pub first: u32,
    /// The redistributor's vCPU, for SGIs and PPIs.
    pub vcpu: Option<u32>,
}

impl Vgic {
    /// The pending/active register word at `ipa`, if it is one (with affinity routing the
    /// distributor's first word, SGIs and PPIs, is RAZ/WI: `None`; so are words beyond the
    /// emulated SPIs).
    #[must_use]
    pub fn state_word(&self, ipa: u64) -> Option<StateWord> {
        let (offset, vcpu) = match self.frame(ipa & !3)? {
            Frame::Distributor(offset) if (0x0200..0x0400).contains(&offset) => (offset, None),
            Frame::Sgi(vcpu, offset) if (0x0200..0x0400).contains(&offset) => {
                (offset, Some(vcpu as u32))
            }
            _ => return None,
        };
        let register = match (offset - 0x0200) / 0x80 {
            0 => StateRegister::SetPending,
            1 => StateRegister::ClearPending,
            2 => StateRegister::SetActive,
            _ => StateRegister::ClearActive,
        };
        let word = ((offset % 0x80) / 4) as u32;
        match vcpu {
            Some(_) if word == 0 => Some(StateWord {
                register,
                first: 0,
                vcpu,
            }),
            None if word >= 1 && (word as usize) <= SPIS / 32 => Some(StateWord {
                register,
                first: 32 * word,
                vcpu: None,
            }),
            _ => None,
        }
    }

    /// The vCPU an SPI is routed to (GICD_IROUTER<n>.Aff0; vCPU 0 for one beyond the emulated
    /// SPIs or routed to no vCPU of the guest).
    #[must_use]
    pub fn spi_target(&self, intid: u32) -> u32 {
        let aff0 = intid
            .checked_sub(32)
            .and_then(|i| self.route.get(i as usize))
            .map_or(0, |route| (*route & 0xff) as usize);
        if aff0 < self.vcpus { aff0 as u32 } else { 0 }
    }

    /// The priority the guest gave interrupt `intid` (of `vcpu`'s redistributor for an SGI or
    /// PPI).
    #[must_use]
    pub fn priority(&self, vcpu: u32, intid: u32) -> u8 {
        match intid {
            0..32 => self
                .redistributors
                .get(vcpu as usize)
                .map_or(0, |r| r.priority[intid as usize]),
            _ => self.priority.get(intid as usize - 32).copied().unwrap_or(0),
        }
    }
}

/// Whether a word is one of the byte-accessible priority registers.
fn is_priority(frame: &Frame) -> bool {
    matches!(
        *frame,
        Frame::Distributor(0x0400..0x0800) | Frame::Sgi(_, 0x0400..0x0420)
    )
}

/// The index of the SPI word of a register array at `base` with `per_word` INTIDs per word
/// (32 for bit arrays, 16 for ICFGR), for word `offset`; `None` for the first word's SGIs and
/// PPIs (their copies are the redistributor's) and beyond the emulated SPIs.
fn spi_index(offset: u64, base: u64, per_word: usize) -> Option<usize> {
    let word = (offset.checked_sub(base)? / 4) as usize;
    let first_spi_word = 32 / per_word;
    word.checked_sub(first_spi_word)
        .filter(|i| *i < SPIS / per_word)
}

/// The index into the SPI priorities of the priority word at `offset` (4 INTIDs a word).
fn spi_byte(offset: u64, base: u64) -> Option<usize> {
    let intid = (offset.checked_sub(base)? & !3) as usize;
    intid.checked_sub(32).filter(|i| *i < SPIS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever a guest does to its GIC's registers — any address in or near the frames,
        /// any size, any value, in any order — the emulation neither panics nor answers for an
        /// address outside them, and its enables stay within the emulated interrupts.
        #[test]
        fn any_access_sequence_is_safe(
            vcpus in 1u32..=8,
            accesses in proptest::collection::vec(
                (
                    0u64..0x1c_0000,
                    prop_oneof![Just(1u64), Just(2), Just(4), Just(8)],
                    any::<u64>(),
                    any::<bool>(),
                ),
                0..200,
            ),
        ) {
            let mut gic = Vgic::new(vcpus);
            for (offset, size, value, write) in accesses {
                let ipa = GICD_BASE - 0x1000 + offset;
                if write {
                    prop_assert_eq!(gic.write(ipa, size, value), gic.contains(ipa));
                } else {
                    prop_assert_eq!(gic.read(ipa, size).is_some(), gic.contains(ipa));
                }
            }
            for intid in (32 + SPIS as u32)..1020 {
                prop_assert!(!gic.enabled(0, intid));
            }
        }
    }

    const SGI_FRAME: u64 = 0x1_0000;

    #[test]
    fn the_distributor_identifies_as_a_gicv3_with_affinity_routing() {
        let gic = Vgic::new(2);
        // GICD_PIDR2.ArchRev = 3: what Linux's gic-v3 driver checks first.
        assert_eq!(
            gic.read(GICD_BASE + 0xffe8, 4).map(|v| (v >> 4) & 0xf),
            Some(3)
        );
        // 96 INTIDs (ITLinesNumber 2), 10-bit INTIDs.
        assert_eq!(gic.read(GICD_BASE + 4, 4), Some(2 | 9 << 19));
        // ARE_NS and DS read as one; RWP as zero.
        assert_eq!(gic.read(GICD_BASE, 4), Some(0x50));
        assert!(!gic.contains(GICD_BASE - 4) && !gic.contains(GICD_BASE + GICD_SIZE));
        assert_eq!(gic.read(0x0900_0000, 4), None);
    }

    #[test]
    fn spis_are_enabled_configured_and_routed_as_written() {
        let mut gic = Vgic::new(1);
        assert!(gic.write(GICD_BASE + 0x0104, 4, 1 << 1));
        // Enabled only with the distributor's group 1 enable.
        assert!(!gic.enabled(0, 33));
        gic.write(GICD_BASE, 4, 0b10);
        assert!(gic.enabled(0, 33) && !gic.enabled(0, 34));
        assert_eq!(gic.read(GICD_BASE + 0x0184, 4), Some(1 << 1));
        gic.write(GICD_BASE + 0x0184, 4, 1 << 1);
        assert!(!gic.enabled(0, 33));
        // Priorities, word and byte at a time.
        gic.write(GICD_BASE + 0x0420, 4, 0xa0a0_a0a0);
        gic.write(GICD_BASE + 0x0421, 1, 0x80);
        assert_eq!(gic.read(GICD_BASE + 0x0420, 4), Some(0xa0a0_80a0));
        assert_eq!(gic.read(GICD_BASE + 0x0421, 1), Some(0x80));
        // Level/edge: only the odd bits stick.
        gic.write(GICD_BASE + 0x0c08, 4, u64::from(u32::MAX));
        assert_eq!(gic.read(GICD_BASE + 0x0c08, 4), Some(0xaaaa_aaaa));
        // IROUTER as one 64-bit access and as two words.
        gic.write(GICD_BASE + 0x6000 + 8 * 33, 8, 0x1_0000_0002);
        assert_eq!(
            gic.read(GICD_BASE + 0x6000 + 8 * 33, 8),
            Some(0x1_0000_0002)
        );
        assert_eq!(gic.read(GICD_BASE + 0x6004 + 8 * 33, 4), Some(1));
        // SGIs and PPIs have no distributor copy with affinity routing: RAZ/WI.
        gic.write(GICD_BASE + 0x0100, 4, u64::from(u32::MAX));
        assert_eq!(gic.read(GICD_BASE + 0x0100, 4), Some(0));
        // Beyond the emulated SPIs: RAZ/WI.
        gic.write(GICD_BASE + 0x010c, 4, 1);
        assert_eq!(gic.read(GICD_BASE + 0x010c, 4), Some(0));
    }

    #[test]
    fn pending_and_active_registers_are_found_for_the_vmm() {
        let mut gic = Vgic::new(2);
        let sgi1 = GICR_BASE + GICR_STRIDE + SGI_FRAME;
        assert_eq!(
            gic.state_word(sgi1 + 0x0280),
            Some(StateWord {
                register: StateRegister::ClearPending,
                first: 0,
                vcpu: Some(1)
            })
        );
        assert_eq!(
            gic.state_word(GICD_BASE + 0x0304),
            Some(StateWord {
                register: StateRegister::SetActive,
                first: 32,
                vcpu: None
            })
        );
        // The distributor's SGI/PPI word, words beyond the SPIs and other registers: no.
        assert_eq!(gic.state_word(GICD_BASE + 0x0200), None);
        assert_eq!(gic.state_word(GICD_BASE + 0x020c), None);
        assert_eq!(gic.state_word(sgi1 + 0x0204), None);
        assert_eq!(gic.state_word(sgi1 + 0x0100), None);
        // SPI 40 routed to vCPU 1; an out-of-range route falls back to vCPU 0.
        gic.write(GICD_BASE + 0x6000 + 8 * 40, 8, 1);
        assert_eq!(gic.spi_target(40), 1);
        gic.write(GICD_BASE + 0x6000 + 8 * 40, 8, 7);
        assert_eq!(gic.spi_target(40), 0);
        gic.write(GICD_BASE + 0x0428, 1, 0x90);
        assert_eq!(gic.priority(0, 40), 0x90);
    }

    #[test]
    fn each_vcpu_has_a_redistributor_found_by_affinity_the_last_marked() {
        let mut gic = Vgic::new(2);
        assert_eq!(gic.redistributors_size(), 2 * GICR_STRIDE);
        let typer = |gic: &Vgic, n: u64| gic.read(GICR_BASE + n * GICR_STRIDE + 8, 8).unwrap();
        assert_eq!(typer(&gic, 0), 0);
        assert_eq!(typer(&gic, 1), (1 << 32) | (1 << 8) | (1 << 4));
        assert!(!gic.contains(GICR_BASE + 2 * GICR_STRIDE));
        assert_eq!(gic.read(GICR_BASE + 0xffe8, 4), Some(0x3b));
        // Waking up: ProcessorSleep cleared, ChildrenAsleep follows.
        assert_eq!(gic.read(GICR_BASE + 0x14, 4), Some(0b110));
        gic.write(GICR_BASE + 0x14, 4, 0);
        assert_eq!(gic.read(GICR_BASE + 0x14, 4), Some(0));
        // The virtual timer's PPI, enabled on vCPU 1 only, with its priority byte.
        let sgi1 = GICR_BASE + GICR_STRIDE + SGI_FRAME;
        gic.write(sgi1 + 0x0100, 4, 1 << 27);
        assert!(gic.enabled(1, 27) && !gic.enabled(0, 27));
        gic.write(sgi1 + 0x041b, 1, 0xa0);
        assert_eq!(gic.read(sgi1 + 0x0418, 4), Some(0xa000_0000));
        gic.write(sgi1 + 0x0180, 4, 1 << 27);
        assert!(!gic.enabled(1, 27));
        assert_eq!(gic.read(sgi1 + 0x0c00, 4), Some(0xaaaa_aaaa));
    }
}

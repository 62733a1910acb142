//! The list registers of a vCPU's GICv3 virtual CPU interface, as data (GIC Architecture
//! Specification IHI 0069H, 12.5.10 ICH_LR<n>_EL2): how the kernel puts a virtual interrupt in
//! one. The register access is `arch/aarch64/vgic.rs`.
//!
//! A list register holds: State [63:62] (01 pending, 10 active, 11 both), HW [61] (the virtual
//! interrupt is linked to physical interrupt pINTID, and deactivating one deactivates the other),
//! Group [60], Priority [55:48], pINTID [41:32] (with HW), vINTID [31:0].

/// The most list registers an implementation has (ICH_VTR_EL2.ListRegs + 1 ≤ 16).
pub const MAX_LIST_REGISTERS: usize = 16;
/// The most active-priority registers per group (4 with 7 preemption bits).
pub const MAX_AP: usize = 4;

/// State: pending.
pub const PENDING: u64 = 0b01 << 62;
/// State: active.
pub const ACTIVE: u64 = 0b10 << 62;
/// The state field.
pub const STATE: u64 = 0b11 << 62;
/// HW: linked to physical interrupt pINTID.
pub const HW: u64 = 1 << 61;
/// Group 1.
pub const GROUP1: u64 = 1 << 60;
/// The largest INTID a vCPU may be given: SGIs, PPIs and SPIs (1020–1023 are special).
pub const MAX_INTID: u32 = 1019;

/// A pending group-1 list register value for virtual interrupt `intid` at `priority`, linked to
/// physical interrupt `physical` if given.
#[must_use]
pub const fn pending(intid: u32, priority: u8, physical: Option<u32>) -> u64 {
    let link = match physical {
        Some(p) => HW | ((p as u64 & 0x3ff) << 32),
        None => 0,
    };
    PENDING | GROUP1 | link | ((priority as u64) << 48) | intid as u64
}

/// The virtual INTID of list register value `value`.
#[must_use]
pub const fn intid(value: u64) -> u32 {
    value as u32
}

/// How many of `implemented` list registers software interrupts may use: all but the last,
/// which is the virtual timer's. The timer's physical interrupt stays active while its
/// hardware-linked register is in use, so it can fire only when no such register exists — and
/// then at least the last one is free (a full set would otherwise leave the level-sensitive
/// timer firing again and again, starving everything else).
#[must_use]
pub const fn software_list_registers(implemented: usize) -> usize {
    let n = if implemented < MAX_LIST_REGISTERS {
        implemented
    } else {
        MAX_LIST_REGISTERS
    };
    n.saturating_sub(1)
}

/// Why a virtual interrupt could not be put in a list register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoFreeListRegister;

/// A vCPU's virtual CPU interface state while it is not loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VgicState {
    /// ICH_LR<n>_EL2.
    pub lr: [u64; MAX_LIST_REGISTERS],
    /// ICH_AP0R<n>_EL2.
    pub ap0r: [u64; MAX_AP],
    /// ICH_AP1R<n>_EL2.
    pub ap1r: [u64; MAX_AP],
    /// ICH_VMCR_EL2 (the guest's priority mask, group enables, binary points, EOI mode).
    pub vmcr: u64,
    /// The physical virtual-timer PPI was active for this vCPU (a hardware list register links
    /// it) when the vCPU left the CPU; it is made active again when the vCPU returns.
    pub vtimer_active: bool,
    /// A `VcpuInjectIrq` found the software list registers full: the VMM still has interrupts
    /// for this vCPU, and wants to know when the guest has taken every pending one (the
    /// maintenance interrupt on ICH_MISR_EL2.NP, armed while this is set).
    pub overflow: bool,
}

impl VgicState {
    /// Nothing pending, nothing active, the guest's interface as at reset.
    pub const RESET: Self = Self {
        lr: [0; MAX_LIST_REGISTERS],
        ap0r: [0; MAX_AP],
        ap1r: [0; MAX_AP],
        vmcr: 0,
        vtimer_active: false,
        overflow: false,
    };

    /// Makes software interrupt `intid` pending at `priority` in the list registers a VMM may
    /// fill ([`software_list_registers`] of the `implemented` ones): an entry already holding it
    /// (pending or active, not hardware-linked) is made pending too (an interrupt is in at most
    /// one list register, IHI 0069H 11.2.1); otherwise a free one (state 00) takes it. The last
    /// implemented register is kept for the virtual timer, so the timer always finds one.
    ///
    /// # Errors
    /// [`NoFreeListRegister`] when every one of those holds another interrupt.
    pub fn inject(
        &mut self,
        implemented: usize,
        intid: u32,
        priority: u8,
    ) -> Result<(), NoFreeListRegister> {
        let lrs = &mut self.lr[..software_list_registers(implemented)];
        if let Some(entry) = lrs
            .iter_mut()
            .find(|v| **v & STATE != 0 && **v & HW == 0 && self::intid(**v) == intid)
        {
            *entry |= PENDING;
            return Ok(());
        }
        let free = lrs
            .iter_mut()
            .find(|v| **v & STATE == 0)
            .ok_or(NoFreeListRegister)?;
        *free = pending(intid, priority, None);
        Ok(())
    }
}

impl VgicState {
    /// The running priority of the guest's virtual CPU interface: the highest (numerically
    /// lowest) priority with its bit set in the active priority registers, as a priority value
    /// (`pre_bits` preemption bits: bit `n` of ICH_AP<g>R0 stands for priority
    /// `n << (8 - pre_bits)`); `0x100` (idle) when none is set. IHI 0069H 4.8.2, 12.5.1-4.
    #[must_use]
    pub fn running_priority(&self, pre_bits: u32) -> u32 {
        let shift = 8 - pre_bits.clamp(5, 7);
        let mut lowest = 0x100;
        for ap in [&self.ap0r, &self.ap1r] {
            for (n, &word) in ap.iter().enumerate() {
                if word & 0xffff_ffff != 0 {
                    let bit = (word & 0xffff_ffff).trailing_zeros() + 32 * n as u32;
                    lowest = lowest.min(bit << shift);
                    break;
                }
            }
        }
        lowest
    }

    /// Whether a virtual interrupt of `priority` in group 1 (else 0) would be signalled to the
    /// vCPU now: its group is enabled (ICH_VMCR_EL2.VENG1 [1] / VENG0 [0]), its priority is
    /// higher than the priority mask (VPMR [31:24]) and than the running priority (IHI 0069H
    /// 4.8.1, "Interrupt signaling"). A WFI ends only for such an interrupt (Arm ARM D1.6.2).
    #[must_use]
    pub fn signals(&self, priority: u8, group1: bool, pre_bits: u32) -> bool {
        let enabled = if group1 {
            self.vmcr & 0b10 != 0
        } else {
            self.vmcr & 0b01 != 0
        };
        let mask = ((self.vmcr >> 24) & 0xff) as u32;
        // The priority compared with the running priority is its group priority.
        let shift = 8 - pre_bits.clamp(5, 7);
        let group_priority = (u32::from(priority) >> shift) << shift;
        enabled && u32::from(priority) < mask && group_priority < self.running_priority(pre_bits)
    }

    /// Whether a list register holds a pending interrupt the vCPU would be signalled now.
    #[must_use]
    pub fn pending_signalled(&self, implemented: usize, pre_bits: u32) -> bool {
        self.lr.iter().take(implemented).any(|&lr| {
            lr & PENDING != 0 && self.signals((lr >> 48) as u8, lr & GROUP1 != 0, pre_bits)
        })
    }

    /// Puts virtual interrupt `vintid`, hardware-linked to physical interrupt `pintid`, pending
    /// at `priority` in a free software list register (a forwarded device interrupt: its
    /// physical interrupt stays active until the guest deactivates the virtual one, so it is
    /// never in a list register twice).
    ///
    /// # Errors
    /// [`NoFreeListRegister`] when none is free.
    pub fn inject_linked(
        &mut self,
        implemented: usize,
        vintid: u32,
        priority: u8,
        pintid: u32,
    ) -> Result<(), NoFreeListRegister> {
        let free = self.lr[..software_list_registers(implemented)]
            .iter_mut()
            .find(|v| **v & STATE == 0)
            .ok_or(NoFreeListRegister)?;
        *free = pending(vintid, priority, Some(pintid));
        Ok(())
    }

    /// The physical interrupts the list registers still link (pending or active, HW = 1).
    pub fn linked(&self) -> impl Iterator<Item = u32> + '_ {
        self.lr
            .iter()
            .filter(|v| **v & STATE != 0 && **v & HW != 0)
            .map(|v| ((*v >> 32) & 0x3ff) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interrupt_is_signalled_only_above_the_mask_and_the_running_priority() {
        let mut state = VgicState::RESET;
        // Group 1 disabled: nothing.
        assert!(!state.signals(0xa0, true, 5));
        // Group 1 enabled, mask 0xf0: 0xa0 passes, 0xf0 does not; mask 0: nothing passes.
        state.vmcr = (0xf0 << 24) | 0b10;
        assert!(state.signals(0xa0, true, 5) && !state.signals(0xf0, true, 5));
        assert!(!state.signals(0xa0, false, 5), "group 0 disabled");
        state.vmcr = 0b10;
        assert!(!state.signals(0x00, true, 5));
        // An active interrupt at 0x80 (5 bits: bit 0x80 >> 3 = 16): 0xa0 waits, 0x70 preempts.
        state.vmcr = (0xf0 << 24) | 0b10;
        state.ap1r[0] = 1 << 16;
        assert_eq!(state.running_priority(5), 0x80);
        assert!(!state.signals(0xa0, true, 5) && state.signals(0x70, true, 5));
        // Pending in a list register, masked: no wake-up.
        state.ap1r[0] = 0;
        state.lr[0] = pending(27, 0xa0, Some(27));
        assert!(state.pending_signalled(4, 5));
        state.vmcr = 0b10;
        assert!(!state.pending_signalled(4, 5));
    }

    #[test]
    fn a_forwarded_interrupt_is_linked_in_a_software_register_and_listed() {
        let mut state = VgicState::RESET;
        assert_eq!(state.inject_linked(4, 79, 0xa0, 79), Ok(()));
        assert_eq!(state.lr[0], pending(79, 0xa0, Some(79)));
        assert_eq!(state.linked().collect::<Vec<_>>(), [79]);
        state.lr[1] = pending(3, 0, None);
        state.lr[2] = pending(80, 0, Some(80));
        // The last register is the timer's.
        assert_eq!(
            state.inject_linked(4, 81, 0xa0, 81),
            Err(NoFreeListRegister)
        );
        assert_eq!(state.linked().collect::<Vec<_>>(), [79, 80]);
    }

    #[test]
    fn a_list_register_is_encoded_as_the_gic_architecture_says() {
        // Pending, group 1, priority 0xa0, vINTID 27 linked to pINTID 27.
        assert_eq!(pending(27, 0xa0, Some(27)), 0x70a0_001b_0000_001b);
        assert_eq!(pending(3, 0x80, None), 0x5080_0000_0000_0003);
        assert_eq!(intid(pending(1019, 0, None)), 1019);
    }

    #[test]
    fn injecting_fills_free_registers_and_merges_with_an_existing_entry() {
        let mut state = VgicState::RESET;
        assert_eq!(state.inject(4, 3, 0x80), Ok(()));
        assert_eq!(state.lr[0], pending(3, 0x80, None));
        // Active already: becomes active and pending, in the same register.
        state.lr[0] = (state.lr[0] & !STATE) | ACTIVE;
        assert_eq!(state.inject(4, 3, 0x80), Ok(()));
        assert_eq!(state.lr[0] & STATE, ACTIVE | PENDING);
        assert_eq!(state.lr[1], 0);
        for n in 1..3 {
            assert_eq!(state.inject(4, 30 + n, 0x80), Ok(()));
        }
        // Four are implemented, the last kept for the timer: the fourth finds none free.
        assert_eq!(state.inject(4, 40, 0x80), Err(NoFreeListRegister));
        assert_eq!((state.lr[3], state.lr[4]), (0, 0));
        // A hardware-linked entry (the timer's) is never merged with a software one.
        let mut timer = VgicState::RESET;
        timer.lr[0] = (pending(27, 0xa0, Some(27)) & !STATE) | ACTIVE;
        assert_eq!(timer.inject(4, 27, 0xa0), Ok(()));
        assert_eq!(timer.lr[0] & STATE, ACTIVE);
        assert_eq!(timer.lr[1], pending(27, 0xa0, None));
        // One handled (state 00 again): free for the next.
        state.lr[2] &= !STATE;
        assert_eq!(state.inject(4, 40, 0x80), Ok(()));
        assert_eq!(intid(state.lr[2]), 40);
    }
}

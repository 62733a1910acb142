//! What the fuzzer believes about its slots ([`World`]), and how a successful step changes it
//! ([`Effect`]): a belief, not the truth — revokes and received capabilities make it stale,
//! so the EL0 side probes the region again now and then (`el0.rs`).

use crate::rng::{Rng, pick_of};
use hostile_common::SlotPool;
use hostile_common::abi::kind;

/// A CPtr no CNode has: named as the capability an invocation by `Call` would transfer.
pub const BAD_CPTR: u64 = u64::MAX;
/// Slots a CNode can have at most (the kernel's whole slot table is 4096; the root's is 1024):
/// an argument from here on names no slot of the fuzzer's.
pub const NO_SLOT: u64 = 1024;
/// Indices used inside CNodes the fuzzer made.
pub(crate) const CHILD_INDICES: u64 = 20;

/// What the fuzzer believes about its slots.
#[derive(Clone, Debug)]
pub struct World {
    /// The slots it may name.
    pub region: SlotPool,
    kinds: [u8; NO_SLOT as usize],
    /// Its own CNode (invoked for copies, moves, deletes and revokes in the region).
    pub cnode: u64,
    /// Its own AddressSpace (frames are mapped into it).
    pub space: u64,
    /// IrqControl, if it holds it (the root does).
    pub irq_control: Option<u64>,
    /// Its priority: no thread it makes is above it.
    pub priority: u8,
    /// Set when a step may have changed many slots (revoke, capabilities received).
    pub rescan: bool,
    /// Steer clear of the hangs the kernel of 8f4ed9c is known to have (issue 13, findings 2
    /// and 6): no maintenance range over 2 MiB, no IRQ handler below INTID 32 — to look past
    /// them on a kernel that still has them (`HOSTILE_FUZZ_AVOID_KNOWN=1`).
    pub avoid_known_hangs: bool,
}

/// How a step changes the world when it succeeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Nothing the fuzzer tracks.
    None,
    /// `count` objects of `kind` from slot `first`.
    Create {
        /// First slot.
        first: u64,
        /// How many.
        count: u64,
        /// Their kind code.
        kind: u64,
    },
    /// A copy (or mint) of `source` in `dest`.
    Copy {
        /// Destination slot.
        dest: u64,
        /// Source slot.
        source: u64,
    },
    /// `source` moved to `dest` (`None`: into another CNode).
    Move {
        /// Destination slot in the fuzzer's CNode.
        dest: Option<u64>,
        /// Source slot.
        source: u64,
    },
    /// `slot` emptied.
    Clear(u64),
    /// Many slots may have changed: probe the region again.
    Rescan,
}

impl World {
    /// A world of `region` slots, all believed empty.
    #[must_use]
    pub fn new(
        region: SlotPool,
        (cnode, space): (u64, u64),
        irq_control: Option<u64>,
        priority: u8,
    ) -> Self {
        Self {
            region,
            kinds: [0; NO_SLOT as usize],
            cnode,
            space,
            irq_control,
            priority,
            rescan: false,
            avoid_known_hangs: false,
        }
    }

    /// The kind code believed to be in `slot` (0: empty or unknown).
    #[must_use]
    pub fn kind(&self, slot: u64) -> u64 {
        self.kinds.get(slot as usize).map_or(0, |&k| u64::from(k))
    }

    /// Records that `slot` holds `kind` (region slots only).
    pub fn set_kind(&mut self, slot: u64, kind: u64) {
        if self.region.contains(slot) {
            self.kinds[slot as usize] = kind as u8;
        }
    }

    /// Applies a successful step's effect.
    pub fn apply(&mut self, effect: Effect) {
        match effect {
            Effect::None => {}
            Effect::Create { first, count, kind } => {
                for slot in first..first.saturating_add(count.min(4)) {
                    self.set_kind(slot, kind);
                }
            }
            Effect::Copy { dest, source } => self.set_kind(dest, self.kind(source)),
            Effect::Move { dest, source } => {
                if let Some(dest) = dest {
                    self.set_kind(dest, self.kind(source));
                }
                self.set_kind(source, 0);
            }
            Effect::Clear(slot) => self.set_kind(slot, 0),
            Effect::Rescan => self.rescan = true,
        }
    }

    /// Whether some region slot is believed to hold `kind`.
    #[must_use]
    pub fn holds(&self, kind: u64) -> bool {
        self.region.iter().any(|slot| self.kind(slot) == kind)
    }

    /// Any region slot.
    pub(crate) fn any(&self, rng: &mut Rng) -> u64 {
        self.region
            .nth(rng.below(self.region.count() as u64) as usize)
            .unwrap_or(BAD_CPTR)
    }

    /// A region slot believed empty (mostly), else any region slot.
    pub(crate) fn empty(&self, rng: &mut Rng) -> u64 {
        if rng.chance(80) {
            self.of(rng, &[0])
        } else {
            self.any(rng)
        }
    }

    /// A region slot believed to hold something (mostly), else any region slot.
    pub(crate) fn occupied(&self, rng: &mut Rng) -> u64 {
        let mut found = [0u64; 64];
        let mut count = 0;
        for slot in self.region.iter() {
            if self.kind(slot) != 0 && count < found.len() {
                found[count] = slot;
                count += 1;
            }
        }
        match count {
            0 => self.any(rng),
            _ if rng.chance(20) => self.any(rng),
            _ => rng.pick(&found[..count]),
        }
    }

    /// A region slot believed to hold one of `kinds`, else any region slot.
    pub(crate) fn of(&self, rng: &mut Rng, kinds: &[u64]) -> u64 {
        let mut found = [0u64; 64];
        let mut count = 0;
        for slot in self.region.iter() {
            if kinds.contains(&self.kind(slot)) && count < found.len() {
                found[count] = slot;
                count += 1;
            }
        }
        match count {
            0 => self.any(rng),
            _ => rng.pick(&found[..count]),
        }
    }

    /// A slot argument: mostly one of `kinds`, sometimes any region slot, sometimes none.
    pub(crate) fn slot(&self, rng: &mut Rng, kinds: &[u64]) -> u64 {
        match rng.below(20) {
            0..=16 => self.of(rng, kinds),
            17 | 18 => self.any(rng),
            _ => no_slot(rng),
        }
    }

    /// A destination for a CNode operation: (invoked CNode, index, whether it is the
    /// fuzzer's own CNode).
    pub(crate) fn cnode_target(&self, rng: &mut Rng) -> (u64, u64, bool) {
        if rng.chance(80) {
            (self.cnode, self.empty(rng), true)
        } else {
            (
                self.of(rng, &[kind::CNODE]),
                rng.below(CHILD_INDICES),
                false,
            )
        }
    }
}

/// An argument that names no slot of the fuzzer's (≥ [`NO_SLOT`]).
pub(crate) fn no_slot(rng: &mut Rng) -> u64 {
    pick_of([BAD_CPTR, NO_SLOT, 4096, rng.next() | 1 << 40], rng)
}

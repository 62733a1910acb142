//! Visiting every valid entry of a stage-2 table tree, as the walk would decode it (the engine
//! of `capvisor s2walk --dump`).
//!
//! The tree is untrusted: tables may point anywhere, at each other, or at themselves. The depth
//! is bounded by the levels (a table at level 3 does not exist) and the work by a budget of
//! descriptor reads, so a hostile tree costs at most that budget.

use crate::config::{FINAL_LEVEL, S2Config};
use crate::memory::GuestMemory;
use crate::regs::OutputAddr;
use crate::walk::Permissions;

/// What one descriptor is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A table descriptor; its next-level table is at `next`.
    Table {
        /// The next-level table's address.
        next: OutputAddr,
    },
    /// A block or page descriptor.
    Leaf {
        /// The output address of the first byte the leaf maps (AArch64.LeafBase).
        oa: OutputAddr,
        /// S2AP/XN permissions.
        perms: Permissions,
        /// MemAttr\[3:0\].
        memattr: u8,
        /// The Access flag.
        af: bool,
        /// The Contiguous bit (where it is not RES0).
        contiguous: bool,
    },
    /// A descriptor with bit 0 set that is still invalid at this level (a block where blocks are
    /// not allowed, or 0b01 at level 3): a Translation fault for the walk.
    Reserved,
    /// A table or leaf whose address is above the output size: an Address size fault.
    AddressSize {
        /// The out-of-range address.
        addr: OutputAddr,
    },
    /// The descriptor could not be read (an External abort for the walk). The rest of its table
    /// is not visited.
    Unreadable,
}

/// One visited descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Its lookup level.
    pub level: i8,
    /// Its index in its table (for the start level, across concatenated tables).
    pub index: u64,
    /// The first IPA it translates.
    pub ipa: u64,
    /// log2 of the IPA range it translates.
    pub size_bits: u32,
    /// Where it was read.
    pub addr: OutputAddr,
    /// Its raw value (0 when unreadable).
    pub descriptor: u64,
    /// What it is.
    pub kind: EntryKind,
}

/// How a visit ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VisitEnd {
    /// Every reachable descriptor was read.
    Complete,
    /// The read budget ran out first.
    BudgetExhausted,
}

struct Visit<'a, M, F> {
    config: &'a S2Config,
    mem: &'a M,
    budget: usize,
    f: F,
}

impl S2Config {
    /// Calls `f` for every descriptor with bit 0 set (and every unreadable one) in the tree, in
    /// IPA order, reading at most `budget` descriptors.
    pub fn visit<M: GuestMemory, F: FnMut(&Entry)>(
        &self,
        mem: &M,
        budget: usize,
        f: F,
    ) -> VisitEnd {
        let mut visit = Visit {
            config: self,
            mem,
            budget,
            f,
        };
        if self.base_out_of_range {
            return VisitEnd::Complete;
        }
        let level = self.start_level;
        let entries = 1u64 << (self.iasize - self.translation_bits(level));
        visit.table(self.base, level, 0, entries)
    }
}

impl<M: GuestMemory, F: FnMut(&Entry)> Visit<'_, M, F> {
    fn table(&mut self, base: u64, level: i8, ipa_base: u64, entries: u64) -> VisitEnd {
        let size_bits = self.config.translation_bits(level);
        for index in 0..entries {
            if self.budget == 0 {
                return VisitEnd::BudgetExhausted;
            }
            self.budget -= 1;
            let addr = base | (index << 3);
            let ipa = ipa_base | (index << size_bits);
            let mut entry = Entry {
                level,
                index,
                ipa,
                size_bits,
                addr: OutputAddr::new(addr),
                descriptor: 0,
                kind: EntryKind::Unreadable,
            };
            let Ok(desc) = self.mem.read_u64(OutputAddr::new(addr)) else {
                (self.f)(&entry);
                return VisitEnd::Complete;
            };
            if desc & 1 == 0 {
                continue;
            }
            entry.descriptor = desc;
            entry.kind = self.classify(desc, level);
            (self.f)(&entry);
            if let EntryKind::Table { next } = entry.kind {
                let next_entries = 1u64 << self.config.stride;
                if self.table(next.get(), level + 1, ipa, next_entries) == VisitEnd::BudgetExhausted
                {
                    return VisitEnd::BudgetExhausted;
                }
            }
        }
        VisitEnd::Complete
    }

    fn classify(&self, desc: u64, level: i8) -> EntryKind {
        let config = self.config;
        let table_or_page = desc & 0b11 == 0b11;
        if table_or_page && level < FINAL_LEVEL {
            let next = (desc & config.oa_low_mask & !((1 << config.granule_bits) - 1))
                | config.high_bits(desc);
            return if next >> config.oasize != 0 {
                EntryKind::AddressSize {
                    addr: OutputAddr::new(next),
                }
            } else {
                EntryKind::Table {
                    next: OutputAddr::new(next),
                }
            };
        }
        if !table_or_page && !config.block_allowed(level) {
            return EntryKind::Reserved;
        }
        let size_bits = config.translation_bits(level);
        let oa = (desc & config.oa_low_mask & !((1 << size_bits) - 1)) | config.high_bits(desc);
        if oa >> config.oasize != 0 {
            return EntryKind::AddressSize {
                addr: OutputAddr::new(oa),
            };
        }
        EntryKind::Leaf {
            oa: OutputAddr::new(oa),
            perms: config.permissions(desc),
            memattr: ((desc >> 2) & 0xf) as u8,
            af: desc & (1 << 10) != 0,
            contiguous: config.contiguous_bits(desc, level) != 0,
        }
    }
}

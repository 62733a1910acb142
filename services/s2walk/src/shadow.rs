//! Shadow stage 2 for nested guests: a guest hypervisor's stage 2 (L2 IPA → L1 IPA) composed
//! with that guest's own stage 2 (L1 IPA → PA) into mappings capvisor can install for the L2
//! guest, and a small cache of them with the invalidations that keep it honest.
//!
//! Invariants: a cached entry is only ever the composition of two successful walks; it covers
//! the largest naturally aligned range both walks map uniformly (the smaller of the two leaf
//! sizes); its permissions are what both stages allow. It is dropped when the guest hypervisor
//! invalidates its stage 2 (TLBI IPAS2E1* by L2 IPA, TLBI VMALLS12E1* or a new VTTBR by VMID),
//! when the L1 IPA range it maps to changes, or when a table page its walk read is written.
//!
//! Faults keep their owner: one in the guest hypervisor's tables is injected into the guest
//! hypervisor as its L2 guest's stage-2 abort ([`ShadowFault::Nested`]); one in the L1 guest's
//! own stage 2 is capvisor's ([`ShadowFault::Host`]).

use crate::config::S2Config;
use crate::fault::Fault;
use crate::memory::{GuestMemory, ReadError};
use crate::regs::{Access, Ipa, OutputAddr, Vmid};
use crate::walk::{Permissions, WalkObserver};

/// Guest memory seen through a stage 2: reads at an IPA walk `config` first. A guest
/// hypervisor's tables live at L1 IPAs, so this is how they are read when only the L1 guest's
/// stage 2 and physical memory are at hand. An IPA that stage 2 does not map for reading is
/// outside the guest's memory: the nested walk reports an External abort on the walk.
#[derive(Clone, Copy, Debug)]
pub struct ThroughStage2<'a, M> {
    config: &'a S2Config,
    mem: &'a M,
}

impl<'a, M: GuestMemory> ThroughStage2<'a, M> {
    /// Reads at IPAs translated by `config`, whose tables and targets are in `mem`.
    #[must_use]
    pub const fn new(config: &'a S2Config, mem: &'a M) -> Self {
        Self { config, mem }
    }
}

impl<M: GuestMemory> GuestMemory for ThroughStage2<'_, M> {
    fn read_u64(&self, addr: OutputAddr) -> Result<u64, ReadError> {
        let pa = self
            .config
            .walk(self.mem, Ipa::new(addr.get()), Access::Read)
            .map_err(|_| ReadError::Unbacked)?;
        self.mem.read_u64(pa.oa)
    }
}

/// A mapping for an L2 guest: `2^size_bits` bytes at `l2_ipa` map to `pa` (via `l1_ipa`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ShadowEntry {
    /// The guest hypervisor's VMID for its L2 guest (its VTTBR_EL2.VMID).
    pub vmid: Vmid,
    /// The first L2 IPA mapped (aligned to the size).
    pub l2_ipa: u64,
    /// The L1 IPA `l2_ipa` maps to.
    pub l1_ipa: u64,
    /// The PA `l2_ipa` maps to.
    pub pa: u64,
    /// log2 of the mapping's size.
    pub size_bits: u32,
    /// What both stages allow.
    pub perms: Permissions,
    /// The combined stage-2 MemAttr ([`combine_memattr`]).
    pub memattr: u8,
}

impl ShadowEntry {
    /// Whether this entry translates `l2_ipa` for `vmid`.
    #[must_use]
    pub const fn covers(&self, vmid: Vmid, l2_ipa: u64) -> bool {
        self.vmid.get() == vmid.get()
            && (l2_ipa >> self.size_bits) == (self.l2_ipa >> self.size_bits)
    }

    /// The PA of `l2_ipa`, which this entry must cover.
    #[must_use]
    pub const fn pa_of(&self, l2_ipa: u64) -> u64 {
        self.pa | (l2_ipa & ((1 << self.size_bits) - 1))
    }
}

/// Why no shadow mapping could be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ShadowFault {
    /// The guest hypervisor's stage 2 faulted: inject this stage-2 abort into the guest
    /// hypervisor, for its L2 guest's access.
    Nested(Fault),
    /// The L1 guest's own stage 2 faulted at `l1_ipa`: capvisor's own fault to resolve.
    Host {
        /// The L1 IPA the nested walk produced.
        l1_ipa: Ipa,
        /// The fault of the L1 guest's stage 2.
        fault: Fault,
    },
}

/// Combines two stage-2 MemAttr\[3:0\] values (HCR_EL2.FWB = 0 encoding) into the one that
/// honours both, as the Arm ARM combines stages (S2CombineS1MemAttrs, CombineS1S2Device):
/// Device beats Normal, the more restrictive Device type wins (nGnRnE < nGnRE < nGRE < GRE),
/// and Normal cacheability is the lesser of the two, inner and outer separately
/// (Non-cacheable < Write-Through < Write-Back). The reserved Normal inner encoding 0b00 is
/// taken as Non-cacheable, the safe reading of a CONSTRAINED UNPREDICTABLE value.
#[must_use]
pub const fn combine_memattr(a: u8, b: u8) -> u8 {
    let (a, b) = (a & 0xf, b & 0xf);
    let (a_device, b_device) = (a >> 2 == 0, b >> 2 == 0);
    match (a_device, b_device) {
        (true, true) => min(a, b),
        (true, false) => a,
        (false, true) => b,
        (false, false) => (min(a >> 2, b >> 2) << 2) | min(normal_inner(a), normal_inner(b)),
    }
}

const fn normal_inner(attr: u8) -> u8 {
    if attr & 0b11 == 0 { 0b01 } else { attr & 0b11 }
}

const fn min(a: u8, b: u8) -> u8 {
    if a < b { a } else { b }
}

/// Records the descriptor addresses (L1 IPAs) a nested walk reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct TableTrace {
    addrs: [u64; 5],
    count: usize,
}

impl WalkObserver for TableTrace {
    fn descriptor(&mut self, _level: i8, addr: OutputAddr, _descriptor: u64) {
        if let Some(slot) = self.addrs.get_mut(self.count) {
            *slot = addr.get();
            self.count += 1;
        }
    }
}

fn compose_traced<N: GuestMemory, H: GuestMemory>(
    stages: (&S2Config, &N, &S2Config, &H),
    vmid: Vmid,
    l2_ipa: Ipa,
    access: Access,
    trace: &mut TableTrace,
) -> Result<ShadowEntry, ShadowFault> {
    let (nested, nested_mem, host, host_mem) = stages;
    let first = nested
        .walk_observed(nested_mem, l2_ipa, access, trace)
        .map_err(ShadowFault::Nested)?;
    let l1_ipa = Ipa::new(first.oa.get());
    let second = host
        .walk(host_mem, l1_ipa, access)
        .map_err(|fault| ShadowFault::Host { l1_ipa, fault })?;
    let size_bits = first.size_bits.min(second.size_bits);
    let memattr = combine_memattr(first.memattr, second.memattr);
    let mut perms = first.perms.intersect(&second.perms);
    if memattr >> 2 == 0 {
        // Device at either stage: instruction fetches fault (AArch64.S2CheckPermissions), so
        // the entry must not allow them; a fetch misses the cache and walks for the right fault.
        perms.exec_el1 = false;
        perms.exec_el0 = false;
    }
    let base = |x: u64| x & !((1u64 << size_bits) - 1);
    Ok(ShadowEntry {
        vmid,
        l2_ipa: base(l2_ipa.get()),
        l1_ipa: base(first.oa.get()),
        pa: base(second.oa.get()),
        size_bits,
        perms,
        memattr,
    })
}

/// Composes the guest hypervisor's stage 2 (`nested`, whose tables `nested_mem` holds at L1
/// IPAs) with the L1 guest's own stage 2 (`host`, over `host_mem`) for `access` to `l2_ipa`.
///
/// # Errors
/// [`ShadowFault::Nested`] for a fault of the guest hypervisor's stage 2 (including an External
/// abort when its tables are outside its memory), [`ShadowFault::Host`] for one of the L1
/// guest's own stage 2 at the L1 IPA produced.
pub fn compose<N: GuestMemory, H: GuestMemory>(
    nested: (&S2Config, &N),
    host: (&S2Config, &H),
    vmid: Vmid,
    l2_ipa: Ipa,
    access: Access,
) -> Result<ShadowEntry, ShadowFault> {
    let stages = (nested.0, nested.1, host.0, host.1);
    compose_traced(stages, vmid, l2_ipa, access, &mut TableTrace::default())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cached {
    entry: ShadowEntry,
    tables: TableTrace,
}

/// A fixed-capacity cache of shadow entries, replaced round-robin.
#[derive(Clone, Debug)]
pub struct ShadowCache<const N: usize> {
    slots: [Option<Cached>; N],
    next: usize,
}

impl<const N: usize> Default for ShadowCache<N> {
    fn default() -> Self {
        Self::new()
    }
}

fn overlaps(start: u64, len: u64, base: u64, size_bits: u32) -> bool {
    let end = u128::from(start) + u128::from(len);
    let (base, top) = (u128::from(base), u128::from(base) + (1u128 << size_bits));
    len != 0 && u128::from(start) < top && base < end
}

impl<const N: usize> ShadowCache<N> {
    /// An empty cache.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            slots: [None; N],
            next: 0,
        }
    }

    /// The cached entry translating `l2_ipa` for `vmid`, if any.
    #[must_use]
    pub fn lookup(&self, vmid: Vmid, l2_ipa: Ipa) -> Option<&ShadowEntry> {
        self.slots
            .iter()
            .flatten()
            .map(|c| &c.entry)
            .find(|e| e.covers(vmid, l2_ipa.get()))
    }

    /// The entry for `access` to `l2_ipa`: from the cache when it has one allowing `access`,
    /// else composed from both stages (see [`compose`]) and cached.
    ///
    /// # Errors
    /// As [`compose`]; nothing is cached then.
    pub fn fill<NM: GuestMemory, HM: GuestMemory>(
        &mut self,
        nested: (&S2Config, &NM),
        host: (&S2Config, &HM),
        vmid: Vmid,
        l2_ipa: Ipa,
        access: Access,
    ) -> Result<ShadowEntry, ShadowFault> {
        if let Some(entry) = self.lookup(vmid, l2_ipa)
            && entry.perms.allow(access)
        {
            return Ok(*entry);
        }
        let mut tables = TableTrace::default();
        let stages = (nested.0, nested.1, host.0, host.1);
        let entry = compose_traced(stages, vmid, l2_ipa, access, &mut tables)?;
        // A stale entry for the same range (e.g. with fewer permissions) goes first.
        self.invalidate_where(|c| c.entry.covers(vmid, l2_ipa.get()));
        let slot = self.next % N.max(1);
        if let Some(free) = self.slots.get_mut(slot) {
            *free = Some(Cached { entry, tables });
            self.next = (slot + 1) % N;
        }
        Ok(entry)
    }

    fn invalidate_where(&mut self, mut stale: impl FnMut(&Cached) -> bool) -> usize {
        let mut dropped = 0;
        for slot in &mut self.slots {
            if slot.as_ref().is_some_and(&mut stale) {
                *slot = None;
                dropped += 1;
            }
        }
        dropped
    }

    /// The guest hypervisor invalidated `len` bytes of L2 IPA from `start` for `vmid` (its
    /// TLBI IPAS2E1(IS) or a range form). Returns how many entries were dropped.
    pub fn invalidate_l2_range(&mut self, vmid: Vmid, start: Ipa, len: u64) -> usize {
        self.invalidate_where(|c| {
            c.entry.vmid == vmid && overlaps(start.get(), len, c.entry.l2_ipa, c.entry.size_bits)
        })
    }

    /// `len` bytes of L1 IPA from `start` changed: the L1 guest's own stage 2 was changed
    /// there, or the guest hypervisor wrote a page holding its stage-2 tables. Drops every entry
    /// mapping into that range or whose walk read a descriptor in it; returns how many.
    pub fn invalidate_l1_range(&mut self, start: Ipa, len: u64) -> usize {
        self.invalidate_where(|c| {
            let tables = c.tables.addrs.iter().take(c.tables.count);
            overlaps(start.get(), len, c.entry.l1_ipa, c.entry.size_bits)
                || tables
                    .into_iter()
                    .any(|&a| overlaps(start.get(), len, a, 3))
        })
    }

    /// Everything for `vmid` is stale (TLBI VMALLS12E1(IS), or a new VTTBR_EL2/VTCR_EL2 for
    /// it). Returns how many entries were dropped.
    pub fn invalidate_vmid(&mut self, vmid: Vmid) -> usize {
        self.invalidate_where(|c| c.entry.vmid == vmid)
    }

    /// Drops every entry (the L1 guest's stage 2 was replaced). Returns how many.
    pub fn invalidate_all(&mut self) -> usize {
        self.invalidate_where(|_| true)
    }

    /// How many entries are cached.
    #[must_use]
    pub fn len(&self) -> usize {
        self.slots.iter().flatten().count()
    }

    /// Whether the cache is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests;

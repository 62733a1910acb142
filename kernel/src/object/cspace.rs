//! Capability slots with their derivation tree, and CNodes (arrays of slots in their own memory).
//!
//! A CNode's slots live in the CNode's memory, paid from the untyped it was retyped from: slot
//! `i` is element `i` of the object ([`super::memory::Elements`]), slot 0 holding the CNode's own
//! record (so slot 0 is never a capability, and `CPtr::NULL` names nothing).
//!
//! Each slot links to the capability it was derived from and to the ones derived from it, so
//! `Revoke` finds every descendant however it was copied, minted, moved or transferred. Every
//! operation on the tree takes constant time, whatever the number of children:
//! - the children of a slot form a ring (`next`/`prev`), entered at `first_child`;
//! - only the ring's first member records the parent (`parent`), so a ring can be spliced into
//!   another in constant time;
//! - deleting a capability splices its children's ring into its own place: they stay revocable by
//!   whoever could revoke the deleted one (seL4's MDB keeps the same property);
//! - revoking deletes the first child until there is none (each deletion splices that child's
//!   children in front), so a revoke is a sequence of constant-time steps that can stop and
//!   resume anywhere (`delete.rs`).
//!
//! Invariants (checked by [`SlotTable::check_tree`] in the tests and the fuzz target):
//! - only occupied slots have links; `next`/`prev` are inverse and form rings;
//! - `p.first_child == c` iff `c.parent == p`; every other ring member has no parent link;
//! - the tree is acyclic.

use capvisor_ipc::abi::KernelError;
use capvisor_ipc::cap::CPtr;

use super::capability::Capability;
use super::memory::{Elements, FrameTable, KernelObject, PageKind};
use super::{CNodeRef, UntypedRef};

const NIL: u128 = u128::MAX;

/// Bytes of one slot (a power of two; a CNode of `n` slots takes `n * SLOT_BYTES`).
pub const SLOT_BYTES: u64 = 128;
/// log2 of [`SLOT_BYTES`].
pub const SLOT_BITS: u32 = 7;
/// The most slots a CNode has (log2: 12).
pub const MAX_CNODE_SLOTS: u64 = 4096;

/// A slot: its CNode's first page and generation, its index there, and the CNode's length. The
/// generation makes an id of a freed CNode name nothing, even once another CNode (of another
/// length) occupies its pages; the length then bounds the index for the CNode it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SlotId(u128);

impl SlotId {
    const fn new(page: u32, generation: u32, index: u32, len: u32) -> Self {
        // index < len <= 4096: 16 bits each; then the generation and the page, 32 bits each.
        Self(
            ((page as u128) << 64)
                | ((generation as u128) << 32)
                | ((len as u128) << 16)
                | index as u128,
        )
    }

    const fn page(self) -> u32 {
        (self.0 >> 64) as u32
    }

    const fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }

    const fn index(self) -> u32 {
        (self.0 & 0xffff) as u32
    }

    const fn len(self) -> u32 {
        ((self.0 >> 16) & 0xffff) as u32
    }

    const fn link(raw: u128) -> Option<Self> {
        if raw == NIL { None } else { Some(Self(raw)) }
    }

    /// A number naming the slot, for diagnostics.
    #[must_use]
    pub const fn raw(self) -> u128 {
        self.0
    }
}

const fn raw(slot: Option<SlotId>) -> u128 {
    match slot {
        Some(SlotId(value)) => value,
        None => NIL,
    }
}

/// One slot.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    cap: Option<Capability>,
    parent: u128,
    first_child: u128,
    next: u128,
    prev: u128,
}

const EMPTY: Entry = Entry {
    cap: None,
    parent: NIL,
    first_child: NIL,
    next: NIL,
    prev: NIL,
};

const _: () = assert!(size_of::<Entry>() as u64 <= SLOT_BYTES);
const _: () = assert!(SLOT_BYTES == 1 << SLOT_BITS);

/// Every slot of every CNode, reached through the frame table.
#[derive(Debug)]
pub struct SlotTable {
    entries: Elements<SlotBytes>,
}

/// A slot's storage: an [`Entry`] padded to [`SLOT_BYTES`], so slot `i` starts at byte
/// `i * SLOT_BYTES` of its CNode.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(128))]
pub struct SlotBytes(Entry);

const _: () = assert!(size_of::<SlotBytes>() as u64 == SLOT_BYTES);
const _: () = assert!(size_of::<CNode>() as u64 <= SLOT_BYTES);

impl SlotTable {
    /// No slots (before boot).
    #[must_use]
    pub const fn new() -> Self {
        Self {
            entries: Elements::new(PageKind::CNode),
        }
    }

    /// Uses `memory` from now on (boot).
    pub fn set_memory(&mut self, memory: FrameTable) {
        self.entries.set_memory(memory);
    }

    /// Empties slots `1..len` of a new CNode at `page`.
    pub(super) fn init_cnode(&mut self, page: u32, generation: u32, len: u32) {
        self.entries.fill(page, generation, len, SlotBytes(EMPTY));
    }

    #[inline(always)]
    fn get(&self, slot: SlotId) -> Option<&SlotBytes> {
        self.entries
            .get(slot.page(), slot.generation(), slot.index(), slot.len())
    }

    #[inline(always)]
    fn get_mut(&mut self, slot: SlotId) -> Option<&mut SlotBytes> {
        self.entries
            .get_mut(slot.page(), slot.generation(), slot.index(), slot.len())
    }

    fn entry(&self, slot: SlotId) -> Entry {
        self.get(slot).map_or(EMPTY, |e| e.0)
    }

    fn with<R>(&mut self, slot: Option<SlotId>, f: impl FnOnce(&mut Entry) -> R) -> Option<R> {
        self.get_mut(slot?).map(|e| f(&mut e.0))
    }

    /// The capability in `slot`, if any.
    #[must_use]
    #[inline]
    pub fn cap(&self, slot: SlotId) -> Option<&Capability> {
        self.get(slot).and_then(|e| e.0.cap.as_ref())
    }

    /// The capability in `slot`, mutably.
    pub fn cap_mut(&mut self, slot: SlotId) -> Option<&mut Capability> {
        self.get_mut(slot).and_then(|e| e.0.cap.as_mut())
    }

    /// The first capability derived from `slot`.
    #[must_use]
    pub fn first_child(&self, slot: SlotId) -> Option<SlotId> {
        SlotId::link(self.entry(slot).first_child)
    }

    /// Puts `cap` into the empty `slot`, as the first child of `parent` (a root without).
    ///
    /// # Errors
    /// [`KernelError::SlotOccupied`]; [`KernelError::EmptySlot`] when `parent` is empty.
    pub fn insert(
        &mut self,
        slot: SlotId,
        cap: Capability,
        parent: Option<SlotId>,
    ) -> Result<(), KernelError> {
        if self.cap(slot).is_some() || self.get(slot).is_none() {
            return Err(KernelError::SlotOccupied);
        }
        if parent.is_some_and(|p| self.cap(p).is_none()) {
            return Err(KernelError::EmptySlot);
        }
        let old_first = parent.and_then(|p| self.first_child(p));
        let (next, prev) = match old_first {
            Some(first) => (first, SlotId::link(self.entry(first).prev).unwrap_or(first)),
            None => (slot, slot),
        };
        self.with(Some(slot), |e| {
            *e = Entry {
                cap: Some(cap),
                parent: raw(parent),
                first_child: NIL,
                next: next.0,
                prev: prev.0,
            };
        });
        if old_first.is_some() {
            self.with(Some(prev), |e| e.next = slot.0);
            self.with(Some(next), |e| {
                e.prev = slot.0;
                e.parent = NIL;
            });
        }
        self.with(parent, |e| e.first_child = slot.0);
        Ok(())
    }

    /// Removes the capability in `slot`; its children take its place in the tree.
    pub fn remove(&mut self, slot: SlotId) -> Option<Capability> {
        let entry = self.entry(slot);
        let cap = entry.cap?;
        let alone = entry.next == slot.0;
        let parent = SlotId::link(entry.parent);
        let kids = SlotId::link(entry.first_child);
        // The ring members that replace `slot`: its children, if any.
        let replacement = match kids {
            Some(first) => {
                let last = SlotId::link(self.entry(first).prev).unwrap_or(first);
                if !alone {
                    let (prev, next) = (SlotId(entry.prev), SlotId(entry.next));
                    self.with(Some(prev), |e| e.next = first.0);
                    self.with(Some(first), |e| e.prev = prev.0);
                    self.with(Some(last), |e| e.next = next.0);
                    self.with(Some(next), |e| e.prev = last.0);
                }
                self.with(Some(first), |e| e.parent = raw(parent));
                Some(first)
            }
            None if alone => None,
            None => {
                let (prev, next) = (SlotId(entry.prev), SlotId(entry.next));
                self.with(Some(prev), |e| e.next = next.0);
                self.with(Some(next), |e| e.prev = prev.0);
                // The next member becomes the ring's first when `slot` was.
                self.with(Some(next), |e| {
                    if parent.is_some() {
                        e.parent = raw(parent);
                    }
                });
                Some(next)
            }
        };
        if parent.is_some() {
            self.with(parent, |e| e.first_child = raw(replacement));
        }
        self.with(Some(slot), |e| *e = EMPTY);
        Some(cap)
    }

    /// Moves the capability in `from` to the empty `to`, keeping its place in the tree.
    ///
    /// # Errors
    /// [`KernelError::EmptySlot`]; [`KernelError::SlotOccupied`].
    pub fn move_cap(&mut self, from: SlotId, to: SlotId) -> Result<(), KernelError> {
        let entry = self.entry(from);
        if entry.cap.is_none() {
            return Err(KernelError::EmptySlot);
        }
        if from == to {
            return Ok(());
        }
        if self.cap(to).is_some() || self.get(to).is_none() {
            return Err(KernelError::SlotOccupied);
        }
        let mut moved = entry;
        if entry.next == from.0 {
            (moved.next, moved.prev) = (to.0, to.0);
        } else {
            self.with(SlotId::link(entry.prev), |e| e.next = to.0);
            self.with(SlotId::link(entry.next), |e| e.prev = to.0);
        }
        self.with(Some(to), |e| *e = moved);
        self.with(Some(from), |e| *e = EMPTY);
        self.with(SlotId::link(entry.parent), |e| e.first_child = to.0);
        self.with(SlotId::link(entry.first_child), |e| e.parent = to.0);
        Ok(())
    }

    /// Checks the tree invariants (module doc) over the occupied slots `slots` (tests and the
    /// fuzz target: every slot of every live CNode).
    ///
    /// # Errors
    /// The first violated invariant.
    pub fn check_tree(&self, slots: &[SlotId]) -> Result<(), &'static str> {
        let occupied = |raw: u128| SlotId::link(raw).is_none_or(|s| self.cap(s).is_some());
        for &slot in slots {
            let e = self.entry(slot);
            if e.cap.is_none() {
                if (e.parent, e.first_child, e.next, e.prev) != (NIL, NIL, NIL, NIL) {
                    return Err("an empty slot has links");
                }
                continue;
            }
            let links = [e.parent, e.first_child, e.next, e.prev];
            if !links.iter().all(|&l| occupied(l)) || e.next == NIL || e.prev == NIL {
                return Err("a link names an empty slot");
            }
            if self.entry(SlotId(e.next)).prev != slot.0 {
                return Err("next/prev are not inverse");
            }
            if let Some(parent) = SlotId::link(e.parent)
                && self.entry(parent).first_child != slot.0
            {
                return Err("a slot's parent does not lead to it");
            }
            if let Some(first) = SlotId::link(e.first_child) {
                if self.entry(first).parent != slot.0 {
                    return Err("a first child does not name its parent");
                }
                // Only the first member of the ring names the parent.
                let mut at = SlotId(self.entry(first).next);
                let mut steps = 0usize;
                while at != first {
                    if self.entry(at).parent != NIL {
                        return Err("a ring has two first members");
                    }
                    steps += 1;
                    if steps > slots.len() {
                        return Err("a child ring does not close");
                    }
                    at = SlotId(self.entry(at).next);
                }
            }
        }
        // Acyclic: from any slot, walking to the ring's first member and up ends.
        for &slot in slots {
            let mut at = slot;
            let mut steps = 0usize;
            while self.cap(at).is_some() {
                steps += 1;
                if steps > 2 * slots.len() + 2 {
                    return Err("the derivation tree has a cycle");
                }
                let e = self.entry(at);
                match SlotId::link(e.parent) {
                    Some(parent) => at = parent,
                    None if e.next == at.0 => break,
                    None => {
                        // Walk the ring to its first member, if it has one (a ring of roots
                        // has none).
                        let mut member = SlotId(e.next);
                        let mut found = None;
                        while member != at {
                            if let Some(parent) = SlotId::link(self.entry(member).parent) {
                                found = Some(parent);
                                break;
                            }
                            member = SlotId(self.entry(member).next);
                            steps += 1;
                            if steps > 2 * slots.len() + 2 {
                                return Err("a ring does not close");
                            }
                        }
                        match found {
                            Some(parent) => at = parent,
                            None => break,
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

impl Default for SlotTable {
    fn default() -> Self {
        Self::new()
    }
}

/// What a queue of dying objects links (`delete.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dying {
    /// A CNode whose slots are being emptied.
    CNode(CNodeRef),
    /// An endpoint whose waiters are being cancelled.
    Endpoint(super::EndpointRef),
    /// A notification whose waiters are being cancelled.
    Notification(super::NotificationRef),
    /// An untyped whose last capability and last child are gone: its record is freed.
    Untyped(UntypedRef),
}

/// A CNode: its record, stored in its slot 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CNode {
    /// Its own first page and generation (slot ids are made from them).
    page: u32,
    pub(super) generation: u32,
    /// Slots, slot 0 included.
    len: u32,
    pub(super) caps: u32,
    /// The untyped it was retyped from (`None` at boot).
    pub(super) origin: Option<UntypedRef>,
    /// Its last capability is gone: lookups through it fail, and the reaper deletes its slots
    /// from `cursor` on before freeing it.
    pub(super) dying: bool,
    pub(super) cursor: u32,
    pub(super) next_dying: Option<Dying>,
}

impl KernelObject for CNode {
    const KIND: PageKind = PageKind::CNode;
}

impl CNode {
    /// A CNode of `len` slots at page `page`.
    #[must_use]
    pub(super) const fn new(page: u32, len: u32, origin: Option<UntypedRef>) -> Self {
        Self {
            page,
            generation: 0,
            len,
            caps: 0,
            origin,
            dying: false,
            cursor: 1,
            next_dying: None,
        }
    }

    /// Number of slots (slot 0 included, though it is never used).
    #[must_use]
    pub const fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether the CNode has no slots (never true for a created CNode).
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The slot for `index`.
    ///
    /// # Errors
    /// [`KernelError::InvalidSlot`] for index 0 (the null capability) or beyond the CNode.
    #[inline(always)]
    pub fn slot(&self, index: u64) -> Result<SlotId, KernelError> {
        if index == 0 || index >= u64::from(self.len) {
            return Err(KernelError::InvalidSlot);
        }
        // index < len <= 4096: fits the id's 16 index bits.
        Ok(SlotId::new(
            self.page,
            self.generation,
            index as u32,
            self.len,
        ))
    }

    /// The slot a `CPtr` names (single level: the `CPtr` is the index).
    ///
    /// # Errors
    /// As [`CNode::slot`].
    #[inline(always)]
    pub fn lookup(&self, cptr: CPtr) -> Result<SlotId, KernelError> {
        self.slot(cptr.raw())
    }

    /// Every slot of this CNode but slot 0.
    pub fn slots(&self) -> impl Iterator<Item = SlotId> {
        let (page, generation, len) = (self.page, self.generation, self.len);
        (1..len).map(move |index| SlotId::new(page, generation, index, len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::capability::Object;
    use crate::object::memory::host::HostRam;
    use crate::object::memory::{ObjectRef, PAGE, Store};
    use capvisor_ipc::types::PhysAddr;

    fn cap() -> Capability {
        Capability::new(Object::IrqControl)
    }

    /// A slot table over host RAM with one CNode of 64 slots at page 0.
    fn table() -> (HostRam, SlotTable, CNode) {
        let mut ram = HostRam::new(0x4000_0000, 16 * PAGE);
        let mut cnodes: Store<CNode> = Store::new();
        cnodes.set_memory(ram.table());
        let mut slots = SlotTable::new();
        slots.set_memory(ram.table());
        let mut cnode = CNode::new(0, 64, None);
        let r: CNodeRef = cnodes
            .create(PhysAddr::new(0x4000_0000), 64 * SLOT_BYTES, cnode)
            .unwrap();
        cnode.generation = r.generation();
        slots.init_cnode(0, cnode.generation, 64);
        (ram, slots, cnode)
    }

    fn all(cnode: &CNode) -> Vec<SlotId> {
        cnode.slots().collect()
    }

    #[test]
    fn remove_splices_children_under_the_grandparent() {
        let (_ram, mut t, cnode) = table();
        let s = |i| cnode.slot(i).unwrap();
        let (a, b, c, d) = (s(1), s(2), s(3), s(4));
        t.insert(a, cap(), None).unwrap();
        t.insert(b, cap(), Some(a)).unwrap();
        t.insert(c, cap(), Some(b)).unwrap();
        t.insert(d, cap(), Some(b)).unwrap();
        t.check_tree(&all(&cnode)).unwrap();
        assert!(t.remove(b).is_some());
        t.check_tree(&all(&cnode)).unwrap();
        // b's children are now a's: revoking a reaches them.
        let first = t.first_child(a).unwrap();
        assert!(first == c || first == d);
        assert!(t.remove(first).is_some());
        let second = t.first_child(a).unwrap();
        assert!(second == c || second == d);
        assert_ne!(first, second);
        t.check_tree(&all(&cnode)).unwrap();
        assert!(t.remove(a).is_some());
        t.check_tree(&all(&cnode)).unwrap();
        assert_eq!(t.first_child(second), None);
    }

    #[test]
    fn revoking_by_first_child_reaches_every_descendant() {
        let (_ram, mut t, cnode) = table();
        let s = |i| cnode.slot(i).unwrap();
        t.insert(s(1), cap(), None).unwrap();
        // A chain and a fan: 2..10 each a child of the previous, 11..20 children of 5.
        for i in 2..10 {
            t.insert(s(i), cap(), Some(s(i - 1))).unwrap();
        }
        for i in 11..20 {
            t.insert(s(i), cap(), Some(s(5))).unwrap();
        }
        t.check_tree(&all(&cnode)).unwrap();
        let mut deleted = 0;
        while let Some(child) = t.first_child(s(1)) {
            assert!(t.remove(child).is_some());
            t.check_tree(&all(&cnode)).unwrap();
            deleted += 1;
        }
        assert_eq!(deleted, 17);
        assert!(cnode.slots().skip(1).all(|slot| t.cap(slot).is_none()));
    }

    #[test]
    fn move_keeps_the_tree_position() {
        let (_ram, mut t, cnode) = table();
        let s = |i| cnode.slot(i).unwrap();
        let (a, b, c, d) = (s(1), s(2), s(3), s(9));
        t.insert(a, cap(), None).unwrap();
        t.insert(b, cap(), Some(a)).unwrap();
        t.insert(c, cap(), Some(b)).unwrap();
        t.move_cap(b, d).unwrap();
        t.check_tree(&all(&cnode)).unwrap();
        assert_eq!(t.first_child(a), Some(d));
        assert_eq!(t.first_child(d), Some(c));
        assert_eq!(t.move_cap(b, s(10)), Err(KernelError::EmptySlot));
        assert_eq!(t.move_cap(d, a), Err(KernelError::SlotOccupied));
        assert_eq!(t.insert(a, cap(), None), Err(KernelError::SlotOccupied));
        assert_eq!(
            t.insert(s(20), cap(), Some(s(21))),
            Err(KernelError::EmptySlot)
        );
    }

    #[test]
    fn cnode_lookup_rejects_null_and_out_of_range() {
        let mut cnode = CNode::new(16, 8, None);
        cnode.generation = 3;
        assert_eq!(cnode.lookup(CPtr::new(0)), Err(KernelError::InvalidSlot));
        assert_eq!(cnode.lookup(CPtr::new(8)), Err(KernelError::InvalidSlot));
        assert_eq!(
            cnode.lookup(CPtr::new(u64::MAX)),
            Err(KernelError::InvalidSlot)
        );
        assert_eq!(cnode.lookup(CPtr::new(7)), Ok(SlotId::new(16, 3, 7, 8)));
    }

    #[test]
    fn a_slot_past_its_cnode_or_in_freed_memory_is_never_reached() {
        let (_ram, t, cnode) = table();
        let generation = cnode.generation;
        // Index 64 is past the 64-slot CNode; page 5 holds no CNode; a longer CNode of another
        // generation at page 0 is not this one.
        assert!(t.cap(SlotId::new(0, generation, 64, 64)).is_none());
        assert!(t.cap(SlotId::new(5, generation, 1, 64)).is_none());
        assert!(t.cap(SlotId::new(0, generation + 1, 1, 64)).is_none());
        let mut t = t;
        assert_eq!(
            t.insert(SlotId::new(0, generation, 64, 64), cap(), None),
            Err(KernelError::SlotOccupied)
        );
        assert_eq!(
            t.insert(SlotId::new(0, generation + 1, 70, 4096), cap(), None),
            Err(KernelError::SlotOccupied)
        );
    }
}

//! The global capability slot table with its derivation tree, and CNodes (ranges of slots).
//!
//! Every capability lives in one slot of one [`SlotTable`]. A slot links to the capability it was
//! derived from (`parent`), its first derived capability (`first_child`) and its siblings, so
//! `Revoke` can find and delete every descendant, however they were copied, minted, moved or
//! transferred. Deleting a capability that has children splices them into its place under its
//! parent: they stay revocable by whoever could revoke the deleted one (seL4's MDB keeps the same
//! property through its depth-ordered list).
//!
//! Invariants (checked by [`SlotTable::check`] in the tests):
//! - only occupied slots have links, and links are mutual: `c.parent == p` iff `c` is on `p`'s child
//!   list; `next`/`prev` are inverse; the first child has no `prev`;
//! - root slots (no parent) have no siblings;
//! - the tree is acyclic (a child was always derived after its parent; moves keep positions).
//!
//! A CNode owns slots `[base, base + len)` of the table; ranges of live CNodes never overlap.

use capvisor_ipc::abi::KernelError;
use capvisor_ipc::cap::CPtr;

use super::MAX_SLOTS;
use super::capability::Capability;

const NIL: u16 = u16::MAX;

/// An index into the global slot table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SlotId(u16);

impl SlotId {
    /// The slot's global index.
    #[must_use]
    pub const fn index(self) -> usize {
        self.0 as usize
    }

    /// The slot with global index `index` (the caller keeps it below `MAX_SLOTS`).
    pub(super) const fn from_index(index: u16) -> Self {
        Self(index)
    }

    const fn link(raw: u16) -> Option<Self> {
        if raw == NIL { None } else { Some(Self(raw)) }
    }
}

const fn raw(slot: Option<SlotId>) -> u16 {
    match slot {
        Some(SlotId(index)) => index,
        None => NIL,
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    cap: Option<Capability>,
    parent: u16,
    first_child: u16,
    next: u16,
    prev: u16,
}

const EMPTY: Entry = Entry {
    cap: None,
    parent: NIL,
    first_child: NIL,
    next: NIL,
    prev: NIL,
};

/// All capability slots.
#[derive(Debug)]
pub struct SlotTable {
    entries: [Entry; MAX_SLOTS],
}

impl SlotTable {
    /// Every slot empty.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            entries: [EMPTY; MAX_SLOTS],
        }
    }

    fn entry(&self, slot: SlotId) -> &Entry {
        // SlotIds are only made from in-range indices (CNode ranges lie within the table), so the
        // fallback is never taken; it keeps this total without a panic path.
        self.entries.get(slot.index()).unwrap_or(&EMPTY)
    }

    fn with<R>(&mut self, slot: Option<SlotId>, f: impl FnOnce(&mut Entry) -> R) -> Option<R> {
        slot.and_then(|s| self.entries.get_mut(s.index())).map(f)
    }

    /// The capability in `slot`.
    #[must_use]
    pub fn cap(&self, slot: SlotId) -> Option<&Capability> {
        self.entry(slot).cap.as_ref()
    }

    /// The capability in `slot`, mutably (for state that lives in the capability: a frame's mapping).
    pub fn cap_mut(&mut self, slot: SlotId) -> Option<&mut Capability> {
        self.entries
            .get_mut(slot.index())
            .and_then(|e| e.cap.as_mut())
    }

    /// The capability `slot` was derived from.
    #[must_use]
    pub fn parent(&self, slot: SlotId) -> Option<SlotId> {
        SlotId::link(self.entry(slot).parent)
    }

    /// The first capability derived from `slot`.
    #[must_use]
    pub fn first_child(&self, slot: SlotId) -> Option<SlotId> {
        SlotId::link(self.entry(slot).first_child)
    }

    /// The next capability derived from the same parent.
    #[must_use]
    pub fn next_sibling(&self, slot: SlotId) -> Option<SlotId> {
        SlotId::link(self.entry(slot).next)
    }

    /// Puts `cap` into the empty `slot`, as the newest child of `parent` (or as a root).
    ///
    /// # Errors
    /// [`KernelError::SlotOccupied`] when `slot` holds a capability; [`KernelError::EmptySlot`] when
    /// `parent` is empty.
    pub fn insert(
        &mut self,
        slot: SlotId,
        cap: Capability,
        parent: Option<SlotId>,
    ) -> Result<(), KernelError> {
        if self.cap(slot).is_some() || slot.index() >= MAX_SLOTS {
            return Err(KernelError::SlotOccupied);
        }
        if parent.is_some_and(|p| self.cap(p).is_none()) {
            return Err(KernelError::EmptySlot);
        }
        let old_first = parent.and_then(|p| self.first_child(p));
        self.with(Some(slot), |e| {
            *e = Entry {
                cap: Some(cap),
                parent: raw(parent),
                first_child: NIL,
                next: raw(old_first),
                prev: NIL,
            };
        });
        self.with(old_first, |e| e.prev = slot.0);
        self.with(parent, |e| e.first_child = slot.0);
        Ok(())
    }

    /// Empties `slot`, splicing its children into its place under its parent. Returns the
    /// capability it held.
    pub fn remove(&mut self, slot: SlotId) -> Option<Capability> {
        let entry = *self.entry(slot);
        let cap = entry.cap?;
        let parent = SlotId::link(entry.parent);
        let mut child = SlotId::link(entry.first_child);
        let mut last_child = None;
        while let Some(c) = child {
            let next = self.next_sibling(c);
            self.with(Some(c), |e| {
                e.parent = entry.parent;
                if parent.is_none() {
                    e.next = NIL;
                    e.prev = NIL;
                }
            });
            last_child = Some(c);
            child = next;
        }
        if parent.is_some() {
            let first_child = SlotId::link(entry.first_child);
            // The sequence that replaces `slot` among its siblings: its children, or nothing.
            let (head, tail) = match (first_child, last_child) {
                (Some(first), Some(last)) => (Some(first), Some(last)),
                _ => (SlotId::link(entry.next), None),
            };
            let prev = SlotId::link(entry.prev);
            let next = SlotId::link(entry.next);
            if let Some(tail) = tail {
                self.with(Some(tail), |e| e.next = entry.next);
                self.with(next, |e| e.prev = tail.0);
                self.with(head, |e| e.prev = entry.prev);
            } else {
                self.with(next, |e| e.prev = entry.prev);
            }
            match prev {
                Some(_) => self.with(prev, |e| e.next = raw(head)),
                None => self.with(parent, |e| e.first_child = raw(head)),
            };
        }
        self.with(Some(slot), |e| *e = EMPTY);
        Some(cap)
    }

    /// Moves the capability in `from` to the empty `to`, keeping its place in the tree.
    ///
    /// # Errors
    /// [`KernelError::EmptySlot`] when `from` is empty; [`KernelError::SlotOccupied`] when `to` is
    /// not empty (moving a slot onto itself is therefore refused too).
    pub fn move_cap(&mut self, from: SlotId, to: SlotId) -> Result<(), KernelError> {
        let entry = *self.entry(from);
        if entry.cap.is_none() {
            return Err(KernelError::EmptySlot);
        }
        if self.cap(to).is_some() || to.index() >= MAX_SLOTS {
            return Err(KernelError::SlotOccupied);
        }
        self.with(Some(to), |e| *e = entry);
        self.with(Some(from), |e| *e = EMPTY);
        let (prev, next, parent) = (
            SlotId::link(entry.prev),
            SlotId::link(entry.next),
            SlotId::link(entry.parent),
        );
        match prev {
            Some(_) => self.with(prev, |e| e.next = to.0),
            None => self.with(parent, |e| e.first_child = to.0),
        };
        self.with(next, |e| e.prev = to.0);
        let mut child = SlotId::link(entry.first_child);
        while let Some(c) = child {
            self.with(Some(c), |e| e.parent = to.0);
            child = self.next_sibling(c);
        }
        Ok(())
    }

    /// A descendant of `slot` with no children of its own (the one revoke deletes next).
    #[must_use]
    pub fn leaf_descendant(&self, slot: SlotId) -> Option<SlotId> {
        let mut leaf = self.first_child(slot)?;
        while let Some(child) = self.first_child(leaf) {
            leaf = child;
        }
        Some(leaf)
    }

    /// Every occupied slot with its capability.
    pub fn occupied(&self) -> impl Iterator<Item = (SlotId, &Capability)> {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.cap.as_ref().map(|c| (SlotId(i as u16), c)))
    }

    /// Checks the tree invariants of the module doc; `Err` names the first broken one.
    ///
    /// # Errors
    /// A static description of the violated invariant.
    pub fn check(&self) -> Result<(), &'static str> {
        for (i, e) in self.entries.iter().enumerate() {
            let me = i as u16;
            if e.cap.is_none() {
                if (e.parent, e.first_child, e.next, e.prev) != (NIL, NIL, NIL, NIL) {
                    return Err("an empty slot has links");
                }
                continue;
            }
            let linked = |raw: u16| {
                raw == NIL
                    || self
                        .entries
                        .get(usize::from(raw))
                        .is_some_and(|x| x.cap.is_some())
            };
            if !linked(e.parent) || !linked(e.first_child) || !linked(e.next) || !linked(e.prev) {
                return Err("a link names an empty slot");
            }
            if e.parent == NIL && (e.next != NIL || e.prev != NIL) {
                return Err("a root has siblings");
            }
            if e.next != NIL && self.entries[usize::from(e.next)].prev != me {
                return Err("next/prev are not inverse");
            }
            if e.prev != NIL && self.entries[usize::from(e.prev)].next != me {
                return Err("prev/next are not inverse");
            }
            if e.prev != NIL && self.entries[usize::from(e.prev)].parent != e.parent {
                return Err("siblings have different parents");
            }
            if e.prev == NIL
                && e.parent != NIL
                && self.entries[usize::from(e.parent)].first_child != me
            {
                return Err("a first child is not its parent's first child");
            }
            if e.first_child != NIL && self.entries[usize::from(e.first_child)].parent != me {
                return Err("a child does not name its parent");
            }
            // Acyclic: walking up ends within MAX_SLOTS steps.
            let (mut up, mut steps) = (e.parent, 0);
            while up != NIL {
                steps += 1;
                if steps > MAX_SLOTS || up == me {
                    return Err("the derivation tree has a cycle");
                }
                up = self.entries[usize::from(up)].parent;
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

/// A capability space: slots `[base, base + len)` of the slot table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CNode {
    base: u16,
    len: u16,
    /// Capabilities naming this CNode.
    pub(super) caps: u32,
}

impl CNode {
    /// A CNode over `[base, base + len)`, which the caller found with [`find_range`].
    #[must_use]
    pub(super) const fn new(base: u16, len: u16) -> Self {
        Self { base, len, caps: 0 }
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

    /// The global slot for `index`.
    ///
    /// # Errors
    /// [`KernelError::InvalidSlot`] for index 0 (the null capability) or beyond the CNode.
    pub fn slot(&self, index: u64) -> Result<SlotId, KernelError> {
        if index == 0 || index >= u64::from(self.len) {
            return Err(KernelError::InvalidSlot);
        }
        // Cannot overflow or truncate: index < len and base + len <= MAX_SLOTS.
        Ok(SlotId(self.base + index as u16))
    }

    /// The global slot a `CPtr` names (single level: the `CPtr` is the index).
    ///
    /// # Errors
    /// As [`CNode::slot`].
    pub fn lookup(&self, cptr: CPtr) -> Result<SlotId, KernelError> {
        self.slot(cptr.raw())
    }

    /// Every global slot of this CNode.
    pub fn slots(&self) -> impl Iterator<Item = SlotId> {
        (self.base..self.base + self.len).map(SlotId)
    }
}

/// The lowest base where `len` slots fit between the `used` ranges (each `(base, len)`).
#[must_use]
pub fn find_range(used: &[(u16, u16)], len: usize) -> Option<u16> {
    let fits = |start: usize| {
        start + len <= MAX_SLOTS
            && used.iter().all(|&(b, l)| {
                start + len <= usize::from(b) || usize::from(b) + usize::from(l) <= start
            })
    };
    core::iter::once(0)
        .chain(used.iter().map(|&(b, l)| usize::from(b) + usize::from(l)))
        .filter(|&start| fits(start))
        .min()
        .map(|start| start as u16)
}

impl CNode {
    /// The range, for [`find_range`].
    #[must_use]
    pub(super) const fn range(&self) -> (u16, u16) {
        (self.base, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::capability::Object;

    fn cap() -> Capability {
        Capability::new(Object::IrqControl)
    }

    #[test]
    fn remove_splices_children_under_the_grandparent() {
        let mut t = SlotTable::new();
        let (a, b, c, d) = (SlotId(1), SlotId(2), SlotId(3), SlotId(4));
        t.insert(a, cap(), None).unwrap();
        t.insert(b, cap(), Some(a)).unwrap();
        t.insert(c, cap(), Some(b)).unwrap();
        t.insert(d, cap(), Some(b)).unwrap();
        t.check().unwrap();
        assert!(t.remove(b).is_some());
        t.check().unwrap();
        assert_eq!(t.parent(c), Some(a));
        assert_eq!(t.parent(d), Some(a));
        assert_eq!(t.leaf_descendant(a).map(|s| t.parent(s)), Some(Some(a)));
        assert!(t.remove(a).is_some());
        t.check().unwrap();
        assert_eq!(t.parent(c), None);
        assert_eq!(t.next_sibling(d), None);
    }

    #[test]
    fn move_keeps_the_tree_position() {
        let mut t = SlotTable::new();
        let (a, b, c, d) = (SlotId(1), SlotId(2), SlotId(3), SlotId(9));
        t.insert(a, cap(), None).unwrap();
        t.insert(b, cap(), Some(a)).unwrap();
        t.insert(c, cap(), Some(b)).unwrap();
        t.move_cap(b, d).unwrap();
        t.check().unwrap();
        assert_eq!(t.first_child(a), Some(d));
        assert_eq!(t.parent(c), Some(d));
        assert_eq!(t.move_cap(b, SlotId(10)), Err(KernelError::EmptySlot));
        assert_eq!(t.move_cap(d, a), Err(KernelError::SlotOccupied));
        assert_eq!(t.insert(a, cap(), None), Err(KernelError::SlotOccupied));
        assert_eq!(
            t.insert(SlotId(20), cap(), Some(SlotId(21))),
            Err(KernelError::EmptySlot)
        );
    }

    #[test]
    fn cnode_lookup_rejects_null_and_out_of_range() {
        let cnode = CNode::new(16, 8);
        assert_eq!(cnode.lookup(CPtr::new(0)), Err(KernelError::InvalidSlot));
        assert_eq!(cnode.lookup(CPtr::new(8)), Err(KernelError::InvalidSlot));
        assert_eq!(
            cnode.lookup(CPtr::new(u64::MAX)),
            Err(KernelError::InvalidSlot)
        );
        assert_eq!(cnode.lookup(CPtr::new(7)), Ok(SlotId(23)));
    }

    #[test]
    fn ranges_are_first_fit_and_disjoint() {
        assert_eq!(find_range(&[], 16), Some(0));
        assert_eq!(find_range(&[(0, 16), (32, 16)], 16), Some(16));
        assert_eq!(find_range(&[(0, 16), (32, 16)], 17), Some(48));
        assert_eq!(find_range(&[(0, 4096)], 1), None);
    }
}

//! The sleepers: vCPU threads asleep in WFI with an armed virtual timer, in an AVL tree keyed by
//! (deadline, thread) whose nodes are the thread objects themselves.
//!
//! Why a tree: every kernel entry does bounded work with interrupts masked (issue 13). A list in
//! deadline order made each insertion walk past every later sleeper, so a VMM that paid for many
//! vCPUs, whose guests armed ever earlier deadlines, could make one entry as long as it liked.
//! Here inserting, removing any sleeper (woken by an interrupt, deleted, suspended) and finding
//! the earliest each take O(log n) steps in the worst case — not amortised, not randomised.
//!
//! The kernel allocates nothing: each thread carries its [`Links`] (children, parent, height),
//! used only while it sleeps with a deadline. The thread's reference breaks ties between equal
//! deadlines, so every key is unique and removal finds exactly its thread. The earliest sleeper
//! is cached, so [`Sleepers::first`] is one read.
//!
//! # Invariants ([`Sleepers::check`], after every step of the property tests and the fuzzer)
//! 1. In-order keys strictly increase; the cached first is the in-order first.
//! 2. Each node's parent link names the node whose child it is (the root's names none).
//! 3. Each node's height is one more than its taller child's, and its children's heights differ
//!    by at most one (the AVL condition). So a tree of height h holds at least F(h+2) − 1 nodes
//!    (F the Fibonacci numbers): h < 1.4405·log2(n + 2), e.g. at most 28 for a million sleepers.
//!
//! # Cost
//! An insertion descends once (at most h nodes) and retraces up at most h nodes with at most two
//! rotations; a removal finds the successor (at most h), retraces at most h nodes with at most two
//! rotations at each, and finds the new first (at most h) when it removed the first.

use super::memory::{Store, ThreadRef};
use super::thread::Thread;

/// A sleeper's place in the tree, kept in its thread object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Links {
    /// The subtrees of earlier (0) and later (1) keys.
    pub(super) child: [Option<ThreadRef>; 2],
    pub(super) parent: Option<ThreadRef>,
    /// Nodes on the longest path down from here: 1 for a leaf, 0 out of the tree.
    pub(super) height: u8,
}

impl Links {
    /// Out of the tree.
    pub(super) const NONE: Self = Self {
        child: [None, None],
        parent: None,
        height: 0,
    };
}

/// The tree's root and its earliest node.
#[derive(Debug)]
pub(super) struct Sleepers {
    root: Option<ThreadRef>,
    first: Option<ThreadRef>,
    /// Nodes visited and rotations made (for the test of the bound).
    #[cfg(test)]
    pub(super) steps: usize,
}

fn links(threads: &Store<Thread>, thread: ThreadRef) -> Links {
    threads.get(thread).map_or(Links::NONE, |t| t.sleeper)
}

fn edit(threads: &mut Store<Thread>, thread: ThreadRef, change: impl FnOnce(&mut Links)) {
    if let Ok(t) = threads.get_mut(thread) {
        change(&mut t.sleeper);
    }
}

/// A sleeper's key: its deadline (every sleeper in the tree has one), then its reference.
fn key(threads: &Store<Thread>, thread: ThreadRef) -> (u64, ThreadRef) {
    let deadline = threads.get(thread).ok().and_then(|t| t.deadline);
    (deadline.unwrap_or(0), thread)
}

fn height(threads: &Store<Thread>, node: Option<ThreadRef>) -> u8 {
    node.map_or(0, |n| links(threads, n).height)
}

/// `node`'s parent and which of its children `node` is.
fn place(threads: &Store<Thread>, node: ThreadRef) -> (Option<ThreadRef>, usize) {
    let parent = links(threads, node).parent;
    let side = parent.map_or(0, |p| usize::from(links(threads, p).child[1] == Some(node)));
    (parent, side)
}

impl Sleepers {
    pub(super) const EMPTY: Self = Self {
        root: None,
        first: None,
        #[cfg(test)]
        steps: 0,
    };

    pub(super) fn is_empty(&self) -> bool {
        self.root.is_none()
    }

    /// The sleeper with the earliest deadline.
    pub(super) fn first(&self) -> Option<ThreadRef> {
        self.first
    }

    /// Adds `thread`, whose deadline is set and which is in no queue.
    pub(super) fn insert(&mut self, threads: &mut Store<Thread>, thread: ThreadRef) {
        let new = key(threads, thread);
        let (mut parent, mut side, mut earliest) = (None, 0, true);
        let mut at = self.root;
        while let Some(node) = at {
            self.step();
            side = usize::from(key(threads, node) < new);
            earliest &= side == 0;
            parent = Some(node);
            at = links(threads, node).child[side];
        }
        let leaf = Links {
            height: 1,
            ..Links::NONE
        };
        edit(threads, thread, |l| *l = leaf);
        self.link(threads, parent, side, Some(thread));
        if earliest {
            self.first = Some(thread);
        }
        self.retrace(threads, parent);
    }

    /// Takes `thread` (a sleeper) out of the tree.
    pub(super) fn remove(&mut self, threads: &mut Store<Thread>, thread: ThreadRef) {
        let old = links(threads, thread);
        // Not in the tree: relinking its (absent) parent would cut the tree loose.
        if old.height == 0 {
            return;
        }
        let (parent, side) = place(threads, thread);
        let changed = match old.child {
            [Some(earlier), Some(later)] => {
                // Its successor, the earliest of its later subtree (which has no earlier child),
                // takes its place and height; the retrace starts where the successor left.
                let next = self.leftmost(threads, later);
                let mut changed = Some(next);
                if next != later {
                    let moved = links(threads, next);
                    changed = moved.parent;
                    self.link(threads, moved.parent, 0, moved.child[1]);
                    self.link(threads, Some(next), 1, Some(later));
                }
                self.link(threads, Some(next), 0, Some(earlier));
                self.link(threads, parent, side, Some(next));
                edit(threads, next, |l| l.height = old.height);
                changed
            }
            [only, None] | [None, only] => {
                self.link(threads, parent, side, only);
                parent
            }
        };
        edit(threads, thread, |l| *l = Links::NONE);
        self.retrace(threads, changed);
        if self.first == Some(thread) {
            self.first = self.root.map(|root| self.leftmost(threads, root));
        }
    }

    /// The earliest node of `node`'s subtree.
    fn leftmost(&mut self, threads: &Store<Thread>, mut node: ThreadRef) -> ThreadRef {
        while let Some(earlier) = links(threads, node).child[0] {
            self.step();
            node = earlier;
        }
        node
    }

    /// Makes `child` the `side` child of `parent`, or the root when `parent` is `None`.
    fn link(
        &mut self,
        threads: &mut Store<Thread>,
        parent: Option<ThreadRef>,
        side: usize,
        child: Option<ThreadRef>,
    ) {
        match parent {
            Some(p) => edit(threads, p, |l| l.child[side] = child),
            None => self.root = child,
        }
        if let Some(c) = child {
            edit(threads, c, |l| l.parent = parent);
        }
    }

    /// Restores heights and balance from `at` up: after one insertion or removal each subtree on
    /// the path is at most two out of balance, which one or two rotations mend. Above a subtree
    /// whose height did not change nothing did, so the retrace stops there.
    fn retrace(&mut self, threads: &mut Store<Thread>, mut at: Option<ThreadRef>) {
        while let Some(node) = at {
            self.step();
            let before = links(threads, node).height;
            let top = self.rebalance(threads, node);
            let after = links(threads, top);
            if after.height == before {
                break;
            }
            at = after.parent;
        }
    }

    /// Sets `node`'s height, rotating where its children differ by two; returns the subtree's
    /// new root.
    fn rebalance(&mut self, threads: &mut Store<Thread>, node: ThreadRef) -> ThreadRef {
        let child = links(threads, node).child;
        let [earlier, later] = child.map(|c| height(threads, c));
        if earlier.abs_diff(later) < 2 {
            edit(threads, node, |l| l.height = earlier.max(later) + 1);
            return node;
        }
        let heavy = usize::from(later > earlier);
        if let Some(tall) = child[heavy] {
            let [inner, outer] =
                [1 - heavy, heavy].map(|s| height(threads, links(threads, tall).child[s]));
            if inner > outer {
                self.rotate(threads, tall, heavy);
            }
        }
        self.rotate(threads, node, 1 - heavy)
    }

    /// Moves `node` down to its `side`, its other child up into its place; returns that child.
    fn rotate(&mut self, threads: &mut Store<Thread>, node: ThreadRef, side: usize) -> ThreadRef {
        self.step();
        let Some(up) = links(threads, node).child[1 - side] else {
            return node;
        };
        let (parent, at) = place(threads, node);
        let inner = links(threads, up).child[side];
        self.link(threads, Some(node), 1 - side, inner);
        self.link(threads, Some(up), side, Some(node));
        self.link(threads, parent, at, Some(up));
        for n in [node, up] {
            let [a, b] = links(threads, n).child.map(|c| height(threads, c));
            edit(threads, n, |l| l.height = a.max(b) + 1);
        }
        up
    }

    #[inline(always)]
    fn step(&mut self) {
        #[cfg(test)]
        {
            self.steps += 1;
        }
    }
}

#[cfg(any(test, feature = "invariants"))]
impl Sleepers {
    /// Checks the invariants (module doc) and calls `visit` on each sleeper in key order; returns
    /// how many there are.
    ///
    /// # Errors
    /// The first violated invariant, or `visit`'s error.
    pub(super) fn check(
        &self,
        threads: &Store<Thread>,
        visit: &mut dyn FnMut(ThreadRef) -> Result<(), &'static str>,
    ) -> Result<usize, &'static str> {
        let mut walk = Walk {
            threads,
            visit,
            previous: None,
            count: 0,
        };
        let height = walk.subtree(self.root, None, 0)?;
        // The AVL condition's consequence, checked as such: N(h) = N(h−1) + N(h−2) + 1.
        let mut least = [0usize, 1];
        for _ in 0..height {
            least = [least[1], least[0] + least[1] + 1];
        }
        if walk.count < least[0] {
            return Err("the sleepers' tree is higher than its size allows");
        }
        let first = self.root.map(|root| {
            let mut node = root;
            while let Some(earlier) = links(threads, node).child[0] {
                node = earlier;
            }
            node
        });
        if self.first != first {
            return Err("the cached first sleeper is not the earliest");
        }
        Ok(walk.count)
    }
}

/// An in-order walk of the tree for [`Sleepers::check`].
#[cfg(any(test, feature = "invariants"))]
struct Walk<'a> {
    threads: &'a Store<Thread>,
    visit: &'a mut dyn FnMut(ThreadRef) -> Result<(), &'static str>,
    previous: Option<(u64, ThreadRef)>,
    count: usize,
}

#[cfg(any(test, feature = "invariants"))]
impl Walk<'_> {
    /// Checks the subtree at `node`, whose parent is `parent`; returns its height.
    fn subtree(
        &mut self,
        node: Option<ThreadRef>,
        parent: Option<ThreadRef>,
        depth: u32,
    ) -> Result<u8, &'static str> {
        let Some(node) = node else { return Ok(0) };
        // Deeper than any balanced tree of 2^32 nodes: a cycle.
        if depth > 48 {
            return Err("the sleepers' tree does not end");
        }
        let t = self.threads.get(node).map_err(|_| "a sleeper is dead")?;
        let links = t.sleeper;
        if links.parent != parent {
            return Err("a sleeper's parent link does not name its parent");
        }
        if t.deadline.is_none() {
            return Err("a sleeper has no deadline");
        }
        let earlier = self.subtree(links.child[0], Some(node), depth + 1)?;
        let key = key(self.threads, node);
        if self.previous.is_some_and(|previous| previous >= key) {
            return Err("the sleepers are not in (deadline, thread) order");
        }
        self.previous = Some(key);
        self.count += 1;
        (self.visit)(node)?;
        let later = self.subtree(links.child[1], Some(node), depth + 1)?;
        if links.height != earlier.max(later) + 1 {
            return Err("a sleeper's height is not its taller subtree's plus one");
        }
        if earlier.abs_diff(later) > 1 {
            return Err("the sleepers' tree is out of balance");
        }
        Ok(links.height)
    }
}

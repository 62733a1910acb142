//! The sleepers' tree (`sleepers.rs`) on its own, over thread objects in host RAM: it matches a
//! `BTreeSet` of (deadline, thread) under random sleeps, wakes and ticks, keeps its invariants
//! after every step, and each operation takes O(log n) steps even when every sleeper arrives
//! earlier than all the others (issue 13: the sorted list it replaces walked them all).

use std::collections::BTreeSet;

use capvisor_ipc::types::PhysAddr;
use proptest::prelude::*;

use crate::object::memory::host::HostRam;
use crate::object::memory::{PAGE, Store, ThreadRef};
use crate::object::sleepers::Sleepers;
use crate::object::thread::Thread;
use crate::object::vcpu::WAKES_PER_TICK;

const BASE: u64 = 0x4000_0000;

/// `count` threads, one page each, and the tree; every operation's steps are held to [`bound`].
struct Bed {
    threads: Store<Thread>,
    refs: Vec<ThreadRef>,
    sleepers: Sleepers,
    /// Threads in the tree.
    sleeping: usize,
    /// The most steps one operation took.
    worst: usize,
    _ram: HostRam,
}

impl Bed {
    fn new(count: usize) -> Self {
        let mut ram = HostRam::new(BASE, count as u64 * PAGE);
        let mut threads = Store::new();
        threads.set_memory(ram.table());
        let refs = (0..count as u64)
            .map(|i| {
                let pa = PhysAddr::new(BASE + i * PAGE);
                threads.create(pa, PAGE, Thread::new(None)).unwrap()
            })
            .collect();
        Self {
            threads,
            refs,
            sleepers: Sleepers::EMPTY,
            sleeping: 0,
            worst: 0,
            _ram: ram,
        }
    }

    fn deadline(&self, t: ThreadRef) -> Option<u64> {
        self.threads.get(t).unwrap().deadline
    }

    /// Runs one operation of the tree among `n` sleepers and checks its steps.
    fn measure(
        &mut self,
        what: &str,
        n: usize,
        op: impl FnOnce(&mut Sleepers, &mut Store<Thread>),
    ) {
        let before = self.sleepers.steps;
        op(&mut self.sleepers, &mut self.threads);
        let steps = self.sleepers.steps - before;
        assert!(
            steps <= bound(n),
            "{what} among {n} sleepers took {steps} steps (bound {})",
            bound(n)
        );
        self.worst = self.worst.max(steps);
    }

    /// Puts `t` to sleep until `deadline` (as `Kernel::sleep` does, out of the tree first).
    fn sleep(&mut self, t: ThreadRef, deadline: u64) {
        self.wake(t);
        self.threads.get_mut(t).unwrap().deadline = Some(deadline);
        self.measure("an insertion", self.sleeping + 1, |s, threads| {
            s.insert(threads, t)
        });
        self.sleeping += 1;
    }

    /// Wakes `t` if it sleeps (an interrupt, its deletion or suspension).
    fn wake(&mut self, t: ThreadRef) {
        if self.deadline(t).is_none() {
            return;
        }
        self.measure("a removal", self.sleeping, |s, threads| {
            s.remove(threads, t)
        });
        self.threads.get_mut(t).unwrap().deadline = None;
        self.sleeping -= 1;
    }

    /// Wakes those due at `now`, at most `WAKES_PER_TICK` (as `Kernel::wake_expired` does).
    fn tick(&mut self, now: u64) -> Vec<ThreadRef> {
        let mut woken = Vec::new();
        while woken.len() < WAKES_PER_TICK {
            let Some(first) = self.sleepers.first() else {
                break;
            };
            if self.deadline(first).is_some_and(|d| d > now) {
                break;
            }
            self.wake(first);
            woken.push(first);
        }
        woken
    }

    /// The sleepers in key order, after checking the invariants.
    fn checked(&self) -> Vec<ThreadRef> {
        let mut order = Vec::new();
        let count = self
            .sleepers
            .check(&self.threads, &mut |t| {
                order.push(t);
                Ok(())
            })
            .unwrap();
        assert_eq!(count, order.len());
        assert_eq!(count, self.sleeping);
        order
    }
}

/// The bound each operation is held to: 8·log2(n + 2) steps for n sleepers. The tree's height h
/// is below 1.4405·log2(n + 2); an insertion takes at most 2h + 2 steps, a removal at most 4h.
fn bound(n: usize) -> usize {
    (8.0 * ((n + 2) as f64).log2()).ceil() as usize
}

#[derive(Debug, Clone)]
enum Op {
    Sleep { thread: usize, deadline: u64 },
    Wake { thread: usize },
    Tick { now: u64 },
}

fn op(threads: usize) -> impl Strategy<Value = Op> {
    // Few distinct deadlines, so that ties (broken by the thread) are common.
    let deadline = prop_oneof![0u64..8, 0u64..1000];
    prop_oneof![
        6 => (0..threads, deadline).prop_map(|(thread, deadline)| Op::Sleep { thread, deadline }),
        3 => (0..threads).prop_map(|thread| Op::Wake { thread }),
        1 => (0u64..1000).prop_map(|now| Op::Tick { now }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random sleeps, wakes and ticks: the tree holds exactly the reference's sleepers, in the
    /// same order, keeps its invariants, and a tick wakes the reference's earliest due.
    #[test]
    fn the_sleepers_tree_matches_a_sorted_set(ops in prop::collection::vec(op(64), 1..300)) {
        let mut bed = Bed::new(64);
        let mut reference: BTreeSet<(u64, ThreadRef)> = BTreeSet::new();
        for op in ops {
            match op {
                Op::Sleep { thread, deadline } => {
                    let t = bed.refs[thread];
                    if let Some(d) = bed.deadline(t) {
                        reference.remove(&(d, t));
                    }
                    bed.sleep(t, deadline);
                    reference.insert((deadline, t));
                }
                Op::Wake { thread } => {
                    let t = bed.refs[thread];
                    if let Some(d) = bed.deadline(t) {
                        reference.remove(&(d, t));
                    }
                    bed.wake(t);
                }
                Op::Tick { now } => {
                    let due: Vec<ThreadRef> = reference
                        .iter()
                        .take_while(|(d, _)| *d <= now)
                        .take(WAKES_PER_TICK)
                        .map(|&(_, t)| t)
                        .collect();
                    prop_assert_eq!(bed.tick(now), due.clone());
                    for t in due {
                        reference.retain(|&(_, r)| r != t);
                    }
                }
            }
            let expected: Vec<ThreadRef> = reference.iter().map(|&(_, t)| t).collect();
            prop_assert_eq!(bed.checked(), expected);
            prop_assert_eq!(bed.sleepers.first(), reference.first().map(|&(_, t)| t));
            prop_assert_eq!(bed.sleepers.is_empty(), reference.is_empty());
        }
    }
}

/// Issue 13: a VMM's guests arming ever earlier deadlines made each insertion into the sorted
/// list walk every sleeper (10,000 sleepers: 10,000 steps, interrupts masked). Each operation
/// of the tree stays within 8·log2(n + 2) steps (nodes visited and rotations): 10,000 sleepers
/// arriving earliest first; half of them woken early, from the middle on; all asleep again,
/// each due last; then woken by ticks.
#[test]
fn each_sleepers_operation_takes_logarithmic_steps_even_for_adversarial_deadlines() {
    const N: usize = 10_000;
    let mut bed = Bed::new(N);
    for i in 0..N {
        bed.sleep(bed.refs[i], (N - i) as u64 * 10);
    }
    assert_eq!(bed.checked().len(), N);
    for j in 0..N / 2 {
        bed.wake(bed.refs[(N / 2 + 2 * j + 1) % N]);
    }
    assert_eq!(bed.checked().len(), N / 2);
    for i in 0..N {
        bed.sleep(bed.refs[i], 1_000_000 + i as u64);
    }
    assert_eq!(bed.checked().len(), N);
    let mut now = 1_000_000;
    while !bed.sleepers.is_empty() {
        now += 100;
        assert!(bed.tick(now).len() <= WAKES_PER_TICK);
    }
    bed.checked();
    println!("worst operation: {} steps (bound {})", bed.worst, bound(N));
}

/// The invariant check catches a tree out of balance and a broken parent link.
#[test]
fn the_sleepers_check_finds_broken_trees() {
    let mut bed = Bed::new(3);
    for (i, deadline) in [1, 2, 3].into_iter().enumerate() {
        bed.sleep(bed.refs[i], deadline);
    }
    bed.checked();
    // The root (deadline 2) loses its parent-less state.
    let [a, b, _] = [bed.refs[0], bed.refs[1], bed.refs[2]];
    let saved = bed.threads.get(b).unwrap().sleeper;
    bed.threads.get_mut(b).unwrap().sleeper.parent = Some(a);
    assert_eq!(
        bed.sleepers.check(&bed.threads, &mut |_| Ok(())),
        Err("a sleeper's parent link does not name its parent")
    );
    bed.threads.get_mut(b).unwrap().sleeper = saved;
    // A deadline changed under the tree breaks its order.
    bed.threads.get_mut(a).unwrap().deadline = Some(9);
    assert_eq!(
        bed.sleepers.check(&bed.threads, &mut |_| Ok(())),
        Err("the sleepers are not in (deadline, thread) order")
    );
}

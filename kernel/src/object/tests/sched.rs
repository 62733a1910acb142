//! Scheduling: priorities, round-robin within a priority, preemption on ticks and wake-ups, idle.

use capvisor_ipc::abi::{Invocation, KernelError, Syscall};
use capvisor_ipc::cap::ObjectKind;

use super::*;
use crate::object::sched::TIME_SLICE_TICKS;
use crate::object::thread::ThreadState;

/// Takes the root out of the picture (it has priority 255).
fn suspend_root(w: &mut World) {
    let root = w.root;
    let (_, schedule) = w.syscall(
        root,
        Syscall::Call,
        RootLayout::THREAD,
        info(Invocation::Suspend.code(), 0, 0),
        [0; 4],
    );
    assert_eq!(schedule, Schedule::Switch);
    assert_eq!(w.k.thread_state(root), Ok(ThreadState::Inactive));
}

#[test]
fn the_highest_priority_ready_thread_runs() {
    let mut w = World::new();
    let low = w.spawn(FREE, 10);
    let high = w.spawn(FREE + 1, 20);
    w.retype(World::kind(ObjectKind::Notification), 0, FREE + 2, 1)
        .unwrap();
    suspend_root(&mut w);
    assert_eq!(w.k.pick_next(), Some(high));
    // Tick as long as you like: a lower priority never runs while a higher one is ready.
    for _ in 0..3 * TIME_SLICE_TICKS {
        assert_eq!(w.k.timer_tick(), Schedule::Resume);
    }
    // The high thread blocks; the low one runs; when the high one wakes it preempts.
    w.syscall(high, Syscall::Wait, FREE + 2, info(0, 0, 0), [0; 4]);
    assert_eq!(w.k.pick_next(), Some(low));
    let (_, schedule) = w.syscall(low, Syscall::Signal, FREE + 2, info(0, 0, 0), [0; 4]);
    assert_eq!(
        schedule,
        Schedule::Switch,
        "a higher priority thread was woken"
    );
    assert_eq!(w.k.pick_next(), Some(high));
}

#[test]
fn equal_priorities_take_turns_by_time_slice_and_yield() {
    let mut w = World::new();
    let a = w.spawn(FREE, 50);
    let b = w.spawn(FREE + 1, 50);
    let c = w.spawn(FREE + 2, 50);
    suspend_root(&mut w);
    assert_eq!(w.k.pick_next(), Some(a));
    for expected in [b, c, a, b] {
        for _ in 1..TIME_SLICE_TICKS {
            assert_eq!(w.k.timer_tick(), Schedule::Resume);
        }
        assert_eq!(w.k.timer_tick(), Schedule::Switch);
        assert_eq!(w.k.pick_next(), Some(expected));
    }
    // Yield passes the turn at once.
    let (regs, schedule) = w.syscall(b, Syscall::Yield, 0, info(0, 0, 0), [0; 4]);
    assert_eq!((regs.error_code(), schedule), (None, Schedule::Switch));
    assert_eq!(w.k.pick_next(), Some(c));
    // A woken thread of equal priority waits its turn.
    assert_eq!(w.k.timer_tick(), Schedule::Resume);
}

#[test]
fn nothing_ready_means_idle() {
    let mut w = World::new();
    suspend_root(&mut w);
    assert_eq!(w.k.pick_next(), None);
    assert_eq!(w.k.timer_tick(), Schedule::Switch);
    assert_eq!(w.k.pick_next(), None);
    assert_eq!(w.k.current(), None);
}

#[test]
fn a_thread_cannot_be_given_more_priority_than_its_creator_has() {
    let mut w = World::new();
    let t = w.spawn(FREE, 10);
    // `spawn` gave t max priority 255; make a thread whose creator has max priority 10.
    w.retype(World::kind(ObjectKind::Thread), 0, FREE + 1, 1)
        .unwrap();
    w.retype(World::kind(ObjectKind::Thread), 0, FREE + 2, 1)
        .unwrap();
    let args = [
        0,
        0,
        IPC_BUFFER,
        10 | 10 << 8,
        RootLayout::CNODE,
        RootLayout::SPACE,
        0,
    ];
    w.invoke_as(w.root, FREE + 1, THREAD_CONFIGURE, &args)
        .unwrap();
    w.invoke(FREE + 1, Invocation::Resume, &[]).unwrap();
    let Object::Thread(limited) = w.cap(FREE + 1).unwrap().object else {
        unreachable!()
    };
    let too_high = [0, 0, 0, 11, RootLayout::CNODE, RootLayout::SPACE, 0];
    assert_eq!(
        w.invoke_as(limited, FREE + 2, THREAD_CONFIGURE, &too_high),
        Err(KernelError::RangeError)
    );
    let too_high_max = [
        0,
        0,
        0,
        10 | 11 << 8,
        RootLayout::CNODE,
        RootLayout::SPACE,
        0,
    ];
    assert_eq!(
        w.invoke_as(limited, FREE + 2, THREAD_CONFIGURE, &too_high_max),
        Err(KernelError::RangeError)
    );
    let ok = [
        0,
        0,
        0,
        10 | 10 << 8,
        RootLayout::CNODE,
        RootLayout::SPACE,
        0,
    ];
    w.invoke_as(limited, FREE + 2, THREAD_CONFIGURE, &ok)
        .unwrap();
    let _ = t;
}

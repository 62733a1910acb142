//! The IPC fast path against the slow path: two kernels built alike run the same random syscalls,
//! one through `handle_syscall` (fast path first), the other through `handle_syscall_slow`; every
//! result, decision and, at the end, the whole kernel state must be identical.

use capvisor_ipc::abi::{MessageInfo, Syscall};
use capvisor_ipc::cap::ObjectKind;
use proptest::prelude::*;

use super::*;
use crate::object::boot::RootLayout;
use crate::object::fastpath::TAKEN;

/// Endpoint capabilities the threads use: the original (all rights), a badged send-and-receive
/// copy, a send-only and a receive-only copy, and a notification.
const ENDPOINT: u64 = 20;
const BADGED: u64 = 24;
const SEND_ONLY: u64 = 25;
const RECV_ONLY: u64 = 26;
const NOTIFICATION: u64 = 22;

/// One syscall: which thread (0 root, 1 and 2 the others), number, x0, x1, x2–x5, and the
/// capability pointers in its IPC buffer.
type Call = (usize, u64, u64, u64, [u64; 4], [u64; 3]);

fn world(priorities: [u8; 2]) -> (World, [ThreadRef; 3]) {
    let mut w = World::new();
    w.retype(World::kind(ObjectKind::Endpoint), 0, ENDPOINT, 2)
        .unwrap();
    w.retype(World::kind(ObjectKind::Notification), 0, NOTIFICATION, 1)
        .unwrap();
    let cnode = RootLayout::CNODE;
    // Rights bits (`Rights`): READ 1, WRITE 2, GRANT 8, GRANT_REPLY 16.
    let mints: [[u64; 4]; 3] = [
        [BADGED, ENDPOINT, 1 | 2 | 16, 7],
        [SEND_ONLY, ENDPOINT, 2, 9],
        [RECV_ONLY, ENDPOINT, 1, 0],
    ];
    for args in mints {
        w.invoke(cnode, Invocation::Mint, &args).unwrap();
    }
    let a = w.spawn(30, priorities[0]);
    let b = w.spawn(31, priorities[1]);
    let threads = [w.root, a, b];
    (w, threads)
}

fn cptr() -> impl Strategy<Value = u64> {
    prop_oneof![
        6 => prop_oneof![Just(ENDPOINT), Just(ENDPOINT + 1), Just(BADGED), Just(SEND_ONLY), Just(RECV_ONLY)],
        1 => Just(NOTIFICATION),
        1 => 0u64..40,
    ]
}

fn number() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => Just(Syscall::Call.code()),
        4 => Just(Syscall::ReplyRecv.code()),
        2 => Just(Syscall::Recv.code()),
        1 => Just(Syscall::Send.code()),
        1 => Just(Syscall::Reply.code()),
        1 => 0u64..13,
    ]
}

fn info() -> impl Strategy<Value = u64> {
    prop_oneof![
        6 => (0u64..20, 0usize..=32).prop_map(|(l, n)| MessageInfo::new(l, n, 0).map_or(0, |i| i.raw())),
        1 => (0u64..20, 0usize..80, 0usize..4).prop_map(|(l, n, c)| MessageInfo::new(l, n, c).map_or(0, |i| i.raw())),
        1 => any::<u64>(),
    ]
}

fn run(priorities: [u8; 2], calls: &[Call]) -> Result<usize, TestCaseError> {
    let (mut fast, threads) = world(priorities);
    let (mut slow, _) = world(priorities);
    let before = TAKEN.with(std::cell::Cell::get);
    for &(who, number, cptr, info, words, caps) in calls {
        let t = threads[who];
        for w in [&mut fast, &mut slow] {
            w.buffer(t).caps = caps.map(|c| c % 40);
            w.buffer(t).receive_slot = 35;
        }
        let entry = SyscallRegs([
            cptr, info, words[0], words[1], words[2], words[3], 0, number,
        ]);
        let (mut a, mut b) = (entry, entry);
        let fast_schedule = fast.raw_syscall(t, &mut a);
        let slow_schedule = slow.raw_syscall_slow(t, &mut b);
        prop_assert_eq!(fast_schedule, slow_schedule, "{:?}", entry);
        prop_assert_eq!(a, b, "{:?}", entry);
        prop_assert_eq!(fast.k.check_invariants(), Ok(()));
        prop_assert_eq!(fast.k.timer_tick(), slow.k.timer_tick());
        prop_assert_eq!(fast.k.pick_next(), slow.k.pick_next());
        for t in threads {
            prop_assert_eq!(fast.k.take_syscall_result(t), slow.k.take_syscall_result(t));
        }
    }
    prop_assert_eq!(fast.k.describe(), slow.k.describe());
    prop_assert_eq!(format!("{:?}", fast.fx), format!("{:?}", slow.fx));
    Ok(TAKEN.with(std::cell::Cell::get) - before)
}

#[test]
fn a_call_answered_by_reply_recv_takes_the_fast_path_both_ways() {
    let calls = [
        // The server (thread a) waits; thread b, of the same priority, calls; a replies and
        // waits again.
        (1, Syscall::Recv.code(), ENDPOINT, 0, [0; 4], [0; 3]),
        (
            2,
            Syscall::Call.code(),
            BADGED,
            short(3, 16),
            [1, 2, 3, 4],
            [0; 3],
        ),
        (
            1,
            Syscall::ReplyRecv.code(),
            ENDPOINT,
            short(0, 8),
            [5, 6, 7, 8],
            [0; 3],
        ),
        (
            2,
            Syscall::Call.code(),
            SEND_ONLY,
            short(4, 32),
            [9, 10, 11, 12],
            [0; 3],
        ),
        (
            1,
            Syscall::ReplyRecv.code(),
            ENDPOINT,
            short(0, 0),
            [0; 4],
            [0; 3],
        ),
    ];
    let taken = run([100, 100], &calls).unwrap();
    assert_eq!(taken, 4);
}

#[test]
fn a_call_to_a_lower_priority_server_takes_the_slow_path() {
    let calls = [
        (1, Syscall::Recv.code(), ENDPOINT, 0, [0; 4], [0; 3]),
        (
            0,
            Syscall::Call.code(),
            ENDPOINT,
            short(3, 16),
            [1, 2, 3, 4],
            [0; 3],
        ),
    ];
    // The root runs at 255, the server at 100.
    let taken = run([100, 100], &calls[..1]).unwrap() + run([100, 100], &calls).unwrap();
    assert_eq!(taken, 0);
}

fn short(label: u64, length: usize) -> u64 {
    MessageInfo::new(label, length, 0).unwrap().raw()
}

fn calls() -> impl Strategy<Value = ([u8; 2], Vec<Call>)> {
    (
        prop_oneof![
            Just([255u8, 255]),
            Just([100, 100]),
            Just([255, 100]),
            any::<[u8; 2]>()
        ],
        proptest::collection::vec(
            (
                0usize..3,
                number(),
                cptr(),
                info(),
                any::<[u64; 4]>(),
                any::<[u64; 3]>(),
            ),
            1..60,
        ),
    )
}

/// The random states of the property below do reach the fast path (else it would prove little).
#[test]
fn the_random_syscalls_reach_the_fast_path() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut taken = 0;
    for _ in 0..64 {
        let (priorities, calls) = calls().new_tree(&mut runner).unwrap().current();
        taken += run(priorities, &calls).unwrap();
    }
    assert!(taken >= 10, "only {taken} fast paths in 64 runs");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_fast_path_leaves_exactly_the_slow_paths_state((priorities, calls) in calls()) {
        run(priorities, &calls)?;
    }
}

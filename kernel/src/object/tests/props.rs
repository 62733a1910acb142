//! Property tests: random sequences of capability operations and of raw syscalls never panic and
//! keep the invariants (`Kernel::check_invariants`), and the fake's page tables always match the
//! mappings that frame capabilities record.

use capvisor_ipc::abi::{Invocation, MessageInfo};
use capvisor_ipc::cap::ObjectKind;
use proptest::prelude::*;

use super::*;
use crate::object::capability::ADDRESS_SPACE_KIND;

#[derive(Debug, Clone)]
enum Op {
    Retype {
        kind: u64,
        size_bits: u64,
        dest: u64,
        count: u64,
        from: u64,
    },
    Copy {
        dest: u64,
        source: u64,
        rights: u64,
    },
    Mint {
        dest: u64,
        source: u64,
        rights: u64,
        badge: u64,
    },
    Move {
        dest: u64,
        source: u64,
    },
    Delete {
        index: u64,
    },
    Revoke {
        index: u64,
    },
    Map {
        frame: u64,
        space: u64,
        page: u64,
        access: u64,
        memtype: u64,
    },
    Unmap {
        frame: u64,
    },
    Into {
        cnode: u64,
        dest: u64,
        source: u64,
    },
}

fn index() -> impl Strategy<Value = u64> {
    prop_oneof![1 => 1u64..5, 6 => 5u64..40]
}

fn kind() -> impl Strategy<Value = (u64, u64)> {
    prop_oneof![
        Just((u64::from(ObjectKind::Endpoint.code()), 0)),
        Just((u64::from(ObjectKind::Notification.code()), 0)),
        (2u64..5).prop_map(|bits| (u64::from(ObjectKind::CNode.code()), bits)),
        Just((u64::from(ObjectKind::Frame.code()), 12)),
        Just((u64::from(ObjectKind::DeviceFrame.code()), 12)),
        Just((u64::from(ObjectKind::Thread.code()), 0)),
        (12u64..17).prop_map(|bits| (u64::from(ObjectKind::Untyped.code()), bits)),
        Just((u64::from(ADDRESS_SPACE_KIND), 0)),
        (0u64..20, 0u64..30),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (kind(), index(), 1u64..4, prop_oneof![Just(UNTYPED), Just(MMIO_UNTYPED), index()])
            .prop_map(|((kind, size_bits), dest, count, from)| Op::Retype { kind, size_bits, dest, count, from }),
        2 => (index(), index(), 0u64..40).prop_map(|(dest, source, rights)| Op::Copy { dest, source, rights }),
        1 => (index(), index(), 0u64..32, 0u64..4).prop_map(|(dest, source, rights, badge)| Op::Mint { dest, source, rights, badge }),
        1 => (index(), index()).prop_map(|(dest, source)| Op::Move { dest, source }),
        2 => index().prop_map(|index| Op::Delete { index }),
        1 => index().prop_map(|index| Op::Revoke { index }),
        2 => (index(), prop_oneof![Just(RootLayout::SPACE), index()], 0u64..8, 0u64..8, 0u64..4)
            .prop_map(|(frame, space, page, access, memtype)| Op::Map { frame, space, page, access, memtype }),
        1 => index().prop_map(|frame| Op::Unmap { frame }),
        1 => (index(), 0u64..20, index()).prop_map(|(cnode, dest, source)| Op::Into { cnode, dest, source }),
    ]
}

fn apply(w: &mut World, op: &Op) {
    let cnode = RootLayout::CNODE;
    // Errors are expected and fine; only panics and broken invariants fail the property.
    let _ = match *op {
        Op::Retype {
            kind,
            size_bits,
            dest,
            count,
            from,
        } => w.invoke(from, Invocation::Retype, &[kind, size_bits, 0, dest, count]),
        Op::Copy {
            dest,
            source,
            rights,
        } => w.invoke(cnode, Invocation::Copy, &[dest, source, rights]),
        Op::Mint {
            dest,
            source,
            rights,
            badge,
        } => w.invoke(cnode, Invocation::Mint, &[dest, source, rights, badge]),
        Op::Move { dest, source } => w.invoke(cnode, Invocation::Move, &[dest, source]),
        Op::Delete { index } => w.invoke(cnode, Invocation::Delete, &[index]),
        Op::Revoke { index } => w.invoke(cnode, Invocation::Revoke, &[index]),
        Op::Map {
            frame,
            space,
            page,
            access,
            memtype,
        } => w.invoke(
            frame,
            Invocation::Map,
            &[space, page << 12, access, memtype],
        ),
        Op::Unmap { frame } => w.invoke(frame, Invocation::Unmap, &[]),
        Op::Into {
            cnode,
            dest,
            source,
        } => w.invoke(cnode, Invocation::Copy, &[dest, source, 0x1f]),
    };
}

/// Every mapping in the fake's tables is recorded on exactly one frame capability, and vice versa.
fn mappings_match(w: &World) -> Result<(), String> {
    let recorded: Vec<_> =
        w.k.capabilities()
            .into_iter()
            .filter_map(|(_, cap)| match cap.object {
                Object::Frame(frame) => frame.mapping.filter(|m| w.k.spaces.get(m.space).is_ok()),
                _ => None,
            })
            .collect();
    if recorded.len() != w.fx.mappings.len() {
        return Err(format!(
            "{} recorded mappings, {} in the tables",
            recorded.len(),
            w.fx.mappings.len()
        ));
    }
    for m in &w.fx.mappings {
        if !recorded
            .iter()
            .any(|r| w.root_of(r.space) == m.space && r.ipa == m.ipa)
        {
            return Err(format!("a mapping at {:#x} has no capability", m.ipa.raw()));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn capability_operations_keep_the_invariants(ops in proptest::collection::vec(op(), 1..60)) {
        let mut w = World::new();
        for op in &ops {
            apply(&mut w, op);
            prop_assert_eq!(w.k.check_invariants(), Ok(()), "after {:?}", op);
            prop_assert_eq!(mappings_match(&w), Ok(()), "after {:?}", op);
        }
        // Revoking every root capability leaves nothing derived and every mapping gone. The
        // operations may have moved the root's CNode capability away from slot 1, or deleted the
        // root's thread: invoke the CNode wherever it is now, and leave the capabilities that keep
        // the root alive and able to invoke (a root without them can no longer revoke anything).
        if let Some(root_cnode) = w.k.threads.get(w.root).ok().and_then(|t| t.cspace) {
            let object_at = |w: &World, i: u64| {
                let slot = w.k.cnode_slot(root_cnode, i).ok()?;
                w.k.capability(slot).map(|c| c.object)
            };
            let own = [Object::CNode(root_cnode), Object::Thread(w.root)];
            let cnode = (1..40).find(|&i| object_at(&w, i) == Some(own[0]));
            // A root that called an endpoint (an `Into` whose "CNode" was one) waits for a reply
            // and can invoke nothing more: there is no cleanup to check then.
            let runnable = w.k.thread_state(w.root) == Ok(crate::object::thread::ThreadState::Ready);
            if let Some(cnode) = cnode.filter(|_| runnable) {
                for index in 1..40 {
                    if object_at(&w, index).is_some_and(|o| own.contains(&o)) {
                        continue;
                    }
                    let _ = w.invoke(cnode, Invocation::Revoke, &[index]);
                    let _ = w.invoke(cnode, Invocation::Delete, &[index]);
                }
                prop_assert!(w.fx.mappings.is_empty());
            }
        }
        prop_assert_eq!(w.k.check_invariants(), Ok(()));
    }

    #[test]
    fn raw_syscalls_from_several_threads_keep_the_invariants(
        calls in proptest::collection::vec(
            (0usize..3, 0u64..13, 0u64..40, prop_oneof![
                Just(0u64),
                (0u64..20, 0usize..80, 0usize..4).prop_map(|(l, n, c)| MessageInfo::new(l, n, c).map_or(0, |i| i.raw())),
                any::<u64>(),
            ], any::<[u64; 4]>(), any::<[u64; 3]>()),
            1..80,
        )
    ) {
        let mut w = World::new();
        w.retype(World::kind(ObjectKind::Endpoint), 0, 20, 2).unwrap();
        w.retype(World::kind(ObjectKind::Notification), 0, 22, 1).unwrap();
        w.retype(World::kind(ObjectKind::Frame), 12, 23, 2).unwrap();
        let a = w.spawn(30, 100);
        let b = w.spawn(31, 100);
        let threads = [w.root, a, b];
        for (who, number, cptr, info, words, caps) in calls {
            let t = threads[who];
            w.buffer(t).caps = caps.map(|c| c % 40);
            w.buffer(t).receive_slot = 35;
            let mut regs = SyscallRegs([cptr, info, words[0], words[1], words[2], words[3], 0, number]);
            let _ = w.raw_syscall(t, &mut regs);
            prop_assert_eq!(w.k.check_invariants(), Ok(()));
            let _ = w.k.timer_tick();
            let _ = w.k.pick_next();
            for t in threads {
                let _ = w.k.take_syscall_result(t);
            }
        }
        prop_assert_eq!(mappings_match(&w), Ok(()));
    }
}

/// The reaper finishing an endpoint whose untyped lost its last capability queues the untyped's
/// record behind the endpoint; the record must not be lost when the endpoint was the only
/// dying object (proptest found this sequence).
#[test]
fn a_record_queued_while_its_last_child_is_reaped_is_reaped_too() {
    let mut w = World::new();
    let slot =
        w.k.cnode_slot(w.k.threads.get(w.root).unwrap().cspace.unwrap(), 5)
            .unwrap();
    let Some(Object::Untyped(untyped)) = w.k.capability(slot).map(|c| c.object) else {
        panic!("slot 5 holds the root's first untyped");
    };
    apply(
        &mut w,
        &Op::Retype {
            kind: 2,
            size_bits: 0,
            dest: 13,
            count: 1,
            from: 5,
        },
    );
    apply(&mut w, &Op::Delete { index: 5 });
    // The untyped is a zombie now: no capability, one child (the endpoint).
    assert!(w.k.untyped.get(untyped).is_ok_and(|u| u.zombie));
    w.invoke(RootLayout::CNODE, Invocation::Delete, &[13])
        .unwrap();
    w.k.check_invariants().unwrap();
    assert!(
        w.k.untyped.get(untyped).is_err(),
        "the zombie's record was reaped"
    );
}

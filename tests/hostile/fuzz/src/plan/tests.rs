//! The fuzzer's two safety rules, over many seeds: it never blocks, and it names only its own
//! region (plus its CNode, space and IrqControl where an invocation needs them).

use super::*;
use crate::world::NO_SLOT;
use capvisor_ipc::abi::{GlueSyscall, Invocation, MessageInfo, Syscall};
use hostile_common::SlotPool;

const PRIORITY: u8 = 100;

fn world(rng: &mut Rng) -> World {
    let mut region = SlotPool::new();
    for slot in 100..260 {
        region.give(slot);
    }
    let mut world = World::new(region, (1, 2), Some(4), PRIORITY);
    let kinds = [
        0,
        kind::UNTYPED,
        kind::ENDPOINT,
        kind::NOTIFICATION,
        kind::CNODE,
        kind::FRAME,
        kind::VM,
        kind::VCPU,
        kind::THREAD,
        kind::IRQ_HANDLER,
        kind::ADDRESS_SPACE,
    ];
    for slot in 100..260 {
        world.set_kind(slot, rng.pick(&kinds));
    }
    world
}

/// Whether `value`, read as a slot of the fuzzer's CNode, is allowed: 0, none, a region slot or
/// `special`.
fn allowed(world: &World, value: u64, special: Option<u64>) -> bool {
    value == 0 || value >= NO_SLOT || world.region.contains(value) || Some(value) == special
}

fn check(world: &World, step: &Step) {
    let never = [
        Syscall::ReplyRecv,
        Syscall::Send,
        Syscall::Recv,
        Syscall::Wait,
    ];
    assert!(
        never.iter().all(|s| s.code() != step.number)
            && GlueSyscall::ALL.iter().all(|s| s.code() != step.number),
        "{step:?}"
    );
    let invocation = step.number == Syscall::Call.code() || step.number == Syscall::NbSend.code();
    if step.number == Syscall::Call.code() {
        let info = MessageInfo::decode(step.info).expect("a Call's message-info word is valid");
        assert!(
            info.extra_caps() >= 1 && step.caps[0] == BAD_CPTR,
            "{step:?}"
        );
    }
    if step.number == Syscall::NbRecv.code() {
        assert!(allowed(world, step.receive_slot, None), "{step:?}");
    }
    if step.number == Syscall::NbSend.code() && MessageInfo::decode(step.info).is_ok() {
        let sent = MessageInfo::decode(step.info).map_or(0, |i| i.extra_caps());
        for &cap in &step.caps[..sent] {
            assert!(allowed(world, cap, None), "{step:?}");
        }
    }
    if step.number >= 14 || step.number == 0 {
        return;
    }
    let w = step.words;
    let slot = |value: u64| assert!(allowed(world, value, None), "{value} in {step:?}");
    let label = MessageInfo::decode(step.info).map_or(0, |i| i.label());
    let invoked = if invocation {
        Invocation::from_code(label)
    } else {
        None
    };
    let special = match invoked {
        Some(
            Invocation::Copy
            | Invocation::Mint
            | Invocation::Move
            | Invocation::Delete
            | Invocation::Revoke,
        ) => Some(world.cnode),
        Some(Invocation::IrqIssueHandler) => world.irq_control,
        _ => None,
    };
    assert!(allowed(world, step.cptr, special), "{step:?}");
    match invoked {
        Some(Invocation::Retype) => {
            slot(w[2]);
            if w[2] == 0 && (1..=64).contains(&w[4]) {
                (w[3]..w[3].saturating_add(w[4])).for_each(slot);
            }
        }
        Some(Invocation::Copy | Invocation::Mint | Invocation::Move) => {
            if step.cptr == world.cnode {
                slot(w[0]);
            }
            slot(w[1]);
        }
        Some(Invocation::Delete | Invocation::Revoke) if step.cptr == world.cnode => slot(w[0]),
        Some(Invocation::Map) => assert!(allowed(world, w[0], Some(world.space)), "{step:?}"),
        Some(Invocation::IrqIssueHandler | Invocation::CacheMaintenance) => slot(w[1]),
        Some(
            Invocation::IrqSetNotification
            | Invocation::ThreadBindNotification
            | Invocation::ThreadBindVcpu
            | Invocation::IrqForwardToVcpu,
        ) => slot(w[0]),
        Some(Invocation::ThreadConfigure) => {
            slot(w[4]);
            assert!(allowed(world, w[5], Some(world.space)), "{step:?}");
            slot(w[6]);
            let top = u64::from(PRIORITY);
            let low = w[3] & 0xff <= top && (w[3] >> 8) & 0xff <= top;
            assert!(
                w[3] >> 16 != 0 || low,
                "a thread above the fuzzer: {step:?}"
            );
        }
        _ => {}
    }
}

#[test]
fn never_blocks_and_names_only_its_region() {
    for seed in 0..400 {
        let mut rng = Rng::new(seed);
        let mut world = world(&mut rng);
        for _ in 0..500 {
            let step = next(&mut rng, &world);
            check(&world, &step);
            // Some steps succeed: the world changes as the fuzzer's would.
            if rng.chance(50) {
                world.apply(step.effect);
            }
        }
    }
}

#[test]
fn a_seed_gives_the_same_steps_and_every_operation_comes_up() {
    let mut names = std::collections::BTreeSet::new();
    // A world where every kind is held, and one where nothing is (operations then make what
    // they need first).
    let run = |seed, full: bool| {
        let mut rng = Rng::new(seed);
        let mut world = world(&mut rng);
        if !full {
            world = World::new(world.region.clone(), (1, 2), Some(4), PRIORITY);
        }
        (0..3000)
            .map(|_| {
                let step = next(&mut rng, &world);
                (step.name, step.number, step.cptr, step.info, step.words)
            })
            .collect::<std::vec::Vec<_>>()
    };
    let first = run(42, true);
    assert_eq!(first, run(42, true));
    names.extend(first.iter().map(|step| step.0));
    names.extend(run(43, false).iter().map(|step| step.0));
    assert_eq!(names.len(), OPS.len() + 1, "{names:?}");
    assert!(names.contains("make"));
}

#[test]
fn avoiding_known_hangs_leaves_no_long_range_and_no_handler_below_32() {
    for seed in 0..100 {
        let mut rng = Rng::new(seed);
        let mut world = world(&mut rng);
        world.avoid_known_hangs = true;
        for _ in 0..500 {
            let step = next(&mut rng, &world);
            let label = MessageInfo::decode(step.info).map_or(0, |i| i.label());
            let invoked = Invocation::from_code(label);
            if step.name == "cache vm" {
                let size = step.words[2];
                assert!(size <= 2 << 20 || size > 1 << 39, "{step:?}");
            }
            if invoked == Some(Invocation::IrqIssueHandler) && step.name == "irq issue" {
                assert!(step.words[0] >= 32, "{step:?}");
            }
        }
    }
}

#[test]
fn effects_track_kinds_in_the_region_only() {
    let mut rng = Rng::new(1);
    let mut world = world(&mut rng);
    world.apply(Effect::Create {
        first: 100,
        count: 2,
        kind: kind::VM,
    });
    assert_eq!((world.kind(100), world.kind(101)), (kind::VM, kind::VM));
    world.apply(Effect::Copy {
        dest: 102,
        source: 100,
    });
    assert_eq!(world.kind(102), kind::VM);
    world.apply(Effect::Move {
        dest: None,
        source: 102,
    });
    assert_eq!(world.kind(102), 0);
    world.apply(Effect::Create {
        first: 5,
        count: 1,
        kind: kind::VM,
    });
    assert_eq!(world.kind(5), 0);
    world.apply(Effect::Clear(100));
    assert_eq!(world.kind(100), 0);
    assert!(!world.rescan);
    world.apply(Effect::Rescan);
    assert!(world.rescan && world.holds(kind::VM));
}

//! CSpace operations and untyped retype, including each error they return.

use capvisor_ipc::abi::{Invocation, KernelError};
use capvisor_ipc::cap::{ObjectKind, Rights};

use super::*;
use crate::object::capability::ADDRESS_SPACE_KIND;
use crate::object::{EndpointRef, UntypedRef};

const EP: u64 = FREE;

fn untyped_ref(w: &World) -> UntypedRef {
    match w.cap(UNTYPED).unwrap().object {
        Object::Untyped(u) => u,
        _ => unreachable!(),
    }
}

fn endpoint_ref(w: &World, index: u64) -> EndpointRef {
    match w.cap(index).unwrap().object {
        Object::Endpoint(e) => e,
        other => panic!("not an endpoint: {other:?}"),
    }
}

#[test]
fn retype_creates_objects_and_charges_the_watermark() {
    let mut w = World::new();
    w.retype(World::kind(ObjectKind::Endpoint), 0, EP, 3)
        .unwrap();
    for i in 0..3 {
        // (A call on an endpoint is IPC, so look at the slot rather than invoking Identify.)
        let cap = w.cap(EP + i).unwrap();
        assert_eq!(cap.object.kind_code(), ObjectKind::Endpoint.code());
        assert_eq!(cap.rights, Rights::ALL);
    }
    // Each kernel object takes a page of the untyped, and lives there.
    assert_eq!(w.k.untyped(untyped_ref(&w)).unwrap().watermark(), 3 * 4096);
    // A frame is aligned up to its size, at the real physical address.
    w.retype(World::kind(ObjectKind::Frame), 12, EP + 3, 1)
        .unwrap();
    let Some(Capability {
        object: Object::Frame(frame),
        ..
    }) = w.cap(EP + 3)
    else {
        panic!()
    };
    assert_eq!(frame.base.raw(), RAM_BASE + 0x3000);
    assert_eq!(w.k.untyped(untyped_ref(&w)).unwrap().watermark(), 0x4000);
    assert_eq!(w.fx.cleared_frames, 1);
    w.retype(u64::from(ADDRESS_SPACE_KIND), 0, EP + 4, 1)
        .unwrap();
    assert_eq!(w.fx.live_spaces, 2);
}

#[test]
fn retype_errors() {
    let mut w = World::new();
    let ep = World::kind(ObjectKind::Endpoint);
    assert_eq!(w.retype(99, 0, EP, 1), Err(KernelError::InvalidArgument));
    assert_eq!(
        w.retype(World::kind(ObjectKind::Reply), 0, EP, 1),
        Err(KernelError::InvalidArgument)
    );
    assert_eq!(w.retype(ep, 0, 0, 1), Err(KernelError::InvalidSlot));
    assert_eq!(w.retype(ep, 0, 1024, 1), Err(KernelError::InvalidSlot));
    assert_eq!(w.retype(ep, 0, 1023, 2), Err(KernelError::InvalidSlot));
    assert_eq!(w.retype(ep, 0, u64::MAX, 2), Err(KernelError::InvalidSlot));
    assert_eq!(
        w.retype(ep, 0, RootLayout::CNODE, 1),
        Err(KernelError::SlotOccupied)
    );
    assert_eq!(w.retype(ep, 0, EP, 0), Err(KernelError::RangeError));
    assert_eq!(w.retype(ep, 0, EP, 65), Err(KernelError::RangeError));
    assert_eq!(w.retype(ep, 3, EP, 1), Err(KernelError::RangeError));
    assert_eq!(
        w.retype(World::kind(ObjectKind::Frame), 13, EP, 1),
        Err(KernelError::RangeError)
    );
    assert_eq!(
        w.retype(World::kind(ObjectKind::CNode), 4, EP, 2),
        Err(KernelError::RangeError)
    );
    assert_eq!(
        w.retype(World::kind(ObjectKind::DeviceFrame), 12, EP, 1),
        Err(KernelError::InvalidArgument)
    );
    let frame = World::kind(ObjectKind::Frame);
    assert_eq!(
        w.invoke(MMIO_UNTYPED, Invocation::Retype, &[frame, 12, 0, EP, 1]),
        Err(KernelError::InvalidArgument)
    );
}

#[test]
fn retype_memory_and_argument_errors() {
    let mut w = World::new();
    let ep = World::kind(ObjectKind::Endpoint);
    let frame = World::kind(ObjectKind::Frame);
    // One retype zeroes at most 2 MiB (bounded work); a failed retype changes nothing.
    assert_eq!(w.retype(frame, 21, EP, 2), Err(KernelError::RangeError));
    assert_eq!(w.k.untyped(untyped_ref(&w)).unwrap().watermark(), 0);
    assert!(w.cap(EP).is_none());
    // 16 MiB holds eight 2 MiB frames, not nine.
    for i in 0..8 {
        w.retype(frame, 21, EP + i, 1).unwrap();
    }
    assert_eq!(
        w.retype(frame, 21, EP + 8, 1),
        Err(KernelError::NotEnoughMemory)
    );
    assert_eq!(
        w.retype(ep, 0, EP + 8, 1),
        Err(KernelError::NotEnoughMemory)
    );
    // Arguments: too few words, a non-CNode destination, a non-untyped invoked.
    assert_eq!(
        w.invoke(UNTYPED, Invocation::Retype, &[ep, 0, 0, EP]),
        Err(KernelError::TruncatedMessage)
    );
    assert_eq!(
        w.invoke(UNTYPED, Invocation::Retype, &[ep, 0, UNTYPED, EP + 8, 1]),
        Err(KernelError::WrongType)
    );
    assert_eq!(
        w.invoke(
            RootLayout::IRQ_CONTROL,
            Invocation::Retype,
            &[ep, 0, 0, EP + 8, 1]
        ),
        Err(KernelError::IllegalOperation)
    );
}

/// Issue 13, finding 4: objects lived in fixed kernel arenas (64 CNodes, 16 vCPUs), so 7 KiB of
/// untyped took every CNode and 64 KiB every vCPU, for everyone. Now each object lives in the
/// memory it is charged: a small untyped runs out, and nobody else notices.
#[test]
fn exhausting_one_untyped_takes_nothing_from_anyone_else() {
    let mut w = World::new();
    let small = EP;
    // A 64 KiB untyped (its record takes a page of the root's).
    w.retype(World::kind(ObjectKind::Untyped), 16, small, 1)
        .unwrap();
    let retype_from = |w: &mut World, kind: ObjectKind, bits: u64, dest: u64| {
        w.invoke(
            small,
            Invocation::Retype,
            &[World::kind(kind), bits, 0, dest, 1],
        )
    };
    // Sixteen vCPUs and CNodes of 4 slots: each takes a page, so 16 objects in all.
    let mut made = 0;
    let mut dest = EP + 1;
    loop {
        let kind = if made % 2 == 0 {
            ObjectKind::Vcpu
        } else {
            ObjectKind::CNode
        };
        let bits = if kind == ObjectKind::CNode { 2 } else { 0 };
        match retype_from(&mut w, kind, bits, dest) {
            Ok(_) => made += 1,
            Err(error) => {
                assert_eq!(error, KernelError::NotEnoughMemory);
                break;
            }
        }
        dest += 1;
    }
    assert_eq!(made, 16);
    // Everyone else still creates all they pay for.
    for i in 0..40 {
        w.retype(World::kind(ObjectKind::Vcpu), 0, 200 + i, 1)
            .unwrap();
        w.retype(World::kind(ObjectKind::CNode), 2, 300 + i, 1)
            .unwrap();
    }
    w.k.check_invariants().unwrap();
}

#[test]
fn copy_and_mint_narrow_rights_and_badge_once() {
    let mut w = World::new();
    w.retype(World::kind(ObjectKind::Endpoint), 0, EP, 1)
        .unwrap();
    let read = World::rights(&[Rights::READ]);
    w.invoke(RootLayout::CNODE, Invocation::Copy, &[EP + 1, EP, read])
        .unwrap();
    assert_eq!(w.cap(EP + 1).unwrap().rights, Rights::READ);
    // Copying back up cannot add rights.
    w.invoke(
        RootLayout::CNODE,
        Invocation::Copy,
        &[EP + 2, EP + 1, u64::from(Rights::ALL.bits())],
    )
    .unwrap();
    assert_eq!(w.cap(EP + 2).unwrap().rights, Rights::READ);
}

#[test]
fn mint_badges_once_and_copy_reports_each_error() {
    let mut w = World::new();
    w.retype(World::kind(ObjectKind::Endpoint), 0, EP, 1)
        .unwrap();
    w.invoke(RootLayout::CNODE, Invocation::Copy, &[EP + 1, EP, 0x1f])
        .unwrap();
    w.invoke(RootLayout::CNODE, Invocation::Mint, &[EP + 3, EP, 0x1f, 42])
        .unwrap();
    assert_eq!(w.cap(EP + 3).unwrap().badge.raw(), 42);
    assert_eq!(
        w.invoke(
            RootLayout::CNODE,
            Invocation::Mint,
            &[EP + 4, EP + 3, 0x1f, 7]
        ),
        Err(KernelError::InvalidArgument)
    );
    assert_eq!(
        w.invoke(
            RootLayout::CNODE,
            Invocation::Mint,
            &[EP + 4, UNTYPED, 0x1f, 7]
        ),
        Err(KernelError::InvalidArgument)
    );
    assert_eq!(
        w.invoke(RootLayout::CNODE, Invocation::Copy, &[EP + 4, EP, 0x20]),
        Err(KernelError::InvalidArgument)
    );
    assert_eq!(
        w.invoke(RootLayout::CNODE, Invocation::Copy, &[EP + 4, EP, 1 << 8]),
        Err(KernelError::InvalidArgument)
    );
    assert_eq!(
        w.invoke(RootLayout::CNODE, Invocation::Copy, &[EP + 1, EP, 0x1f]),
        Err(KernelError::SlotOccupied)
    );
    assert_eq!(
        w.invoke(RootLayout::CNODE, Invocation::Copy, &[EP + 4, EP + 9, 0x1f]),
        Err(KernelError::EmptySlot)
    );
    assert_eq!(
        w.invoke(RootLayout::CNODE, Invocation::Copy, &[EP + 4, 5000, 0x1f]),
        Err(KernelError::InvalidSlot)
    );
    assert_eq!(
        w.invoke(RootLayout::CNODE, Invocation::Copy, &[0, EP, 0x1f]),
        Err(KernelError::InvalidSlot)
    );
    assert_eq!(
        w.invoke(RootLayout::CNODE, Invocation::Mint, &[EP + 4, EP, 0x1f]),
        Err(KernelError::TruncatedMessage)
    );
}

#[test]
fn cnode_operations_need_write_and_a_cnode() {
    let mut w = World::new();
    let read = World::rights(&[Rights::READ]);
    // CNode operations need WRITE on the CNode capability.
    w.invoke(
        RootLayout::CNODE,
        Invocation::Copy,
        &[EP + 5, RootLayout::CNODE, read],
    )
    .unwrap();
    assert_eq!(
        w.invoke(EP + 5, Invocation::Delete, &[EP]),
        Err(KernelError::InsufficientRights)
    );
    // And they are CNode invocations only.
    assert_eq!(
        w.invoke(UNTYPED, Invocation::Delete, &[EP]),
        Err(KernelError::IllegalOperation)
    );
}

#[test]
fn move_keeps_the_derivation_so_revoke_still_reaches_it() {
    let mut w = World::new();
    w.retype(World::kind(ObjectKind::Endpoint), 0, EP, 1)
        .unwrap();
    w.invoke(RootLayout::CNODE, Invocation::Mint, &[EP + 1, EP, 0x1f, 9])
        .unwrap();
    w.invoke(RootLayout::CNODE, Invocation::Move, &[EP + 2, EP + 1])
        .unwrap();
    assert!(w.cap(EP + 1).is_none());
    assert_eq!(w.cap(EP + 2).unwrap().badge.raw(), 9);
    assert_eq!(
        w.invoke(RootLayout::CNODE, Invocation::Move, &[EP + 2, EP]),
        Err(KernelError::SlotOccupied)
    );
    assert_eq!(
        w.invoke(RootLayout::CNODE, Invocation::Move, &[EP + 3, EP + 1]),
        Err(KernelError::EmptySlot)
    );
    w.invoke(RootLayout::CNODE, Invocation::Revoke, &[EP])
        .unwrap();
    assert!(w.cap(EP + 2).is_none());
    assert!(w.cap(EP).is_some());
}

#[test]
fn revoke_removes_every_descendant_however_deep() {
    let mut w = World::new();
    w.retype(World::kind(ObjectKind::Notification), 0, EP, 1)
        .unwrap();
    // A chain and a fan: EP -> EP+1 -> EP+2 -> EP+3, EP -> EP+4.
    for (dest, src) in [
        (EP + 1, EP),
        (EP + 2, EP + 1),
        (EP + 3, EP + 2),
        (EP + 4, EP),
    ] {
        w.invoke(RootLayout::CNODE, Invocation::Copy, &[dest, src, 0x1f])
            .unwrap();
    }
    // Deleting a middle link keeps its descendants revocable from above.
    w.invoke(RootLayout::CNODE, Invocation::Delete, &[EP + 2])
        .unwrap();
    assert!(w.cap(EP + 3).is_some());
    w.invoke(RootLayout::CNODE, Invocation::Revoke, &[EP + 1])
        .unwrap();
    assert!(w.cap(EP + 3).is_none() && w.cap(EP + 4).is_some());
    w.invoke(RootLayout::CNODE, Invocation::Revoke, &[EP])
        .unwrap();
    assert!((1..=4).all(|i| w.cap(EP + i).is_none()));
    assert_eq!(
        w.invoke(RootLayout::CNODE, Invocation::Revoke, &[EP + 1]),
        Err(KernelError::EmptySlot)
    );
    assert_eq!(
        w.invoke(RootLayout::CNODE, Invocation::Delete, &[EP + 1]),
        Err(KernelError::EmptySlot)
    );
}

#[test]
fn deleting_the_last_capability_destroys_the_object() {
    let mut w = World::new();
    w.retype(World::kind(ObjectKind::Endpoint), 0, EP, 1)
        .unwrap();
    let ep = endpoint_ref(&w, EP);
    w.invoke(RootLayout::CNODE, Invocation::Copy, &[EP + 1, EP, 0x1f])
        .unwrap();
    w.invoke(RootLayout::CNODE, Invocation::Delete, &[EP])
        .unwrap();
    assert!(w.k.endpoints.get(ep).is_ok(), "a copy keeps it alive");
    w.invoke(RootLayout::CNODE, Invocation::Delete, &[EP + 1])
        .unwrap();
    assert_eq!(w.k.endpoints.get(ep).map(|_| ()), Err(KernelError::Revoked));
}

#[test]
fn revoking_untyped_resets_it_once_nothing_paid_from_it_remains() {
    let mut w = World::new();
    let u = untyped_ref(&w);
    for i in 0..8 {
        w.retype(World::kind(ObjectKind::Frame), 21, EP + i, 1)
            .unwrap();
    }
    w.invoke(
        RootLayout::CNODE,
        Invocation::Copy,
        &[EP + 8, UNTYPED, 0x1f],
    )
    .unwrap();
    // A copy of the untyped shares the watermark: nothing is handed out twice.
    assert_eq!(
        w.invoke(
            EP + 8,
            Invocation::Retype,
            &[World::kind(ObjectKind::Endpoint), 0, 0, EP + 9, 1]
        ),
        Err(KernelError::NotEnoughMemory)
    );
    // Revoking the copy leaves the frames paid from the original: no reset.
    w.invoke(RootLayout::CNODE, Invocation::Revoke, &[EP + 8])
        .unwrap();
    assert_eq!(w.k.untyped(u).unwrap().watermark(), RAM_SIZE);
    w.invoke(RootLayout::CNODE, Invocation::Revoke, &[UNTYPED])
        .unwrap();
    assert!((0..9).all(|i| w.cap(EP + i).is_none()));
    assert_eq!(w.k.untyped(u).unwrap().watermark(), 0);
    w.retype(World::kind(ObjectKind::Frame), 21, EP, 1).unwrap();
}

/// Issue 13, finding 5: copy untyped U to U', retype a child untyped C from U, a frame F from C,
/// delete C, revoke U': the watermark of U went back to 0 while F lived, and the next retype
/// overlapped F. Now C's record lives on (a zombie) while F does, so U stays charged; the
/// invariant checks after every step (no two live objects overlap) would catch any overlap.
#[test]
fn memory_is_never_handed_out_twice_through_a_deleted_child_untyped() {
    let mut w = World::new();
    let u = untyped_ref(&w);
    w.invoke(RootLayout::CNODE, Invocation::Copy, &[EP, UNTYPED, 0x1f])
        .unwrap();
    w.retype(World::kind(ObjectKind::Untyped), 20, EP + 1, 1)
        .unwrap();
    w.invoke(
        EP + 1,
        Invocation::Retype,
        &[World::kind(ObjectKind::Frame), 12, 0, EP + 2, 1],
    )
    .unwrap();
    let Some(Capability {
        object: Object::Frame(f),
        ..
    }) = w.cap(EP + 2)
    else {
        panic!("no frame")
    };
    w.invoke(RootLayout::CNODE, Invocation::Delete, &[EP + 1])
        .unwrap();
    w.invoke(RootLayout::CNODE, Invocation::Revoke, &[EP])
        .unwrap();
    assert!(w.k.untyped(u).unwrap().watermark() > 0);
    // Whatever comes next from U lies elsewhere.
    for i in 0..8 {
        if w.retype(World::kind(ObjectKind::Frame), 12, EP + 3 + i, 1)
            .is_ok()
        {
            let Some(Capability {
                object: Object::Frame(g),
                ..
            }) = w.cap(EP + 3 + i)
            else {
                panic!("no frame")
            };
            assert_ne!(g.base, f.base);
        }
    }
    // Once F goes, C's record goes, and U's memory all comes back.
    w.invoke(RootLayout::CNODE, Invocation::Revoke, &[UNTYPED])
        .unwrap();
    assert_eq!(w.k.untyped(u).unwrap().children(), 0);
    assert_eq!(w.k.untyped(u).unwrap().watermark(), 0);
    w.k.check_invariants().unwrap();
}

/// A revoke does a bounded number of deletions per kernel entry and restarts until done.
#[test]
fn a_long_revoke_restarts_until_every_descendant_is_gone() {
    let mut w = World::new();
    w.retype(World::kind(ObjectKind::Endpoint), 0, EP, 1)
        .unwrap();
    // 300 copies, each a child of the original.
    for i in 0..300 {
        w.invoke(RootLayout::CNODE, Invocation::Copy, &[EP + 1 + i, EP, 0x1f])
            .unwrap();
    }
    let before = w.fx.restarts;
    w.invoke(RootLayout::CNODE, Invocation::Revoke, &[EP])
        .unwrap();
    assert!(w.fx.restarts - before >= 300 / crate::object::delete::REVOKE_STEPS);
    assert!((1..=300).all(|i| w.cap(EP + i).is_none()));
    assert!(w.cap(EP).is_some());
}

#[test]
fn retype_needs_write_on_the_untyped() {
    let mut w = World::new();
    w.invoke(
        RootLayout::CNODE,
        Invocation::Copy,
        &[EP, UNTYPED, World::rights(&[Rights::READ])],
    )
    .unwrap();
    assert_eq!(
        w.invoke(
            EP,
            Invocation::Retype,
            &[World::kind(ObjectKind::Endpoint), 0, 0, EP + 1, 1]
        ),
        Err(KernelError::InsufficientRights)
    );
}

#[test]
fn a_deleted_cspace_makes_its_threads_lookups_revoked() {
    let mut w = World::new();
    w.retype(World::kind(ObjectKind::CNode), 4, EP, 1).unwrap();
    w.retype(World::kind(ObjectKind::Thread), 0, EP + 1, 1)
        .unwrap();
    // Give the new CNode a notification and configure the thread with the CNode as its CSpace.
    w.retype(World::kind(ObjectKind::Notification), 0, EP + 2, 1)
        .unwrap();
    w.invoke(EP, Invocation::Copy, &[3, EP + 2, 0x1f]).unwrap();
    let args = [0x2000, 0x9000, 0, 10, EP, RootLayout::SPACE, 0];
    w.invoke_as(w.root, EP + 1, THREAD_CONFIGURE, &args)
        .unwrap();
    w.invoke(EP + 1, Invocation::Resume, &[]).unwrap();
    let Some(Capability {
        object: Object::Thread(t),
        ..
    }) = w.cap(EP + 1)
    else {
        panic!()
    };
    assert_eq!(
        w.invoke_as(t, 3, Invocation::Identify.code(), &[])
            .map(|r| r[0]),
        Ok(World::kind(ObjectKind::Notification))
    );
    assert_eq!(
        w.invoke_as(t, 4, Invocation::Identify.code(), &[]),
        Err(KernelError::EmptySlot)
    );
    assert_eq!(
        w.invoke_as(t, 16, Invocation::Identify.code(), &[]),
        Err(KernelError::InvalidSlot)
    );
    // Deleting the CNode's only capability destroys it and the capabilities in it.
    let Object::Notification(n) = w.cap(EP + 2).unwrap().object else {
        unreachable!()
    };
    w.invoke(RootLayout::CNODE, Invocation::Delete, &[EP])
        .unwrap();
    assert_eq!(
        w.invoke_as(t, 3, Invocation::Identify.code(), &[]),
        Err(KernelError::Revoked)
    );
    // The notification survives through the root's capability; the copy inside the CNode is gone.
    assert_eq!(w.k.notifications.get(n).map(|e| e.caps), Ok(1));
}

#[test]
fn cnodes_holding_cnodes_are_destroyed_without_recursion() {
    let mut w = World::new();
    // A chain of 20 CNodes, each holding the only capability to the next.
    let cnode = World::kind(ObjectKind::CNode);
    w.retype(cnode, 2, EP, 1).unwrap();
    for _ in 0..20 {
        w.retype(cnode, 2, EP + 1, 1).unwrap();
        w.invoke(EP + 1, Invocation::Move, &[1, EP]).unwrap();
        w.invoke(RootLayout::CNODE, Invocation::Move, &[EP, EP + 1])
            .unwrap();
    }
    let live = w.k.cnodes.iter::<crate::object::CNodeRef>().count();
    assert_eq!(live, 22);
    w.invoke(RootLayout::CNODE, Invocation::Delete, &[EP])
        .unwrap();
    // The delete did a bounded amount of the work; the reaper finishes the rest a few steps at
    // a time (as on timer ticks), and nothing is left over.
    assert!(w.k.reaper_busy());
    let mut ticks = 0;
    while w.k.reaper_busy() {
        let ran = w.k.reap(crate::object::TICK_REAP_STEPS, &mut *w.fx);
        assert!(ran <= crate::object::TICK_REAP_STEPS);
        w.k.check_invariants().unwrap();
        ticks += 1;
    }
    assert!(ticks > 1);
    assert_eq!(w.k.cnodes.iter::<crate::object::CNodeRef>().count(), 1);
}

#[test]
fn unknown_and_unsupported_invocations_are_illegal() {
    let mut w = World::new();
    assert_eq!(
        w.invoke_as(w.root, UNTYPED, 999, &[]),
        Err(KernelError::IllegalOperation)
    );
    assert_eq!(
        w.invoke(UNTYPED, Invocation::Map, &[0, 0, 0, 0]),
        Err(KernelError::IllegalOperation)
    );
    assert_eq!(
        w.invoke(RootLayout::THREAD, Invocation::VcpuInjectIrq, &[]),
        Err(KernelError::IllegalOperation)
    );
    assert_eq!(
        w.invoke(RootLayout::SPACE, Invocation::CacheMaintenance, &[]),
        Err(KernelError::IllegalOperation)
    );
    assert_eq!(
        w.invoke_as(w.root, UNTYPED, THREAD_CONFIGURE, &[0; 7]),
        Err(KernelError::IllegalOperation)
    );
}

#[test]
fn an_untyped_says_where_it_is_and_takes_device_types_only_while_nothing_is_made_from_it() {
    let mut w = World::new();
    let describe = |w: &mut World, cptr| w.invoke(cptr, Invocation::UntypedDescribe, &[]);
    assert_eq!(describe(&mut w, UNTYPED), Ok([RAM_BASE, RAM_SIZE, 0, 0]));
    assert_eq!(
        describe(&mut w, MMIO_UNTYPED),
        Ok([0x0900_0000, 0x1000, 1, 0])
    );
    assert_eq!(describe(&mut w, NC_UNTYPED).map(|r| r[2]), Ok(2));
    assert_eq!(describe(&mut w, PFNMAP_UNTYPED).map(|r| r[2]), Ok(3));
    // Not an untyped; an unknown memory code.
    assert_eq!(
        w.invoke(RootLayout::CNODE, Invocation::UntypedDescribe, &[]),
        Err(KernelError::IllegalOperation)
    );
    // Only the holder of IrqControl (init) decides what memory a region is: on the untyped
    // itself the invocation does not exist.
    assert_eq!(
        w.invoke(MMIO_UNTYPED, Invocation::UntypedSetMemory, &[3]),
        Err(KernelError::IllegalOperation)
    );
    let set = |w: &mut World, cptr, memory| {
        w.invoke(
            RootLayout::IRQ_CONTROL,
            Invocation::UntypedSetMemory,
            &[cptr, memory],
        )
    };
    assert_eq!(
        set(&mut w, MMIO_UNTYPED, 4),
        Err(KernelError::InvalidArgument)
    );
    // A device region takes the types init gives it, and a device frame made from it carries them.
    assert_eq!(set(&mut w, MMIO_UNTYPED, 2), Ok([0; 4]));
    assert_eq!(describe(&mut w, MMIO_UNTYPED).map(|r| r[2]), Ok(2));
    let device_frame = u64::from(ObjectKind::DeviceFrame.code());
    w.invoke(
        MMIO_UNTYPED,
        Invocation::Retype,
        &[device_frame, 12, 0, FREE, 1],
    )
    .unwrap();
    // Once something is made from it, no longer: a frame of another type would map it.
    assert_eq!(
        set(&mut w, MMIO_UNTYPED, 1),
        Err(KernelError::IllegalOperation)
    );
    // RAM that nothing was made from may become a cacheable PFNMAP; RAM in use may not.
    w.retype(World::kind(ObjectKind::Untyped), 12, FREE + 1, 1)
        .unwrap();
    assert_eq!(set(&mut w, UNTYPED, 3), Err(KernelError::IllegalOperation));
    assert_eq!(set(&mut w, FREE + 1, 3), Ok([0; 4]));
    assert_eq!(describe(&mut w, FREE + 1).map(|r| r[2]), Ok(3));
    // Its frames are still zeroed before they exist, as RAM's are: no one reads what it held.
    let cleared = w.fx.cleared_frames;
    w.invoke(
        FREE + 1,
        Invocation::Retype,
        &[device_frame, 12, 0, FREE + 3, 1],
    )
    .unwrap();
    assert_eq!(w.fx.cleared_frames, cleared + 1);
    // A device region's frames are not touched.
    let cleared = w.fx.cleared_frames;
    w.invoke(
        NC_UNTYPED,
        Invocation::Retype,
        &[device_frame, 12, 0, FREE + 4, 1],
    )
    .unwrap();
    assert_eq!(w.fx.cleared_frames, cleared);
    // A read-only copy may look but not change it.
    w.invoke(
        RootLayout::CNODE,
        Invocation::Copy,
        &[FREE + 2, PFNMAP_UNTYPED, 1],
    )
    .unwrap();
    assert_eq!(describe(&mut w, FREE + 2).map(|r| r[2]), Ok(3));
    assert_eq!(
        set(&mut w, FREE + 2, 1),
        Err(KernelError::InsufficientRights)
    );
}

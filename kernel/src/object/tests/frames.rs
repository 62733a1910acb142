//! Frames: mapping through the effects under the memory-type rules; unmap, delete and revoke
//! removing mappings.

use capvisor_ipc::abi::{Invocation, KernelError};
use capvisor_ipc::cap::{ObjectKind, Rights};

use super::*;
use capvisor_ipc::memory::{CacheFeatures, MemoryType};

const FRAME: u64 = FREE;
const RW: u64 = 3;
const WB: u64 = 0;
const NC: u64 = 1;
const DEVICE: u64 = 2;

fn map(w: &mut World, frame: u64, ipa: u64, access: u64, memtype: u64) -> Result<(), KernelError> {
    w.invoke(
        frame,
        Invocation::Map,
        &[RootLayout::SPACE, ipa, access, memtype],
    )
    .map(|_| ())
}

#[test]
fn map_writes_the_descriptor_and_unmap_removes_it() {
    let mut w = World::new();
    w.retype(World::kind(ObjectKind::Frame), 12, FRAME, 1)
        .unwrap();
    map(&mut w, FRAME, 0x20_0000, RW, WB).unwrap();
    let m = w.fx.mappings[0];
    assert_eq!(
        (m.ipa.raw(), m.pa.raw(), m.size, m.memtype),
        (0x20_0000, RAM_BASE, 0x1000, MemoryType::NormalWriteBack)
    );
    assert!(m.access.read && m.access.write && !m.access.exec);
    // One mapping per capability; a copy maps again (elsewhere).
    assert_eq!(
        map(&mut w, FRAME, 0x30_0000, RW, WB),
        Err(KernelError::InvalidArgument)
    );
    w.invoke(
        RootLayout::CNODE,
        Invocation::Copy,
        &[FRAME + 1, FRAME, 0x1f],
    )
    .unwrap();
    assert_eq!(
        map(&mut w, FRAME + 1, 0x20_0000, RW, WB),
        Err(KernelError::SlotOccupied),
        "the glue refuses an occupied IPA"
    );
    map(&mut w, FRAME + 1, 0x30_0000, RW, WB).unwrap();
    w.invoke(FRAME, Invocation::Unmap, &[]).unwrap();
    assert_eq!(w.fx.mappings.len(), 1);
    // Unmapping an unmapped frame is fine; unmapping a non-frame is not.
    w.invoke(FRAME, Invocation::Unmap, &[]).unwrap();
    assert_eq!(
        w.invoke(UNTYPED, Invocation::Unmap, &[]),
        Err(KernelError::IllegalOperation)
    );
}

#[test]
fn map_argument_errors() {
    let mut w = World::new();
    w.retype(World::kind(ObjectKind::Frame), 12, FRAME, 1)
        .unwrap();
    assert_eq!(
        map(&mut w, FRAME, 0x20_0800, RW, WB),
        Err(KernelError::AlignmentError)
    );
    assert_eq!(
        map(&mut w, FRAME, 1 << 40, RW, WB),
        Err(KernelError::BadAddress)
    );
    assert_eq!(
        map(&mut w, FRAME, u64::MAX - 0xfff, RW, WB),
        Err(KernelError::BadAddress)
    );
    assert_eq!(
        map(&mut w, FRAME, 0, RW, 7),
        Err(KernelError::InvalidArgument)
    );
    assert_eq!(
        w.invoke(FRAME, Invocation::Map, &[UNTYPED, 0, RW, WB]),
        Err(KernelError::WrongType)
    );
    assert_eq!(
        w.invoke(FRAME, Invocation::Map, &[999, 0, RW, WB]),
        Err(KernelError::EmptySlot)
    );
    assert_eq!(
        w.invoke(FRAME, Invocation::Map, &[RootLayout::SPACE, 0, RW]),
        Err(KernelError::TruncatedMessage)
    );
    // Rights: a read-only copy maps read-only only; a read-only space capability maps nothing.
    w.invoke(
        RootLayout::CNODE,
        Invocation::Copy,
        &[FRAME + 1, FRAME, World::rights(&[Rights::READ])],
    )
    .unwrap();
    assert_eq!(
        map(&mut w, FRAME + 1, 0, RW, WB),
        Err(KernelError::InsufficientRights)
    );
    map(&mut w, FRAME + 1, 0, 1, WB).unwrap();
    w.invoke(
        RootLayout::CNODE,
        Invocation::Copy,
        &[FRAME + 2, RootLayout::SPACE, World::rights(&[Rights::READ])],
    )
    .unwrap();
    assert_eq!(
        w.invoke(FRAME, Invocation::Map, &[FRAME + 2, 0x1000, RW, WB]),
        Err(KernelError::InsufficientRights)
    );
    // The glue's refusal reaches the caller and records no mapping.
    w.fx.fail_map = Some(KernelError::NotEnoughMemory);
    assert_eq!(
        map(&mut w, FRAME, 0x5000, RW, WB),
        Err(KernelError::NotEnoughMemory)
    );
    w.fx.fail_map = None;
    map(&mut w, FRAME, 0x5000, RW, WB).unwrap();
}

#[test]
fn device_frames_carry_their_region_types() {
    let mut w = World::new();
    let device = World::kind(ObjectKind::DeviceFrame);
    w.invoke(MMIO_UNTYPED, Invocation::Retype, &[device, 12, 0, FRAME, 1])
        .unwrap();
    assert_eq!(
        w.invoke(FRAME, Invocation::Identify, &[]).unwrap()[0],
        u64::from(ObjectKind::DeviceFrame.code())
    );
    assert_eq!(
        map(&mut w, FRAME, 0, RW, NC),
        Err(KernelError::MemoryTypeNotAllowed)
    );
    assert_eq!(
        map(&mut w, FRAME, 0, RW, WB),
        Err(KernelError::MemoryTypeNotAllowed)
    );
    assert_eq!(
        map(&mut w, FRAME, 0, 5, DEVICE),
        Err(KernelError::ExecuteFromDevice)
    );
    map(&mut w, FRAME, 0, RW, DEVICE).unwrap();
    w.invoke(
        NC_UNTYPED,
        Invocation::Retype,
        &[device, 12, 0, FRAME + 1, 1],
    )
    .unwrap();
    map(&mut w, FRAME + 1, 0x1000, RW, NC).unwrap();
    assert_eq!(w.fx.mappings[1].pa.raw(), 0x1000_0000);
    w.invoke(
        PFNMAP_UNTYPED,
        Invocation::Retype,
        &[device, 21, 0, FRAME + 2, 1],
    )
    .unwrap();
    assert_eq!(
        map(&mut w, FRAME + 2, 0x20_0000, RW, DEVICE),
        Err(KernelError::MismatchedAttributes)
    );
    map(&mut w, FRAME + 2, 0x20_0000, RW, WB).unwrap();
    // The device untyped is used up.
    assert_eq!(
        w.invoke(
            MMIO_UNTYPED,
            Invocation::Retype,
            &[device, 12, 0, FRAME + 3, 1]
        ),
        Err(KernelError::NotEnoughMemory)
    );
    assert_eq!(w.fx.cleared_frames, 0, "device memory is never cleared");
}

#[test]
fn cacheable_device_mapping_needs_fwb_and_dic() {
    for (fwb, dic) in [(false, false), (true, false), (false, true)] {
        let mut w = World::with_features(PlatformFeatures {
            cache: CacheFeatures { fwb, dic },
            ipa_bits: 40,
        });
        let device = World::kind(ObjectKind::DeviceFrame);
        w.invoke(
            PFNMAP_UNTYPED,
            Invocation::Retype,
            &[device, 12, 0, FRAME, 1],
        )
        .unwrap();
        assert_eq!(
            map(&mut w, FRAME, 0, RW, WB),
            Err(KernelError::CacheableDeviceUnsupported)
        );
        assert!(w.fx.mappings.is_empty());
    }
}

#[test]
fn revoke_and_delete_remove_derived_mappings() {
    let mut w = World::new();
    w.retype(World::kind(ObjectKind::Frame), 12, FRAME, 1)
        .unwrap();
    map(&mut w, FRAME, 0, RW, WB).unwrap();
    for (i, ipa) in [(1, 0x1000), (2, 0x2000), (3, 0x3000)] {
        // Each copy derives from the previous one.
        w.invoke(
            RootLayout::CNODE,
            Invocation::Copy,
            &[FRAME + i, FRAME + i - 1, 0x1f],
        )
        .unwrap();
        map(&mut w, FRAME + i, ipa, RW, WB).unwrap();
    }
    assert_eq!(w.fx.mappings.len(), 4);
    w.invoke(RootLayout::CNODE, Invocation::Delete, &[FRAME + 3])
        .unwrap();
    assert_eq!(w.fx.mappings.len(), 3);
    w.invoke(RootLayout::CNODE, Invocation::Revoke, &[FRAME])
        .unwrap();
    assert_eq!(
        w.fx.mappings.len(),
        1,
        "only the revoked capability's own mapping is left"
    );
    assert_eq!(w.fx.mappings[0].ipa.raw(), 0);
    // Revoking the untyped removes the frame itself and its mapping.
    w.invoke(RootLayout::CNODE, Invocation::Revoke, &[UNTYPED])
        .unwrap();
    assert!(w.fx.mappings.is_empty());
    assert!(w.cap(FRAME).is_none());
}

#[test]
fn deleting_a_space_tears_it_down_and_later_unmaps_are_skipped() {
    let mut w = World::new();
    w.retype(
        u64::from(crate::object::capability::ADDRESS_SPACE_KIND),
        0,
        FRAME,
        1,
    )
    .unwrap();
    w.retype(World::kind(ObjectKind::Frame), 12, FRAME + 1, 1)
        .unwrap();
    w.invoke(FRAME + 1, Invocation::Map, &[FRAME, 0, RW, WB])
        .unwrap();
    assert_eq!(w.fx.live_spaces, 2);
    w.invoke(RootLayout::CNODE, Invocation::Delete, &[FRAME])
        .unwrap();
    assert_eq!(w.fx.live_spaces, 1);
    assert!(w.fx.mappings.is_empty());
    let unmaps = w.fx.unmaps;
    w.invoke(FRAME + 1, Invocation::Unmap, &[]).unwrap();
    assert_eq!(w.fx.unmaps, unmaps, "the space is gone: nothing to unmap");
    // The frame capability maps again elsewhere.
    map(&mut w, FRAME + 1, 0, RW, WB).unwrap();
}

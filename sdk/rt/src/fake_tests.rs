//! The shared fake kernel's own checks: what the services' tests rely on it to refuse.

use capvisor_ipc::abi::{CacheOp, KernelError};
use capvisor_ipc::cap::{CPtr, Cap, DeviceFrame, Frame, ObjectKind, Untyped, Vcpu, Vm};
use capvisor_ipc::memory::MemoryType;

use crate::fake::{DeviceMemory, FakeKernel, Op};
use crate::kernel::{Kernel, Space};

const fn cap<T: capvisor_ipc::cap::ObjectType>(slot: u64) -> Cap<T> {
    Cap::from_cptr(CPtr::new(slot))
}

const RAM: u64 = 5;
const DEVICE: u64 = 6;
const VM: u64 = 7;

fn kernel(free: u64) -> FakeKernel {
    FakeKernel::new(100, 100 + free)
        .with_untyped(RAM, 4 << 20)
        .with_device_untyped(DEVICE, 0x2000, DeviceMemory::default())
        .with::<Vm>(VM)
}

#[test]
fn slots_are_typed_and_filled_in_order() {
    let mut k = kernel(3);
    let frame: Cap<Frame> = k.retype(cap(RAM), 12).unwrap();
    assert_eq!(frame.cptr().raw(), 100);
    assert_eq!(k.copy(frame).unwrap().cptr().raw(), 101);
    assert_eq!(k.free_slots(), 1);
    assert_eq!(k.untyped_size(cap(VM)), Err(KernelError::WrongType));
    assert_eq!(k.untyped_size(cap(50)), Err(KernelError::EmptySlot));
    let vcpu: Cap<Vcpu> = cap(VM);
    assert_eq!(k.read_register(vcpu, 0), Err(KernelError::WrongType));
    let _: Cap<Frame> = k.retype(cap(RAM), 12).unwrap();
    assert_eq!(
        k.retype::<Frame>(cap(RAM), 12),
        Err(KernelError::NotEnoughMemory),
        "no slot left"
    );
}

#[test]
fn untyped_hands_out_memory_at_its_aligned_watermark() {
    let mut k = kernel(10);
    let _: Cap<Frame> = k.retype(cap(RAM), 12).unwrap();
    // The block starts at the next 2 MiB boundary: the first 2 MiB hold only the page.
    let _: Cap<Frame> = k.retype(cap(RAM), 21).unwrap();
    assert_eq!(
        k.retype::<Frame>(cap(RAM), 21),
        Err(KernelError::NotEnoughMemory)
    );
    // A child untyped's record page comes from the top: 2 MiB no longer fit beside it.
    let mut k = kernel(10);
    assert_eq!(
        k.retype::<Untyped>(cap(RAM), 22),
        Err(KernelError::NotEnoughMemory)
    );
    let child: Cap<Untyped> = k.retype(cap(RAM), 21).unwrap();
    assert_eq!(k.untyped_size(child), Ok(2 << 20));
    // Device memory makes device frames only, RAM anything else.
    assert_eq!(
        k.retype::<Frame>(cap(DEVICE), 12),
        Err(KernelError::InvalidArgument)
    );
    assert_eq!(
        k.retype::<DeviceFrame>(cap(RAM), 12),
        Err(KernelError::InvalidArgument)
    );
    assert!(k.retype::<DeviceFrame>(cap(DEVICE), 12).is_ok());
}

#[test]
fn map_applies_the_kernel_rules() {
    let mut k = kernel(10);
    let vm = Space::Vm(cap(VM));
    let wb = MemoryType::NormalWriteBack;
    let frame: Cap<Frame> = k.retype(cap(RAM), 12).unwrap();
    assert_eq!(
        k.map(frame, vm, 0x1000, 3, MemoryType::DeviceNgnre),
        Err(KernelError::MismatchedAttributes)
    );
    assert_eq!(
        k.map(frame, vm, 0x1000, 0, wb),
        Err(KernelError::InvalidArgument)
    );
    assert_eq!(
        k.map(frame, vm, 0x1800, 3, wb),
        Err(KernelError::AlignmentError)
    );
    assert_eq!(
        k.map(frame, Space::Vm(cap(RAM)), 0x1000, 3, wb),
        Err(KernelError::WrongType)
    );
    assert_eq!(k.map(frame, vm, 0x1000, 7, wb), Ok(()));
    // A frame capability maps once; unmapped, it maps again.
    assert_eq!(
        k.map(frame, Space::Own, 0, 3, wb),
        Err(KernelError::InvalidArgument)
    );
    k.unmap(frame).unwrap();
    assert_eq!(k.map(frame, Space::Own, 0, 3, wb), Ok(()));
    let device: Cap<DeviceFrame> = k.retype(cap(DEVICE), 12).unwrap();
    let device_ngnre = MemoryType::DeviceNgnre;
    assert_eq!(
        k.map(device, vm, 0, 7, device_ngnre),
        Err(KernelError::ExecuteFromDevice)
    );
    assert_eq!(
        k.map(device, vm, 0, 3, MemoryType::NormalNonCacheable),
        Err(KernelError::MemoryTypeNotAllowed)
    );
    assert_eq!(
        k.map(device, vm, 0, 3, wb),
        Err(KernelError::MemoryTypeNotAllowed)
    );
    assert_eq!(k.map(device, vm, 0, 3, device_ngnre), Ok(()));
}

#[test]
fn a_cacheable_region_maps_write_back_only_and_only_with_fwb_and_dic() {
    let cacheable = DeviceMemory {
        cacheable: true,
        allows_uncached: false,
    };
    let make = |k: FakeKernel| {
        let mut k = k.with_device_untyped(8, 4 << 20, cacheable);
        let block: Cap<DeviceFrame> = k.retype(cap(8), 21).unwrap();
        (k, block)
    };
    let wb = MemoryType::NormalWriteBack;
    let (mut k, block) = make(kernel(10));
    assert_eq!(
        k.map(block, Space::Own, 0, 3, MemoryType::DeviceNgnre),
        Err(KernelError::MismatchedAttributes)
    );
    assert_eq!(k.map(block, Space::Own, 0, 3, wb), Ok(()));
    let (mut k, block) = make(kernel(10).without_fwb_dic());
    assert_eq!(
        k.map(block, Space::Own, 0, 3, wb),
        Err(KernelError::CacheableDeviceUnsupported)
    );
    // Non-cacheable memory is never a block.
    let mut k = kernel(10).with_device_untyped(9, 4 << 20, DeviceMemory::default());
    let block: Cap<DeviceFrame> = k.retype(cap(9), 21).unwrap();
    assert_eq!(
        k.map(block, Space::Own, 0, 3, MemoryType::DeviceNgnre),
        Err(KernelError::UncachedBlock)
    );
}

#[test]
fn revoke_deletes_what_was_derived_and_resets_the_watermark() {
    let mut k = kernel(3);
    let frame: Cap<DeviceFrame> = k.retype(cap(DEVICE), 12).unwrap();
    let copy = k.copy(frame).unwrap();
    let _: Cap<DeviceFrame> = k.retype(cap(DEVICE), 12).unwrap();
    assert_eq!(
        k.retype::<DeviceFrame>(cap(DEVICE), 12),
        Err(KernelError::NotEnoughMemory)
    );
    assert_eq!(k.made(), 3);
    k.revoke::<Untyped>(cap(DEVICE)).unwrap();
    assert_eq!(k.made(), 0);
    assert!(!k.holds(frame.cptr().raw()) && !k.holds(copy.cptr().raw()));
    k.reuse(frame);
    k.reuse(copy);
    assert_eq!(k.free_slots(), 2);
    // The region can be retyped again, into a reused slot.
    let again: Cap<DeviceFrame> = k.retype(cap(DEVICE), 12).unwrap();
    assert_eq!(again, copy);
    assert_eq!(
        k.log()[..2],
        [
            Op::Retype {
                untyped: DEVICE,
                kind: ObjectKind::DeviceFrame,
                size_bits: 12,
                slot: 100
            },
            Op::Copy {
                source: 100,
                slot: 101
            }
        ]
    );
}

#[test]
#[should_panic(expected = "reused while it holds a capability")]
fn a_slot_that_holds_a_capability_is_not_reused() {
    let mut k = kernel(3);
    let frame: Cap<Frame> = k.retype(cap(RAM), 12).unwrap();
    k.reuse(frame);
}

#[test]
fn vcpus_keep_their_registers_and_full_list_registers_refuse_injections() {
    let mut k = kernel(0).with::<Vcpu>(20);
    let vcpu: Cap<Vcpu> = cap(20);
    k.write_register(vcpu, 3, 9).unwrap();
    assert_eq!(k.read_register(vcpu, 3), Ok(9));
    k.fill_list_registers(vcpu);
    assert_eq!(
        k.inject_irq(vcpu, 1, 0),
        Err(KernelError::ListRegistersFull)
    );
    let lr0 = capvisor_ipc::abi::VcpuRegister::ListRegister0.code();
    k.write_register(vcpu, lr0 + 2, 0).unwrap();
    assert_eq!(k.inject_irq(vcpu, 1, 0), Ok(()));
    assert_eq!(
        k.frame_cache(cap(20), CacheOp::CleanInvalidatePoc, cap(VM)),
        Err(KernelError::WrongType)
    );
}

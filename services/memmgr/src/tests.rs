//! The memory manager's rules on the host: a fake kernel records every operation, and each test
//! checks the sequence a rule of `DESIGN.md` requires (stage-2 rules 1–2, vCPU reset).

use std::future::Future;
use std::pin::pin;
use std::task::{Context as TaskContext, Poll, Waker};

use capvisor_ipc::abi::CacheOp;
use capvisor_ipc::bootinfo::Payload;
use capvisor_ipc::cap::{Badge, CPtr, Cap, ObjectKind, Untyped, Vm};
use capvisor_ipc::memory::MemoryType;
use capvisor_ipc::protocol::Context;
use capvisor_ipc::protocols::memmgr::{FaultOutcome, GuestPayload, Handler, MemError, ResetPolicy};
use capvisor_ipc::types::{Access, Ipa, VcpuId, VmId};
use capvisor_rt::fake::{self, FakeKernel};
use capvisor_rt::kernel::Space;
use capvisor_rt::window::host_read;

use crate::policy::{BLOCK, CacheFeatures, FrameSize, Guest, MemMgr, PAGE, WINDOW};

const VM: u64 = 40;
const VMM: u64 = 2;
const RAM: u64 = 0x4000_0000;
/// The identity-mapped guest's untyped.
const IDENTITY: u64 = 77;

const fn vm(slot: u64) -> Cap<Vm> {
    Cap::from_cptr(CPtr::new(slot))
}

/// What the tests check of the log of the shared fake kernel (`capvisor_rt::fake`): frames and
/// their maintenance. Child untyped (the pool's carving) are left out.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    /// A frame from the pool: (size, slot).
    NewFrame(FrameSize, u64),
    /// A frame from a given untyped: (untyped, size, slot).
    NewFrameFrom(u64, FrameSize, u64),
    Copy(u64, u64),
    Map(u64, Space, u64, u64),
    Unmap(u64),
    Clean(u64),
    Icache(u64),
    VmIcache(u64, u64),
}

impl Op {
    fn of(op: fake::Op<()>) -> Option<Self> {
        let size = |bits| match bits {
            12 => FrameSize::Page4K,
            21 => FrameSize::Block2M,
            _ => panic!("a frame of 2^{bits} bytes"),
        };
        Some(match op {
            fake::Op::Retype {
                kind: ObjectKind::Untyped,
                ..
            } => return None,
            fake::Op::Retype {
                untyped,
                kind: ObjectKind::Frame,
                size_bits,
                slot,
            } if untyped == IDENTITY => Self::NewFrameFrom(untyped, size(size_bits), slot),
            fake::Op::Retype {
                kind: ObjectKind::Frame,
                size_bits,
                slot,
                ..
            } => Self::NewFrame(size(size_bits), slot),
            fake::Op::Copy { source, slot } => Self::Copy(source, slot),
            fake::Op::Map {
                frame,
                space,
                ipa,
                access,
                memtype,
            } => {
                assert_eq!(memtype, MemoryType::NormalWriteBack);
                Self::Map(frame, space, ipa, access)
            }
            fake::Op::Unmap(frame) => Self::Unmap(frame),
            fake::Op::FrameCache { frame, op, vm } => {
                assert_eq!(vm, VM);
                match op {
                    CacheOp::CleanInvalidatePoc => Self::Clean(frame),
                    CacheOp::InvalidateIcache => Self::Icache(frame),
                    other => panic!("{other:?}"),
                }
            }
            fake::Op::VmCache { vm, op, ipa, size } => {
                assert_eq!((vm, op), (VM, CacheOp::InvalidateIcache));
                Self::VmIcache(ipa, size)
            }
            other => panic!("the memory manager does not {other:?}"),
        })
    }
}

/// The fake's pool untyped, 1 GiB unless a test says otherwise.
const POOL: u64 = 5;

/// The shared fake kernel with the memory manager's capabilities: its pool, the guests' VMs
/// (`VM`, `VM + 1`, …) and an identity-mapped guest's untyped; free slots from 101.
struct Fake {
    kernel: FakeKernel,
    pool: Vec<Cap<Untyped>>,
}

impl Default for Fake {
    fn default() -> Self {
        Self::with_pool(&[1 << 30])
    }
}

impl Fake {
    /// A fake whose pool is untyped of `sizes`, in slots `POOL`, `POOL + 1`, …
    fn with_pool(sizes: &[u64]) -> Self {
        let mut kernel = FakeKernel::new(101, 1101)
            // Two blocks and two pages, exactly (`identity_mapped_ram_…`).
            .with_untyped(IDENTITY, (4 << 20) + 2 * PAGE);
        for index in 0..crate::policy::MAX_GUESTS as u64 {
            kernel = kernel.with::<Vm>(VM + index);
        }
        let mut pool = Vec::new();
        for (slot, &size) in (POOL..).zip(sizes) {
            kernel = kernel.with_untyped(slot, size);
            pool.push(Cap::from_cptr(CPtr::new(slot)));
        }
        Self { kernel, pool }
    }
}

fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut context = TaskContext::from_waker(Waker::noop());
    match future.as_mut().poll(&mut context) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the policy never waits"),
    }
}

fn guest(ram_size: u64, kernel_size: u64) -> Guest {
    let kernel = Payload {
        offset: 0x1000,
        size: kernel_size,
    };
    Guest {
        id: VmId::new(0),
        vm: vm(VM),
        vmm_badge: VMM,
        ram_base: RAM,
        ram_size,
        payloads: [kernel, Payload::default(), Payload::default()],
        identity_untyped: None,
    }
}

/// A memory manager with a 1 GiB pool (its set-up's operations taken out).
fn new_manager(fake: Fake, features: CacheFeatures, guests: &[Guest]) -> MemMgr<FakeKernel> {
    let mut m = MemMgr::new(fake.kernel, features, guests, &fake.pool);
    m.kernel().take_log();
    m
}

fn manager(fwb: bool, dic: bool) -> MemMgr<FakeKernel> {
    new_manager(
        Fake::default(),
        CacheFeatures { fwb, dic },
        &[guest(16 << 20, 0x3000)],
    )
}

fn vmm() -> Context {
    Context::new(Badge::new(VMM), Default::default())
}

fn fault(m: &mut MemMgr<FakeKernel>, ipa: u64, access: Access) -> Result<FaultOutcome, MemError> {
    block_on(m.handle_stage2_fault(
        &mut vmm(),
        VmId::new(0),
        VcpuId::new(0),
        Ipa::new(ipa),
        access,
    ))
}

fn take(m: &mut MemMgr<FakeKernel>) -> Vec<Op> {
    m.kernel()
        .take_log()
        .into_iter()
        .filter_map(Op::of)
        .collect()
}

#[test]
fn a_data_fault_without_fwb_maps_a_fresh_block_rw_execute_never_without_a_second_clean() {
    // The kernel cleaned the frame's zeroes to PoC when it retyped it (no FWB): the memory
    // manager has written nothing since, so it maps the frame as it is.
    let mut m = manager(false, false);
    let outcome = fault(&mut m, RAM + 0x1_1234, Access::Write);
    assert_eq!(
        outcome,
        Ok(FaultOutcome::Mapped {
            base: Ipa::new(RAM),
            size: BLOCK
        })
    );
    assert_eq!(
        take(&mut m),
        [
            Op::NewFrame(FrameSize::Block2M, 101),
            Op::Copy(101, 102),
            Op::Map(102, Space::Own, WINDOW + RAM, 3),
            Op::Map(101, Space::Vm(vm(VM)), RAM, 3),
        ]
    );
    assert_eq!(
        fault(&mut m, RAM + 8, Access::Read),
        Ok(FaultOutcome::AlreadyMapped)
    );
    assert!(take(&mut m).is_empty());
}

#[test]
fn with_fwb_no_clean_is_ever_made() {
    let mut m = manager(true, false);
    fault(&mut m, RAM, Access::Read).unwrap();
    block_on(m.write_word(&mut vmm(), VmId::new(0), Ipa::new(RAM + 0x10_0000), 1)).unwrap();
    block_on(m.reset_vcpu(&mut vmm(), VmId::new(0), VcpuId::new(0))).unwrap();
    fault(&mut m, RAM + BLOCK, Access::Read).unwrap();
    assert!(!take(&mut m).iter().any(|op| matches!(op, Op::Clean(_))));
}

#[test]
fn an_instruction_fault_remaps_executable_after_icache_invalidation_unless_dic() {
    for dic in [false, true] {
        let mut m = manager(false, dic);
        fault(&mut m, RAM, Access::Read).unwrap();
        take(&mut m);
        fault(&mut m, RAM + 0x1000, Access::Execute).unwrap();
        let mut expected = vec![Op::Unmap(101)];
        if !dic {
            expected.push(Op::Icache(101));
        }
        expected.push(Op::Map(101, Space::Vm(vm(VM)), RAM, 7));
        assert_eq!(take(&mut m), expected, "dic {dic}");
        assert_eq!(
            fault(&mut m, RAM, Access::Execute),
            Ok(FaultOutcome::AlreadyMapped)
        );
        assert_eq!(
            fault(&mut m, RAM, Access::Write),
            Ok(FaultOutcome::AlreadyMapped)
        );
    }
}

#[test]
fn regions_not_wholly_in_ram_get_pages() {
    // 2 MiB + 8 KiB: the first region is a block, the last two pages are pages.
    let mut m = new_manager(
        Fake::default(),
        CacheFeatures {
            fwb: true,
            dic: true,
        },
        &[guest(BLOCK + 2 * PAGE, 0)],
    );
    let outcome = fault(&mut m, RAM + BLOCK + PAGE + 5, Access::Read);
    assert_eq!(
        outcome,
        Ok(FaultOutcome::Mapped {
            base: Ipa::new(RAM + BLOCK + PAGE),
            size: PAGE
        })
    );
    // Slot 101 holds the untyped the pool carved for pages (as on the target, where every
    // capability the memory manager makes takes one of its free slots).
    assert_eq!(take(&mut m)[0], Op::NewFrame(FrameSize::Page4K, 102));
    assert_eq!(
        fault(&mut m, RAM + BLOCK + 2 * PAGE, Access::Read),
        Err(MemError::NotGuestRam)
    );
}

#[test]
fn requests_are_checked_for_the_caller_vm_and_range() {
    let mut m = manager(false, false);
    let stranger = &mut Context::new(Badge::new(7), Default::default());
    let ipa = Ipa::new(RAM);
    let vcpu = VcpuId::new(0);
    assert_eq!(
        block_on(m.handle_stage2_fault(stranger, VmId::new(0), vcpu, ipa, Access::Read)),
        Err(MemError::NotPermitted)
    );
    assert_eq!(
        block_on(m.reset_vcpu(stranger, VmId::new(0), vcpu)),
        Err(MemError::NotPermitted)
    );
    assert_eq!(
        block_on(m.write_word(&mut vmm(), VmId::new(3), ipa, 0)),
        Err(MemError::UnknownVm)
    );
    assert_eq!(
        fault(&mut m, 0x0900_0000, Access::Write),
        Err(MemError::NotGuestRam)
    );
    assert_eq!(
        block_on(m.write_word(&mut vmm(), VmId::new(0), Ipa::new(RAM + (16 << 20)), 0)),
        Err(MemError::NotGuestRam)
    );
    assert_eq!(
        block_on(m.write_word(&mut vmm(), VmId::new(0), Ipa::new(RAM + 4), 0)),
        Err(MemError::BadRange)
    );
    assert_eq!(
        block_on(m.load(&mut vmm(), VmId::new(0), GuestPayload::DeviceTree, ipa)),
        Err(MemError::NoPayload)
    );
    assert!(take(&mut m).is_empty());
}

#[test]
fn load_writes_the_payload_and_the_frame_is_cleaned_when_it_enters_the_vm() {
    let mut m = manager(false, false);
    // The kernel payload, at 0x1000 of the boot-info region.
    let mut region = vec![0; 0x1000];
    region.extend((0..0x3000u32).map(|n| n as u8));
    capvisor_rt::set_boot_region(region);
    let size = block_on(m.load(
        &mut vmm(),
        VmId::new(0),
        GuestPayload::Kernel,
        Ipa::new(RAM + 0x20_0000),
    ));
    assert_eq!(size, Ok(0x3000));
    block_on(m.write_word(&mut vmm(), VmId::new(0), Ipa::new(RAM + 0x10_0000), 0x0102)).unwrap();
    assert_eq!(host_read(WINDOW + RAM + 0x20_0000 + 0x1234), 0x34);
    assert_eq!(host_read(WINDOW + RAM + 0x10_0000), 0x02);
    assert_eq!(host_read(WINDOW + RAM + 0x10_0001), 0x01);
    // Two blocks, not yet in the VM: no maintenance until they are mapped.
    assert!(take(&mut m).iter().all(|op| matches!(
        op,
        Op::NewFrame(..) | Op::Copy(..) | Op::Map(_, Space::Own, ..)
    )));
    fault(&mut m, RAM + 0x20_0000, Access::Execute).unwrap();
    assert_eq!(
        take(&mut m),
        [
            Op::Clean(101),
            Op::Icache(101),
            Op::Map(101, Space::Vm(vm(VM)), RAM + BLOCK, 7)
        ]
    );
    // A write to a frame in the VM is cleaned (and the I-cache invalidated) at once.
    block_on(m.write_word(&mut vmm(), VmId::new(0), Ipa::new(RAM + 0x20_0008), 2)).unwrap();
    assert_eq!(take(&mut m), [Op::Clean(101), Op::Icache(101)]);
}

#[test]
fn reset_without_fwb_drops_every_mapping_and_refaults_clean() {
    let mut m = manager(false, true);
    fault(&mut m, RAM, Access::Write).unwrap();
    fault(&mut m, RAM + BLOCK, Access::Execute).unwrap();
    take(&mut m);
    let policy = block_on(m.reset_vcpu(&mut vmm(), VmId::new(0), VcpuId::new(0)));
    assert_eq!(policy, Ok(ResetPolicy::DropAllMappings));
    assert_eq!(take(&mut m), [Op::Unmap(101), Op::Unmap(103)]);
    fault(&mut m, RAM, Access::Read).unwrap();
    assert_eq!(
        take(&mut m),
        [Op::Clean(101), Op::Map(101, Space::Vm(vm(VM)), RAM, 3)]
    );
}

#[test]
fn reset_with_fwb_invalidates_the_icache_only_and_with_dic_does_nothing() {
    let mut m = manager(true, false);
    fault(&mut m, RAM, Access::Write).unwrap();
    take(&mut m);
    let policy = block_on(m.reset_vcpu(&mut vmm(), VmId::new(0), VcpuId::new(0)));
    assert_eq!(policy, Ok(ResetPolicy::InvalidateInstructionCache));
    assert_eq!(take(&mut m), [Op::VmIcache(RAM, 16 << 20)]);

    let mut m = manager(true, true);
    fault(&mut m, RAM, Access::Write).unwrap();
    take(&mut m);
    let policy = block_on(m.reset_vcpu(&mut vmm(), VmId::new(0), VcpuId::new(0)));
    assert_eq!(policy, Ok(ResetPolicy::Nothing));
    assert!(take(&mut m).is_empty());
}

#[test]
fn running_out_of_untyped_is_out_of_memory() {
    let mut m = manager(false, false);
    m.kernel().limit_frames(1);
    fault(&mut m, RAM, Access::Read).unwrap();
    assert_eq!(
        fault(&mut m, RAM + BLOCK, Access::Read),
        Err(MemError::OutOfMemory)
    );
}

#[test]
fn a_boot_info_entry_becomes_a_guest_and_frames_retype_by_size() {
    let info = capvisor_ipc::bootinfo::GuestInfo {
        index: 0,
        vm: VM,
        vmm_badge: VMM,
        ram_base: RAM,
        ram_size: 16 << 20,
        kernel: Payload {
            offset: 0x1000,
            size: 0x3000,
        },
        ..Default::default()
    };
    assert_eq!(Guest::from_info(&info), guest(16 << 20, 0x3000));
    assert_eq!(
        (FrameSize::Page4K.bits(), FrameSize::Block2M.bits()),
        (12, 21)
    );
}

#[test]
fn identity_mapped_ram_is_retyped_in_address_order_from_its_own_untyped() {
    const UNTYPED: u64 = IDENTITY;
    // 4 MiB + 8 KiB at a 2 MiB aligned PA: two blocks, then two pages.
    let base = 0x4800_0000;
    let identity = Guest {
        ram_base: base,
        identity_untyped: Some(Cap::from_cptr(CPtr::new(UNTYPED))),
        ..guest((4 << 20) + 2 * PAGE, 0x3000)
    };
    let mut m = new_manager(
        Fake::default(),
        CacheFeatures {
            fwb: true,
            dic: true,
        },
        &[identity],
    );
    // The first fault, in the second block, makes every frame, in address order, then maps
    // the one the fault needs at its IPA.
    assert_eq!(
        fault(&mut m, base + BLOCK + 0x123, Access::Read),
        Ok(FaultOutcome::Mapped {
            base: Ipa::new(base + BLOCK),
            size: BLOCK
        })
    );
    let ops = take(&mut m);
    let made: Vec<(FrameSize, u64)> = ops
        .iter()
        .filter_map(|op| match op {
            Op::NewFrameFrom(untyped, size, slot) => {
                assert_eq!(*untyped, UNTYPED);
                Some((*size, *slot))
            }
            Op::NewFrame(..) => panic!("identity RAM must not come from the pool: {ops:?}"),
            _ => None,
        })
        .collect();
    let sizes: Vec<FrameSize> = made.iter().map(|(size, _)| *size).collect();
    assert_eq!(
        sizes,
        [
            FrameSize::Block2M,
            FrameSize::Block2M,
            FrameSize::Page4K,
            FrameSize::Page4K
        ]
    );
    let second = made[1].1;
    assert_eq!(
        ops.last(),
        Some(&Op::Map(second, Space::Vm(vm(VM)), base + BLOCK, 0b011))
    );
    // A later fault reuses the frames; nothing new is made.
    assert!(matches!(
        fault(&mut m, base + 4 * BLOCK / 2 + PAGE, Access::Write),
        Ok(FaultOutcome::Mapped { size: PAGE, .. })
    ));
    assert!(
        take(&mut m)
            .iter()
            .all(|op| !matches!(op, Op::NewFrame(..) | Op::NewFrameFrom(..)))
    );
}

/// Guest `index` (VM `VM + index`, its VMM badge `VMM + index`) with `ram_size` bytes of RAM.
fn guest_at(index: u32, ram_size: u64) -> Guest {
    Guest {
        id: VmId::new(index),
        vm: vm(VM + u64::from(index)),
        vmm_badge: VMM + u64::from(index),
        ..guest(ram_size, 0)
    }
}

/// Guest `index`'s fault at `ipa`, from its own VMM.
fn fault_of(m: &mut MemMgr<FakeKernel>, index: u32, ipa: u64) -> Result<FaultOutcome, MemError> {
    let vmm = &mut Context::new(Badge::new(VMM + u64::from(index)), Default::default());
    let (vm, vcpu) = (VmId::new(index), VcpuId::new(0));
    block_on(m.handle_stage2_fault(vmm, vm, vcpu, Ipa::new(ipa), Access::Write))
}

/// Faults every 2 MiB block of guest `index`'s RAM, in order; returns how many were mapped and
/// the first refusal.
fn fault_blocks(m: &mut MemMgr<FakeKernel>, index: u32, blocks: u64) -> (u64, Option<MemError>) {
    for n in 0..blocks {
        if let Err(error) = fault_of(m, index, RAM + n * BLOCK) {
            return (n, Some(error));
        }
    }
    (blocks, None)
}

const FWB_DIC: CacheFeatures = CacheFeatures {
    fwb: true,
    dic: true,
};

#[test]
fn a_guest_touching_all_its_ram_first_cannot_take_what_another_was_promised() {
    // 24 MiB of pool (the SDK's pieces: 16 MiB and 8 MiB) for 32 + 8 MiB of guest RAM: the
    // greedy guest gets what the other leaves of the fair share, the other all its 8 MiB.
    let fake = Fake::with_pool(&[16 << 20, 8 << 20]);
    let guests = [guest_at(0, 32 << 20), guest_at(1, 8 << 20)];
    let mut m = new_manager(fake, FWB_DIC, &guests);
    assert_eq!(m.capacity(), (12, 0));
    let (greedy, need) = m.quota(0).unwrap();
    assert_eq!((greedy.blocks, need.blocks), (8, 16));
    assert_eq!(m.quota(1).unwrap().0.blocks, 4);
    assert_eq!(fault_blocks(&mut m, 0, 16), (8, Some(MemError::Quota)));
    assert_eq!(fault_blocks(&mut m, 1, 4), (4, None));
}

#[test]
fn a_guest_faulting_in_a_wasteful_order_cannot_starve_another() {
    // 4 blocks and 64 pages (8 MiB + 256 KiB), faulted page, block, page, block…: from one
    // untyped shared by both sizes each block after a page would waste most of 2 MiB. Blocks and
    // pages come from separate untyped, so the other guest's 16 MiB are all there.
    let fake = Fake::with_pool(&[32 << 20]);
    let guests = [guest_at(0, (8 << 20) + (256 << 10)), guest_at(1, 16 << 20)];
    let mut m = new_manager(fake, FWB_DIC, &guests);
    assert_eq!(
        m.quota(0).unwrap().0,
        m.quota(0).map(|(_, n)| full(n)).unwrap()
    );
    let tail = RAM + (8 << 20);
    for n in 0..4 {
        fault_of(&mut m, 0, tail + n * PAGE).unwrap();
        fault_of(&mut m, 0, RAM + n * BLOCK).unwrap();
    }
    for n in 4..64 {
        fault_of(&mut m, 0, tail + n * PAGE).unwrap();
    }
    assert_eq!(fault_blocks(&mut m, 1, 8), (8, None));
}

/// The quota that is a need in full.
fn full(need: crate::quota::Need) -> crate::quota::Quota {
    crate::quota::Quota {
        blocks: need.blocks,
        pages: need.pages,
        frames: need.frames(),
    }
}

#[test]
fn a_guest_of_many_pages_cannot_fill_the_frame_table() {
    // 1 MiB of RAM that is not a 2 MiB block: 256 pages, more than the table's 192 frames.
    let fake = Fake::with_pool(&[64 << 20]);
    let mut small = guest_at(0, 1 << 20);
    small.ram_base = RAM + (1 << 20);
    let guests = [small, guest_at(1, 16 << 20)];
    let mut m = new_manager(fake, FWB_DIC, &guests);
    let (quota, need) = m.quota(0).unwrap();
    assert_eq!((quota.frames, need.frames()), (192 - 8, 256));
    let mut mapped = 0;
    let refusal = loop {
        match fault_of(&mut m, 0, small.ram_base + mapped * PAGE) {
            Ok(_) => mapped += 1,
            Err(error) => break error,
        }
    };
    assert_eq!((mapped, refusal), (192 - 8, MemError::Quota));
    assert_eq!(fault_blocks(&mut m, 1, 8), (8, None));
}

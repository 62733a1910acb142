//! The broker's rules on the host: a fake kernel records every retype and mapping, and each test
//! checks what a rule of `DESIGN.md` (stage-2 rules 3–8) requires; the inventory is read from
//! QEMU `virt`'s own device tree (`tests/qemu-virt-max.dtb`, from `-machine dumpdtb`).

use std::future::Future;
use std::pin::pin;
use std::task::{Context as TaskContext, Poll, Waker};

use capvisor_ipc::bootinfo::{
    BootInfo, DEVICE_CACHEABLE, DEVICE_CARVEOUT, DEVICE_OPTIONAL, DEVICE_UNPROTECTED_DMA,
    DeviceInfo,
};
use capvisor_ipc::cap::{Badge, CPtr, Cap, ObjectKind, Untyped, Vm};
use capvisor_ipc::memory::MissingFeatures;
use capvisor_ipc::protocol::Context;
use capvisor_ipc::protocols::devbroker::{BrokerError, Handler};
use capvisor_ipc::types::{MemoryType, RegionId};
use capvisor_rt::fake::{self, DeviceMemory, FakeKernel};
use capvisor_rt::kernel::Space;
use zerocopy::FromZeros;

use crate::inventory::{self, Kept};
use crate::policy::{
    Broker, CacheFeatures, FramePlan, Passthrough, Refusal, Region, Sharing, decide,
};

const VM: u64 = 30;
const RTC: u64 = 0x0901_0000;
const PFNMAP: u64 = 0x7000_0000;
const ALL: CacheFeatures = CacheFeatures {
    fwb: true,
    dic: true,
};

/// What the tests check of the shared fake kernel's log (`capvisor_rt::fake`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    /// A device frame: (untyped, size bits, slot).
    Frame(u64, u32, u64),
    /// (frame, VM, IPA, access, memory type).
    Map(u64, u64, u64, u64, MemoryType),
    Copy(u64, u64),
    Revoke(u64),
}

impl Op {
    fn of(op: &fake::Op<()>) -> Self {
        match *op {
            fake::Op::Retype {
                untyped,
                kind: ObjectKind::DeviceFrame,
                size_bits,
                slot,
            } => Self::Frame(untyped, size_bits, slot),
            fake::Op::Map {
                frame,
                space: Space::Vm(vm),
                ipa,
                access,
                memtype,
            } => Self::Map(frame, vm.cptr().raw(), ipa, access, memtype),
            fake::Op::Copy { source, slot } => Self::Copy(source, slot),
            fake::Op::Revoke(slot) => Self::Revoke(slot),
            ref other => panic!("the broker does not {other:?}"),
        }
    }
}

/// The broker's invocations so far.
fn ops(broker: &mut Broker<FakeKernel>) -> Vec<Op> {
    broker.kernel().log().iter().map(Op::of).collect()
}

/// The shared fake kernel with the broker's capabilities: the test regions' device untyped
/// (10: the RTC and the uncached regions, 11: the cacheable PFNMAP carve-out, 12: virtio), each
/// 1 GiB unless `sizes` says otherwise, the guest's VM, and `slots` free slots from 101.
fn fake_with(slots: u64, sizes: &[(Cap<Untyped>, u64)]) -> FakeKernel {
    let size = |slot: u64| {
        sizes
            .iter()
            .find(|(untyped, _)| untyped.cptr().raw() == slot)
            .map_or(1 << 30, |&(_, size)| size)
    };
    let uncached = DeviceMemory {
        cacheable: false,
        allows_uncached: true,
    };
    let cacheable = DeviceMemory {
        cacheable: true,
        allows_uncached: false,
    };
    FakeKernel::new(101, 101 + slots)
        .with::<Vm>(VM)
        .with_device_untyped(10, size(10), uncached)
        .with_device_untyped(11, size(11), cacheable)
        .with_device_untyped(12, size(12), DeviceMemory::default())
}

fn fake() -> FakeKernel {
    fake_with(200, &[])
}

const fn untyped(slot: u64) -> Cap<Untyped> {
    Cap::from_cptr(CPtr::new(slot))
}

fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut context = TaskContext::from_waker(Waker::noop());
    match future.as_mut().poll(&mut context) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the broker never waits"),
    }
}

fn passthrough(memtype: MemoryType, optional: bool) -> Option<Passthrough> {
    Some(Passthrough {
        guest: 0,
        guest_name: Some("passthrough".try_into().unwrap()),
        vm: Cap::from_cptr(CPtr::new(VM)),
        memtype,
        optional,
        masters_bus: false,
        unprotected_dma: false,
    })
}

/// The page of QEMU `virt`'s virtio-mmio transports 24–31, passed through: a bus master.
const VIRTIO: u64 = 0x0a00_3000;

fn virtio(unprotected_dma: bool) -> Region {
    let mut region = Region {
        name: "virtio".try_into().unwrap(),
        untyped: untyped(12),
        base: VIRTIO,
        size: 0x1000,
        cacheable: false,
        carveout: false,
        allows_uncached: false,
        passthrough: passthrough(MemoryType::DeviceNgnre, false),
    };
    if let Some(passthrough) = region.passthrough.as_mut() {
        passthrough.guest_name = Some("dma".try_into().unwrap());
        passthrough.masters_bus = true;
        passthrough.unprotected_dma = unprotected_dma;
    }
    region
}

fn rtc() -> Region {
    Region {
        name: "rtc".try_into().unwrap(),
        untyped: untyped(10),
        base: RTC,
        size: 0x1000,
        cacheable: false,
        carveout: false,
        allows_uncached: false,
        passthrough: passthrough(MemoryType::DeviceNgnre, false),
    }
}

fn pfnmap(size: u64) -> Region {
    Region {
        name: "cacheable_pfnmap".try_into().unwrap(),
        untyped: untyped(11),
        base: PFNMAP,
        size,
        cacheable: true,
        carveout: true,
        allows_uncached: false,
        passthrough: passthrough(MemoryType::NormalWriteBack, true),
    }
}

fn uncached(allows_uncached: bool) -> Region {
    Region {
        allows_uncached,
        passthrough: None,
        ..rtc()
    }
}

#[test]
fn uncached_device_memory_is_device_ngnre_or_normal_nc_where_allowed() {
    let plan = decide(&rtc(), MemoryType::DeviceNgnre, Sharing::Shared, false, ALL);
    let page = |memtype| FramePlan {
        memtype,
        bits: 12,
        count: 1,
    };
    assert_eq!(plan, Ok(page(MemoryType::DeviceNgnre)));
    let nc = MemoryType::NormalNonCacheable;
    assert_eq!(
        decide(&uncached(false), nc, Sharing::Shared, false, ALL),
        Err(Refusal::UncachedNormalNotAllowed)
    );
    assert_eq!(
        decide(&uncached(true), nc, Sharing::Shared, false, ALL),
        Ok(page(nc))
    );
    // Write-back of memory not declared cacheable: refused even with FWB and DIC.
    let wb = MemoryType::NormalWriteBack;
    assert_eq!(
        decide(&rtc(), wb, Sharing::Shared, false, ALL),
        Err(Refusal::NotCacheable)
    );
}

#[test]
fn cacheable_device_memory_needs_fwb_and_dic_and_the_refusal_names_what_is_missing() {
    let wb = MemoryType::NormalWriteBack;
    let region = pfnmap(2 << 20);
    let cases = [
        (
            false,
            false,
            "the platform lacks FEAT_S2FWB and CTR_EL0.DIC",
        ),
        (false, true, "the platform lacks FEAT_S2FWB"),
        (true, false, "the platform lacks CTR_EL0.DIC"),
    ];
    for (fwb, dic, message) in cases {
        let refusal = decide(
            &region,
            wb,
            Sharing::Shared,
            false,
            CacheFeatures { fwb, dic },
        );
        assert_eq!(
            refusal,
            Err(Refusal::MissingFeatures(MissingFeatures {
                fwb: !fwb,
                dic: !dic
            }))
        );
        assert_eq!(refusal.unwrap_err().to_string(), message);
        assert_eq!(
            refusal.unwrap_err().broker_error(),
            BrokerError::CacheableDeviceUnsupported
        );
    }
    // With both, a 2 MiB-aligned cacheable region is one block (blocks are for cacheable only).
    let plan = decide(&region, wb, Sharing::Shared, false, ALL).unwrap();
    assert_eq!((plan.memtype, plan.bits, plan.count), (wb, 21, 1));
    let plan = decide(&pfnmap(0x3000), wb, Sharing::Shared, false, ALL).unwrap();
    assert_eq!((plan.bits, plan.count), (12, 3));
}

#[test]
fn cacheable_memory_is_never_mapped_non_cacheable() {
    for asked in [MemoryType::DeviceNgnre, MemoryType::NormalNonCacheable] {
        let refusal = decide(&pfnmap(2 << 20), asked, Sharing::Shared, false, ALL);
        assert_eq!(refusal, Err(Refusal::CacheableAsUncached(asked)));
    }
}

#[test]
fn private_and_executable_mappings_of_device_memory_are_refused() {
    let wb = MemoryType::NormalWriteBack;
    let device = MemoryType::DeviceNgnre;
    assert_eq!(
        decide(&rtc(), device, Sharing::Private, false, ALL),
        Err(Refusal::PrivateDeviceMapping)
    );
    assert_eq!(
        decide(&pfnmap(2 << 20), wb, Sharing::Private, false, ALL),
        Err(Refusal::PrivateDeviceMapping)
    );
    assert_eq!(
        decide(&rtc(), device, Sharing::Shared, true, ALL),
        Err(Refusal::Executable)
    );
    assert_eq!(
        decide(&pfnmap(2 << 20), wb, Sharing::Shared, true, ALL),
        Err(Refusal::Executable)
    );
}

#[test]
fn non_cacheable_device_memory_is_never_mapped_in_blocks() {
    let mut region = uncached(true);
    region.base = 0x1000_0000;
    region.size = 4 << 20;
    for memtype in [MemoryType::DeviceNgnre, MemoryType::NormalNonCacheable] {
        let plan = decide(&region, memtype, Sharing::Shared, false, ALL).unwrap();
        assert_eq!((plan.bits, plan.count), (12, 1024));
    }
}

#[test]
fn passthroughs_are_mapped_at_ipa_equals_pa_read_write_and_reported() {
    let mut broker = Broker::new(fake(), ALL, [rtc(), pfnmap(2 << 20)]);
    let mut lines = Vec::new();
    assert!(broker.grant_passthroughs(|outcome| lines.push(outcome.to_string())));
    assert_eq!(
        ops(&mut broker),
        [
            Op::Frame(10, 12, 101),
            Op::Map(101, VM, RTC, 0b011, MemoryType::DeviceNgnre),
            Op::Frame(11, 21, 102),
            Op::Map(102, VM, PFNMAP, 0b011, MemoryType::NormalWriteBack),
        ]
    );
    assert_eq!(
        lines,
        [
            "devbroker: granted 'rtc' to guest 'passthrough': 0x9010000..0x9011000 Device-nGnRE \
             at IPA = PA, 1 x 4 KiB frame(s), read/write, never executable",
            "devbroker: granted 'cacheable_pfnmap' to guest 'passthrough': 0x70000000..0x70200000 \
             Normal write-back at IPA = PA, 1 x 2048 KiB frame(s), read/write, never executable",
        ]
    );
}

#[test]
fn an_optional_cacheable_grant_is_refused_without_fwb_or_dic_and_the_rest_goes_on() {
    for (fwb, dic, missing) in [
        (false, false, "FEAT_S2FWB and CTR_EL0.DIC"),
        (false, true, "FEAT_S2FWB"),
        (true, false, "CTR_EL0.DIC"),
    ] {
        let mut broker = Broker::new(fake(), CacheFeatures { fwb, dic }, [pfnmap(2 << 20), rtc()]);
        let mut lines = Vec::new();
        assert!(broker.grant_passthroughs(|outcome| lines.push(outcome.to_string())));
        // Nothing of the cacheable region was retyped or mapped; the RTC was.
        assert_eq!(
            ops(&mut broker),
            [
                Op::Frame(10, 12, 101),
                Op::Map(101, VM, RTC, 0b011, MemoryType::DeviceNgnre)
            ]
        );
        assert_eq!(
            lines[0],
            format!(
                "devbroker: refused cacheable grant of 'cacheable_pfnmap' to guest \
                 'passthrough': the platform lacks {missing} (optional: the system runs without \
                 it)"
            )
        );
    }
    // A required one: reported, and the broker says the system is incomplete.
    let mut required = pfnmap(2 << 20);
    required.passthrough.as_mut().unwrap().optional = false;
    let mut broker = Broker::new(fake(), CacheFeatures::default(), [required]);
    let mut lines = Vec::new();
    assert!(!broker.grant_passthroughs(|outcome| lines.push(outcome.to_string())));
    assert!(lines[0].ends_with("CTR_EL0.DIC (required)"), "{}", lines[0]);
}

#[test]
fn kernel_refusals_and_slot_exhaustion_are_reported() {
    // The broker's rules let it through (it was told of FWB and DIC); the kernel's do not.
    let fake = fake().without_fwb_dic();
    let mut broker = Broker::new(fake, ALL, [pfnmap(2 << 20)]);
    let mut lines = Vec::new();
    broker.grant_passthroughs(|outcome| lines.push(outcome.to_string()));
    assert!(
        lines[0].ends_with(
            "the kernel refused: CacheableDeviceUnsupported (optional: the system runs without it)"
        ),
        "{}",
        lines[0]
    );
    let fake = fake_with(3, &[]);
    let mut big = rtc();
    big.size = 0x4000;
    let mut broker = Broker::new(fake, ALL, [big]);
    broker.grant_passthroughs(|outcome| lines.push(outcome.to_string()));
    assert!(
        lines[1].contains("no free capability slots"),
        "{}",
        lines[1]
    );
    assert!(ops(&mut broker).is_empty());
}

#[test]
fn the_protocol_grants_free_regions_once_under_the_same_rules() {
    let mut free_uncached = uncached(true);
    free_uncached.base = 0x0904_0000;
    let mut free_pfnmap = pfnmap(0x1000);
    free_pfnmap.passthrough = None;
    let regions = [rtc(), free_uncached, free_pfnmap];
    let mut broker = Broker::new(fake(), CacheFeatures::default(), regions);
    let ctx = &mut Context::new(Badge::new(5), Default::default());
    let page = block_on(broker.list_regions(ctx, 0)).unwrap();
    assert_eq!(page.regions.len(), 3);
    assert_eq!(page.next, None);
    assert!(page.regions[2].cacheable && page.regions[1].allows_uncached);
    let grant_as = |broker: &mut Broker<FakeKernel>, ctx: &mut Context, id, memtype, sharing| {
        block_on(broker.grant_region(ctx, RegionId::new(id), memtype, sharing))
    };
    let grant = |broker: &mut Broker<FakeKernel>, ctx: &mut Context, id, memtype| {
        grant_as(broker, ctx, id, memtype, Sharing::Shared)
    };
    // The manifest's passthrough is the guest's.
    let device = MemoryType::DeviceNgnre;
    assert_eq!(
        grant(&mut broker, ctx, 0, device).unwrap_err(),
        BrokerError::AlreadyGranted
    );
    assert_eq!(
        grant(&mut broker, ctx, 9, device).unwrap_err(),
        BrokerError::NoSuchRegion
    );
    // Rules 4 and 5 through the protocol.
    let wb = MemoryType::NormalWriteBack;
    assert_eq!(
        grant(&mut broker, ctx, 2, wb).unwrap_err(),
        BrokerError::CacheableDeviceUnsupported
    );
    assert_eq!(
        grant(&mut broker, ctx, 2, device).unwrap_err(),
        BrokerError::MemoryTypeRefused
    );
    let nc = MemoryType::NormalNonCacheable;
    // Rule 6 through the protocol: a private grant is refused and nothing is made for it.
    assert_eq!(
        grant_as(&mut broker, ctx, 1, nc, Sharing::Private).unwrap_err(),
        BrokerError::PrivateDeviceMapping
    );
    assert!(ops(&mut broker).is_empty());
    let granted = grant(&mut broker, ctx, 1, nc).unwrap();
    assert_eq!((granted.memory_type, granted.size), (nc, 0x1000));
    assert_eq!(ctx.reply_caps().len(), 1);
    assert_eq!(
        ops(&mut broker),
        [Op::Frame(10, 12, 101), Op::Copy(101, 102)]
    );
    let other = &mut Context::new(Badge::new(6), Default::default());
    assert_eq!(
        grant(&mut broker, other, 1, nc).unwrap_err(),
        BrokerError::AlreadyGranted
    );
    assert_eq!(
        block_on(broker.release_region(other, RegionId::new(1))),
        Err(BrokerError::NotGranted)
    );
    assert_eq!(
        block_on(broker.release_region(ctx, RegionId::new(1))),
        Ok(())
    );
    // The region's untyped is revoked (the frame and the client's copy go with it).
    assert_eq!(ops(&mut broker).last(), Some(&Op::Revoke(10)));
    assert!(grant(&mut broker, other, 1, device).is_ok());
    assert_eq!(
        block_on(broker.grant_irq(ctx, capvisor_ipc::types::Intid::new(34))).unwrap_err(),
        BrokerError::NoSuchIrq
    );
}

const DTB: &[u8] = include_bytes!("../tests/qemu-virt-max.dtb");

#[test]
fn the_inventory_lists_qemu_virt_devices_and_marks_what_the_kernel_keeps() {
    let mut devices = Vec::new();
    inventory::scan(DTB, |device| {
        devices.push((device.to_string(), device.kept))
    })
    .unwrap();
    let find = |prefix: &str| {
        devices
            .iter()
            .find(|(line, _)| line.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in {devices:#?}"))
            .clone()
    };
    assert_eq!(
        find("pl031@9010000"),
        (
            "pl031@9010000 [arm,pl031] 0x9010000..0x9011000 irq 34".to_owned(),
            None
        )
    );
    assert_eq!(find("pl011@9000000").1, Some(Kept::Console));
    assert_eq!(find("intc@8000000").1, Some(Kept::Gic));
    assert_eq!(find("timer").1, Some(Kept::Timer));
    // The ITS is the GIC's and not listed apart; memory and CPUs are not devices.
    assert!(devices.iter().all(|(line, _)| !line.starts_with("its@")));
    assert!(
        devices
            .iter()
            .all(|(line, _)| !line.starts_with("memory@") && !line.starts_with("cpu@"))
    );
    // QEMU's 32 virtio-mmio transports are one line.
    let (virtio, _) = find("virtio_mmio@");
    assert!(
        virtio.ends_with("(+31 alike) [virtio,mmio] 0xa000000..0xa004000 irqs 48..=79"),
        "{virtio}"
    );
}

#[test]
fn the_inventory_marks_held_regions_and_a_truncated_device_tree_is_a_line() {
    let mut lines = Vec::new();
    crate::print_inventory(DTB, &[rtc(), pfnmap(2 << 20)], |line| {
        lines.push(line.to_string())
    });
    assert!(
        lines.contains(&"devbroker: device pl031@9010000 [arm,pl031] 0x9010000..0x9011000 irq 34 (held: 'rtc')".to_owned()),
        "{lines:#?}"
    );
    assert!(lines.contains(&"devbroker: carve-out 0x70000000..0x70200000 cacheable PFNMAP (held: 'cacheable_pfnmap')".to_owned()));
    // What the kernel keeps is not in the inventory, only named once at its end.
    assert_eq!(
        lines.last().unwrap(),
        "devbroker: kept by the kernel, not brokered: pl011@9000000 (console), intc@8000000 \
         (GIC), timer (timer)"
    );
    assert!(
        lines
            .iter()
            .all(|l| !l.starts_with("devbroker: device pl011@"))
    );
    let mut lines = Vec::new();
    crate::print_inventory(&DTB[..100], &[], |line| lines.push(line.to_string()));
    assert!(
        lines[0].starts_with("devbroker: the platform device tree does not parse"),
        "{lines:?}"
    );
}

#[test]
fn boot_info_devices_become_regions() {
    let mut info = BootInfo::new_zeroed();
    let mut device = |name: &str, base, flags, memtype, vm| {
        let mut entry = DeviceInfo::default();
        entry.name[..name.len()].copy_from_slice(name.as_bytes());
        entry.untyped = 40 + info.device_count;
        (entry.base, entry.size, entry.flags, entry.memtype) = (base, 0x1000, flags, memtype);
        (entry.guest, entry.vm) = (0, vm);
        info.devices[info.device_count as usize] = entry;
        info.device_count += 1;
    };
    device("rtc", RTC, 0, 0, VM);
    device("nc", 0x0904_0000, 0, 1, 0);
    device(
        "pfnmap",
        PFNMAP,
        DEVICE_CACHEABLE | DEVICE_CARVEOUT | DEVICE_OPTIONAL,
        2,
        VM,
    );
    device("virtio", VIRTIO, DEVICE_UNPROTECTED_DMA, 0, VM);
    let regions = crate::regions(&info, DTB);
    assert_eq!(regions.len(), 4);
    assert_eq!(
        regions[0].passthrough.as_ref().unwrap().memtype,
        MemoryType::DeviceNgnre
    );
    assert_eq!(regions[0].passthrough.as_ref().unwrap().guest_name, None);
    assert!(regions[1].allows_uncached && regions[1].passthrough.is_none());
    let pfnmap = &regions[2];
    assert!(pfnmap.cacheable && pfnmap.carveout);
    let passthrough = pfnmap.passthrough.as_ref().unwrap();
    assert!(passthrough.optional && passthrough.memtype == MemoryType::NormalWriteBack);
    // Whether a device may master the bus is the broker's own reading of the device tree: the
    // PL031 cannot, a carve-out is no device, the virtio transports can (and the image says
    // it accepts that).
    let dma = |region: &Region| {
        let p = region.passthrough.as_ref().unwrap();
        (p.masters_bus, p.unprotected_dma)
    };
    assert_eq!(dma(&regions[0]), (false, false));
    assert_eq!(dma(pfnmap), (false, false));
    assert_eq!(dma(&regions[3]), (true, true));
}

#[test]
fn only_devices_known_not_to_master_the_bus_count_as_unable_to_dma() {
    // QEMU `virt`'s PL031 RTC and PL061 GPIO are bus slaves; its virtio-mmio transports are bus
    // masters; an address no device covers, or a device tree that does not parse, counts as a
    // bus master.
    assert!(!inventory::masters_bus(DTB, RTC, 0x1000));
    assert!(!inventory::masters_bus(DTB, 0x0903_0000, 0x1000));
    assert!(inventory::masters_bus(DTB, VIRTIO, 0x1000));
    assert!(inventory::masters_bus(DTB, 0x0a00_3e00, 0x200));
    assert!(inventory::masters_bus(DTB, 0x2_0000_0000, 0x1000));
    assert!(inventory::masters_bus(&DTB[..100], RTC, 0x1000));
}

#[test]
fn a_bus_master_is_granted_only_when_the_image_accepts_its_dma_and_the_log_says_so() {
    let mut broker = Broker::new(fake(), ALL, [virtio(true), rtc()]);
    let mut lines = Vec::new();
    assert!(broker.grant_passthroughs(|outcome| {
        lines.push(outcome.to_string());
        if let Some(warning) = outcome.unprotected_dma() {
            lines.push(warning.to_string());
        }
    }));
    assert_eq!(
        lines,
        [
            "devbroker: granted 'virtio' to guest 'dma': 0xa003000..0xa004000 Device-nGnRE at \
             IPA = PA, 1 x 4 KiB frame(s), read/write, never executable",
            "devbroker: device 'virtio' given to guest 'dma' can DMA to all physical memory \
             (unprotected_dma: no IOMMU)",
            "devbroker: granted 'rtc' to guest 'passthrough': 0x9010000..0x9011000 Device-nGnRE \
             at IPA = PA, 1 x 4 KiB frame(s), read/write, never executable",
        ]
    );
    // An image that does not accept it (not one `capvisor build` makes): refused, nothing made.
    let mut broker = Broker::new(fake(), ALL, [virtio(false)]);
    let mut lines = Vec::new();
    assert!(!broker.grant_passthroughs(|outcome| {
        assert!(outcome.unprotected_dma().is_none());
        lines.push(outcome.to_string());
    }));
    assert!(ops(&mut broker).is_empty());
    assert_eq!(
        lines,
        [
            "devbroker: refused grant of 'virtio' to guest 'dma': the device may master the bus, \
          so DMA to all physical memory (no IOMMU), and the image does not accept that (no \
          unprotected_dma) (required)"
        ]
    );
    assert_eq!(
        Refusal::UnacknowledgedDma.broker_error(),
        BrokerError::NotPermitted
    );
}

#[test]
fn a_released_region_can_be_granted_again_and_again() {
    let mut free = rtc();
    free.passthrough = None;
    // The region's untyped holds exactly its one frame, as the kernel's does; and a few slots.
    let fake = fake_with(4, &[(free.untyped, free.size)]);
    let mut broker = Broker::new(fake, ALL, [free]);
    let device = MemoryType::DeviceNgnre;
    for round in 0..100 {
        let ctx = &mut Context::new(Badge::new(5), Default::default());
        let granted = block_on(broker.grant_region(ctx, RegionId::new(0), device, Sharing::Shared));
        assert!(granted.is_ok(), "grant {round}: {granted:?}");
        assert_eq!(
            block_on(broker.release_region(ctx, RegionId::new(0))),
            Ok(()),
            "release {round}"
        );
    }
    assert_eq!(broker.kernel().made(), 0, "nothing made is left");
}

#[test]
fn a_grant_that_cannot_be_sent_is_taken_back() {
    let mut free = rtc();
    free.passthrough = None;
    let fake = fake_with(200, &[(free.untyped, free.size)]);
    let mut broker = Broker::new(fake, ALL, [free]);
    let device = MemoryType::DeviceNgnre;
    // A reply carries at most three capabilities: a context that already holds three cannot
    // take the grant's.
    let full = &mut Context::new(Badge::new(5), Default::default());
    for _ in 0..3 {
        full.grant(
            capvisor_ipc::cap::Cap::<capvisor_ipc::cap::Frame>::from_cptr(
                capvisor_ipc::cap::CPtr::new(1),
            ),
        )
        .unwrap();
    }
    let refused = block_on(broker.grant_region(full, RegionId::new(0), device, Sharing::Shared));
    assert_eq!(refused.unwrap_err(), BrokerError::NotPermitted);
    assert_eq!(
        broker.kernel().made(),
        0,
        "the frame made for it is revoked"
    );
    let ctx = &mut Context::new(Badge::new(5), Default::default());
    let granted = block_on(broker.grant_region(ctx, RegionId::new(0), device, Sharing::Shared));
    assert!(granted.is_ok(), "{granted:?}");
}

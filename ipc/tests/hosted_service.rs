//! A small memory manager implemented against `memmgr::Handler`, called through the hosted transport by
//! the generated client stub: the pattern every service's unit tests follow.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};

use capvisor_ipc::abi::{IpcBuffer, MessageInfo};
use capvisor_ipc::cap::{Badge, Cap, DeviceFrame, Frame, IrqHandler, ObjectKind};
use capvisor_ipc::hosted::{self, HostedEndpoint, HostedKernel};
use capvisor_ipc::protocol::{CallError, Context, Error, Generation, Transferred, WireError};
use capvisor_ipc::protocols::devbroker::{
    self, BrokerError, RegionGrant, RegionInfo, RegionPage, Sharing,
};
use capvisor_ipc::protocols::memmgr::{self, FaultOutcome, MemError, ResetPolicy};
use capvisor_ipc::transport::{Transport, TransportError};
use capvisor_ipc::types::{Access, Intid, Ipa, MemoryType, PhysAddr, RegionId, VcpuId, VmId};

const PAGE: u64 = 4096;

/// Lazily backs declared RAM ranges with pages from a fixed pool; a VMM may only touch the VM whose
/// number is its badge.
struct RamService {
    free_pages: u64,
    ranges: BTreeMap<VmId, Vec<(u64, u64)>>,
    mapped: BTreeSet<(VmId, u64)>,
}

impl RamService {
    fn new(free_pages: u64) -> Self {
        Self {
            free_pages,
            ranges: BTreeMap::new(),
            mapped: BTreeSet::new(),
        }
    }

    fn owner_check(ctx: &Context, vm: VmId) -> Result<(), MemError> {
        if ctx.badge().raw() == u64::from(vm.raw()) {
            Ok(())
        } else {
            Err(MemError::NotPermitted)
        }
    }

    fn unmap_all(&mut self, vm: VmId) -> u64 {
        let before = self.mapped.len() as u64;
        self.mapped.retain(|&(owner, _)| owner != vm);
        let pages = before - self.mapped.len() as u64;
        self.free_pages += pages;
        pages
    }
}

impl memmgr::Handler for RamService {
    async fn add_ram(
        &mut self,
        ctx: &mut Context,
        vm: VmId,
        base: Ipa,
        size: u64,
    ) -> Result<(), MemError> {
        Self::owner_check(ctx, vm)?;
        let (start, end) = (
            base.raw(),
            base.raw().checked_add(size).ok_or(MemError::BadRange)?,
        );
        if size == 0 || !start.is_multiple_of(PAGE) || !size.is_multiple_of(PAGE) {
            return Err(MemError::BadRange);
        }
        let ranges = self.ranges.entry(vm).or_default();
        if ranges.iter().any(|&(s, e)| start < e && s < end) {
            return Err(MemError::BadRange);
        }
        ranges.push((start, end));
        Ok(())
    }

    async fn handle_stage2_fault(
        &mut self,
        ctx: &mut Context,
        vm: VmId,
        _vcpu: VcpuId,
        ipa: Ipa,
        _access: Access,
    ) -> Result<FaultOutcome, MemError> {
        Self::owner_check(ctx, vm)?;
        let ranges = self.ranges.get(&vm).ok_or(MemError::UnknownVm)?;
        if !ranges.iter().any(|&(s, e)| (s..e).contains(&ipa.raw())) {
            return Err(MemError::NotGuestRam);
        }
        let page = ipa.raw() & !(PAGE - 1);
        if self.mapped.contains(&(vm, page)) {
            return Ok(FaultOutcome::AlreadyMapped);
        }
        self.free_pages = self
            .free_pages
            .checked_sub(1)
            .ok_or(MemError::OutOfMemory)?;
        self.mapped.insert((vm, page));
        Ok(FaultOutcome::Mapped {
            base: Ipa::new(page),
            size: PAGE,
        })
    }

    async fn reset_vcpu(
        &mut self,
        ctx: &mut Context,
        vm: VmId,
        _vcpu: VcpuId,
    ) -> Result<ResetPolicy, MemError> {
        // This test service models a CPU without FEAT_S2FWB.
        Self::owner_check(ctx, vm)?;
        self.unmap_all(vm);
        Ok(ResetPolicy::DropAllMappings)
    }

    async fn release_vm(&mut self, ctx: &mut Context, vm: VmId) -> Result<u64, MemError> {
        Self::owner_check(ctx, vm)?;
        self.ranges.remove(&vm).ok_or(MemError::UnknownVm)?;
        Ok(self.unmap_all(vm) * PAGE)
    }

    async fn load(
        &mut self,
        ctx: &mut Context,
        vm: VmId,
        _payload: memmgr::GuestPayload,
        _ipa: Ipa,
    ) -> Result<u64, MemError> {
        Self::owner_check(ctx, vm)?;
        // This model holds no payloads.
        Ok(0)
    }

    async fn write_word(
        &mut self,
        ctx: &mut Context,
        vm: VmId,
        _ipa: Ipa,
        _value: u64,
    ) -> Result<(), MemError> {
        Self::owner_check(ctx, vm)
    }
}

const VM: VmId = VmId::new(7);
const SERVER: Generation = Generation::new(1);

fn memmgr_server(
    kernel: &HostedKernel,
    pages: u64,
) -> (HostedEndpoint, std::thread::JoinHandle<TransportError>) {
    let endpoint = kernel.endpoint();
    let mut server = endpoint.server();
    let thread = hosted::spawn(move || async move {
        let mut service = RamService::new(pages);
        memmgr::serve(&mut server, &mut service, SERVER).await
    });
    (endpoint, thread)
}

#[test]
fn a_vmm_maps_guest_ram_on_faults_through_the_client_stub() {
    let kernel = HostedKernel::new();
    let (endpoint, server) = memmgr_server(&kernel, 2);
    let vcpu = VcpuId::new(0);
    hosted::block_on(|_| async {
        let mut vmm = memmgr::Client::new(endpoint.client(Badge::new(7)), Generation::ANY);
        vmm.add_ram(VM, Ipa::new(0x4000_0000), 4 * PAGE)
            .await
            .unwrap();
        assert_eq!(
            vmm.core().generation(),
            SERVER,
            "the first reply names the server instance"
        );
        assert_eq!(
            vmm.add_ram(VM, Ipa::new(0x4000_1000), PAGE).await,
            Err(Error::Service(MemError::BadRange)),
            "overlapping range"
        );
        let fault = vmm
            .handle_stage2_fault(VM, vcpu, Ipa::new(0x4000_1234), Access::Write)
            .await;
        assert_eq!(
            fault,
            Ok(FaultOutcome::Mapped {
                base: Ipa::new(0x4000_1000),
                size: PAGE
            })
        );
        let again = vmm
            .handle_stage2_fault(VM, vcpu, Ipa::new(0x4000_1ff8), Access::Read)
            .await;
        assert_eq!(again, Ok(FaultOutcome::AlreadyMapped));
        let mmio = vmm
            .handle_stage2_fault(VM, vcpu, Ipa::new(0x0900_0000), Access::Read)
            .await;
        assert_eq!(mmio, Err(Error::Service(MemError::NotGuestRam)));
        vmm.handle_stage2_fault(VM, vcpu, Ipa::new(0x4000_2000), Access::Read)
            .await
            .unwrap();
        let full = vmm
            .handle_stage2_fault(VM, vcpu, Ipa::new(0x4000_3000), Access::Read)
            .await;
        assert_eq!(full, Err(Error::Service(MemError::OutOfMemory)));
        assert_eq!(
            vmm.reset_vcpu(VM, vcpu).await,
            Ok(ResetPolicy::DropAllMappings)
        );
        vmm.handle_stage2_fault(VM, vcpu, Ipa::new(0x4000_3000), Access::Read)
            .await
            .unwrap();
        assert_eq!(vmm.release_vm(VM).await, Ok(PAGE));

        let mut intruder = memmgr::Client::new(endpoint.client(Badge::new(8)), Generation::ANY);
        assert_eq!(
            intruder.release_vm(VM).await,
            Err(Error::Service(MemError::NotPermitted))
        );
    });
    drop(endpoint);
    assert_eq!(server.join().unwrap(), TransportError::Disconnected);
}

#[test]
fn malformed_and_foreign_requests_get_typed_rejections() {
    let kernel = HostedKernel::new();
    let (endpoint, _server) = memmgr_server(&kernel, 1);
    hosted::block_on(|_| async {
        let mut raw = endpoint.client(Badge::new(7));
        let mut buffer = IpcBuffer::default();
        let memmgr_label = 1;
        // A header (version 1.0, generation ANY) and then a variant index that no request has.
        let bad_variant = [0, 1, 0, 0, 0, 0, 0, 0, 0x7f];
        buffer.bytes_mut()[..9].copy_from_slice(&bad_variant);
        let reply = raw
            .call(MessageInfo::new(memmgr_label, 9, 0).unwrap(), &mut buffer)
            .await
            .unwrap();
        assert_eq!(reply.label(), u64::from(WireError::Malformed.code()));
        buffer.bytes_mut()[..9].copy_from_slice(&bad_variant);
        let reply = raw
            .call(MessageInfo::new(memmgr_label, 3, 0).unwrap(), &mut buffer)
            .await
            .unwrap();
        assert_eq!(reply.label(), u64::from(WireError::Truncated.code()));
        // A valid `ReleaseVm { vm: 7 }` labelled as the device broker's protocol.
        let release = [0, 1, 0, 0, 0, 0, 0, 0, 3, 7];
        buffer.bytes_mut()[..10].copy_from_slice(&release);
        let reply = raw
            .call(MessageInfo::new(3, 10, 0).unwrap(), &mut buffer)
            .await
            .unwrap();
        assert_eq!(reply.label(), u64::from(WireError::WrongProtocol.code()));
        // The same request with a byte after it.
        buffer.bytes_mut()[..11].copy_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0, 3, 7, 0]);
        let reply = raw
            .call(MessageInfo::new(memmgr_label, 11, 0).unwrap(), &mut buffer)
            .await
            .unwrap();
        assert_eq!(reply.label(), u64::from(WireError::TrailingBytes.code()));
        // From a client of a newer major version.
        buffer.bytes_mut()[..10].copy_from_slice(&[0, 2, 0, 0, 0, 0, 0, 0, 3, 7]);
        let reply = raw
            .call(MessageInfo::new(memmgr_label, 10, 0).unwrap(), &mut buffer)
            .await
            .unwrap();
        assert_eq!(
            reply.label(),
            u64::from(WireError::UnsupportedVersion.code())
        );
        // And the well-formed request is served (the service's answer: VM 7 has no RAM yet).
        buffer.bytes_mut()[..10].copy_from_slice(&release);
        let reply = raw
            .call(MessageInfo::new(memmgr_label, 10, 0).unwrap(), &mut buffer)
            .await
            .unwrap();
        assert_eq!(reply.label(), 0);
    });
}

#[test]
fn a_restarted_server_is_detected_by_its_generation() {
    let kernel = HostedKernel::new();
    let (endpoint, first) = memmgr_server(&kernel, 4);
    let mut vmm = memmgr::Client::new(endpoint.client(Badge::new(7)), Generation::ANY);
    hosted::block_on(|_| async { vmm.add_ram(VM, Ipa::new(0), PAGE).await.unwrap() });
    assert_eq!(vmm.core().generation(), SERVER);

    // The first instance goes away (its endpoint is deleted) and the supervisor starts a new instance,
    // generation 2, on a new endpoint; the VMM's capability is re-pointed, its client state kept.
    drop(endpoint);
    let endpoint = kernel.endpoint();
    let mut server = endpoint.server();
    let second = hosted::spawn(move || async move {
        memmgr::serve(&mut server, &mut RamService::new(4), Generation::new(2)).await
    });
    let known = vmm.core().generation();
    drop(vmm);
    let mut vmm = memmgr::Client::new(endpoint.client(Badge::new(7)), known);
    hosted::block_on(|_| async {
        let stale = vmm
            .handle_stage2_fault(VM, VcpuId::new(0), Ipa::new(0), Access::Read)
            .await;
        assert_eq!(
            stale,
            Err(Error::Call(CallError::ServerRestarted(Generation::new(2))))
        );
        // The VMM re-establishes its state in the new instance and carries on.
        assert_eq!(vmm.core().generation(), Generation::new(2));
        vmm.add_ram(VM, Ipa::new(0), PAGE).await.unwrap();
        let mapped = vmm
            .handle_stage2_fault(VM, VcpuId::new(0), Ipa::new(0), Access::Read)
            .await;
        assert_eq!(
            mapped,
            Ok(FaultOutcome::Mapped {
                base: Ipa::new(0),
                size: PAGE
            })
        );
    });
    drop((vmm, endpoint));
    assert_eq!(first.join().unwrap(), TransportError::Disconnected);
    assert_eq!(second.join().unwrap(), TransportError::Disconnected);
}

/// A device broker granting one region and one interrupt, with capability transfer.
struct Broker {
    uart: Cap<DeviceFrame>,
    uart_irq: Cap<IrqHandler>,
    granted: bool,
}

impl devbroker::Handler for Broker {
    async fn list_regions(
        &mut self,
        _ctx: &mut Context,
        start: u32,
    ) -> Result<RegionPage, BrokerError> {
        let uart = RegionInfo {
            id: RegionId::new(0),
            base: PhysAddr::new(0x0900_0000),
            size: PAGE,
            cacheable: false,
            allows_uncached: false,
        };
        let regions = if start == 0 {
            [uart].into_iter().collect()
        } else {
            heapless::Vec::new()
        };
        Ok(RegionPage {
            regions,
            next: None,
        })
    }

    async fn grant_region(
        &mut self,
        ctx: &mut Context,
        region: RegionId,
        memory_type: MemoryType,
        sharing: Sharing,
    ) -> Result<RegionGrant, BrokerError> {
        if region != RegionId::new(0) {
            return Err(BrokerError::NoSuchRegion);
        }
        if sharing == Sharing::Private {
            return Err(BrokerError::PrivateDeviceMapping);
        }
        if memory_type != MemoryType::DeviceNgnre {
            return Err(BrokerError::MemoryTypeRefused);
        }
        if std::mem::replace(&mut self.granted, true) {
            return Err(BrokerError::AlreadyGranted);
        }
        let frame = ctx
            .grant(self.uart)
            .map_err(|_| BrokerError::NotPermitted)?;
        Ok(RegionGrant {
            frame,
            memory_type,
            size: PAGE,
        })
    }

    async fn grant_irq(
        &mut self,
        ctx: &mut Context,
        intid: Intid,
    ) -> Result<Transferred<IrqHandler>, BrokerError> {
        if intid != Intid::new(33) {
            return Err(BrokerError::NoSuchIrq);
        }
        ctx.grant(self.uart_irq)
            .map_err(|_| BrokerError::NotPermitted)
    }

    async fn release_region(
        &mut self,
        _ctx: &mut Context,
        _region: RegionId,
    ) -> Result<(), BrokerError> {
        if std::mem::replace(&mut self.granted, false) {
            Ok(())
        } else {
            Err(BrokerError::NotGranted)
        }
    }
}

#[test]
fn granted_capabilities_arrive_typed_and_kind_checked() {
    let kernel = HostedKernel::new();
    let endpoint = kernel.endpoint();
    let mut server = endpoint.server();
    let broker = Broker {
        uart: kernel.create(),
        uart_irq: kernel.create(),
        granted: false,
    };
    let (uart, uart_irq) = (broker.uart, broker.uart_irq);
    let _thread = hosted::spawn(move || async move {
        let mut broker = broker;
        devbroker::serve(&mut server, &mut broker, Generation::new(3)).await
    });
    hosted::block_on(|_| async {
        let mut vmm = devbroker::Client::new(endpoint.client(Badge::new(1)), Generation::ANY);
        let page = vmm.list_regions(0).await.unwrap();
        assert_eq!(page.regions.len(), 1);
        assert_eq!(
            vmm.grant_region(
                RegionId::new(0),
                MemoryType::NormalWriteBack,
                Sharing::Shared
            )
            .await,
            Err(Error::Service(BrokerError::MemoryTypeRefused))
        );
        // The request carries the sharing (protocol 2.0), and a private grant is refused.
        assert_eq!(
            vmm.grant_region(RegionId::new(0), MemoryType::DeviceNgnre, Sharing::Private)
                .await,
            Err(Error::Service(BrokerError::PrivateDeviceMapping))
        );
        let grant = vmm
            .grant_region(RegionId::new(0), MemoryType::DeviceNgnre, Sharing::Shared)
            .await
            .unwrap();
        assert_eq!(vmm.core().take(grant.frame), Ok(uart));
        // The payload's index cannot be reinterpreted as another kind of capability.
        let forged: Transferred<Frame> = postcard::from_bytes(&[grant.frame.index()]).unwrap();
        let wrong = vmm.core().take(forged).unwrap_err();
        assert!(
            matches!(wrong, CallError::NoSuchCap(Some(w)) if w.found == ObjectKind::DeviceFrame)
        );

        let irq = vmm.grant_irq(Intid::new(33)).await.unwrap();
        assert_eq!(vmm.core().take(irq), Ok(uart_irq));
        assert_eq!(
            vmm.grant_irq(Intid::new(34)).await,
            Err(Error::Service(BrokerError::NoSuchIrq))
        );
        vmm.release_region(RegionId::new(0)).await.unwrap();

        // A deleted capability is not transferred: the reply arrives without it.
        kernel.delete(uart);
        let grant = vmm
            .grant_region(RegionId::new(0), MemoryType::DeviceNgnre, Sharing::Shared)
            .await
            .unwrap();
        assert_eq!(
            vmm.core().take(grant.frame),
            Err(CallError::NoSuchCap(None))
        );
    });
}

#[test]
fn notifications_wake_a_waiter_and_accumulate_bits() {
    use capvisor_ipc::transport::{Signal, Wait};

    let kernel = HostedKernel::new();
    let (signal, mut waiter) = kernel.notification();
    assert_eq!(waiter.poll(), Ok(0));
    signal.signal(0b100).unwrap();
    signal.signal(0b001).unwrap();
    assert_eq!(
        hosted::block_on(|_| async { waiter.wait().await }),
        Ok(0b101)
    );
    // A signaller on another thread wakes a waiter that is already asleep.
    let remote = signal.clone();
    let thread = std::thread::spawn(move || {
        for bit in 0..64 {
            remote.signal(1 << bit).unwrap();
        }
    });
    let mut seen = 0u64;
    hosted::block_on(|_| async {
        while seen != u64::MAX {
            seen |= waiter.wait().await.unwrap();
        }
    });
    thread.join().unwrap();
    drop(signal);
    assert_eq!(
        hosted::block_on(|_| async { waiter.wait().await }),
        Err(TransportError::Disconnected)
    );
}

#[test]
fn one_server_loop_serves_many_client_threads() {
    let kernel = HostedKernel::new();
    let (endpoint, server) = memmgr_server(&kernel, 64);
    let clients: Vec<_> = (1..=4u32)
        .map(|vm| {
            let transport = endpoint.client(Badge::new(u64::from(vm)));
            std::thread::spawn(move || {
                hosted::block_on(|_| async move {
                    let vm = VmId::new(vm);
                    let mut client = memmgr::Client::new(transport, Generation::ANY);
                    client.add_ram(vm, Ipa::new(0), 16 * PAGE).await.unwrap();
                    for page in 0..16 {
                        let ipa = Ipa::new(page * PAGE + 8);
                        let outcome = client
                            .handle_stage2_fault(vm, VcpuId::new(0), ipa, Access::Write)
                            .await;
                        assert_eq!(
                            outcome,
                            Ok(FaultOutcome::Mapped {
                                base: Ipa::new(page * PAGE),
                                size: PAGE
                            })
                        );
                    }
                    client.release_vm(vm).await.unwrap()
                })
            })
        })
        .collect();
    for client in clients {
        assert_eq!(
            client.join().unwrap(),
            16 * PAGE,
            "each VM's pages are its own"
        );
    }
    drop(endpoint);
    assert_eq!(server.join().unwrap(), TransportError::Disconnected);
}

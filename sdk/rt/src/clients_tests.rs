//! The typed clients under the hosted transport, against stub servers: the capability steps
//! (a frame lent with its request, a granted capability taken from its reply, kind checked) and
//! the generated methods reached through `Deref`.

use capvisor_ipc::cap::{Badge, Cap, DeviceFrame, Endpoint, Frame, IrqHandler};
use capvisor_ipc::hosted::{self, HostedKernel};
use capvisor_ipc::protocol::{Context, Error, Generation, ServiceHandle, Transferred};
use capvisor_ipc::protocols::devbroker::{self, BrokerError, RegionGrant, RegionPage, Sharing};
use capvisor_ipc::protocols::s2walk::{self, WalkError, WalkOutcome};
use capvisor_ipc::types::{Access, Intid, Ipa, MemoryType, RegionId, VmId, Vtcr, Vttbr};

use super::{DevBrokerClient, S2WalkClient, Service};

/// Answers `lend` with whether a frame came with it, and every walk with a level-1 fault.
struct Walker;

impl s2walk::Handler for Walker {
    async fn walk(
        &mut self,
        _: &mut Context,
        _: VmId,
        _: Vtcr,
        _: Vttbr,
        _: Ipa,
        _: Access,
    ) -> Result<WalkOutcome, WalkError> {
        Ok(WalkOutcome::Fault(s2walk::WalkFault {
            status: 0x05,
            level: 1,
            external: false,
        }))
    }

    async fn invalidate(
        &mut self,
        _: &mut Context,
        _: VmId,
        _: Vttbr,
        _: Option<Ipa>,
    ) -> Result<(), WalkError> {
        Ok(())
    }

    async fn nest(&mut self, _: &mut Context, _: VmId, _: u8) -> Result<(), WalkError> {
        Ok(())
    }

    async fn lend(&mut self, ctx: &mut Context, _: VmId, _: Ipa) -> Result<(), WalkError> {
        let frame = ctx.received().first().copied().flatten();
        match frame.map(|cap| cap.downcast::<Frame>()) {
            Some(Ok(_)) => Ok(()),
            _ => Err(WalkError::MissingFrame),
        }
    }
}

/// Grants one device frame and one IRQ handler.
struct Broker {
    uart: Cap<DeviceFrame>,
    irq: Cap<IrqHandler>,
}

impl devbroker::Handler for Broker {
    async fn list_regions(&mut self, _: &mut Context, _: u32) -> Result<RegionPage, BrokerError> {
        Err(BrokerError::NotPermitted)
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
        let frame = ctx
            .grant(self.uart)
            .map_err(|_| BrokerError::NotPermitted)?;
        Ok(RegionGrant {
            frame,
            memory_type,
            size: 0x1000,
        })
    }

    async fn grant_irq(
        &mut self,
        ctx: &mut Context,
        _: Intid,
    ) -> Result<Transferred<IrqHandler>, BrokerError> {
        ctx.grant(self.irq).map_err(|_| BrokerError::NotPermitted)
    }

    async fn release_region(&mut self, _: &mut Context, _: RegionId) -> Result<(), BrokerError> {
        Err(BrokerError::NotGranted)
    }
}

#[test]
fn the_s2walk_client_lends_frames_and_reaches_the_generated_methods() {
    let kernel = HostedKernel::new();
    let endpoint = kernel.endpoint();
    let mut server = endpoint.server();
    let _served = hosted::spawn(move || async move {
        s2walk::serve(&mut server, &mut Walker, Generation::new(3)).await
    });
    let frame: Cap<Frame> = kernel.create();
    hosted::block_on(|_| async {
        let mut client = S2WalkClient::over(endpoint.client(Badge::new(1)), Generation::ANY);
        let vm = VmId::new(1);
        assert_eq!(client.nest(vm, 48).await, Ok(()));
        assert_eq!(client.core().generation(), Generation::new(3));
        assert_eq!(
            client.lend(vm, Ipa::new(0)).await,
            Err(Error::Service(WalkError::MissingFrame))
        );
        assert_eq!(client.lend_frame(vm, Ipa::new(0), frame).await, Ok(()));
        let walked = client
            .walk(vm, Vtcr::new(0), Vttbr::new(0), Ipa::new(0), Access::Read)
            .await;
        assert!(matches!(walked, Ok(WalkOutcome::Fault(f)) if f.status == 0x05));
    });
}

#[test]
fn the_broker_client_takes_granted_capabilities_by_kind() {
    let kernel = HostedKernel::new();
    let endpoint = kernel.endpoint();
    let mut server = endpoint.server();
    let broker = Broker {
        uart: kernel.create(),
        irq: kernel.create(),
    };
    let (uart, irq) = (broker.uart, broker.irq);
    let _served = hosted::spawn(move || async move {
        let mut broker = broker;
        devbroker::serve(&mut server, &mut broker, Generation::new(1)).await
    });
    hosted::block_on(|_| async {
        let mut client = DevBrokerClient::over(endpoint.client(Badge::new(1)), Generation::ANY);
        let device = MemoryType::DeviceNgnre;
        let private = client
            .grant_region_frame(RegionId::new(0), device, Sharing::Private)
            .await;
        assert_eq!(
            private,
            Err(Error::Service(BrokerError::PrivateDeviceMapping))
        );
        let granted = client
            .grant_region_frame(RegionId::new(0), device, Sharing::Shared)
            .await;
        assert_eq!(granted, Ok((uart, 0x1000)));
        assert_eq!(client.grant_irq_handler(Intid::new(33)).await, Ok(irq));
        let missing = client
            .grant_region_frame(RegionId::new(1), device, Sharing::Shared)
            .await;
        assert_eq!(missing, Err(Error::Service(BrokerError::NoSuchRegion)));
        assert_eq!(
            client.list_regions(0).await.map(|_| ()),
            Err(Error::Service(BrokerError::NotPermitted))
        );
    });
}

#[test]
fn a_service_handle_keeps_its_protocol_endpoint_and_generation() {
    let endpoint: Cap<Endpoint> = Cap::from_cptr(capvisor_ipc::cap::CPtr::new(993));
    let walker: Service<s2walk::S2Walk> = Service::granted(endpoint);
    assert_eq!(walker.generation(), Generation::ANY);
    let handle: ServiceHandle = Service::<s2walk::S2Walk>::new(endpoint, Generation::new(2)).into();
    let again = Service::<s2walk::S2Walk>::from_handle(handle);
    assert_eq!(
        (again.endpoint(), again.generation()),
        (endpoint, Generation::new(2))
    );
    assert!(format!("{walker:?}").contains("993"));
}

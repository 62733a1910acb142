//! Pong's handler under the hosted transport (`capvisor_ipc::hosted`), on the host: the generated
//! `serve` loop on its own thread, the generated `Client` on the test's, capabilities transferred
//! both ways through the hosted capability table.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use capvisor_ipc::abi::KernelError;
use capvisor_ipc::cap::{Badge, Cap, Frame, Notification};
use capvisor_ipc::hosted::{self, HostedKernel, HostedSignal};
use capvisor_ipc::protocol::{CallError, Error, Generation, WireError};
use capvisor_ipc::transport::{Signal, Wait};

use crate::handler::{Platform, Pong};
use crate::protocol::{self, PongError, SHARED_VALUE};

/// The host stand-in for the kernel: notifications by capability, one word of "shared memory",
/// and the log lines.
#[derive(Debug, Clone, Default)]
struct Host {
    signals: Arc<Mutex<HashMap<u64, (HostedSignal, u64)>>>,
    frames: Arc<Mutex<Vec<u64>>>,
    memory: Arc<Mutex<Option<u64>>>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Platform for Host {
    fn log(&mut self, line: core::fmt::Arguments<'_>) {
        self.log.lock().unwrap().push(line.to_string());
    }

    fn signal(&mut self, notification: Cap<Notification>) -> Result<u64, KernelError> {
        let signals = self.signals.lock().unwrap();
        let (signal, badge) = signals
            .get(&notification.cptr().raw())
            .ok_or(KernelError::EmptySlot)?;
        signal.signal(*badge).map_err(|_| KernelError::Cancelled)?;
        Ok(*badge)
    }

    fn map_shared(&mut self, frame: Cap<Frame>) -> Result<(), KernelError> {
        let frames = self.frames.lock().unwrap();
        if !frames.contains(&frame.cptr().raw()) {
            return Err(KernelError::EmptySlot);
        }
        *self.memory.lock().unwrap() = Some(0);
        Ok(())
    }

    fn write_shared(&mut self, value: u64) {
        *self.memory.lock().unwrap() = Some(value);
    }

    fn read_shared(&mut self) -> u64 {
        self.memory
            .lock()
            .unwrap()
            .expect("pong reads the frame only after mapping it")
    }
}

#[test]
fn pong_answers_signals_maps_and_grants_under_the_hosted_transport() {
    let kernel = HostedKernel::new();
    let endpoint = kernel.endpoint();
    let host = Host::default();
    let (signal, mut waiter) = kernel.notification();
    let notification: Cap<Notification> = kernel.create();
    host.signals
        .lock()
        .unwrap()
        .insert(notification.cptr().raw(), (signal, 0x5));
    let frame: Cap<Frame> = kernel.create();
    host.frames.lock().unwrap().push(frame.cptr().raw());
    let doorbell: Cap<Notification> = kernel.create();

    let mut server = endpoint.server();
    let platform = host.clone();
    let served = hosted::spawn(move || async move {
        let mut pong = Pong::new(platform, doorbell);
        protocol::serve(&mut server, &mut pong, protocol::GENERATION).await
    });

    hosted::block_on(|_| async {
        let mut client = protocol::Client::new(endpoint.client(Badge::new(1)), Generation::ANY);
        assert_eq!(client.ping(3).await, Ok(30));
        assert_eq!(client.core().generation(), protocol::GENERATION);
        assert_eq!(client.ping(0).await, Err(Error::Service(PongError::Zero)));

        // A client that expects another instance of pong is told it restarted.
        let mut stale = protocol::Client::new(endpoint.client(Badge::new(2)), Generation::new(7));
        assert_eq!(
            stale.ping(1).await,
            Err(Error::Call(CallError::ServerRestarted(
                protocol::GENERATION
            )))
        );

        // Capabilities are checked by kind: a frame is not a notification; and a request that
        // carries none is refused too.
        client.core().attach(frame).unwrap();
        assert_eq!(
            client.notify().await,
            Err(Error::Service(PongError::MissingCapability))
        );
        assert_eq!(
            client.notify().await,
            Err(Error::Service(PongError::MissingCapability))
        );

        client.core().attach(notification).unwrap();
        assert_eq!(client.notify().await, Ok(0x5));
        assert_eq!(waiter.wait().await, Ok(0x5));
        assert_eq!(waiter.poll(), Ok(0));

        client.core().attach(frame).unwrap();
        assert_eq!(client.share().await, Ok(()));
        assert_eq!(*host.memory.lock().unwrap(), Some(SHARED_VALUE));

        let granted = client.doorbell().await.unwrap();
        assert_eq!(client.core().take(granted), Ok(doorbell));

        // "Revoke": the stand-in forgets the notification, and pong's signal is refused.
        host.signals.lock().unwrap().clear();
        assert_eq!(client.touch().await, Ok(SHARED_VALUE));
        drop(client);
        drop(stale);
    });
    drop(endpoint);
    assert_eq!(
        served.join().unwrap(),
        capvisor_ipc::transport::TransportError::Disconnected
    );

    let log = host.log.lock().unwrap();
    let expected = [
        "ping 3 from badge 1",
        "ping 0 from badge 1",
        "received a capability of kind 6 in slot 2",
        "received a capability of kind 3 in slot 1",
        "received a capability of kind 6 in slot 2",
        "mapped the frame and wrote to it",
        "signal after revoke: Some(EmptySlot)",
        "touching the revoked frame",
        "still mapped: 0x12345678",
    ];
    assert_eq!(log.as_slice(), expected.as_slice());
}

#[test]
fn a_request_of_another_protocol_is_rejected_before_the_handler() {
    let kernel = HostedKernel::new();
    let endpoint = kernel.endpoint();
    let host = Host::default();
    let doorbell: Cap<Notification> = kernel.create();
    let mut server = endpoint.server();
    let platform = host.clone();
    let _served = hosted::spawn(move || async move {
        protocol::serve(
            &mut server,
            &mut Pong::new(platform, doorbell),
            protocol::GENERATION,
        )
        .await
    });
    hosted::block_on(|_| async {
        use capvisor_ipc::abi::{IpcBuffer, MessageInfo};
        use capvisor_ipc::transport::Transport;
        let mut client = endpoint.client(Badge::new(1));
        let mut buffer = IpcBuffer::default();
        let info = MessageInfo::new(0x111, 0, 0).unwrap();
        let reply = client.call(info, &mut buffer).await.unwrap();
        assert_eq!(reply.label(), u64::from(WireError::WrongProtocol.code()));
    });
    assert!(host.log.lock().unwrap().is_empty());
}

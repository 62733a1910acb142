//! A test service (the image's root): calls `pong` with the ping/pong protocol's generated
//! `Client` over the EL0 transport, through the endpoint its manifest grants; transfers a
//! notification and a frame to it and takes a notification from it, meets each misuse error, and
//! revokes what it gave.
#![cfg_attr(target_os = "none", no_std, no_main)]

capvisor_rt::service_async!(run);

#[path = "../../pingpong_protocol.rs"]
#[allow(dead_code, reason = "shared with pong: ping uses the client side")]
mod protocol;

/// Address spaces created and deleted one after the other (the table pool has 1024 pages).
#[cfg(target_os = "none")]
const SPACES: u64 = 1100;

#[cfg(target_os = "none")]
async fn run() -> u64 {
    match steps().await {
        Ok(()) => capvisor_rt::debug_halt(0),
        Err(error) => {
            capvisor_rt::println!("unexpected {error:?}");
            capvisor_rt::debug_halt(1)
        }
    }
}

/// Without the kernel there is nothing to call: the host program does nothing.
#[cfg(not(target_os = "none"))]
async fn run() -> u64 {
    0
}

/// Why a step failed: the kernel refused, or a protocol call failed.
#[cfg(target_os = "none")]
#[derive(Debug)]
#[allow(
    dead_code,
    reason = "the fields are read by `Debug`, to print the failure"
)]
enum Failure {
    Kernel(capvisor_rt::KernelError),
    Call(capvisor_ipc::protocol::Error<protocol::PongError>),
    Transport(capvisor_ipc::transport::TransportError),
    TooManyCaps,
    Spawn(capvisor_rt::executor::SpawnError),
}

#[cfg(target_os = "none")]
mod failure {
    use super::{Failure, protocol::PongError};
    use capvisor_ipc::protocol::{CallError, Error, TooManyCaps};
    use capvisor_ipc::transport::TransportError;

    impl From<capvisor_rt::KernelError> for Failure {
        fn from(error: capvisor_rt::KernelError) -> Self {
            Self::Kernel(error)
        }
    }
    impl From<Error<PongError>> for Failure {
        fn from(error: Error<PongError>) -> Self {
            Self::Call(error)
        }
    }
    impl From<CallError> for Failure {
        fn from(error: CallError) -> Self {
            Self::Call(Error::Call(error))
        }
    }
    impl From<TransportError> for Failure {
        fn from(error: TransportError) -> Self {
            Self::Transport(error)
        }
    }
    impl From<capvisor_rt::executor::SpawnError> for Failure {
        fn from(error: capvisor_rt::executor::SpawnError) -> Self {
            Self::Spawn(error)
        }
    }
    impl From<TooManyCaps> for Failure {
        fn from(_: TooManyCaps) -> Self {
            Self::TooManyCaps
        }
    }
}

/// A second task of ping's executor: it runs whenever the main task yields.
#[cfg(target_os = "none")]
#[capvisor_rt::executor::task(embassy_executor = capvisor_rt::executor::embassy)]
async fn ticker(turns: u32) {
    for turn in 1..=turns {
        capvisor_rt::println!("ticker turn {turn}");
        capvisor_rt::executor::yield_task().await;
    }
}

/// Two tasks of one executor take turns at their `.await`s.
#[cfg(target_os = "none")]
async fn take_turns() -> Result<(), Failure> {
    capvisor_rt::executor::spawner().spawn(ticker(2)?);
    for turn in 1..=3 {
        capvisor_rt::println!("main turn {turn}");
        capvisor_rt::executor::yield_task().await;
    }
    Ok(())
}

#[cfg(target_os = "none")]
async fn steps() -> Result<(), Failure> {
    use capvisor_ipc::cap::{Cap, Endpoint, Frame, Notification, Slot};
    use capvisor_ipc::protocol::Generation;
    use capvisor_ipc::transport::Wait;
    use capvisor_rt::ipc::{self, EndpointClient, ReceiveWindow};
    use capvisor_rt::{CPtr, Rights, println, sys};
    // The root's slots: its CNode, its AddressSpace, the first untyped, and its grant window
    // (sdk/src/plan/layout.rs): slot 993 is the first endpoint its manifest grants.
    // Capabilities pong grants in replies land from slot 940 on.
    let (cnode, space) = (CPtr::new(1), CPtr::new(2));
    take_turns().await?;
    let pong: Cap<Endpoint> = Cap::from_cptr(CPtr::new(993));
    let transport = EndpointClient::new(pong, ReceiveWindow::new(Slot::new(940), 3));
    let mut client = protocol::Client::new(transport, Generation::ANY);
    for n in 1..=3 {
        let answer = client.ping(n).await?;
        println!("pong answered {answer} to ping {n}");
    }
    println!("ping 0: {:?}", client.ping(0).await);
    // A client that expects another instance of pong: rejected before pong's handler runs.
    let mut stale = protocol::Client::new(
        EndpointClient::new(pong, ReceiveWindow::NONE),
        Generation::new(7),
    );
    println!("stale generation: {:?}", stale.ping(1).await);

    println!("bad slot: {:?}", sys::signal(CPtr::new(5000)).err());
    println!("wrong type: {:?}", sys::signal(cnode).err());
    retype(3, 0, 900)?;
    sys::mint(cnode, 901, CPtr::new(900), Rights::READ, 0x5)?;
    println!("read-only signal: {:?}", sys::signal(CPtr::new(901)).err());
    sys::mint(cnode, 902, CPtr::new(900), Rights::ALL, 0x5)?;
    client
        .core()
        .attach(Cap::<Notification>::from_cptr(CPtr::new(902)))?;
    let bits = client.notify().await?;
    let mut word = ipc::Notification::identify(Cap::from_cptr(CPtr::new(900)))?;
    println!(
        "notification word {:#x} after pong signalled {bits:#x}",
        word.wait().await?
    );

    retype(6, 12, 910)?;
    println!(
        "map outside the address space: {:?}",
        sys::map(CPtr::new(910), space, 1 << 60, 3, 0).err()
    );
    sys::copy(cnode, 911, CPtr::new(910), Rights::ALL)?;
    client
        .core()
        .attach(Cap::<Frame>::from_cptr(CPtr::new(911)))?;
    client.share().await?;
    sys::map(CPtr::new(910), space, protocol::SHARED, 3, 0)?;
    // SAFETY: SHARED is the frame mapped read/write just above.
    let value = unsafe { (protocol::SHARED as *const u64).read_volatile() };
    println!("shared frame holds {value:#x}");

    let granted = client.doorbell().await?;
    let doorbell = client.core().take(granted)?;
    let doorbell = ipc::Notification::identify(doorbell)?;
    println!(
        "pong granted a notification in slot {}",
        doorbell.cap().cptr().raw()
    );

    sys::revoke(cnode, 900)?;
    println!(
        "signal after revoke: {:?}",
        sys::signal(CPtr::new(902)).err()
    );
    recreated(cnode)?;

    sys::revoke(cnode, 910)?;
    println!("revoked the frame pong maps");
    // Pong faults on this one, so it is sent one-way: a call would wait for a reply forever.
    let touch = protocol::Request::Touch {};
    ipc::send::<protocol::PingPong>(pong, &touch, client.core().generation())?;
    for _ in 0..3 {
        capvisor_rt::yield_now();
    }
    // More address spaces than the kernel's 4 MiB table pool has pages: each one's tables must
    // go back to the pool (and its VMID be reused) when it is deleted.
    for _ in 0..SPACES {
        retype(13, 0, 950)?;
        sys::delete(cnode, 950)?;
    }
    println!("created and deleted {SPACES} address spaces");
    println!("done");
    Ok(())
}

/// A capability derived from an object that was destroyed and re-created in the same slot: the
/// derived copy went with the old object (`EmptySlot`), and the slot names a new object that
/// holds nothing of the old one's state. (The kernel answers `EmptySlot`, not `Revoked`: a
/// capability keeps its object alive, so no slot can name a destroyed object; generations guard
/// the kernel's own references to objects.)
#[cfg(target_os = "none")]
fn recreated(cnode: capvisor_rt::CPtr) -> Result<(), Failure> {
    use capvisor_rt::{CPtr, Rights, println, sys};
    retype(3, 0, 920)?;
    sys::mint(cnode, 921, CPtr::new(920), Rights::ALL, 0x9)?;
    sys::signal(CPtr::new(921))?;
    sys::revoke(cnode, 920)?;
    sys::delete(cnode, 920)?;
    retype(3, 0, 920)?;
    println!(
        "derived copy after re-create: {:?}",
        sys::signal(CPtr::new(921)).err()
    );
    println!(
        "re-created notification word {:#x}",
        sys::poll(CPtr::new(920))?
    );
    Ok(())
}

/// Retypes one object of `kind` into slot `dest` from the first untyped with room (the root's
/// untyped start at slot 5, one per free RAM range).
#[cfg(target_os = "none")]
fn retype(kind: u64, size_bits: u64, dest: u64) -> Result<(), capvisor_rt::KernelError> {
    use capvisor_rt::{CPtr, KernelError, sys};
    let mut last = KernelError::NotEnoughMemory;
    for untyped in 5..24 {
        match sys::retype(CPtr::new(untyped), kind, size_bits, CPtr::NULL, dest, 1) {
            Ok(()) => return Ok(()),
            Err(error) => last = error,
        }
    }
    Err(last)
}

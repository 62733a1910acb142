//! A test service: serves the ping/pong protocol (`../pingpong_protocol.rs`) on the endpoint the
//! manifest gives it with the protocol's generated `serve` loop over the EL0 transport: answers
//! pings, signals the notification it is sent, maps and writes the frame it is sent, grants a
//! notification of its own, and finally touches the frame after `ping` revoked it (which must
//! fault).
#![cfg_attr(target_os = "none", no_std, no_main)]

capvisor_rt::service_async!(run);

#[path = "../../pingpong_protocol.rs"]
#[allow(dead_code, reason = "shared with ping: pong uses the server side")]
mod protocol;

#[cfg_attr(
    not(any(target_os = "none", test)),
    allow(dead_code, reason = "the host program does not serve")
)]
mod handler;

#[cfg(test)]
mod tests;

#[cfg(target_os = "none")]
async fn run() -> u64 {
    use capvisor_ipc::abi::Invocation;
    use capvisor_ipc::cap::{Cap, Slot};
    use capvisor_rt::ipc::{EndpointServer, ReceiveWindow};
    use capvisor_rt::{CPtr, println, sys};
    // A boot service's slots (the boot plan's layout, sdk/src/plan/layout.rs): 2 its AddressSpace, 4
    // its own endpoint, 5 the 64 KiB untyped its manifest asks for. Received capabilities go
    // from slot 100 on.
    let (space, endpoint, untyped) = (CPtr::new(2), CPtr::new(4), CPtr::new(5));
    let doorbell = CPtr::new(200);
    if let Err(error) = sys::retype(untyped, 3, 0, CPtr::NULL, doorbell.raw(), 1) {
        println!("unexpected {error:?}");
        return 1;
    }
    match sys::invoke(doorbell, Invocation::Identify.code(), &[]) {
        Ok(identify) => println!("retyped an object of kind {} from its untyped", identify[0]),
        Err(error) => println!("unexpected {error:?}"),
    }
    let mut server = EndpointServer::new(
        Cap::from_cptr(endpoint),
        // Above the slots of its own frames (from 64: image, stack and IPC buffer pages).
        ReceiveWindow::new(Slot::new(400), 16),
    );
    let platform = el0::Kernel {
        space: Cap::from_cptr(space),
    };
    let mut pong = handler::Pong::new(platform, Cap::from_cptr(doorbell));
    let error = protocol::serve(&mut server, &mut pong, protocol::GENERATION).await;
    println!("unexpected {error:?}");
    1
}

/// Without the kernel there is nothing to serve: the host program does nothing (the handler is
/// tested under the hosted transport in `tests.rs`).
#[cfg(not(target_os = "none"))]
async fn run() -> u64 {
    0
}

/// The platform of the real service: the kernel's syscalls.
#[cfg(target_os = "none")]
mod el0 {
    use capvisor_ipc::cap::{AddressSpace, Cap, Frame, Notification};
    use capvisor_ipc::transport::{Signal, TransportError};
    use capvisor_rt::{KernelError, sys};

    use crate::protocol::SHARED;

    /// The kernel, and the address space pong maps frames into.
    pub struct Kernel {
        pub space: Cap<AddressSpace>,
    }

    impl crate::handler::Platform for Kernel {
        fn log(&mut self, line: core::fmt::Arguments<'_>) {
            capvisor_rt::println!("{line}");
        }

        fn signal(&mut self, notification: Cap<Notification>) -> Result<u64, KernelError> {
            let notification = capvisor_rt::ipc::Notification::identify(notification)?;
            let bits = notification.badge().raw();
            notification.signal(bits).map_err(|error| match error {
                TransportError::Kernel(error) => error,
                _ => KernelError::InvalidArgument,
            })?;
            Ok(bits)
        }

        fn map_shared(&mut self, frame: Cap<Frame>) -> Result<(), KernelError> {
            sys::map(frame.cptr(), self.space.cptr(), SHARED, 3, 0)
        }

        fn write_shared(&mut self, value: u64) {
            // SAFETY: SHARED is the frame `map_shared` mapped read/write; nothing else in this
            // service refers to that memory.
            unsafe { (SHARED as *mut u64).write_volatile(value) };
        }

        fn read_shared(&mut self) -> u64 {
            // SAFETY: as in `write_shared`; once `ping` revoked the frame this read faults
            // (that is the test), it never reads memory that is not the frame.
            unsafe { (SHARED as *const u64).read_volatile() }
        }
    }
}

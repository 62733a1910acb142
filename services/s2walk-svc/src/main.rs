//! The s2walk service: serves the `s2walk` protocol on the endpoint its manifest gives it, with
//! the protocol's generated `serve` loop over the EL0 transport. Lent guest pages are mapped
//! read-only in its window (`svc_s2walk::WINDOW`).
#![cfg_attr(target_os = "none", no_std, no_main)]

capvisor_rt::service_async!(run);

#[cfg(target_os = "none")]
async fn run() -> u64 {
    use capvisor_ipc::cap::{Cap, Slot};
    use capvisor_ipc::protocol::Generation;
    use capvisor_ipc::protocols::s2walk;
    use capvisor_rt::ipc::{EndpointServer, ReceiveWindow};
    use capvisor_rt::{CPtr, println};
    // A boot service's slots (kernel/src/services/spawn.rs, grants.rs): 2 its AddressSpace, 4
    // its own endpoint, 64 on its image, stack and IPC buffer frames. Lent frames arrive in the
    // upper half of its 512-slot CNode, one slot each, well clear of those.
    let (space, endpoint) = (CPtr::new(2), CPtr::new(4));
    let window = ReceiveWindow::new(Slot::new(256), svc_s2walk::MAX_PAGES as u64);
    let mut server = EndpointServer::new(Cap::from_cptr(endpoint), window);
    let mut walker = svc_s2walk::Walker::new(el0::Kernel {
        space: Cap::from_cptr(space),
    });
    let error = s2walk::serve(&mut server, &mut walker, Generation::new(1)).await;
    println!("serve loop ended: {error:?}");
    1
}

/// Without the kernel there is nothing to serve: the host program does nothing (the handler is
/// tested under the hosted transport in `lib.rs`'s tests).
#[cfg(not(target_os = "none"))]
async fn run() -> u64 {
    0
}

/// The platform of the real service: the kernel's map invocation and the window's memory.
#[cfg(target_os = "none")]
mod el0 {
    use capvisor_ipc::cap::{AddressSpace, Cap, Frame};
    use capvisor_rt::{KernelError, sys};
    use svc_s2walk::{PAGE_SIZE, WINDOW};

    /// The kernel, and the address space lent pages are mapped into.
    pub struct Kernel {
        pub space: Cap<AddressSpace>,
    }

    impl svc_s2walk::Platform for Kernel {
        fn map(&mut self, frame: Cap<Frame>, index: usize) -> Result<(), KernelError> {
            // Read only (R = 1), Normal write-back (0): the walker never writes guest memory.
            sys::map(frame.cptr(), self.space.cptr(), page(index), 1, 0)
        }

        fn read(&self, index: usize, offset: usize) -> u64 {
            let address = page(index) + offset as u64;
            // SAFETY: `Walker` reads only window pages that `map` mapped (it records a page
            // after the kernel accepted the mapping, and never reuses an index), at an 8-byte
            // aligned offset inside the page. The guest may change the words concurrently;
            // a volatile read of an aligned word gives one value or another, never undefined
            // behaviour for this service, and the walk validates whatever it reads.
            unsafe { (address as *const u64).read_volatile() }
        }
    }

    fn page(index: usize) -> u64 {
        WINDOW + index as u64 * PAGE_SIZE
    }
}

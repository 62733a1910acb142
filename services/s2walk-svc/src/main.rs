//! The s2walk service: serves the `s2walk` protocol on the endpoint its manifest gives it, with
//! the protocol's generated `serve` loop over the EL0 transport, in a thread of its own (the
//! walker thread); lent guest pages are mapped read-only in its window (`svc_s2walk::WINDOW`).
//! The service's first thread handles the walker thread's faults (`svc_s2walk::recovery`), so a
//! lender that revokes a lent frame cannot stop the service.
//!
//! The manifest must give it `caps = [{ untyped = "64K" }]` and nothing else: that untyped (slot
//! 5, after its own endpoint) pays for the walker thread, its stack, its fault endpoint and the
//! placeholder page.
//!
//! Window pages are read through `capvisor_rt::window::Window`, so the service has no `unsafe`.
#![cfg_attr(target_os = "none", no_std, no_main)]
#![forbid(unsafe_code)]

capvisor_rt::service_async!(run);

#[cfg(target_os = "none")]
async fn run() -> u64 {
    use capvisor_ipc::protocols::fault;
    use capvisor_rt::println;
    use svc_s2walk::recovery::{Event, Recovery};

    if let Err((what, error)) = el0::start() {
        println!("s2walk: cannot start the walker thread: {what}: {error:?}");
        return 1;
    }
    let report = |event| match event {
        Event::FirstRevoked { index } => println!(
            "s2walk: a lent frame was revoked while lent (window page {index}): its walks end in \
             an external abort and the page is no longer lent (later ones are not reported)"
        ),
        Event::Stopped { pc, fault, refused } => println!(
            "s2walk: the walker thread faulted at pc {pc:#x}: {fault:?} (placeholder: \
             {refused:?}); it is stopped"
        ),
    };
    let mut recovery = Recovery::new(el0::Kernel, &el0::REVOKED, report);
    let mut faults = el0::FaultEndpoint;
    let error = fault::serve(&mut faults, &mut recovery).await;
    println!("s2walk: stopped handling the walker's faults: {error:?}");
    1
}

/// Without the kernel there is nothing to serve: the host program does nothing (the handler is
/// tested under the hosted transport in `lib.rs`'s tests).
#[cfg(not(target_os = "none"))]
async fn run() -> u64 {
    0
}

/// The kernel side: slots, the walker thread, the platforms of both threads.
#[cfg(target_os = "none")]
mod el0 {
    use core::sync::atomic::{Ordering, fence};

    use capvisor_ipc::abi::{Invocation, IpcBuffer, KernelError, MSG_REGS_IN_CPU, MessageInfo};
    use capvisor_ipc::cap::{Cap, Frame, ObjectKind, Slot};
    use capvisor_ipc::protocol::Generation;
    use capvisor_ipc::protocols::s2walk;
    use capvisor_ipc::transport::{ServerTransport, TransportError};
    use capvisor_rt::ipc::LandingServer;
    use capvisor_rt::window::Window;
    use capvisor_rt::{CPtr, Rights, sys, thread};
    use svc_s2walk::recovery::{Placeholder, RevokedPages};
    use svc_s2walk::{MAX_PAGES, PAGE_SIZE, WINDOW};

    // A boot service's slots (the boot plan's layout, sdk/src/plan/layout.rs): 1 its CNode, 2 its
    // AddressSpace, 4 its own endpoint, 5 its untyped (granted after its endpoint), 64 on its
    // image, stack and IPC buffer frames. The rest are this service's choice, clear of those.
    const CNODE: CPtr = CPtr::new(1);
    const SPACE: CPtr = CPtr::new(2);
    const ENDPOINT: CPtr = CPtr::new(4);
    const UNTYPED: CPtr = CPtr::new(5);
    const WALKER_THREAD: u64 = 240;
    const FAULT_ENDPOINT: u64 = 241;
    /// The zeroed frame whose read-only copies stand in for revoked frames.
    const PLACEHOLDER: u64 = 242;
    const STACK: u64 = 243;
    const STACK_PAGES: u64 = 8;
    /// Three slots where each request's capabilities land (`LandingServer`).
    const LANDING: u64 = 252;
    /// Window page `n`'s frame (or placeholder) capability is in slot `FRAMES + n`.
    const FRAMES: u64 = 256;
    /// The walker thread's stack, below the first thread's (64 KiB under 0x40_0000_0000), with
    /// an unmapped gap between them.
    const WALKER_STACK_TOP: u64 = 0x3F_FFF0_0000;

    const _: () = assert!(STACK + STACK_PAGES <= LANDING && LANDING + 3 <= FRAMES);
    const _: () = assert!(FRAMES + MAX_PAGES as u64 <= 512, "a boot service's CNode");

    /// The window pages whose frame was revoked, shared by both threads.
    pub static REVOKED: RevokedPages = RevokedPages::new();

    /// Makes the fault endpoint, the placeholder page and the walker thread, which starts
    /// serving at once.
    pub fn start() -> Result<(), (&'static str, KernelError)> {
        let code = |kind: ObjectKind| u64::from(kind.code());
        // Slot 5 holds untyped or nothing (the manifest grants this service no endpoints, which
        // `Identify` would call).
        let [kind, ..] = sys::invoke(UNTYPED, Invocation::Identify.code(), &[]).map_err(|e| {
            (
                "no untyped in slot 5 (give it caps = [{ untyped = \"64K\" }])",
                e,
            )
        })?;
        if kind != code(ObjectKind::Untyped) {
            return Err(("slot 5 is not untyped", KernelError::WrongType));
        }
        let retype = |kind, bits, slot| sys::retype(UNTYPED, kind, bits, CPtr::NULL, slot, 1);
        retype(code(ObjectKind::Endpoint), 0, FAULT_ENDPOINT)
            .map_err(|e| ("the fault endpoint", e))?;
        retype(code(ObjectKind::Frame), 12, PLACEHOLDER).map_err(|e| ("the placeholder", e))?;
        let spec = thread::Spec {
            cnode: CNODE,
            space: SPACE,
            untyped: UNTYPED,
            thread_slot: WALKER_THREAD,
            stack_slots: STACK,
            stack_top: WALKER_STACK_TOP,
            stack_pages: STACK_PAGES,
            fault_endpoint: CPtr::new(FAULT_ENDPOINT),
            entry: walker,
        };
        thread::spawn(&spec).map_err(|e| ("the walker thread", e))?;
        Ok(())
    }

    /// The walker thread: the s2walk protocol's serve loop.
    extern "C" fn walker(_ipc_buffer: u64) -> ! {
        let mut server = LandingServer::new(Cap::from_cptr(ENDPOINT), Slot::new(LANDING));
        let mut walker = svc_s2walk::Walker::new(Kernel);
        let error = thread::block_on(s2walk::serve(&mut server, &mut walker, Generation::new(1)));
        capvisor_rt::println!("s2walk: the walker's serve loop ended: {error:?}");
        capvisor_rt::stop()
    }

    fn page(index: usize) -> u64 {
        WINDOW + index as u64 * PAGE_SIZE
    }

    fn slot(index: usize) -> u64 {
        FRAMES + index as u64
    }

    /// The kernel, as both threads reach it.
    pub struct Kernel;

    impl svc_s2walk::Platform for Kernel {
        fn map(&mut self, frame: Cap<Frame>, index: usize) -> Result<(), KernelError> {
            let args = [slot(index), frame.cptr().raw()];
            sys::invoke(CNODE, Invocation::Move.code(), &args)?;
            // Read only (R = 1), Normal write-back (0): the walker never writes guest memory.
            let mapped = sys::map(CPtr::new(slot(index)), SPACE, page(index), 1, 0);
            if mapped.is_err() {
                let _ = sys::delete(CNODE, slot(index));
            }
            mapped
        }

        fn read(&self, index: usize, offset: usize) -> Option<u64> {
            // `Walker` reads only window pages that `map` mapped (it records a page after the
            // kernel accepted the mapping), at an 8-byte aligned offset inside the page (an
            // offset outside it would read as gone). The lender may change the words
            // concurrently: the window's volatile read of an aligned word gives one value or
            // another, and the walk validates whatever it reads. The lender may also revoke the
            // frame, which unmaps the page: the read then faults, the first thread maps a
            // placeholder there (`recovery`) and the read is made again.
            let window = Window::new(page(index), PAGE_SIZE).ok()?;
            let value = window.read_u64(offset as u64).ok()?;
            // The mark is checked after the read: a read that faulted and was resumed sees the
            // mark the recovery set before resuming it.
            fence(Ordering::SeqCst);
            (!REVOKED.is_marked(index)).then_some(value)
        }

        fn gone(&self, index: usize) -> bool {
            REVOKED.is_marked(index)
                || matches!(
                    sys::invoke(CPtr::new(slot(index)), Invocation::Identify.code(), &[]),
                    Err(KernelError::EmptySlot)
                )
        }

        fn forget(&mut self, index: usize) {
            // The placeholder's mapping, if the recovery put one there; the frame's went with it.
            let _ = sys::unmap(CPtr::new(slot(index)));
            let _ = sys::delete(CNODE, slot(index));
            REVOKED.clear(index);
        }
    }

    impl Placeholder for Kernel {
        fn place(&mut self, index: usize) -> Result<(), KernelError> {
            sys::copy(CNODE, slot(index), CPtr::new(PLACEHOLDER), Rights::READ)?;
            let mapped = sys::map(CPtr::new(slot(index)), SPACE, page(index), 1, 0);
            if mapped.is_err() {
                let _ = sys::delete(CNODE, slot(index));
            }
            mapped
        }
    }

    /// The first thread's side of the fault endpoint. It shares the service's IPC buffer with
    /// the walker thread (`capvisor_rt::thread`): it runs only while the walker is stopped on a
    /// fault, and it never writes the buffer's `receive_slot`, which names the walker's landing
    /// slots. Fault messages carry no capabilities; its replies fit in the message registers.
    pub struct FaultEndpoint;

    fn arrived(message: &sys::Message, buffer: &mut IpcBuffer) -> MessageInfo {
        let info = message.info;
        buffer.tag = info.raw();
        buffer.badge = message.badge;
        buffer.msg[..MSG_REGS_IN_CPU].copy_from_slice(&message.words);
        let used = info.length().div_ceil(8);
        if used > MSG_REGS_IN_CPU {
            sys::with_ipc_buffer(|thread| {
                buffer.msg[MSG_REGS_IN_CPU..used]
                    .copy_from_slice(&thread.msg[MSG_REGS_IN_CPU..used]);
            });
        }
        info
    }

    impl ServerTransport for FaultEndpoint {
        async fn recv(&mut self, buffer: &mut IpcBuffer) -> Result<MessageInfo, TransportError> {
            let message = sys::recv(CPtr::new(FAULT_ENDPOINT))?;
            Ok(arrived(&message, buffer))
        }

        async fn reply_recv(
            &mut self,
            reply: MessageInfo,
            buffer: &mut IpcBuffer,
        ) -> Result<MessageInfo, TransportError> {
            if reply.length() > MSG_REGS_IN_CPU * 8 || reply.extra_caps() > 0 {
                return Err(KernelError::InvalidArgument.into());
            }
            let words = [buffer.msg[0], buffer.msg[1], buffer.msg[2], buffer.msg[3]];
            let message = sys::reply_recv(CPtr::new(FAULT_ENDPOINT), reply, words)?;
            Ok(arrived(&message, buffer))
        }
    }
}

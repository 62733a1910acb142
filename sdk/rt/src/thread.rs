//! A second thread in a service's address space, for a service that must handle the faults of
//! the thread that does its work (seL4's pattern: a fault handler is a thread with an endpoint,
//! and the faulting thread's fault endpoint names it).
//!
//! The kernel starts a thread with x0 = its IPC buffer's address and SP = its stack (`docs/
//! architecture.md`, "EL0 services"); [`spawn`] makes one from an untyped of the service's own:
//! the thread object and its stack frames are paid from that untyped, the stack is mapped at the
//! address given, and the thread runs `entry` at the highest priority this thread may give (its
//! own maximum priority, which for a boot service is its manifest priority).
//!
//! **The IPC buffer is shared.** The runtime keeps one IPC buffer address per service, so the new
//! thread uses the creator's buffer. That is sound only for threads that are never both in the
//! middle of IPC: a fault handler and the one thread it serves, where the handler does IPC only
//! while the served thread is stopped on a fault (outside any syscall: the transports never hold
//! the thread's buffer across one), and the served thread does IPC only while the handler waits
//! in `Recv`. The handler's receive must then leave the buffer's `receive_slot` alone (it gets no
//! capabilities), since the served thread's pending receive names its slot there. Two threads
//! that can both be in the middle of IPC at once need buffers of their own, which the runtime
//! does not offer yet.

use core::future::Future;
use core::pin::pin;
use core::task::{Context, Poll, Waker};

use capvisor_ipc::abi::{Invocation, KernelError};
use capvisor_ipc::cap::{CPtr, Cap, ObjectKind, Rights, Thread};
use capvisor_ipc::memory::MemoryType;

use crate::sys;

/// A thread's entry: it receives its IPC buffer's address and never returns.
pub type Entry = extern "C" fn(ipc_buffer: u64) -> !;

/// A 4 KiB page.
const PAGE: u64 = 4096;

/// What [`spawn`] makes and where it puts it (slots are in the service's own CNode).
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// The service's own CNode (slot 1 for every boot service).
    pub cnode: CPtr,
    /// The service's own AddressSpace (slot 2).
    pub space: CPtr,
    /// The untyped that pays for the thread and its stack.
    pub untyped: CPtr,
    /// An empty slot for the thread capability.
    pub thread_slot: u64,
    /// The first of `stack_pages` empty slots for the stack's frames.
    pub stack_slots: u64,
    /// The address just above the stack (page aligned); the pages below it must be unmapped.
    pub stack_top: u64,
    /// Stack pages (4 KiB each).
    pub stack_pages: u64,
    /// The endpoint the thread's faults go to (`CPtr::NULL`: none, a fault stops it).
    pub fault_endpoint: CPtr,
    /// Where it starts.
    pub entry: Entry,
}

/// Makes, configures and starts the thread `spec` describes; returns its capability.
///
/// # Errors
/// The first invocation the kernel refused (`NotEnoughMemory` when the untyped is too small,
/// `SlotOccupied`, `InvalidSlot`, …); what was made before it stays in its slots.
pub fn spawn(spec: &Spec) -> Result<Cap<Thread>, KernelError> {
    let thread = CPtr::new(spec.thread_slot);
    let kind = |kind: ObjectKind| u64::from(kind.code());
    sys::retype(
        spec.untyped,
        kind(ObjectKind::Thread),
        0,
        CPtr::NULL,
        spec.thread_slot,
        1,
    )?;
    sys::retype(
        spec.untyped,
        kind(ObjectKind::Frame),
        12,
        CPtr::NULL,
        spec.stack_slots,
        spec.stack_pages,
    )?;
    let bottom = spec.stack_top - spec.stack_pages * PAGE;
    for page in 0..spec.stack_pages {
        let frame = CPtr::new(spec.stack_slots + page);
        let (access, memtype) = (
            Rights::READ_WRITE.word(),
            MemoryType::NormalWriteBack.code(),
        );
        sys::map(frame, spec.space, bottom + page * PAGE, access, memtype)?;
    }
    configure_at_own_priority(thread, spec)?;
    sys::invoke(thread, Invocation::Resume.code(), &[])?;
    Ok(Cap::from_cptr(thread))
}

/// `ThreadConfigure` at the highest priority the kernel accepts from this thread: its maximum
/// priority (seL4's MCP), which no syscall reports. The kernel checks priorities before anything
/// else it could refuse and answers `RangeError` only for them, changing nothing, so a binary
/// search finds it in eight attempts.
fn configure_at_own_priority(thread: CPtr, spec: &Spec) -> Result<(), KernelError> {
    let configure = |priority: u64| {
        let args = [
            spec.entry as usize as u64,
            spec.stack_top,
            crate::ipc_buffer(),
            priority | priority << 8,
            spec.cnode.raw(),
            spec.space.raw(),
            spec.fault_endpoint.raw(),
        ];
        sys::invoke(thread, Invocation::ThreadConfigure.code(), &args).map(|_| ())
    };
    // Invariant: every priority below `low` is accepted (0 always is), none at or above `high`.
    let (mut low, mut high) = (1u64, 256u64);
    while low < high {
        let middle = (low + high) / 2;
        match configure(middle) {
            Ok(()) => low = middle + 1,
            Err(KernelError::RangeError) => high = middle,
            Err(error) => return Err(error),
        }
    }
    configure(low - 1)
}

/// Runs `future` to completion on this thread, without an executor: for a second thread, whose
/// futures (the `protocol!` serve loops over the EL0 transport) complete on their first poll,
/// since every transport operation blocks the thread in the kernel. A future that is pending is
/// polled again after a `Yield`. (The service's first thread runs `service_async!`'s executor;
/// its state is not shared with other threads, so they must not spawn tasks on it.)
pub fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut context = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        crate::yield_now();
    }
}

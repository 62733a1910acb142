//! The async runtime of EL0 services: `embassy-executor`'s raw executor, no heap, driving the
//! service's main future (see `service_async!` and `docs/ipc.md`, "The EL0 transport and
//! executor").
//!
//! What it is, honestly: a service is one EL0 thread. A future that makes a blocking syscall
//! (`call`, `recv`, `wait`, …) blocks that whole thread in the kernel, and with it every task of
//! this executor, until the kernel wakes it. The executor does not make the kernel asynchronous;
//! it gives a service structured `async` code (the `protocol!` clients and `serve` loops are
//! `async`, and run unchanged under the hosted transport on the host) and lets several tasks of
//! one service interleave at their `.await` points ([`yield_task`], `embassy-sync` channels).
//!
//! Nothing outside this thread can wake a task: EL0 has no interrupts, and no other thread shares
//! this address space. So when every task is pending and none woke another, nothing ever will:
//! [`run`] reports the deadlock on the console and stops the service instead of spinning.

use core::cell::Cell;
use core::future::Future;
use core::pin::Pin;
use core::sync::atomic::{AtomicBool, Ordering};
use core::task::{Context, Poll};

use embassy_executor::raw::{Executor, TaskStorage};
pub use embassy_executor::{SpawnError, SpawnToken, Spawner};

/// `embassy-executor` itself, for the `task` attribute's `embassy_executor = …` argument, so a
/// service declares more tasks without depending on it directly:
/// `#[capvisor_rt::executor::task(embassy_executor = capvisor_rt::executor::embassy)]`.
pub use embassy_executor as embassy;
/// Declares a task function (a static pool of its futures; see `embassy_executor::task`).
pub use embassy_executor::task;

/// Set by the pender when a task was woken (by another task of this executor, or by itself).
static WOKEN: AtomicBool = AtomicBool::new(false);

/// The spawner of the running executor, for services that start more tasks.
struct SpawnerCell(Cell<Option<Spawner>>);

// SAFETY: a service is one thread with no interrupt handlers at EL0; the cell is only touched
// by that thread.
unsafe impl Sync for SpawnerCell {}

static SPAWNER: SpawnerCell = SpawnerCell(Cell::new(None));

/// embassy's hook "the executor has work": remember it for the loop in [`run`].
#[unsafe(export_name = "__pender")]
fn pender(_context: *mut ()) {
    WOKEN.store(true, Ordering::Release);
}

/// `critical-section` for one EL0 thread: there is nothing to exclude. EL0 takes no interrupts
/// (the kernel's timer preempts the thread but runs nothing of it meanwhile) and no other thread
/// runs in this address space, so a section is already exclusive and the restore state is `()`.
struct SingleThread;
critical_section::set_impl!(SingleThread);

// SAFETY: see `SingleThread`: on one EL0 thread without interrupt handlers, nothing can run
// between acquire and release other than the section's own code, so no exclusion is needed.
unsafe impl critical_section::Impl for SingleThread {
    unsafe fn acquire() {}
    unsafe fn release(_restore: ()) {}
}

/// The spawner of the running executor, to start more tasks ([`task`] functions).
///
/// # Panics
/// When called outside [`run`] (no executor is running).
#[must_use]
pub fn spawner() -> Spawner {
    SPAWNER
        .0
        .get()
        .expect("capvisor_rt::executor::spawner called outside the executor")
}

/// The service's main future: ends the service with its result when it completes.
struct Main<F>(F);

impl<F: Future<Output = u64>> Future for Main<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // SAFETY: a structural pin projection: `Main` never moves its field out and has no
        // `Drop` or `Unpin` impl of its own.
        let inner = unsafe { self.map_unchecked_mut(|main| &mut main.0) };
        match inner.poll(cx) {
            Poll::Ready(status) => crate::exit(status),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Runs `main` as the executor's first task until it returns, then ends the service with its
/// result as the exit status (as `service!`'s entry function would). Other tasks still pending
/// then end with it.
pub fn run<F>(main: F) -> !
where
    F: Future<Output = u64> + 'static,
{
    let executor = Executor::new(core::ptr::null_mut());
    // The task holds `main` once (an `async` block awaiting it would keep a second copy of it in
    // its own state), so a large service future fits the 64 KiB stack.
    let task = TaskStorage::<Main<F>>::new();
    // SAFETY: this function never returns (`-> !`) and panics abort (the runtime's panic handler
    // stops the thread), so both locals live exactly as long as the service: treating them as
    // `'static` is true. Nothing else refers to them before this point.
    let (executor, task): (&'static Executor, &'static TaskStorage<_>) = unsafe {
        (
            &*core::ptr::from_ref(&executor),
            &*core::ptr::from_ref(&task),
        )
    };
    let spawner = executor.spawner();
    SPAWNER.0.set(Some(spawner));
    match task.spawn(|| Main(main)) {
        Ok(token) => spawner.spawn(token),
        Err(_) => crate::exit(u64::MAX),
    }
    loop {
        WOKEN.store(false, Ordering::Release);
        // SAFETY: `poll` is never re-entered: the pender only sets a flag, and this loop is the
        // only caller.
        unsafe { executor.poll() };
        if !WOKEN.load(Ordering::Acquire) {
            crate::debug_write("executor: every task waits and nothing can wake one\n");
            crate::stop();
        }
    }
}

/// Lets the executor's other ready tasks run before this one goes on (a cooperative yield
/// between tasks; `capvisor_rt::yield_now` is the syscall that yields the CPU to other threads).
pub async fn yield_task() {
    YieldTask(false).await;
}

struct YieldTask(bool);

impl Future for YieldTask {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

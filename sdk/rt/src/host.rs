//! Host stand-ins for the system calls, so service crates build and unit-test on x86_64.

/// Writes `text` to standard output.
pub fn debug_write(text: &str) {
    print!("{text}");
}

/// Exits the process with `status`.
pub fn debug_halt(status: u64) -> ! {
    std::process::exit(status as i32)
}

/// Yields the processor.
pub fn yield_now() {
    std::thread::yield_now();
}

/// Nanoseconds since the first call (the host has no instruction counter).
pub fn counter() -> u64 {
    use std::sync::OnceLock;
    static START: OnceLock<std::time::Instant> = OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_nanos() as u64
}

/// The counter when this process started: 0 ([`counter`] counts from its first call).
pub fn started_at() -> u64 {
    0
}

/// The host counter's frequency: [`counter`] counts nanoseconds.
pub fn counter_frequency() -> u64 {
    1_000_000_000
}

/// Runs `future` to completion on this thread (the host build of `service_async!`: a service's
/// async entry runs as an ordinary program, without the EL0 executor).
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};

    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }

    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut context = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        match future.as_mut().poll(&mut context) {
            Poll::Ready(output) => return output,
            Poll::Pending => std::thread::park(),
        }
    }
}

std::thread_local! {
    /// The host stand-in for the read-only region the kernel maps at `BOOT_INFO`.
    static BOOT_REGION: std::cell::Cell<&'static [u8]> = const { std::cell::Cell::new(&[]) };
}

/// Makes `bytes` this thread's boot-info region (byte 0 at `BOOT_INFO`), for tests of code that
/// reads payloads with [`boot_payload`].
pub fn set_boot_region(bytes: Vec<u8>) {
    BOOT_REGION.set(Vec::leak(bytes));
}

/// The bytes of a payload in this thread's boot-info region ([`set_boot_region`]); empty for
/// none, or one that does not lie inside it.
#[must_use]
pub fn boot_payload(payload: capvisor_ipc::bootinfo::Payload) -> &'static [u8] {
    let region = BOOT_REGION.get();
    usize::try_from(payload.offset)
        .ok()
        .zip(usize::try_from(payload.size).ok())
        .and_then(|(offset, size)| region.get(offset..offset.checked_add(size)?))
        .unwrap_or(&[])
}

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

/// The host counter's frequency: [`counter`] counts nanoseconds.
pub fn counter_frequency() -> u64 {
    1_000_000_000
}

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

//! The kernel console: a PL011 UART found in the device tree, behind a spin lock.
//!
//! Lock order: the console lock is a leaf; nothing is locked while it is held.

use arm_pl011_uart::{PL011Registers, Uart};
use core::fmt::{self, Write};
use core::ptr::NonNull;
use safe_mmio::UniqueMmioPointer;
use spin::Mutex;

/// QEMU `virt`'s first PL011, used only when the device tree names none (documented in
/// `docs/architecture.md`).
pub const FALLBACK_UART: usize = 0x0900_0000;

static CONSOLE: Mutex<Option<Uart<'static>>> = Mutex::new(None);

/// Starts the console on the PL011 at `base`.
///
/// # Safety
///
/// `base` must be the address of a PL011's registers, mapped as Device memory, used by nothing
/// else for as long as the kernel runs.
pub unsafe fn init(base: usize) {
    let regs = NonNull::new(base as *mut PL011Registers).expect("UART base is not null");
    // SAFETY: the caller promises these are a PL011's registers, mapped, and exclusively ours.
    let uart = Uart::new(unsafe { UniqueMmioPointer::new(regs) });
    *CONSOLE.lock() = Some(uart);
}

/// Prints under the console lock.
pub fn print(args: fmt::Arguments<'_>) {
    if let Some(uart) = CONSOLE.lock().as_mut() {
        let _ = uart.write_fmt(args);
    }
}

/// Prints even if the lock is held, for fatal paths (a fault or panic while printing must not
/// deadlock the report of it).
pub fn print_raw(args: fmt::Arguments<'_>) {
    if CONSOLE.is_locked() {
        // SAFETY: only on the way to stopping the machine; at worst two CPUs' output interleaves.
        unsafe { CONSOLE.force_unlock() };
    }
    print(args);
}

/// Prints a line to the console.
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {
        $crate::console::print(format_args!("{}\n", format_args!($($arg)*)))
    };
}

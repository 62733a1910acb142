//! The kernel console: a PL011 UART found in the device tree, behind a spin lock, shared by the
//! kernel's messages and the services' `DebugWrite` output.
//!
//! No service can forge another's lines or the kernel's: every line a service writes begins with
//! its `[name] ` prefix, and the console remembers whose line is open (a service's partial line,
//! or the kernel's), so another writer first ends it with a newline — a continuation then gets
//! its prefix again. A service's control characters other than newline and tab (and invalid
//! UTF-8) are shown escaped as `\xNN`, so it cannot move the cursor, erase a line or ring the
//! terminal.
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

/// Who wrote the line the console has open (no newline yet).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Writer {
    /// The kernel itself.
    Kernel,
    /// A service thread.
    Thread(capvisor_kernel::object::ThreadRef),
}

/// The UART and the writer of the open line.
struct Console {
    uart: Uart<'static>,
    open: Option<Writer>,
}

impl Console {
    /// Ends another writer's open line, so `writer`'s output starts on a line of its own;
    /// returns whether `writer`'s own line is open (no prefix needed).
    fn claim(&mut self, writer: Writer) -> bool {
        match self.open {
            Some(open) if open == writer => true,
            Some(_) => {
                let _ = self.uart.write_str("\n");
                self.open = None;
                false
            }
            None => false,
        }
    }
}

/// Counts the last byte a formatter wrote (whether a line was ended).
struct Tracking<'a> {
    uart: &'a mut Uart<'static>,
    last: Option<u8>,
}

impl Write for Tracking<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if let Some(&byte) = s.as_bytes().last() {
            self.last = Some(byte);
        }
        self.uart.write_str(s)
    }
}

static CONSOLE: Mutex<Option<Console>> = Mutex::new(None);

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
    *CONSOLE.lock() = Some(Console { uart, open: None });
}

/// Prints a kernel message under the console lock (after ending a service's open line).
pub fn print(args: fmt::Arguments<'_>) {
    if let Some(console) = CONSOLE.lock().as_mut() {
        console.claim(Writer::Kernel);
        let mut out = Tracking {
            uart: &mut console.uart,
            last: None,
        };
        let _ = out.write_fmt(args);
        if let Some(last) = out.last {
            console.open = (last != b'\n').then_some(Writer::Kernel);
        }
    }
}

/// Prints `bytes` a service thread wrote (`DebugWrite`), each of its lines prefixed `[name] `
/// (`name` is the service's name or `thread N`), control characters escaped (module doc).
pub fn print_service(
    thread: capvisor_kernel::object::ThreadRef,
    name: &dyn fmt::Display,
    bytes: &[u8],
) {
    let mut guard = CONSOLE.lock();
    let Some(console) = guard.as_mut() else {
        return;
    };
    let writer = Writer::Thread(thread);
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        if !console.claim(writer) {
            let _ = write!(console.uart, "[{name}] ");
        }
        write_escaped(&mut console.uart, line);
        console.open = (line.last() != Some(&b'\n')).then_some(writer);
    }
}

/// Writes `bytes` with every control character but newline and tab, and every byte that is not
/// UTF-8, as `\xNN` (C1 controls and DEL included).
fn write_escaped(out: &mut impl Write, bytes: &[u8]) {
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            let control = c.is_control() && c != '\n' && c != '\t';
            let _ = if control {
                write!(out, "\\x{:02x}", u32::from(c))
            } else {
                out.write_char(c)
            };
        }
        for byte in chunk.invalid() {
            let _ = write!(out, "\\x{byte:02x}");
        }
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

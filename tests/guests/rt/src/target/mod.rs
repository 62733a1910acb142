//! The bare-metal half of the guest runtime: entry, exceptions, console, PSCI, counter, caches
//! and the stage-1 MMU. All of the runtime's assembly and system-register access is here.

mod cache;
pub mod el0;
mod mmu;
pub mod probe;

pub use cache::{clean_invalidate_to_poc, invalidate_to_poc, sync_instructions};
pub use mmu::{disable_mmu, enable_mmu, image_range};

use crate::Outcome;
use crate::contract::{BOOT_COUNT_OFFSET, CONSOLE_ADDRESS, TEXT_OFFSET, psci};
use core::arch::{asm, global_asm};
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicUsize, Ordering};

global_asm!(include_str!("entry.s"));

unsafe extern "Rust" {
    safe fn __capvisor_guest_main() -> Outcome;
    safe fn __capvisor_guest_name() -> &'static str;
}

/// The guest's name, as its result lines print it.
#[must_use]
pub fn name() -> &'static str {
    __capvisor_guest_name()
}

/// The console: each byte is one `strb` to [`CONSOLE_ADDRESS`], a single-register store, so a
/// hypervisor trapping it gets a syndrome with ISV = 1.
#[derive(Clone, Copy, Debug)]
pub struct Console;

impl Console {
    /// Prints one byte.
    pub fn put(byte: u8) {
        // SAFETY: the console address is the emulated UART's data register (or QEMU's PL011),
        // device memory outside every Rust object; a byte store has no other effect.
        unsafe {
            asm!("strb {b:w}, [{a}]", b = in(reg) byte, a = in(reg) CONSOLE_ADDRESS, options(nostack));
        }
    }
}

impl Write for Console {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        text.bytes().for_each(Self::put);
        Ok(())
    }
}

#[doc(hidden)]
pub fn _print(args: fmt::Arguments<'_>) {
    let _ = Console.write_fmt(args);
}

/// Prints a line prefixed `guest <name>: ` to the console.
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {
        $crate::_print(format_args!("guest {}: {}\n", $crate::name(), format_args!($($arg)*)))
    };
}

/// A PSCI call by `hvc #0` (SMCCC 1.1, DEN0028, "Register use in AArch64 SMC and HVC calls"),
/// returning x0.
pub fn psci_call(function: u32, arg1: u64, arg2: u64, arg3: u64) -> u64 {
    let mut result = u64::from(function);
    // SAFETY: the call changes no guest memory; x0–x3 carry arguments and results and x4–x17,
    // which SMCCC 1.1 preserves, are marked clobbered anyway in case a VMM does not.
    unsafe {
        asm!("hvc #0",
            inout("x0") result, inout("x1") arg1 => _, inout("x2") arg2 => _,
            inout("x3") arg3 => _, out("x4") _, out("x5") _, out("x6") _, out("x7") _,
            out("x8") _, out("x9") _, out("x10") _, out("x11") _, out("x12") _, out("x13") _,
            out("x14") _, out("x15") _, out("x16") _, out("x17") _, options(nostack));
    }
    result
}

/// PSCI `SYSTEM_OFF`; if it returns, the guest waits for interrupts forever.
pub fn system_off() -> ! {
    psci_call(psci::SYSTEM_OFF, 0, 0, 0);
    halt()
}

/// PSCI `SYSTEM_RESET`.
pub fn system_reset() -> ! {
    psci_call(psci::SYSTEM_RESET, 0, 0, 0);
    println!("FAIL SYSTEM_RESET returned");
    halt()
}

fn halt() -> ! {
    loop {
        // SAFETY: waiting for an interrupt has no effect on memory.
        unsafe { asm!("wfi", options(nomem, nostack)) };
    }
}

/// The virtual counter, CNTVCT_EL0, read after an ISB so earlier instructions are done.
#[must_use]
pub fn counter() -> u64 {
    let value: u64;
    // SAFETY: reads a register accessible at EL1; no memory effects.
    unsafe { asm!("isb", "mrs {v}, cntvct_el0", v = out(reg) value, options(nomem, nostack)) };
    value
}

/// Where guest RAM starts: the image runs at RAM base + `text_offset` (the guest contract), so
/// this is [`contract::RAM_BASE`](crate::contract::RAM_BASE) unless RAM is mapped at IPA = PA.
#[must_use]
pub fn ram_base() -> u64 {
    image_range().0 - TEXT_OFFSET
}

/// The boot count the VMM wrote before this start (0 without a VMM).
#[must_use]
pub fn boot_count() -> u64 {
    // SAFETY: the boot count lies in guest RAM below the image, which no Rust object uses; the
    // contract reserves it for the VMM.
    unsafe { read64(ram_base() + BOOT_COUNT_OFFSET) }
}

/// Reads the `u64` at guest address `address` with one volatile load.
///
/// # Safety
/// `address` must be 8-byte aligned, readable, and not memory a Rust object owns mutably.
#[must_use]
pub unsafe fn read64(address: u64) -> u64 {
    // SAFETY: the caller's conditions.
    unsafe { core::ptr::read_volatile(address as *const u64) }
}

/// Writes the `u64` at guest address `address` with one volatile store.
///
/// # Safety
/// `address` must be 8-byte aligned, writable, and not memory any Rust object uses.
pub unsafe fn write64(address: u64, value: u64) {
    // SAFETY: the caller's conditions.
    unsafe { core::ptr::write_volatile(address as *mut u64, value) }
}

/// The registers an exception interrupted, as the vector code saved them.
#[derive(Debug)]
#[repr(C)]
pub struct ExceptionFrame {
    /// x0 to x30.
    pub x: [u64; 31],
    /// ELR_EL1: where execution resumes.
    pub elr: u64,
    /// SPSR_EL1.
    pub spsr: u64,
    padding: u64,
}

const _: () = assert!(size_of::<ExceptionFrame>() == 272);

/// What a synchronous exception reported.
#[derive(Clone, Copy, Debug)]
pub struct Fault {
    /// ESR_EL1.
    pub esr: u64,
    /// FAR_EL1.
    pub far: u64,
}

/// A synchronous-exception handler: returns whether it handled the exception (and set `elr`
/// where to resume).
pub type Hook = fn(&Fault, &mut ExceptionFrame) -> bool;

static HOOK: AtomicUsize = AtomicUsize::new(0);

/// An IRQ handler: acknowledges and ends the interrupt itself (the guest's GIC CPU interface).
pub type IrqHook = fn(&mut ExceptionFrame);

static IRQ_HOOK: AtomicUsize = AtomicUsize::new(0);

/// Installs `hook` for synchronous exceptions from EL1 (vector "current EL with SPx").
pub fn set_sync_hook(hook: Hook) {
    HOOK.store(hook as usize, Ordering::Release);
}

/// Installs `hook` for IRQs taken at EL1 (vector "current EL with SPx", and from EL0 during an
/// [`el0::run`] trip).
pub fn set_irq_hook(hook: IrqHook) {
    IRQ_HOOK.store(hook as usize, Ordering::Release);
}

/// A handler for any exception: called first with the vector entry (0–15, the offset from
/// VBAR_EL1 divided by 0x80), returns whether it handled it (and set `elr` where to resume).
pub type VectorHook = fn(u64, &Fault, &mut ExceptionFrame) -> bool;

static VECTOR_HOOK: AtomicUsize = AtomicUsize::new(0);

/// Installs `hook` for every exception, before probes, EL0 trips and the other hooks; `None`
/// removes it.
pub fn set_vector_hook(hook: Option<VectorHook>) {
    VECTOR_HOOK.store(hook.map_or(0, |h| h as usize), Ordering::Release);
}

/// The vector entries of a synchronous exception and of an IRQ from the current EL using
/// SP_EL1, and of an IRQ from EL0 (AArch64, AArch32).
const SYNC_CURRENT_SPX: u64 = 4;
const IRQ_CURRENT_SPX: u64 = 5;
const IRQ_LOWER_A64: u64 = 9;
const IRQ_LOWER_A32: u64 = 13;
/// The first vector entry of exceptions from a lower EL (VBAR_EL1 + 0x400).
const FIRST_LOWER: u64 = 8;

#[unsafe(no_mangle)]
extern "C" fn __capvisor_guest_exception(frame: &mut ExceptionFrame, entry: u64) {
    let (esr, far): (u64, u64);
    // SAFETY: reads EL1 syndrome registers; no memory effects.
    unsafe {
        asm!("mrs {e}, esr_el1", "mrs {f}, far_el1", e = out(reg) esr, f = out(reg) far,
            options(nomem, nostack));
    }
    let fault = Fault { esr, far };
    let vector_hook = VECTOR_HOOK.load(Ordering::Acquire);
    if vector_hook != 0 {
        // SAFETY: VECTOR_HOOK only ever holds 0 or a `VectorHook` stored by `set_vector_hook`.
        let hook: VectorHook = unsafe { core::mem::transmute::<usize, VectorHook>(vector_hook) };
        if hook(entry, &fault, frame) {
            return;
        }
    }
    if entry == SYNC_CURRENT_SPX && probe::catch(entry, esr, far, &mut frame.elr) {
        return;
    }
    let irq_hook = IRQ_HOOK.load(Ordering::Acquire);
    let irq = matches!(entry, IRQ_CURRENT_SPX | IRQ_LOWER_A64 | IRQ_LOWER_A32);
    if entry >= FIRST_LOWER && !(irq && irq_hook != 0) && el0::end(entry, esr, far, frame) {
        return;
    }
    if irq && irq_hook != 0 {
        // SAFETY: IRQ_HOOK only ever holds 0 or an `IrqHook` stored by `set_irq_hook`.
        let hook: IrqHook = unsafe { core::mem::transmute::<usize, IrqHook>(irq_hook) };
        hook(frame);
        return;
    }
    let hook = HOOK.load(Ordering::Acquire);
    if entry == SYNC_CURRENT_SPX && hook != 0 {
        // SAFETY: HOOK only ever holds 0 or a `Hook` stored by `set_sync_hook`.
        let hook: Hook = unsafe { core::mem::transmute::<usize, Hook>(hook) };
        if hook(&fault, frame) {
            return;
        }
    }
    println!(
        "FAIL unexpected exception: vector {entry} ESR_EL1={esr:#x} FAR_EL1={far:#x} ELR_EL1={:#x}",
        frame.elr
    );
    system_off()
}

/// The kernel command line the VMM gave the guest (the manifest's `cmdline`, in
/// `/chosen/bootargs` of its device tree), copied into `buffer` and cut at its length; empty
/// without a device tree or the property (bare QEMU). Read one byte at a time, so it works with
/// the MMU off.
pub fn bootargs(buffer: &mut [u8]) -> &str {
    let base = device_tree();
    if base == 0 {
        return "";
    }
    // SAFETY: the device tree lies in guest RAM (the guest contract); only bytes below its
    // header's size (at most 2 MiB) are read, with byte loads, which are never unaligned.
    let byte = |at: usize| unsafe { core::ptr::read_volatile((base as usize + at) as *const u8) };
    let Some((at, len)) = crate::fdt::chosen_bootargs(byte) else {
        return "";
    };
    let len = len.min(buffer.len());
    for (i, slot) in buffer.iter_mut().take(len).enumerate() {
        *slot = byte(at + i);
    }
    core::str::from_utf8(&buffer[..len]).unwrap_or("")
}

/// The device tree's IPA the guest was started with (x0 at entry).
static DEVICE_TREE: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// The IPA of the device tree the VMM gave the guest (`x0` at entry; the guest contract).
#[must_use]
pub fn device_tree() -> u64 {
    DEVICE_TREE.load(core::sync::atomic::Ordering::Relaxed)
}

#[unsafe(no_mangle)]
extern "C" fn __capvisor_guest_rust_start(device_tree: u64) -> ! {
    DEVICE_TREE.store(device_tree, core::sync::atomic::Ordering::Relaxed);
    match __capvisor_guest_main() {
        Outcome::Pass => println!("PASS"),
        Outcome::Fail(reason) => println!("FAIL {reason}"),
        Outcome::Skip(reason) => println!("SKIP {reason}"),
    }
    system_off()
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    match info.location() {
        Some(at) => println!(
            "FAIL panic at {}:{}: {}",
            at.file(),
            at.line(),
            info.message()
        ),
        None => println!("FAIL panic: {}", info.message()),
    }
    system_off()
}

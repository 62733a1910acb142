//! The bare-metal runtime: entry, system calls, panic handler.

use core::arch::{asm, global_asm};

use capvisor_ipc::abi::{GlueSyscall, Syscall};

/// Syscall numbers, from the one table (`abi::Syscall`, `abi::GlueSyscall`).
const SYS_YIELD: u64 = Syscall::Yield.code();
const SYS_DEBUG_WRITE: u64 = GlueSyscall::DebugWrite.code();
const SYS_DEBUG_HALT: u64 = GlueSyscall::DebugHalt.code();

global_asm!(
    r#"
    .section .text.start, "ax"
    .global _start
_start:
    /* x0 = IPC buffer address, SP = stack top (set by the kernel). The counter first: see
       `started_at`. */
    mrs     x1, cntvct_el0
    mov     x29, xzr
    mov     x30, xzr
    bl      __capvisor_rt_start
    udf     #0
"#
);

unsafe extern "Rust" {
    fn __capvisor_service_main() -> u64;
}

static mut IPC_BUFFER: u64 = 0;
static mut STARTED_AT: u64 = 0;

/// The address of this thread's IPC buffer.
pub fn ipc_buffer() -> u64 {
    // SAFETY: written once at start, before any other code runs; read-only afterwards.
    unsafe { IPC_BUFFER }
}

/// The virtual counter (CNTVCT_EL0) as this service's first instruction read it. Services run
/// with CNTVOFF_EL2 = 0, so it counts from reset: under QEMU `-icount shift=0`, scaled by
/// 10^9 / CNTFRQ, the instructions the machine ran before this service started.
pub fn started_at() -> u64 {
    // SAFETY: written once at start, before any other code runs; read-only afterwards.
    unsafe { STARTED_AT }
}

#[unsafe(no_mangle)]
extern "C" fn __capvisor_rt_start(ipc_buffer: u64, started_at: u64) -> ! {
    // SAFETY: single-threaded start-up: nothing else runs yet.
    unsafe {
        IPC_BUFFER = ipc_buffer;
        STARTED_AT = started_at;
    }
    // SAFETY: `service!` defines the function with this signature.
    let status = unsafe { __capvisor_service_main() };
    exit(status)
}

/// Ends this service with `status` (as its entry function returning it would): a non-zero
/// status is printed, then the service stops.
pub fn exit(status: u64) -> ! {
    if status != 0 {
        let mut text = [0u8; 48];
        debug_write(format_status(&mut text, status));
    }
    stop()
}

fn format_status(buf: &mut [u8; 48], status: u64) -> &str {
    let prefix = b"main returned status ";
    buf[..prefix.len()].copy_from_slice(prefix);
    let mut digits = [0u8; 20];
    let mut n = status;
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        buf[prefix.len() + i] = digits[len - 1 - i];
    }
    buf[prefix.len() + len] = b'\n';
    core::str::from_utf8(&buf[..prefix.len() + len + 1]).unwrap_or("main returned\n")
}

/// Stops this service: a deliberate undefined instruction, which the kernel reports and which
/// ends only this service.
pub fn stop() -> ! {
    loop {
        // SAFETY: UDF traps to the kernel, which stops this thread; it never returns here.
        unsafe { asm!("udf #1", options(nomem, nostack)) };
    }
}

/// Writes `text` (at most 1 KiB) to the console, prefixed with the service's name.
pub fn debug_write(text: &str) {
    // SAFETY: the kernel reads `len` bytes at `ptr` through this service's own translation and
    // writes only x7 (the status).
    unsafe {
        asm!("svc #0", inout("x0") text.as_ptr() => _, in("x1") text.len(),
             inout("x7") SYS_DEBUG_WRITE => _, options(nostack));
    }
}

/// Stops the whole system with `status` (0: success), for test images.
pub fn debug_halt(status: u64) -> ! {
    loop {
        // SAFETY: the kernel stops the machine; it does not return.
        unsafe {
            asm!("svc #0", in("x0") status, inout("x7") SYS_DEBUG_HALT => _, options(nostack));
        }
    }
}

/// Gives the rest of the time slice to the next runnable thread.
pub fn yield_now() {
    // SAFETY: like every object-model syscall, Yield returns its results in x0–x7 (all zero
    // here) and preserves every other register.
    unsafe {
        asm!("svc #0", out("x0") _, out("x1") _, out("x2") _, out("x3") _, out("x4") _,
             out("x5") _, out("x6") _, inout("x7") SYS_YIELD => _, options(nostack));
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    debug_write("panicked");
    if let Some(location) = info.location() {
        debug_write(" at ");
        debug_write(location.file());
    }
    debug_write("\n");
    stop()
}

/// The virtual counter (CNTVCT_EL0), which the kernel lets services read; under QEMU
/// `-icount shift=0` it counts instructions.
pub fn counter() -> u64 {
    let value: u64;
    // SAFETY: reading the counter has no side effects; the ISB keeps it from being read early.
    unsafe {
        asm!("isb", "mrs {}, cntvct_el0", out(reg) value, options(nomem, nostack, preserves_flags))
    };
    value
}

/// The counter's frequency (CNTFRQ_EL0), in Hz.
pub fn counter_frequency() -> u64 {
    let value: u64;
    // SAFETY: reading CNTFRQ_EL0 has no side effects.
    unsafe { asm!("mrs {}, cntfrq_el0", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// This service's boot-info page (`capvisor_ipc::bootinfo`), if the kernel gave it one: VMMs,
/// memory managers, device brokers and the supervisor get one.
#[must_use]
pub fn boot_info() -> Option<capvisor_ipc::bootinfo::BootInfo> {
    use capvisor_ipc::bootinfo::{BOOT_INFO, BootInfo};
    // Only a service the kernel gave a page may read it: an unmapped address would fault.
    // SAFETY: when the kernel maps a boot-info page, it does so read-only at BOOT_INFO before
    // the service starts and never changes it; BootInfo is at most a page (const-asserted in
    // capvisor_ipc::bootinfo). Callers are the services whose role includes one.
    let bytes =
        unsafe { core::slice::from_raw_parts(BOOT_INFO as *const u8, size_of::<BootInfo>()) };
    BootInfo::parse(bytes)
}

/// The bytes of a payload the kernel placed after this service's boot-info page (a guest's
/// command line for a VMM, the platform device tree for a device holder); empty for none.
#[must_use]
pub fn boot_payload(payload: capvisor_ipc::bootinfo::Payload) -> &'static [u8] {
    use capvisor_ipc::bootinfo::BOOT_INFO;
    if payload.size == 0 {
        return &[];
    }
    // SAFETY: a payload named by this service's boot-info page lies in the region the kernel
    // mapped read-only from BOOT_INFO for the service's lifetime (the kernel sized it for every
    // payload it placed there), and nothing writes it.
    unsafe {
        core::slice::from_raw_parts(
            (BOOT_INFO + payload.offset) as *const u8,
            payload.size as usize,
        )
    }
}

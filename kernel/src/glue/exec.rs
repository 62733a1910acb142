//! Running threads and taking their exceptions: every `svc` but the glue's debug calls goes to
//! `Kernel::handle_syscall`, timer ticks to `timer_tick`, other interrupts to `handle_irq`, and
//! any other exception to `handle_fault`; the kernel's [`Schedule`] says whether the same thread
//! goes on or `pick_next` chooses. With nothing ready the CPU idles in WFI, unless no thread can
//! ever be woken again (no interrupt delivers to a notification), which ends the system.
//!
//! The glue's syscalls, checked before the object model sees the `svc`:
//! - `DebugWrite` (12): `x1` bytes (at most 1 KiB) at `x0`, read through the thread's own
//!   stage-2 table, printed with a `[name]` prefix at each line start; `x7` = 0.
//! - `DebugHalt` (13): stops the system with status `x0` (0 success), for test images.

use super::effects::Glue;
use super::stats;
use super::vcpu;
use super::{hcr, state};
use crate::arch::aarch64::el0::{self, ThreadContext};
use crate::arch::aarch64::gic::{self, Interrupt};
use crate::exit::{self, Status};
use crate::{console, println};
use capvisor_ipc::abi::GlueSyscall;
use capvisor_ipc::protocols::fault::ServiceFault;
use capvisor_ipc::types::{Access, Esr, Ipa};
use capvisor_kernel::esr::{self, ec};
use capvisor_kernel::object::{
    FaultOutcome, IrqOutcome, Kernel, Schedule, TICK_REAP_STEPS, ThreadRef,
};
use capvisor_kernel::stage2::S2Access;
use core::fmt;

/// The most bytes one `DebugWrite` prints.
const DEBUG_WRITE_MAX: u64 = 1024;
/// `lower_common`'s vector kinds: synchronous and IRQ from a lower EL (AArch64).
const KIND_SYNC: u64 = 8;
const KIND_IRQ: u64 = 9;
const KIND_FIQ: u64 = 10;

/// A thread's name for the console: its image service's, or its index.
struct Name(Option<&'static str>, usize);

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(name) => f.write_str(name),
            None => write!(f, "thread {}", self.1),
        }
    }
}

fn name(kernel: &mut Kernel, thread: ThreadRef) -> Name {
    let name = kernel.thread_glue(thread).ok().and_then(|t| t.name);
    Name(name, thread.index())
}

/// Runs the thread the kernel picks, or idles; never returns.
pub fn schedule() -> ! {
    loop {
        let (kernel, _) = state();
        match kernel.pick_next() {
            Some(thread) => enter(thread),
            None => idle(),
        }
    }
}

/// Waits for an interrupt with nothing to run, and hands it to the kernel.
fn idle() {
    let (kernel, glue) = state();
    // Dying objects are finished while nothing else wants the CPU.
    if kernel.reaper_busy() {
        kernel.reap(TICK_REAP_STEPS, glue);
        return;
    }
    if !kernel.interrupts_deliver() {
        stats::report(kernel);
        println!("capvisor: no service left to run");
        exit::success()
    }
    // A sleeping vCPU's timer due before the next tick moves the kernel's timer earlier.
    if let Some(deadline) = kernel.next_deadline() {
        gic::fire_by(deadline);
    }
    // A pending interrupt ends the wait even with IRQs masked at EL2.
    crate::arch::aarch64::cpu::wait_for_interrupt();
    let _ = interrupt(kernel, glue);
}

/// Returns to `thread` at EL0, with the results of a syscall that completed while it waited.
fn enter(thread: ThreadRef) -> ! {
    let (kernel, glue) = state();
    let Some(entry) = kernel.entry(thread) else {
        // A thread whose space was deleted cannot run: it is stopped as if it had faulted.
        let pc = kernel.thread_glue(thread).map_or(0, |t| t.context.pc);
        fault(kernel, glue, thread, (0, 0), pc)
    };
    let vmid = glue.vmids.of(entry.space);
    let vttbr = capvisor_kernel::stage2::vttbr(entry.space.root, vmid);
    let context: *mut ThreadContext = &mut entry.thread.context;
    // A vCPU's thread enters its guest at EL1 with the vCPU's EL1 state loaded and the guest's
    // HCR_EL2; a service's returns to EL0.
    let hcr = match entry.vcpu {
        Some(vcpu) => {
            if let Some(previous) = glue.guests.loaded.filter(|p| *p != vcpu) {
                glue.guests.unload(kernel.vcpu_glue(previous).ok());
            }
            if let Ok(state) = kernel.vcpu_glue(vcpu) {
                glue.guests.load(vcpu, state);
                glue.guests.prepare_entry(vcpu, state);
            }
            guest_hcr()
        }
        None => {
            // A service thread resumes only at EL0t in AArch64 (the object model's invariant,
            // kept here too: an ERET to EL1 with HCR_EL2.TGE set is an illegal return).
            entry.thread.context.spsr &= !SPSR_MODE;
            // It runs with the services' EL1 profile, not a guest's, and shares no thread
            // register with the service that ran before it.
            glue.guests.park();
            if glue.last_service != Some(thread) {
                crate::arch::aarch64::vcpu::clear_thread_registers();
                glue.last_service = Some(thread);
            }
            hcr()
        }
    };
    // Only the glue writes HCR_EL2, and VTTBR_EL2 outside the TLB maintenance that restores it,
    // so registers that already hold the thread's values need no write (nor the ISB).
    if glue.loaded_translation != (hcr, vttbr) {
        glue.loaded_translation = (hcr, vttbr);
        // SAFETY: the thread's values (a service's VM+TGE+DC or a guest's flags; its live
        // space's tables, and a VMID of the current generation, `Vmids::of`), and the thread
        // is entered next.
        unsafe { el0::set_translation(hcr, vttbr) };
    }
    let record = el0::per_cpu();
    // SAFETY: the per-CPU record is this CPU's; HCR_EL2 and VTTBR_EL2 hold the thread's values
    // (above), and its exceptions are saved into the same context (PerCpu.current), which lives
    // in the thread object as long as the thread does (a thread is freed only by the kernel,
    // never while it runs). The context's SPSR is EL0t for a service and a mode the kernel
    // validated for a vCPU.
    unsafe {
        (*record).current = context;
        el0::enter_el0(context, (*record).stack_top)
    }
}

/// SPSR_EL2.{M[4] (nRW), M[3:0]}: the mode an ERET returns to.
const SPSR_MODE: u64 = 0x1f;

fn follow(schedule: Schedule, thread: ThreadRef) -> ! {
    match schedule {
        Schedule::Resume => enter(thread),
        Schedule::Switch => self::schedule(),
    }
}

/// Every exception from EL0 arrives here (from `lower_common`), with the thread's registers
/// already saved in its context (the glue's, which `context` points at).
#[unsafe(no_mangle)]
extern "C" fn handle_lower_exception(
    context: *const ThreadContext,
    kind: u64,
    esr: u64,
    far: u64,
    serror: u64,
) -> ! {
    let (kernel, glue) = state();
    let Some(thread) = kernel.current() else {
        schedule()
    };
    if serror != 0 {
        // An SError was pending when the thread exited: it is that thread's (its own
        // asynchronous abort); the exit itself is dropped (a pending interrupt stays pending).
        deferred_serror(kernel, glue, thread, serror)
    }
    // HCR_EL2 holds the running thread's value (`enter`): TGE is clear only under a guest.
    if glue.loaded_translation.0 & el0::HCR_TGE == 0 {
        guest_exit(kernel, glue, thread, kind, (esr, far))
    }
    if kind == KIND_SYNC && esr::class(esr) == ec::SVC64 {
        // SAFETY: `context` is `PerCpu.current`, the running thread's saved context, which
        // `lower_common` just filled; it lives in the thread object, which nothing frees while
        // the syscall is decoded (only the kernel's handling below can).
        let (x0, x1, x7) = unsafe { ((*context).x[0], (*context).x[1], (*context).x[7]) };
        syscall(kernel, glue, thread, [x0, x1, x7])
    }
    if kind == KIND_IRQ {
        follow(interrupt(kernel, glue), thread)
    }
    let pc = kernel.thread_glue(thread).map_or(0, |t| t.context.pc);
    fault(kernel, glue, thread, (esr, far), pc)
}

/// The thread that just exited had an SError pending (`lower_common` synchronised it): a
/// service is stopped as for a fault; a vCPU's goes to its VMM as an exit with the SError's
/// syndrome (ESR class 0x2F; with RAS, DISR_EL1's syndrome).
fn deferred_serror(kernel: &mut Kernel, glue: &mut Glue, thread: ThreadRef, serror: u64) -> ! {
    // DISR_EL1 (RAS) holds A [31] and an ISS-format syndrome; an SError taken in the window
    // left a whole ESR. Either way: an SError ESR.
    let esr = (u64::from(ec::SERROR) << 26) | (1 << 25) | (serror & 0x1ff_ffff);
    let pc = kernel.thread_glue(thread).map_or(0, |t| t.context.pc);
    if glue.loaded_translation.0 & el0::HCR_TGE == 0 {
        let fault = vcpu::exit_fault(esr, 0, 0, &[0; 31]);
        let (_, schedule) = kernel.handle_guest_fault(thread, pc, fault, glue);
        follow(schedule, thread)
    }
    fault(kernel, glue, thread, (esr, 0), pc)
}

/// An exception from a guest: interrupts are the kernel's (the tick preempts the vCPU like any
/// thread); everything else goes to the vCPU thread's fault endpoint, its VMM.
fn guest_exit(
    kernel: &mut Kernel,
    glue: &mut Glue,
    thread: ThreadRef,
    kind: u64,
    (esr, far): (u64, u64),
) -> ! {
    // A FIQ writes no syndrome (ESR_EL2 still holds the previous exception's): it is an
    // interrupt like an IRQ (capvisor configures no group-0 interrupt, so none is expected).
    if kind == KIND_IRQ || kind == KIND_FIQ {
        let schedule = interrupt(kernel, glue);
        // The maintenance interrupt for drained list registers: the vCPU goes to its VMM,
        // which has more interrupts for it.
        if let Some(vcpu) = kernel.thread_vcpu(thread)
            && let Ok(state) = kernel.vcpu_glue(vcpu)
            && glue.guests.take_drained(state)
        {
            let pc = kernel.thread_glue(thread).map_or(0, |t| t.context.pc);
            let fault = capvisor_ipc::protocols::fault::GuestFault::ListRegistersDrained;
            let (_, schedule) = kernel.handle_guest_fault(thread, pc, fault, glue);
            follow(schedule, thread)
        }
        follow(schedule, thread)
    }
    if kind == KIND_SYNC && kernel_emulates(kernel, glue, thread, esr) {
        enter(thread)
    }
    let Some(entry) = kernel.entry(thread) else {
        schedule()
    };
    let pc = entry.thread.context.pc;
    let hpfar = crate::arch::aarch64::vcpu::hpfar();
    let fault = vcpu::exit_fault(esr, far, hpfar, &entry.thread.context.x);
    entry.space.stats.exits += 1;
    // The exit's syndrome, for stepping past the instruction once the VMM resolves it.
    if let Some(vcpu) = entry.vcpu
        && let Ok(state) = kernel.vcpu_glue(vcpu)
    {
        state.exit_esr = esr;
    }
    let (outcome, schedule) = kernel.handle_guest_fault(thread, pc, fault, glue);
    if outcome == FaultOutcome::NoHandler {
        console::print(format_args!(
            "capvisor: a vCPU (thread {}) has no VMM and was stopped: {}; pc={pc:#x}\n",
            thread.index(),
            esr::Decoded(esr),
        ));
    }
    follow(schedule, thread)
}

/// A guest's trapped access the kernel answers itself (`Guests::emulate`: ID registers, debug
/// registers, the EL1 physical timer, ACTLR_EL1, UNDEFINED absent features); `false` when its
/// VMM decides.
fn kernel_emulates(kernel: &mut Kernel, glue: &mut Glue, thread: ThreadRef, esr: u64) -> bool {
    if !vcpu::kernel_class(esr::class(esr)) {
        return false;
    }
    let Some(vcpu) = kernel.thread_vcpu(thread) else {
        return false;
    };
    let Ok((t, state)) = kernel.vcpu_thread_glue(thread, vcpu) else {
        return false;
    };
    state.exit_esr = esr;
    glue.guests.emulate(&mut t.context, vcpu, state, esr)
}

/// HCR_EL2 for a guest (with FWB when the descriptors use it).
#[inline(always)]
fn guest_hcr() -> u64 {
    crate::arch::aarch64::vcpu::guest_hcr()
}

/// Takes the pending interrupt: a tick charges the running thread's slice; the virtual timer
/// goes to the loaded vCPU; another interrupt is masked and handed to its handler's
/// notification.
fn interrupt(kernel: &mut Kernel, glue: &mut Glue) -> Schedule {
    match gic::take() {
        Interrupt::Tick if !gic::slice_over() => {
            // The timer fired early for a deadline (a sleeping or running vCPU's timer), not
            // for the end of the slice: wake who is due; the slice goes on.
            gic::resume_slice();
            kernel.wake_expired(crate::arch::aarch64::cpu::physical_counter());
            kernel.schedule_now()
        }
        Interrupt::Tick => {
            gic::start_slice();
            // Dying objects are finished a few steps per tick (bounded work), and vCPUs whose
            // timer is due wake.
            kernel.reap(TICK_REAP_STEPS, glue);
            kernel.wake_expired(crate::arch::aarch64::cpu::physical_counter());
            kernel.timer_tick()
        }
        Interrupt::Maintenance => {
            glue.guests.maintenance();
            Schedule::Resume
        }
        Interrupt::VirtualTimer(intid) => {
            glue.guests.vtimer_fired(intid);
            Schedule::Resume
        }
        Interrupt::Other(intid) => {
            if let Some((vcpu, vintid)) = kernel.irq_forward(intid) {
                // Left active: the guest's deactivation of the virtual interrupt ends it.
                let state = kernel.vcpu_glue(vcpu).ok();
                glue.guests.forward_irq(vcpu, state, vintid, intid);
                // A vCPU asleep in WFI wakes for it.
                kernel.wake_vcpu(vcpu);
                return kernel.schedule_now();
            }
            gic::deactivate(intid);
            gic::set_enabled(intid, false);
            match kernel.handle_irq(intid) {
                IrqOutcome::Delivered(schedule) => schedule,
                IrqOutcome::Unhandled => Schedule::Resume,
            }
        }
        Interrupt::None => Schedule::Resume,
    }
}

fn syscall(kernel: &mut Kernel, glue: &mut Glue, thread: ThreadRef, [x0, x1, x7]: [u64; 3]) -> ! {
    const DEBUG_WRITE: u64 = GlueSyscall::DebugWrite.code();
    const DEBUG_HALT: u64 = GlueSyscall::DebugHalt.code();
    match x7 {
        DEBUG_WRITE => {
            debug_write(kernel, glue, thread, x0, x1);
            if let Ok(t) = kernel.thread_glue(thread) {
                t.context.x[7] = 0;
            }
            enter(thread)
        }
        DEBUG_HALT => {
            let name = name(kernel, thread);
            stats::report(kernel);
            println!("capvisor: service '{name}' halted the system with status {x0}");
            if x0 == 0 {
                exit::success()
            }
            exit::fail(Status::ServiceFailure)
        }
        _ => {
            // The kernel reads the arguments from the thread's saved x0–x7 and leaves its
            // results there.
            let schedule = kernel.handle_syscall(thread, glue);
            follow(schedule, thread)
        }
    }
}

fn fault(
    kernel: &mut Kernel,
    glue: &mut Glue,
    thread: ThreadRef,
    (esr, far): (u64, u64),
    pc: u64,
) -> ! {
    let (outcome, schedule) = kernel.handle_fault(thread, pc, service_fault(esr, far), glue);
    if outcome == FaultOutcome::NoHandler {
        let name = name(kernel, thread);
        console::print(format_args!(
            "capvisor: service '{name}' faulted and was stopped: {}; pc={pc:#x} far={far:#x}\n",
            esr::Decoded(esr),
        ));
    }
    follow(schedule, thread)
}

/// The fault as the `Fault` protocol reports it. Stage 1 is off for EL0, so FAR_EL2 holds the
/// service's IPA for an abort (Arm ARM D24.2.40 FAR_EL2); ISS.WnR tells a write from a read
/// (D24.2.39, data aborts).
fn service_fault(esr: u64, far: u64) -> ServiceFault {
    let access = match esr::class(esr) {
        ec::IABT_LOWER => Access::Execute,
        ec::DABT_LOWER if esr & (1 << 6) != 0 => Access::Write,
        ec::DABT_LOWER => Access::Read,
        _ => return ServiceFault::Exception { esr: Esr::new(esr) },
    };
    ServiceFault::Memory {
        address: Ipa::new(far),
        access,
        esr: Esr::new(esr),
    }
}

/// Prints up to [`DEBUG_WRITE_MAX`] bytes of a thread's memory, read through its own stage-2
/// table; an address it does not map readable ends the text.
fn debug_write(kernel: &mut Kernel, glue: &mut Glue, thread: ThreadRef, address: u64, length: u64) {
    let Some(space) = kernel.thread_space(thread).ok().flatten() else {
        return;
    };
    let Ok(space) = kernel.space_glue(space).map(|s| *s) else {
        return;
    };
    let mut line: heapless::Vec<u8, { DEBUG_WRITE_MAX as usize }> = heapless::Vec::new();
    let readable = S2Access {
        read: true,
        write: false,
        exec: false,
    };
    for offset in 0..length.min(DEBUG_WRITE_MAX) {
        let Some(at) = address.checked_add(offset) else {
            break;
        };
        let read = glue.user_range(&space, at, 1, readable, |pa, _, _| {
            // SAFETY: `pa` is kernel-mapped RAM the thread maps readable (checked by
            // `user_range`).
            let _ = line.push(unsafe { (pa as *const u8).read_volatile() });
        });
        if read.is_err() {
            break;
        }
    }
    let name = name(kernel, thread);
    console::print_service(thread, &name, &line);
}

//! Typed invocations that `capvisor_rt::sys` does not wrap (threads, vCPUs, maintenance, IRQs,
//! identify), and the raw syscall the fuzzer and the probes need. Arguments are as
//! `kernel/src/object/invoke.rs`, `tcb.rs` and `vcpu.rs` document them; CPtrs are raw slot
//! numbers of the caller's own CNode.

use crate::abi::{LEGACY_SPACE_SIZE_BITS, SPACE_SIZE_BITS, kind};
use capvisor_ipc::abi::{CacheOp, Invocation, KernelError, MessageInfo, Syscall};
use capvisor_rt::{CPtr, sys};
use core::arch::asm;

/// x0–x5 and x7 as a syscall left them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Raw {
    /// x0: a badge or notification word.
    pub badge: u64,
    /// x1: the message-info word.
    pub info: u64,
    /// x2–x5: the first message words.
    pub words: [u64; 4],
    /// x7: 0 or a `KernelError` code (any number, from a kernel this code does not know).
    pub error: u64,
}

/// One `svc #0` with syscall `number` (any number: the fuzzer passes nonsense too).
#[inline(always)]
pub fn raw(number: u64, cptr: u64, info: u64, words: [u64; 4]) -> Raw {
    let [mut x2, mut x3, mut x4, mut x5] = words;
    let (mut x0, mut x1, mut x7) = (cptr, info, number);
    // SAFETY: the kernel reads x0–x7 (and this thread's IPC buffer, which only this thread
    // uses), writes its results into x0–x7 and preserves every other register; x6 is clobbered
    // as the runtime's own wrapper declares.
    unsafe {
        asm!("svc #0", inout("x0") x0, inout("x1") x1, inout("x2") x2, inout("x3") x3,
             inout("x4") x4, inout("x5") x5, out("x6") _, inout("x7") x7, options(nostack));
    }
    Raw {
        badge: x0,
        info: x1,
        words: [x2, x3, x4, x5],
        error: x7,
    }
}

/// The `KernelError` with code `code` (`InvalidSyscall` for a number this ABI does not know,
/// as `capvisor_rt::sys` does).
#[must_use]
pub fn error(code: u64) -> KernelError {
    u16::try_from(code)
        .ok()
        .and_then(KernelError::from_code)
        .unwrap_or(KernelError::InvalidSyscall)
}

/// Invokes the capability in slot `cptr` (a `Call`, as the ABI defines invocations).
///
/// # Errors
/// The kernel's.
pub fn invoke(cptr: u64, invocation: Invocation, args: &[u64]) -> Result<[u64; 4], KernelError> {
    sys::invoke(CPtr::new(cptr), invocation.code(), args)
}

fn done(result: Result<[u64; 4], KernelError>) -> Result<(), KernelError> {
    result.map(|_| ())
}

/// What `Identify` reports: kind code, rights bits, badge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    /// `ObjectKind` code.
    pub kind: u64,
    /// Rights bits.
    pub rights: u64,
    /// Badge.
    pub badge: u64,
}

/// `Identify` on slot `cptr`, made so that it never sends a message nor blocks, even if the slot
/// holds an endpoint (where a `Call` would be IPC): the message claims one capability to
/// transfer, named by an impossible CPtr. A kernel object ignores it and answers the
/// invocation; an endpoint refuses the send before anything is queued ("the sender learns about
/// a bad capability, a missing GRANT … when it sends": `docs/architecture.md`, "IPC"), so an
/// endpoint answers an error (`InvalidSlot` or `InsufficientRights`).
///
/// # Errors
/// The kernel's (see above for an endpoint).
pub fn identify(cptr: u64) -> Result<Identity, KernelError> {
    sys::with_ipc_buffer(|buffer| buffer.caps[0] = u64::MAX);
    let info = MessageInfo::new(Invocation::Identify.code(), 0, 1)
        .map_err(|_| KernelError::InvalidMessageInfo)?;
    let raw = raw(Syscall::Call.code(), cptr, info.raw(), [0; 4]);
    if raw.error != 0 {
        return Err(error(raw.error));
    }
    let [kind, rights, badge, _] = raw.words;
    Ok(Identity {
        kind,
        rights,
        badge,
    })
}

/// Retypes one object of `kind` (`size_bits` as the kind takes it) from untyped `untyped` into
/// the caller's slot `dest`.
///
/// # Errors
/// The kernel's.
pub fn retype(untyped: u64, kind: u64, size_bits: u64, dest: u64) -> Result<(), KernelError> {
    sys::retype(CPtr::new(untyped), kind, size_bits, CPtr::NULL, dest, 1)
}

/// Retypes an AddressSpace (`vm` false) or a Vm into slot `dest`: with [`SPACE_SIZE_BITS`] as
/// the fixed ABI takes it, or, when the kernel refuses that size with `RangeError` (the ABI of
/// 8f4ed9c), with [`LEGACY_SPACE_SIZE_BITS`].
///
/// # Errors
/// The kernel's (the second attempt's, when there is one).
pub fn retype_space(untyped: u64, vm: bool, dest: u64) -> Result<(), KernelError> {
    let kind = if vm { kind::VM } else { kind::ADDRESS_SPACE };
    match retype(untyped, kind, SPACE_SIZE_BITS, dest) {
        Err(KernelError::RangeError) => retype(untyped, kind, LEGACY_SPACE_SIZE_BITS, dest),
        other => other,
    }
}

/// `ThreadConfigure`'s arguments.
#[derive(Clone, Copy, Debug)]
pub struct Configure {
    /// Entry PC.
    pub pc: u64,
    /// Stack pointer.
    pub sp: u64,
    /// IPC buffer address (0: none).
    pub ipc_buffer: u64,
    /// Priority.
    pub priority: u8,
    /// Maximum priority.
    pub max_priority: u8,
    /// The CSpace's CNode (slot).
    pub cspace: u64,
    /// The AddressSpace or Vm (slot).
    pub space: u64,
    /// The fault endpoint (slot; 0: none).
    pub fault: u64,
}

/// `ThreadConfigure`.
///
/// # Errors
/// The kernel's.
pub fn configure(thread: u64, c: &Configure) -> Result<(), KernelError> {
    let priorities = u64::from(c.priority) | u64::from(c.max_priority) << 8;
    let args = [
        c.pc,
        c.sp,
        c.ipc_buffer,
        priorities,
        c.cspace,
        c.space,
        c.fault,
    ];
    done(invoke(thread, Invocation::ThreadConfigure, &args))
}

/// `Resume` a thread.
///
/// # Errors
/// The kernel's.
pub fn resume(thread: u64) -> Result<(), KernelError> {
    done(invoke(thread, Invocation::Resume, &[]))
}

/// `Suspend` a thread.
///
/// # Errors
/// The kernel's.
pub fn suspend(thread: u64) -> Result<(), KernelError> {
    done(invoke(thread, Invocation::Suspend, &[]))
}

/// `ThreadBindVcpu`.
///
/// # Errors
/// The kernel's.
pub fn bind_vcpu(thread: u64, vcpu: u64) -> Result<(), KernelError> {
    done(invoke(thread, Invocation::ThreadBindVcpu, &[vcpu]))
}

/// `VcpuWriteRegisters`: register `register` (0–30 or a `VcpuRegister` code) = `value`.
///
/// # Errors
/// The kernel's.
pub fn vcpu_write(vcpu: u64, register: u64, value: u64) -> Result<(), KernelError> {
    done(invoke(
        vcpu,
        Invocation::VcpuWriteRegisters,
        &[register, value],
    ))
}

/// `CacheMaintenance` on a Vm: `op` over `[ipa, ipa + size)`.
///
/// # Errors
/// The kernel's.
pub fn cache_vm(vm: u64, op: CacheOp, ipa: u64, size: u64) -> Result<(), KernelError> {
    done(invoke(
        vm,
        Invocation::CacheMaintenance,
        &[op.code(), ipa, size],
    ))
}

/// `IrqIssueHandler`: a handler for `intid` into the caller's slot `dest`.
///
/// # Errors
/// The kernel's.
pub fn irq_issue(control: u64, intid: u64, dest: u64) -> Result<(), KernelError> {
    done(invoke(control, Invocation::IrqIssueHandler, &[intid, dest]))
}

/// `IrqAck`.
///
/// # Errors
/// The kernel's.
pub fn irq_ack(handler: u64) -> Result<(), KernelError> {
    done(invoke(handler, Invocation::IrqAck, &[]))
}

/// `IrqSetNotification`.
///
/// # Errors
/// The kernel's.
pub fn irq_set_notification(handler: u64, notification: u64) -> Result<(), KernelError> {
    done(invoke(
        handler,
        Invocation::IrqSetNotification,
        &[notification],
    ))
}

/// `IrqForwardToVcpu` (`vcpu` 0: stop forwarding).
///
/// # Errors
/// The kernel's.
pub fn irq_forward(handler: u64, vcpu: u64, vintid: u64) -> Result<(), KernelError> {
    done(invoke(
        handler,
        Invocation::IrqForwardToVcpu,
        &[vcpu, vintid],
    ))
}

/// Sends `words` with `label` on endpoint `cptr` only if a receiver waits (`NbSend`).
///
/// # Errors
/// The kernel's.
pub fn nb_send(cptr: u64, label: u64, words: [u64; 4]) -> Result<(), KernelError> {
    let info = MessageInfo::new(label, 32, 0).map_err(|_| KernelError::InvalidMessageInfo)?;
    let raw = raw(Syscall::NbSend.code(), cptr, info.raw(), words);
    match raw.error {
        0 => Ok(()),
        code => Err(error(code)),
    }
}

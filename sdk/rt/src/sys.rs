//! Typed system calls of the object model (`docs/ipc.md`, `docs/architecture.md` "IPC"), on
//! `capvisor-ipc`'s ABI types: endpoint IPC, notifications, and capability invocations.
//!
//! Registers: `x0` the capability (on return: the badge, or a notification's word), `x1` the
//! message-info word, `x2`–`x5` the first message words, `x7` the syscall number (on return: 0
//! or a [`KernelError`] code). Longer messages and capability transfers use the IPC buffer,
//! reached with [`with_ipc_buffer`].

use capvisor_ipc::abi::{
    Invocation, IpcBuffer, KernelError, MSG_REGS_IN_CPU, MessageInfo, Syscall,
};
use capvisor_ipc::cap::{CPtr, Rights};
use core::arch::asm;

/// The label of the thread-configure invocation (see `kernel/src/object/tcb.rs`).
pub const THREAD_CONFIGURE: u64 = Invocation::ThreadConfigure.code();

/// A message that arrived, or the results of an invocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message {
    /// The sender's badge (IPC), or the notification word (wait).
    pub badge: u64,
    /// The message-info word.
    pub info: MessageInfo,
    /// The first message words.
    pub words: [u64; MSG_REGS_IN_CPU],
}

/// One `svc`: every object-model syscall returns its results in x0–x7. Inlined, as are the IPC
/// wrappers below: returned through memory, a `Result<Message, _>` was copied twice more by
/// `memcpy` calls, byte by byte where the caller's future kept it unaligned.
#[inline(always)]
fn raw(number: Syscall, cptr: u64, info: u64, words: [u64; 4]) -> Result<Message, KernelError> {
    let [mut x2, mut x3, mut x4, mut x5] = words;
    let (mut x0, mut x1, mut x7) = (cptr, info, number.code());
    // SAFETY: the kernel reads x0–x7 (and this thread's IPC buffer, which only this thread
    // uses), writes results into x0–x7 and preserves every other register.
    unsafe {
        asm!("svc #0", inout("x0") x0, inout("x1") x1, inout("x2") x2, inout("x3") x3,
             inout("x4") x4, inout("x5") x5, out("x6") _, inout("x7") x7, options(nostack));
    }
    if x7 != 0 {
        let code = u16::try_from(x7).ok().and_then(KernelError::from_code);
        return Err(code.unwrap_or(KernelError::InvalidSyscall));
    }
    let info = MessageInfo::decode(x1).map_err(|_| KernelError::InvalidMessageInfo)?;
    Ok(Message {
        badge: x0,
        info,
        words: [x2, x3, x4, x5],
    })
}

/// Runs `f` on this thread's IPC buffer (capabilities to send, where received ones go, words
/// beyond the registers).
pub fn with_ipc_buffer<R>(f: impl FnOnce(&mut IpcBuffer) -> R) -> R {
    let address = super::ipc_buffer() as *mut IpcBuffer;
    // SAFETY: the kernel maps this thread's IPC buffer page read/write at the address it passed
    // at start (aligned, 584 bytes in one page); only this thread uses it, and the kernel
    // touches it only during this thread's own syscalls, never while `f` runs.
    f(unsafe { &mut *address })
}

/// Calls endpoint `cap` and waits for the reply.
///
/// # Errors
/// The kernel's error (`InvalidSlot`, `WrongType`, `InsufficientRights`, `Cancelled`, …).
#[inline(always)]
pub fn call(cap: CPtr, info: MessageInfo, words: [u64; 4]) -> Result<Message, KernelError> {
    raw(Syscall::Call, cap.raw(), info.raw(), words)
}

/// Sends on endpoint `cap`, blocking until a receiver takes the message.
///
/// # Errors
/// As [`call`].
pub fn send(cap: CPtr, info: MessageInfo, words: [u64; 4]) -> Result<(), KernelError> {
    raw(Syscall::Send, cap.raw(), info.raw(), words).map(|_| ())
}

/// Waits for a message on endpoint `cap` (or a notification's word).
///
/// # Errors
/// As [`call`].
#[inline(always)]
pub fn recv(cap: CPtr) -> Result<Message, KernelError> {
    raw(Syscall::Recv, cap.raw(), 0, [0; 4])
}

/// Replies to the last caller, then waits on endpoint `cap`.
///
/// # Errors
/// As [`call`].
#[inline(always)]
pub fn reply_recv(cap: CPtr, info: MessageInfo, words: [u64; 4]) -> Result<Message, KernelError> {
    raw(Syscall::ReplyRecv, cap.raw(), info.raw(), words)
}

/// Signals notification `cap` with its badge.
///
/// # Errors
/// As [`call`].
pub fn signal(cap: CPtr) -> Result<(), KernelError> {
    raw(Syscall::Signal, cap.raw(), 0, [0; 4]).map(|_| ())
}

/// Waits until notification `cap`'s word is non-zero, and takes it.
///
/// # Errors
/// As [`call`].
pub fn wait(cap: CPtr) -> Result<u64, KernelError> {
    raw(Syscall::Wait, cap.raw(), 0, [0; 4]).map(|m| m.badge)
}

/// Takes notification `cap`'s word without blocking (0: nothing signalled).
///
/// # Errors
/// As [`call`].
pub fn poll(cap: CPtr) -> Result<u64, KernelError> {
    raw(Syscall::Poll, cap.raw(), 0, [0; 4]).map(|m| m.badge)
}

/// Invokes kernel object `cap` with `label` and up to 8 argument words; returns the result
/// words.
///
/// # Errors
/// As [`call`]; `TruncatedMessage` when an invocation gets too few words.
pub fn invoke(cap: CPtr, label: u64, args: &[u64]) -> Result<[u64; 4], KernelError> {
    let mut words = [0; MSG_REGS_IN_CPU];
    for (word, arg) in words.iter_mut().zip(args) {
        *word = *arg;
    }
    if args.len() > MSG_REGS_IN_CPU {
        with_ipc_buffer(|buffer| {
            for (word, arg) in buffer.msg.iter_mut().zip(args).skip(MSG_REGS_IN_CPU) {
                *word = *arg;
            }
        });
    }
    let info =
        MessageInfo::new(label, args.len() * 8, 0).map_err(|_| KernelError::InvalidMessageInfo)?;
    raw(Syscall::Call, cap.raw(), info.raw(), words).map(|m| m.words)
}

/// Retypes `count` objects of `kind` (a `ObjectKind` code, or 13 for an AddressSpace) from
/// untyped `untyped` into slots `index…` of the CNode `cnode` (`CPtr::NULL`: this thread's own).
///
/// # Errors
/// As [`invoke`].
pub fn retype(
    untyped: CPtr,
    kind: u64,
    size_bits: u64,
    cnode: CPtr,
    index: u64,
    count: u64,
) -> Result<(), KernelError> {
    let args = [kind, size_bits, cnode.raw(), index, count];
    invoke(untyped, Invocation::Retype.code(), &args).map(|_| ())
}

/// Copies `source` (this thread's CSpace) into slot `dest` of `cnode`, with `rights` at most.
///
/// # Errors
/// As [`invoke`].
pub fn copy(cnode: CPtr, dest: u64, source: CPtr, rights: Rights) -> Result<(), KernelError> {
    let args = [dest, source.raw(), u64::from(rights.bits())];
    invoke(cnode, Invocation::Copy.code(), &args).map(|_| ())
}

/// As [`copy`], giving the copy `badge` (endpoints and notifications).
///
/// # Errors
/// As [`invoke`].
pub fn mint(
    cnode: CPtr,
    dest: u64,
    source: CPtr,
    rights: Rights,
    badge: u64,
) -> Result<(), KernelError> {
    let args = [dest, source.raw(), u64::from(rights.bits()), badge];
    invoke(cnode, Invocation::Mint.code(), &args).map(|_| ())
}

/// Deletes every capability derived from slot `index` of `cnode` (and their mappings).
///
/// # Errors
/// As [`invoke`].
pub fn revoke(cnode: CPtr, index: u64) -> Result<(), KernelError> {
    invoke(cnode, Invocation::Revoke.code(), &[index]).map(|_| ())
}

/// Deletes the capability in slot `index` of `cnode`.
///
/// # Errors
/// As [`invoke`].
pub fn delete(cnode: CPtr, index: u64) -> Result<(), KernelError> {
    invoke(cnode, Invocation::Delete.code(), &[index]).map(|_| ())
}

/// Maps frame `frame` at `ipa` in `space` with `access` (R=1 W=2 X=4) and memory type
/// `memtype` (0 Normal write-back, 1 Normal non-cacheable, 2 Device-nGnRE).
///
/// # Errors
/// As [`invoke`].
pub fn map(
    frame: CPtr,
    space: CPtr,
    ipa: u64,
    access: u64,
    memtype: u64,
) -> Result<(), KernelError> {
    let args = [space.raw(), ipa, access, memtype];
    invoke(frame, Invocation::Map.code(), &args).map(|_| ())
}

/// Removes frame `frame`'s mapping.
///
/// # Errors
/// As [`invoke`].
pub fn unmap(frame: CPtr) -> Result<(), KernelError> {
    invoke(frame, Invocation::Unmap.code(), &[]).map(|_| ())
}

//! The syscall entry contract and thread invocations.

use capvisor_ipc::abi::{Invocation, KernelError, Syscall};
use capvisor_ipc::cap::{ObjectKind, Rights};

use super::*;
use crate::object::thread::ThreadState;

const T: u64 = FREE;

fn configure(w: &mut World, args: [u64; 7]) -> Result<[u64; 4], KernelError> {
    w.invoke_as(w.root, T, THREAD_CONFIGURE, &args)
}

#[test]
fn configure_checks_every_argument() {
    let mut w = World::new();
    w.retype(World::kind(ObjectKind::Thread), 0, T, 1).unwrap();
    w.retype(World::kind(ObjectKind::Endpoint), 0, T + 1, 1)
        .unwrap();
    let (c, s) = (RootLayout::CNODE, RootLayout::SPACE);
    assert_eq!(
        w.invoke_as(w.root, T, THREAD_CONFIGURE, &[0; 6]),
        Err(KernelError::TruncatedMessage)
    );
    assert_eq!(
        configure(&mut w, [0, 0, 0, 1 << 16, c, s, 0]),
        Err(KernelError::InvalidArgument)
    );
    assert_eq!(
        configure(&mut w, [0, 0, 4, 0, c, s, 0]),
        Err(KernelError::AlignmentError)
    );
    assert_eq!(
        configure(&mut w, [0, 0, (1 << 40) - 8, 0, c, s, 0]),
        Err(KernelError::BadAddress)
    );
    assert_eq!(
        configure(&mut w, [0, 0, 0, 0, s, s, 0]),
        Err(KernelError::WrongType)
    );
    assert_eq!(
        configure(&mut w, [0, 0, 0, 0, c, c, 0]),
        Err(KernelError::WrongType)
    );
    assert_eq!(
        configure(&mut w, [0, 0, 0, 0, c, s, UNTYPED]),
        Err(KernelError::WrongType)
    );
    assert_eq!(
        configure(&mut w, [0, 0, 0, 0, c, s, 999]),
        Err(KernelError::EmptySlot)
    );
}

#[test]
fn configure_needs_rights_and_applies_to_inactive_threads() {
    let mut w = World::new();
    w.retype(World::kind(ObjectKind::Thread), 0, T, 1).unwrap();
    w.retype(World::kind(ObjectKind::Endpoint), 0, T + 1, 1)
        .unwrap();
    let (c, s) = (RootLayout::CNODE, RootLayout::SPACE);
    let read = World::rights(&[Rights::READ]);
    w.invoke(RootLayout::CNODE, Invocation::Copy, &[T + 2, T + 1, read])
        .unwrap();
    assert_eq!(
        configure(&mut w, [0, 0, 0, 0, c, s, T + 2]),
        Err(KernelError::InsufficientRights)
    );
    w.invoke(RootLayout::CNODE, Invocation::Copy, &[T + 3, T, read])
        .unwrap();
    assert_eq!(
        w.invoke_as(w.root, T + 3, THREAD_CONFIGURE, &[0, 0, 0, 0, c, s, 0]),
        Err(KernelError::InsufficientRights)
    );
    assert_eq!(
        w.invoke(T + 3, Invocation::Resume, &[]),
        Err(KernelError::InsufficientRights)
    );
    assert_eq!(
        w.invoke(T + 3, Invocation::Suspend, &[]),
        Err(KernelError::InsufficientRights)
    );
    configure(&mut w, [0x4000, 0x8000, 0x3000, 7, c, s, T + 1]).unwrap();
    let Object::Thread(t) = w.cap(T).unwrap().object else {
        unreachable!()
    };
    let context = w.context(t);
    assert_eq!((context.pc, context.sp), (0x4000, 0x8000));
    assert_eq!(w.k.thread_state(t), Ok(ThreadState::Inactive));
    w.invoke(T, Invocation::Resume, &[]).unwrap();
    assert_eq!(w.k.thread_state(t), Ok(ThreadState::Ready));
    // A thread that may be inside a syscall is not reconfigured.
    assert_eq!(
        configure(&mut w, [0, 0, 0, 0, c, s, 0]),
        Err(KernelError::IllegalOperation)
    );
}

#[test]
fn a_thread_the_kernel_does_not_run_cannot_make_syscalls() {
    let mut w = World::new();
    w.retype(World::kind(ObjectKind::Thread), 0, T, 1).unwrap();
    let Object::Thread(t) = w.cap(T).unwrap().object else {
        unreachable!()
    };
    let mut regs = SyscallRegs([1, 0, 0, 0, 0, 0, 0, Syscall::Yield.code()]);
    assert_eq!(w.raw_syscall(t, &mut regs), Schedule::Switch);
    assert_eq!(
        regs.0[0], 1,
        "registers of a thread that is not running are untouched"
    );
    // An unconfigured thread has no address space, so it cannot be resumed.
    assert_eq!(
        w.invoke(T, Invocation::Resume, &[]),
        Err(KernelError::InvalidArgument)
    );
}

#[test]
fn deleting_a_space_stops_its_threads() {
    let mut w = World::new();
    let space = u64::from(crate::object::capability::ADDRESS_SPACE_KIND);
    w.retype(space, 0, T + 1, 1).unwrap();
    w.retype(World::kind(ObjectKind::Notification), 0, T + 2, 1)
        .unwrap();
    w.retype(World::kind(ObjectKind::Thread), 0, T, 1).unwrap();
    let args = [0, 0, 0, 10, RootLayout::CNODE, T + 1, 0];
    w.invoke_as(w.root, T, THREAD_CONFIGURE, &args).unwrap();
    w.invoke(T, Invocation::Resume, &[]).unwrap();
    let Object::Thread(t) = w.cap(T).unwrap().object else {
        unreachable!()
    };
    w.syscall(t, Syscall::Wait, T + 2, info(0, 0, 0), [0; 4]);
    w.invoke(RootLayout::CNODE, Invocation::Delete, &[T + 1])
        .unwrap();
    assert_eq!(w.k.thread_state(t), Ok(ThreadState::Inactive));
    assert_eq!(w.k.thread_space(t), Ok(None));
    assert_eq!(
        w.k.take_syscall_result(t).and_then(|r| r.error_code()),
        Some(KernelError::Cancelled)
    );
    assert_eq!(
        w.invoke(T, Invocation::Resume, &[]),
        Err(KernelError::InvalidArgument)
    );
}

#[test]
fn suspending_a_blocked_thread_ends_its_syscall_with_cancelled() {
    let mut w = World::new();
    w.retype(World::kind(ObjectKind::Notification), 0, T + 1, 1)
        .unwrap();
    let t = w.spawn(T, 10);
    w.syscall(t, Syscall::Wait, T + 1, info(0, 0, 0), [0; 4]);
    w.invoke(T, Invocation::Suspend, &[]).unwrap();
    assert_eq!(w.k.thread_state(t), Ok(ThreadState::Inactive));
    w.invoke(T, Invocation::Resume, &[]).unwrap();
    assert_eq!(
        w.k.take_syscall_result(t).and_then(|r| r.error_code()),
        Some(KernelError::Cancelled)
    );
    // Signalling now finds no waiter.
    let root = w.root;
    w.syscall(root, Syscall::Signal, T + 1, info(0, 0, 0), [0; 4]);
    assert_eq!(w.k.thread_state(t), Ok(ThreadState::Ready));
}

#[test]
fn a_thread_deleting_its_own_last_capability_is_gone() {
    let mut w = World::new();
    let t = w.spawn(T, 10);
    let (_, schedule) = w.syscall(
        t,
        Syscall::Call,
        RootLayout::CNODE,
        info(Invocation::Delete.code(), 8, 0),
        [T, 0, 0, 0],
    );
    assert_eq!(w.k.thread_state(t), Err(KernelError::Revoked));
    assert_eq!(w.k.take_syscall_result(t), None);
    let _ = schedule;
    assert_eq!(w.k.pick_next(), Some(w.root));
}

#[test]
fn identify_reports_kind_rights_and_badge() {
    let mut w = World::new();
    w.retype(World::kind(ObjectKind::Notification), 0, T, 1)
        .unwrap();
    w.invoke(
        RootLayout::CNODE,
        Invocation::Mint,
        &[T + 1, T, World::rights(&[Rights::WRITE]), 5],
    )
    .unwrap();
    let ident = w.invoke(T + 1, Invocation::Identify, &[]).unwrap();
    assert_eq!(
        ident,
        [
            u64::from(ObjectKind::Notification.code()),
            u64::from(Rights::WRITE.bits()),
            5,
            0
        ]
    );
    let ident = w
        .invoke(RootLayout::IRQ_CONTROL, Invocation::Identify, &[])
        .unwrap();
    assert_eq!(ident[0], u64::from(ObjectKind::IrqControl.code()));
}

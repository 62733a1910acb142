//! Endpoints, replies, capability transfer, notifications and faults, between threads of a World.

use capvisor_ipc::abi::{IpcBuffer, KernelError, MessageInfo, Syscall};
use capvisor_ipc::cap::{ObjectKind, Rights};
use capvisor_ipc::protocol::{
    Generation, decode_exact, decode_request, encode_reply, encode_request, split_header,
};
use capvisor_ipc::protocols::fault::{
    FaultMessage, ServiceFault, ServiceResolution, encode_service_reply,
};
use capvisor_ipc::protocols::memmgr::{self, MemMgr};
use capvisor_ipc::types::{Esr, Ipa, VmId};

use super::*;
use crate::object::thread::ThreadState;
use crate::object::{FaultOutcome, IrqOutcome};

/// Root slots: the endpoint, a frame to send, two CNodes and two threads.
const EP: u64 = FREE;
const FRAME: u64 = FREE + 1;
const CLIENT_CNODE: u64 = FREE + 2;
const SERVER_CNODE: u64 = FREE + 3;
const CLIENT: u64 = FREE + 4;
const SERVER: u64 = FREE + 5;
const NOTIFICATION: u64 = FREE + 6;

/// In the client's and server's own CSpaces.
const THEIR_EP: u64 = 1;
const THEIR_FRAME: u64 = 2;
const WINDOW: u64 = 8;

const BADGE: u64 = 0xC0FFEE;

fn spawn_with_cspace(w: &mut World, thread_at: u64, cnode_at: u64, priority: u8) -> ThreadRef {
    w.retype(World::kind(ObjectKind::CNode), 4, cnode_at, 1)
        .unwrap();
    w.retype(World::kind(ObjectKind::Thread), 0, thread_at, 1)
        .unwrap();
    let ipc = IPC_BUFFER + 0x1000 * thread_at;
    let args = [
        0x2000,
        0x9000,
        ipc,
        u64::from(priority),
        cnode_at,
        RootLayout::SPACE,
        0,
    ];
    w.invoke_as(w.root, thread_at, THREAD_CONFIGURE, &args)
        .unwrap();
    w.invoke(thread_at, capvisor_ipc::abi::Invocation::Resume, &[])
        .unwrap();
    match w.cap(thread_at).unwrap().object {
        Object::Thread(t) => t,
        _ => unreachable!(),
    }
}

/// A client (badged, granting endpoint capability and a frame) and a server (receiving capability)
/// in CSpaces of their own.
fn client_server() -> (World, ThreadRef, ThreadRef) {
    use capvisor_ipc::abi::Invocation::{Copy, Mint};
    let mut w = World::new();
    w.retype(World::kind(ObjectKind::Endpoint), 0, EP, 1)
        .unwrap();
    w.retype(World::kind(ObjectKind::Frame), 12, FRAME, 1)
        .unwrap();
    let client = spawn_with_cspace(&mut w, CLIENT, CLIENT_CNODE, 100);
    let server = spawn_with_cspace(&mut w, SERVER, SERVER_CNODE, 100);
    let send = World::rights(&[Rights::WRITE, Rights::GRANT]);
    w.invoke(CLIENT_CNODE, Mint, &[THEIR_EP, EP, send, BADGE])
        .unwrap();
    w.invoke(CLIENT_CNODE, Copy, &[THEIR_FRAME, FRAME, 0x1f])
        .unwrap();
    let receive = World::rights(&[Rights::READ, Rights::GRANT_REPLY]);
    w.invoke(SERVER_CNODE, Copy, &[THEIR_EP, EP, receive])
        .unwrap();
    w.buffer(server).receive_slot = WINDOW;
    (w, client, server)
}

fn full_words(regs: &SyscallRegs, buffer: &IpcBuffer) -> IpcBuffer {
    let mut message = buffer.clone();
    message.msg[..4].copy_from_slice(&regs.words());
    message
}

/// The client calls with a typed memmgr request and, in round 0, its frame capability.
fn client_calls(w: &mut World, client: ThreadRef, round: u64) -> memmgr::Request {
    let request = memmgr::Request::AddRam {
        vm: VmId::new(7),
        base: Ipa::new(round << 21),
        size: 1 << 21,
    };
    let frame = [capvisor_ipc::cap::CPtr::new(THEIR_FRAME)];
    let caps: &[capvisor_ipc::cap::CPtr] = if round == 0 { &frame } else { &[] };
    let buffer = w.buffer(client);
    let info = encode_request::<MemMgr>(&request, Generation::ANY, caps, buffer).unwrap();
    let words = [buffer.msg[0], buffer.msg[1], buffer.msg[2], buffer.msg[3]];
    w.syscall(client, Syscall::Call, THEIR_EP, info, words);
    assert_eq!(w.k.thread_state(client), Ok(ThreadState::BlockedReply));
    request
}

/// The server was woken with the badge, the request and (round 0) the frame in its window.
fn server_got(w: &mut World, server: ThreadRef, request: &memmgr::Request, round: u64) {
    let got =
        w.k.take_syscall_result(server)
            .expect("the server was woken");
    assert_eq!((got.error_code(), got.0[0]), (None, BADGE));
    let got_info = MessageInfo::decode(got.info()).unwrap();
    let message = full_words(&got, w.buffer(server));
    let (decoded, context) =
        decode_request::<MemMgr>(got_info, &message, Generation::new(1)).unwrap();
    assert_eq!(&decoded, request);
    assert_eq!(context.badge().raw(), BADGE);
    if round == 0 {
        let received = context.received();
        assert_eq!(received.len(), 1);
        assert_eq!(
            received[0].map(|c| (c.kind(), c.cptr().raw())),
            Some((ObjectKind::Frame, WINDOW))
        );
    }
}

/// The server replies and waits again in one syscall; the client gets the typed reply.
fn server_replies(w: &mut World, server: ThreadRef, client: ThreadRef) {
    let reply = memmgr::Reply::AddRam(Ok(()));
    let buffer = w.buffer(server);
    let info = encode_reply::<MemMgr>(Ok(&reply), &[], Generation::new(1), buffer);
    let words = [buffer.msg[0], buffer.msg[1], buffer.msg[2], buffer.msg[3]];
    w.syscall(server, Syscall::ReplyRecv, THEIR_EP, info, words);
    let back =
        w.k.take_syscall_result(client)
            .expect("the client got its reply");
    assert_eq!((back.error_code(), back.0[0]), (None, 0));
    let back_info = MessageInfo::decode(back.info()).unwrap();
    let message = full_words(&back, w.buffer(client));
    let (_, payload) = split_header(message.payload(back_info)).unwrap();
    assert_eq!(decode_exact::<memmgr::Reply>(payload).unwrap(), reply);
}

#[test]
fn two_services_ping_pong_typed_messages_with_a_capability() {
    let (mut w, client, server) = client_server();
    let empty = MessageInfo::new(0, 0, 0).unwrap();
    let (_, schedule) = w.syscall(server, Syscall::Recv, THEIR_EP, empty, [0; 4]);
    assert_eq!(schedule, Schedule::Switch, "the server blocked");
    for round in 0..3u64 {
        let request = client_calls(&mut w, client, round);
        server_got(&mut w, server, &request, round);
        server_replies(&mut w, server, client);
        assert_eq!(
            w.k.thread_state(server),
            Ok(ThreadState::BlockedRecv(endpoint(&w)))
        );
        assert_eq!(w.k.thread_state(client), Ok(ThreadState::Ready));
    }
    // The transferred frame is derived from the client's: revoking the root's frame removes both.
    w.invoke(
        RootLayout::CNODE,
        capvisor_ipc::abi::Invocation::Revoke,
        &[FRAME],
    )
    .unwrap();
    let server_window = w.k.cnode_slot(cnode(&w, SERVER_CNODE), WINDOW).unwrap();
    assert!(w.k.slots.cap(server_window).is_none());
    let client_frame =
        w.k.cnode_slot(cnode(&w, CLIENT_CNODE), THEIR_FRAME)
            .unwrap();
    assert!(w.k.slots.cap(client_frame).is_none());
}

fn endpoint(w: &World) -> crate::object::EndpointRef {
    match w.cap(EP).unwrap().object {
        Object::Endpoint(e) => e,
        _ => unreachable!(),
    }
}

fn cnode(w: &World, at: u64) -> crate::object::CNodeRef {
    match w.cap(at).unwrap().object {
        Object::CNode(c) => c,
        _ => unreachable!(),
    }
}

#[test]
fn a_sender_waits_for_a_receiver_and_short_messages_skip_the_buffer() {
    let (mut w, client, server) = client_server();
    w.syscall(
        client,
        Syscall::Send,
        THEIR_EP,
        info(5, 16, 0),
        [11, 22, 0, 0],
    );
    assert_eq!(
        w.k.thread_state(client),
        Ok(ThreadState::BlockedSend(endpoint(&w)))
    );
    // The server's buffer is poisoned: a short message must not touch it.
    w.buffer(server).msg[4] = 0xdead;
    let (regs, _) = w.syscall(server, Syscall::Recv, THEIR_EP, info(0, 0, 0), [0; 4]);
    assert_eq!(regs.error_code(), None);
    assert_eq!((regs.0[0], regs.0[2], regs.0[3]), (BADGE, 11, 22));
    let got = MessageInfo::decode(regs.info()).unwrap();
    assert_eq!((got.label(), got.length(), got.extra_caps()), (5, 16, 0));
    assert_eq!(w.buffer(server).msg[4], 0xdead);
    assert_eq!(
        w.k.take_syscall_result(client).map(|r| r.error_code()),
        Some(None)
    );
    assert_eq!(w.k.thread_state(client), Ok(ThreadState::Ready));
}

#[test]
fn ipc_errors_are_typed() {
    let (mut w, client, server) = client_server();
    let send_err =
        |w: &mut World, t, n, cptr, i: MessageInfo| w.syscall(t, n, cptr, i, [0; 4]).0.error_code();
    // The server's capability cannot send; the client's cannot receive.
    assert_eq!(
        send_err(&mut w, server, Syscall::Send, THEIR_EP, info(0, 0, 0)),
        Some(KernelError::InsufficientRights)
    );
    assert_eq!(
        send_err(&mut w, client, Syscall::Recv, THEIR_EP, info(0, 0, 0)),
        Some(KernelError::InsufficientRights)
    );
    assert_eq!(
        send_err(&mut w, client, Syscall::Recv, THEIR_FRAME, info(0, 0, 0)),
        Some(KernelError::WrongType)
    );
    assert_eq!(
        send_err(&mut w, client, Syscall::Recv, 15, info(0, 0, 0)),
        Some(KernelError::EmptySlot)
    );
    assert_eq!(
        send_err(&mut w, client, Syscall::Recv, 16, info(0, 0, 0)),
        Some(KernelError::InvalidSlot)
    );
    // A malformed message-info word.
    let mut regs = SyscallRegs([THEIR_EP, 1 << 15, 0, 0, 0, 0, 0, Syscall::Send.code()]);
    w.raw_syscall(client, &mut regs);
    assert_eq!(regs.error_code(), Some(KernelError::InvalidMessageInfo));
    let mut regs = SyscallRegs([THEIR_EP, 0, 0, 0, 0, 0, 0, 77]);
    w.raw_syscall(client, &mut regs);
    assert_eq!(regs.error_code(), Some(KernelError::InvalidSyscall));
    // Capabilities need GRANT, and must resolve.
    w.buffer(server).caps[0] = THEIR_EP;
    assert_eq!(
        send_err(&mut w, server, Syscall::Call, THEIR_EP, info(0, 0, 1)),
        Some(KernelError::InsufficientRights)
    );
    w.buffer(client).caps[0] = 9;
    assert_eq!(
        send_err(&mut w, client, Syscall::Send, THEIR_EP, info(0, 0, 1)),
        Some(KernelError::EmptySlot)
    );
    // A long message needs a readable IPC buffer.
    let t = w.spawn(FREE + 10, 50);
    let args = [0x2000, 0x9000, 0, 50, CLIENT_CNODE, RootLayout::SPACE, 0];
    w.invoke(FREE + 10, capvisor_ipc::abi::Invocation::Suspend, &[])
        .unwrap();
    w.invoke_as(w.root, FREE + 10, THREAD_CONFIGURE, &args)
        .unwrap();
    w.invoke(FREE + 10, capvisor_ipc::abi::Invocation::Resume, &[])
        .unwrap();
    assert_eq!(
        send_err(&mut w, t, Syscall::Send, THEIR_EP, info(0, 100, 0)),
        Some(KernelError::BadAddress)
    );
    // Nothing was queued by any of these.
    assert_eq!(w.k.thread_state(client), Ok(ThreadState::Ready));
    assert_eq!(w.k.thread_state(server), Ok(ThreadState::Ready));
}

#[test]
fn deleting_an_endpoint_cancels_its_blocked_threads() {
    let (mut w, client, server) = client_server();
    w.syscall(server, Syscall::Recv, THEIR_EP, info(0, 0, 0), [0; 4]);
    let third = w.spawn(FREE + 10, 100);
    w.invoke(
        RootLayout::CNODE,
        capvisor_ipc::abi::Invocation::Copy,
        &[FREE + 11, EP, 0x1f],
    )
    .unwrap();
    // The client's and server's copies live in their CNodes: delete every capability to the endpoint.
    w.invoke(
        CLIENT_CNODE,
        capvisor_ipc::abi::Invocation::Delete,
        &[THEIR_EP],
    )
    .unwrap();
    w.invoke(
        SERVER_CNODE,
        capvisor_ipc::abi::Invocation::Delete,
        &[THEIR_EP],
    )
    .unwrap();
    w.invoke(
        RootLayout::CNODE,
        capvisor_ipc::abi::Invocation::Delete,
        &[FREE + 11],
    )
    .unwrap();
    assert_eq!(
        w.k.thread_state(server),
        Ok(ThreadState::BlockedRecv(endpoint(&w)))
    );
    let _ = (client, third);
    w.invoke(
        RootLayout::CNODE,
        capvisor_ipc::abi::Invocation::Delete,
        &[EP],
    )
    .unwrap();
    assert_eq!(w.k.thread_state(server), Ok(ThreadState::Ready));
    assert_eq!(
        w.k.take_syscall_result(server).and_then(|r| r.error_code()),
        Some(KernelError::Cancelled)
    );
}

#[test]
fn a_blocked_sender_is_cancelled_too_and_a_caller_whose_server_dies() {
    let (mut w, client, server) = client_server();
    w.syscall(client, Syscall::Call, THEIR_EP, info(1, 0, 0), [0; 4]);
    w.syscall(server, Syscall::Recv, THEIR_EP, info(0, 0, 0), [0; 4]);
    assert_eq!(w.k.thread_state(client), Ok(ThreadState::BlockedReply));
    // The server thread is destroyed while holding the reply capability.
    w.invoke(
        RootLayout::CNODE,
        capvisor_ipc::abi::Invocation::Delete,
        &[SERVER],
    )
    .unwrap();
    assert_eq!(
        w.k.take_syscall_result(client).and_then(|r| r.error_code()),
        Some(KernelError::Cancelled)
    );
    // A sender queued on an endpoint that dies.
    w.syscall(client, Syscall::Send, THEIR_EP, info(1, 0, 0), [0; 4]);
    assert!(matches!(
        w.k.thread_state(client),
        Ok(ThreadState::BlockedSend(_))
    ));
    w.invoke(
        RootLayout::CNODE,
        capvisor_ipc::abi::Invocation::Revoke,
        &[EP],
    )
    .unwrap();
    w.invoke(
        RootLayout::CNODE,
        capvisor_ipc::abi::Invocation::Delete,
        &[EP],
    )
    .unwrap();
    assert_eq!(
        w.k.take_syscall_result(client).and_then(|r| r.error_code()),
        Some(KernelError::Cancelled)
    );
}

#[test]
fn replies_are_one_shot_and_receiving_again_spends_them() {
    let (mut w, client, server) = client_server();
    w.syscall(client, Syscall::Call, THEIR_EP, info(1, 0, 0), [0; 4]);
    w.syscall(server, Syscall::Recv, THEIR_EP, info(0, 0, 0), [0; 4]);
    w.syscall(server, Syscall::Reply, 0, info(2, 8, 0), [99, 0, 0, 0]);
    let back = w.k.take_syscall_result(client).unwrap();
    assert_eq!((back.error_code(), back.0[2]), (None, 99));
    // A second reply goes nowhere.
    let (regs, _) = w.syscall(server, Syscall::Reply, 0, info(2, 8, 0), [98, 0, 0, 0]);
    assert_eq!(regs.error_code(), None);
    assert!(w.k.take_syscall_result(client).is_none());
    // Receiving again before replying cancels the caller.
    w.syscall(client, Syscall::Call, THEIR_EP, info(1, 0, 0), [0; 4]);
    w.syscall(server, Syscall::Recv, THEIR_EP, info(0, 0, 0), [0; 4]);
    w.syscall(server, Syscall::Recv, THEIR_EP, info(0, 0, 0), [0; 4]);
    assert_eq!(
        w.k.take_syscall_result(client).and_then(|r| r.error_code()),
        Some(KernelError::Cancelled)
    );
}

#[test]
fn caps_to_the_receiving_endpoint_arrive_unwrapped_and_a_full_window_stops_transfer() {
    let (mut w, client, server) = client_server();
    w.syscall(server, Syscall::Recv, THEIR_EP, info(0, 0, 0), [0; 4]);
    let buffer = w.buffer(client);
    buffer.caps = [THEIR_EP, THEIR_FRAME, 0];
    w.syscall(client, Syscall::Send, THEIR_EP, info(3, 0, 2), [0; 4]);
    let got = w.k.take_syscall_result(server).unwrap();
    let got_info = MessageInfo::decode(got.info()).unwrap();
    assert_eq!(
        (got_info.extra_caps(), got_info.caps_unwrapped()),
        (2, 0b01)
    );
    let buffer = w.buffer(server).clone();
    assert_eq!(buffer.caps[0], BADGE);
    assert_eq!(
        buffer.caps[1], WINDOW,
        "the first installed capability takes the first window slot"
    );
    // The window is now occupied: the next frame does not arrive.
    w.syscall(server, Syscall::Recv, THEIR_EP, info(0, 0, 0), [0; 4]);
    w.buffer(client).caps = [THEIR_FRAME, 0, 0];
    w.syscall(client, Syscall::Send, THEIR_EP, info(3, 0, 1), [0; 4]);
    let got = w.k.take_syscall_result(server).unwrap();
    assert_eq!(MessageInfo::decode(got.info()).unwrap().extra_caps(), 0);
}

#[test]
fn non_blocking_send_and_receive_never_wait() {
    let (mut w, client, server) = client_server();
    let (regs, _) = w.syscall(client, Syscall::NbSend, THEIR_EP, info(1, 0, 0), [0; 4]);
    assert_eq!(regs.error_code(), None);
    assert_eq!(w.k.thread_state(client), Ok(ThreadState::Ready));
    let (regs, _) = w.syscall(server, Syscall::NbRecv, THEIR_EP, info(0, 0, 0), [0; 4]);
    assert_eq!((regs.error_code(), regs.0[0], regs.info()), (None, 0, 0));
}

#[test]
fn notifications_or_badges_and_wait_takes_the_word() {
    use capvisor_ipc::abi::Invocation::Mint;
    let mut w = World::new();
    w.retype(World::kind(ObjectKind::Notification), 0, NOTIFICATION, 1)
        .unwrap();
    w.invoke(
        RootLayout::CNODE,
        Mint,
        &[NOTIFICATION + 1, NOTIFICATION, 0x1f, 0b01],
    )
    .unwrap();
    w.invoke(
        RootLayout::CNODE,
        Mint,
        &[NOTIFICATION + 2, NOTIFICATION, 0x1f, 0b10],
    )
    .unwrap();
    let root = w.root;
    w.syscall(
        root,
        Syscall::Signal,
        NOTIFICATION + 1,
        info(0, 0, 0),
        [0; 4],
    );
    w.syscall(
        root,
        Syscall::Signal,
        NOTIFICATION + 2,
        info(0, 0, 0),
        [0; 4],
    );
    let (regs, _) = w.syscall(root, Syscall::Poll, NOTIFICATION, info(0, 0, 0), [0; 4]);
    assert_eq!(regs.0[0], 0b11);
    let (regs, _) = w.syscall(root, Syscall::Poll, NOTIFICATION, info(0, 0, 0), [0; 4]);
    assert_eq!((regs.error_code(), regs.0[0]), (None, 0));
}

#[test]
fn notification_waiters_errors_and_deletion() {
    let mut w = World::new();
    w.retype(World::kind(ObjectKind::Notification), 0, NOTIFICATION, 1)
        .unwrap();
    let mint = capvisor_ipc::abi::Invocation::Mint;
    w.invoke(
        RootLayout::CNODE,
        mint,
        &[NOTIFICATION + 2, NOTIFICATION, 0x1f, 0b10],
    )
    .unwrap();
    let root = w.root;
    // A waiter is woken by the next signal with its badge.
    let waiter = w.spawn(FREE + 10, 10);
    w.syscall(waiter, Syscall::Wait, NOTIFICATION, info(0, 0, 0), [0; 4]);
    assert!(matches!(
        w.k.thread_state(waiter),
        Ok(ThreadState::BlockedNotification(_))
    ));
    w.syscall(
        root,
        Syscall::Signal,
        NOTIFICATION + 2,
        info(0, 0, 0),
        [0; 4],
    );
    assert_eq!(w.k.take_syscall_result(waiter).map(|r| r.0[0]), Some(0b10));
    // Errors: wrong type, rights.
    let read_only = World::rights(&[Rights::READ]);
    w.invoke(
        RootLayout::CNODE,
        capvisor_ipc::abi::Invocation::Copy,
        &[NOTIFICATION + 3, NOTIFICATION, read_only],
    )
    .unwrap();
    let (regs, _) = w.syscall(
        root,
        Syscall::Signal,
        NOTIFICATION + 3,
        info(0, 0, 0),
        [0; 4],
    );
    assert_eq!(regs.error_code(), Some(KernelError::InsufficientRights));
    let (regs, _) = w.syscall(root, Syscall::Wait, UNTYPED, info(0, 0, 0), [0; 4]);
    assert_eq!(regs.error_code(), Some(KernelError::WrongType));
    // Deleting the notification cancels a waiter.
    w.syscall(waiter, Syscall::Wait, NOTIFICATION, info(0, 0, 0), [0; 4]);
    w.invoke(
        RootLayout::CNODE,
        capvisor_ipc::abi::Invocation::Revoke,
        &[NOTIFICATION],
    )
    .unwrap();
    w.invoke(
        RootLayout::CNODE,
        capvisor_ipc::abi::Invocation::Delete,
        &[NOTIFICATION],
    )
    .unwrap();
    assert_eq!(
        w.k.take_syscall_result(waiter).and_then(|r| r.error_code()),
        Some(KernelError::Cancelled)
    );
}

/// Issue 13, finding 6: the kernel's own interrupts (SGIs, PPIs: the tick is PPI 26, the virtual
/// timer PPI 27) get no handler, and a handler without WRITE can change nothing.
#[test]
fn only_spis_get_handlers_and_handlers_need_write() {
    use capvisor_ipc::abi::Invocation::{
        Copy, IrqAck, IrqForwardToVcpu, IrqIssueHandler, IrqSetNotification,
    };
    let mut w = World::new();
    for intid in [0, 15, 16, 23, 26, 27, 31, 1020, 1023] {
        assert_eq!(
            w.invoke(
                RootLayout::IRQ_CONTROL,
                IrqIssueHandler,
                &[intid, FREE + 10]
            ),
            Err(KernelError::RangeError),
            "INTID {intid}"
        );
    }
    w.invoke(RootLayout::IRQ_CONTROL, IrqIssueHandler, &[32, FREE + 10])
        .unwrap();
    w.invoke(RootLayout::IRQ_CONTROL, IrqIssueHandler, &[1019, FREE + 11])
        .unwrap();
    w.retype(World::kind(ObjectKind::Notification), 0, NOTIFICATION, 1)
        .unwrap();
    // A copy with READ only.
    w.invoke(RootLayout::CNODE, Copy, &[FREE + 12, FREE + 10, 1])
        .unwrap();
    for (label, args) in [
        (IrqAck, vec![]),
        (IrqSetNotification, vec![NOTIFICATION]),
        (IrqForwardToVcpu, vec![0, 40]),
    ] {
        assert_eq!(
            w.invoke(FREE + 12, label, &args),
            Err(KernelError::InsufficientRights),
            "{label:?}"
        );
    }
    w.k.check_invariants().unwrap();
}

#[test]
fn interrupts_signal_their_notification_until_acknowledged() {
    use capvisor_ipc::abi::Invocation::{IrqAck, IrqIssueHandler, IrqSetNotification, Mint};
    let mut w = World::new();
    w.retype(World::kind(ObjectKind::Notification), 0, NOTIFICATION, 1)
        .unwrap();
    w.invoke(
        RootLayout::CNODE,
        Mint,
        &[NOTIFICATION + 1, NOTIFICATION, 0x1f, 1 << 5],
    )
    .unwrap();
    assert_eq!(w.k.handle_irq(33), IrqOutcome::Unhandled);
    w.invoke(RootLayout::IRQ_CONTROL, IrqIssueHandler, &[33, FREE + 10])
        .unwrap();
    assert_eq!(
        w.invoke(RootLayout::IRQ_CONTROL, IrqIssueHandler, &[33, FREE + 11]),
        Err(KernelError::InvalidArgument)
    );
    assert_eq!(
        w.invoke(RootLayout::IRQ_CONTROL, IrqIssueHandler, &[5000, FREE + 11]),
        Err(KernelError::RangeError)
    );
    assert_eq!(
        w.invoke(RootLayout::IRQ_CONTROL, IrqIssueHandler, &[34, FREE + 10]),
        Err(KernelError::SlotOccupied)
    );
    assert_eq!(w.k.handle_irq(33), IrqOutcome::Unhandled);
    assert_eq!(
        w.invoke(FREE + 10, IrqSetNotification, &[UNTYPED]),
        Err(KernelError::WrongType)
    );
    w.invoke(FREE + 10, IrqSetNotification, &[NOTIFICATION + 1])
        .unwrap();
    assert!(matches!(w.k.handle_irq(33), IrqOutcome::Delivered(_)));
    let root = w.root;
    let (regs, _) = w.syscall(root, Syscall::Poll, NOTIFICATION, info(0, 0, 0), [0; 4]);
    assert_eq!(regs.0[0], 1 << 5);
    w.invoke(FREE + 10, IrqAck, &[]).unwrap();
    assert_eq!(w.fx.irq_acks.as_slice(), &[33]);
    // Revoking IrqControl removes the handler; the INTID can be issued again.
    w.invoke(
        RootLayout::CNODE,
        capvisor_ipc::abi::Invocation::Revoke,
        &[RootLayout::IRQ_CONTROL],
    )
    .unwrap();
    assert!(w.cap(FREE + 10).is_none());
    w.invoke(RootLayout::IRQ_CONTROL, IrqIssueHandler, &[33, FREE + 10])
        .unwrap();
}

fn fault_setup() -> (World, ThreadRef, ThreadRef) {
    let (mut w, _client, server) = client_server();
    // A third thread whose faults go to EP with badge 77.
    w.invoke(
        RootLayout::CNODE,
        capvisor_ipc::abi::Invocation::Mint,
        &[FREE + 12, EP, 0x1f, 77],
    )
    .unwrap();
    w.retype(World::kind(ObjectKind::Thread), 0, FREE + 10, 1)
        .unwrap();
    let args = [
        0x2000,
        0x9000,
        0,
        100,
        RootLayout::CNODE,
        RootLayout::SPACE,
        FREE + 12,
    ];
    w.invoke_as(w.root, FREE + 10, THREAD_CONFIGURE, &args)
        .unwrap();
    w.invoke(FREE + 10, capvisor_ipc::abi::Invocation::Resume, &[])
        .unwrap();
    let Object::Thread(faulty) = w.cap(FREE + 10).unwrap().object else {
        unreachable!()
    };
    (w, faulty, server)
}

#[test]
fn a_fault_goes_to_the_supervisor_whose_reply_resumes_or_stops() {
    let (mut w, faulty, server) = fault_setup();
    w.syscall(server, Syscall::Recv, THEIR_EP, info(0, 0, 0), [0; 4]);
    let fault = ServiceFault::Exception {
        esr: Esr::new(0x0200_0000),
    };
    let (outcome, _) = w.k.handle_fault(faulty, 0x2040, fault, &mut *w.fx);
    assert_eq!(outcome, FaultOutcome::Sent);
    assert_eq!(w.k.thread_state(faulty), Ok(ThreadState::BlockedReply));
    let got = w.k.take_syscall_result(server).unwrap();
    assert_eq!(got.0[0], 77);
    let message = FaultMessage::decode(MessageInfo::decode(got.info()).unwrap(), got.words());
    assert_eq!(message, Ok(FaultMessage::Service { pc: 0x2040, fault }));
    // Resume: the thread runs again, with no syscall result to deliver.
    let (reply_info, words) = encode_service_reply(Ok(ServiceResolution::Resume));
    w.syscall(server, Syscall::ReplyRecv, THEIR_EP, reply_info, words);
    assert_eq!(w.k.thread_state(faulty), Ok(ThreadState::Ready));
    assert!(w.k.take_syscall_result(faulty).is_none());
    // Fault again; this time the supervisor stops it (any reply but Resume does).
    w.k.handle_fault(faulty, 0x2040, fault, &mut *w.fx);
    w.k.take_syscall_result(server).unwrap();
    w.syscall(server, Syscall::Reply, 0, info(1, 0, 0), [0; 4]);
    assert_eq!(w.k.thread_state(faulty), Ok(ThreadState::Inactive));
    w.k.check_invariants().unwrap();
}

#[test]
fn a_fault_without_a_handler_stops_the_thread() {
    let mut w = World::new();
    let t = w.spawn(FREE, 10);
    let fault = ServiceFault::UnknownSyscall { number: 99 };
    let (outcome, _) = w.k.handle_fault(t, 0, fault, &mut *w.fx);
    assert_eq!(outcome, FaultOutcome::NoHandler);
    assert_eq!(w.k.thread_state(t), Ok(ThreadState::Inactive));
    // A queued fault whose endpoint dies leaves the thread stopped, not woken with an error.
    let (mut w, faulty, _) = fault_setup();
    w.k.handle_fault(faulty, 0, fault, &mut *w.fx);
    assert!(matches!(
        w.k.thread_state(faulty),
        Ok(ThreadState::BlockedSend(_))
    ));
    w.invoke(
        RootLayout::CNODE,
        capvisor_ipc::abi::Invocation::Revoke,
        &[EP],
    )
    .unwrap();
    w.invoke(
        RootLayout::CNODE,
        capvisor_ipc::abi::Invocation::Delete,
        &[EP],
    )
    .unwrap();
    assert_eq!(w.k.thread_state(faulty), Ok(ThreadState::Inactive));
    assert!(w.k.take_syscall_result(faulty).is_none());
    w.k.check_invariants().unwrap();
}

#[test]
fn a_reply_carries_capabilities_only_when_the_server_may_grant_replies() {
    let (mut w, client, server) = client_server();
    // The server gets a frame of its own to hand back.
    w.invoke(
        SERVER_CNODE,
        capvisor_ipc::abi::Invocation::Copy,
        &[THEIR_FRAME, FRAME, 0x1f],
    )
    .unwrap();
    w.buffer(client).receive_slot = WINDOW;
    w.syscall(client, Syscall::Call, THEIR_EP, info(1, 0, 0), [0; 4]);
    w.syscall(server, Syscall::Recv, THEIR_EP, info(0, 0, 0), [0; 4]);
    w.buffer(server).caps = [THEIR_FRAME, 0, 0];
    w.syscall(server, Syscall::Reply, 0, info(0, 0, 1), [0; 4]);
    let back = w.k.take_syscall_result(client).unwrap();
    assert_eq!(MessageInfo::decode(back.info()).unwrap().extra_caps(), 1);
    assert_eq!(w.buffer(client).caps[0], WINDOW);
    let window = w.k.cnode_slot(cnode(&w, CLIENT_CNODE), WINDOW).unwrap();
    assert!(matches!(
        w.k.slots.cap(window).map(|c| c.object),
        Some(Object::Frame(_))
    ));
    // A server that received through a capability without GRANT/GRANT_REPLY replies without them.
    w.invoke(
        SERVER_CNODE,
        capvisor_ipc::abi::Invocation::Delete,
        &[THEIR_EP],
    )
    .unwrap();
    let read = World::rights(&[Rights::READ]);
    w.invoke(
        SERVER_CNODE,
        capvisor_ipc::abi::Invocation::Copy,
        &[THEIR_EP, EP, read],
    )
    .unwrap();
    w.buffer(client).receive_slot = WINDOW + 1;
    w.syscall(client, Syscall::Call, THEIR_EP, info(1, 0, 0), [0; 4]);
    w.syscall(server, Syscall::Recv, THEIR_EP, info(0, 0, 0), [0; 4]);
    w.syscall(server, Syscall::Reply, 0, info(0, 0, 1), [0; 4]);
    let back = w.k.take_syscall_result(client).unwrap();
    assert_eq!(MessageInfo::decode(back.info()).unwrap().extra_caps(), 0);
    let window = w.k.cnode_slot(cnode(&w, CLIENT_CNODE), WINDOW + 1).unwrap();
    assert!(w.k.slots.cap(window).is_none());
}

#[test]
fn a_bound_notification_wakes_a_receiving_server_and_is_taken_first() {
    use crate::object::{NOTIFICATION_LABEL, THREAD_BIND_NOTIFICATION};
    let (mut w, client, server) = client_server();
    w.retype(World::kind(ObjectKind::Notification), 0, NOTIFICATION, 1)
        .unwrap();
    let mint = capvisor_ipc::abi::Invocation::Mint;
    w.invoke(
        RootLayout::CNODE,
        mint,
        &[NOTIFICATION + 1, NOTIFICATION, 0x1f, 0b100],
    )
    .unwrap();
    let bind = |w: &mut World, cptr| w.invoke_as(w.root, SERVER, THREAD_BIND_NOTIFICATION, &[cptr]);
    // Errors: not a notification, no READ, already bound.
    assert_eq!(bind(&mut w, EP), Err(KernelError::WrongType));
    let write_only = World::rights(&[Rights::WRITE]);
    let copy = capvisor_ipc::abi::Invocation::Copy;
    w.invoke(
        RootLayout::CNODE,
        copy,
        &[NOTIFICATION + 2, NOTIFICATION, write_only],
    )
    .unwrap();
    assert_eq!(
        bind(&mut w, NOTIFICATION + 2),
        Err(KernelError::InsufficientRights)
    );
    bind(&mut w, NOTIFICATION).unwrap();
    assert_eq!(
        bind(&mut w, NOTIFICATION),
        Err(KernelError::InvalidArgument)
    );
    // A signal wakes the server out of its endpoint receive, marked as a notification.
    w.syscall(server, Syscall::Recv, THEIR_EP, info(0, 0, 0), [0; 4]);
    let root = w.root;
    w.syscall(
        root,
        Syscall::Signal,
        NOTIFICATION + 1,
        info(0, 0, 0),
        [0; 4],
    );
    let got = w.k.take_syscall_result(server).unwrap();
    assert_eq!((got.error_code(), got.0[0]), (None, 0b100));
    assert_eq!(
        MessageInfo::decode(got.info()).unwrap().label(),
        NOTIFICATION_LABEL
    );
    // A word pending when the server receives comes first; then messages flow as before.
    w.syscall(
        root,
        Syscall::Signal,
        NOTIFICATION + 1,
        info(0, 0, 0),
        [0; 4],
    );
    w.syscall(client, Syscall::Send, THEIR_EP, info(7, 0, 0), [0; 4]);
    let (got, _) = w.syscall(server, Syscall::Recv, THEIR_EP, info(0, 0, 0), [0; 4]);
    assert_eq!(
        MessageInfo::decode(got.info()).unwrap().label(),
        NOTIFICATION_LABEL
    );
    let (got, _) = w.syscall(server, Syscall::Recv, THEIR_EP, info(0, 0, 0), [0; 4]);
    assert_eq!(
        (got.0[0], MessageInfo::decode(got.info()).unwrap().label()),
        (BADGE, 7)
    );
    // Unbinding (0) and deleting keep both sides consistent (the invariants check it).
    bind(&mut w, 0).unwrap();
    bind(&mut w, NOTIFICATION).unwrap();
    w.invoke(
        RootLayout::CNODE,
        capvisor_ipc::abi::Invocation::Revoke,
        &[NOTIFICATION],
    )
    .unwrap();
    w.invoke(
        RootLayout::CNODE,
        capvisor_ipc::abi::Invocation::Delete,
        &[NOTIFICATION],
    )
    .unwrap();
    w.retype(World::kind(ObjectKind::Notification), 0, NOTIFICATION, 1)
        .unwrap();
    bind(&mut w, NOTIFICATION).unwrap();
    w.invoke(
        RootLayout::CNODE,
        capvisor_ipc::abi::Invocation::Delete,
        &[SERVER],
    )
    .unwrap();
    w.k.check_invariants().unwrap();
}

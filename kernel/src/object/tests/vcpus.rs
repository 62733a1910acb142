//! vCPUs: binding to a thread in a VM, guest faults to the VMM and their resolutions, registers,
//! and cache/TLB maintenance checks.

use capvisor_ipc::abi::{CacheOp, Invocation, KernelError, MessageInfo, Syscall};
use capvisor_ipc::cap::ObjectKind;
use capvisor_ipc::protocols::fault::{
    self, FaultError, FaultMessage, GuestFault, RegisterWrite, Resolution, ServiceResolution,
    encode_guest_reply, encode_service_reply,
};
use capvisor_ipc::protocols::guest_call::{self, CallResult, GuestCall};
use capvisor_ipc::types::{Esr, Far, Ipa};

use super::*;
use crate::object::FaultOutcome;
use crate::object::fake::FakeMaintenance;
use crate::object::thread::ThreadState;

const EP: u64 = FREE;
const FAULT_EP: u64 = FREE + 1;
const VM: u64 = FREE + 2;
const VCPU: u64 = FREE + 3;
const THREAD: u64 = FREE + 4;
const FRAME: u64 = FREE + 5;

/// A VM with one vCPU run by a thread whose faults go to `EP` with badge 5; returns the thread.
fn guest() -> (World, ThreadRef) {
    guest_at(100)
}

/// As [`guest`], the vCPU's thread at `priority`.
fn guest_at(priority: u64) -> (World, ThreadRef) {
    let mut w = World::new();
    w.retype(World::kind(ObjectKind::Endpoint), 0, EP, 1)
        .unwrap();
    w.invoke(
        RootLayout::CNODE,
        Invocation::Mint,
        &[FAULT_EP, EP, 0x1f, 5],
    )
    .unwrap();
    w.retype(World::kind(ObjectKind::Vm), 0, VM, 1).unwrap();
    w.retype(World::kind(ObjectKind::Vcpu), 0, VCPU, 1).unwrap();
    w.retype(World::kind(ObjectKind::Thread), 0, THREAD, 1)
        .unwrap();
    let args = [0x4020_0000, 0, 0, priority, RootLayout::CNODE, VM, FAULT_EP];
    w.invoke_as(w.root, THREAD, THREAD_CONFIGURE, &args)
        .unwrap();
    // Not bound yet: a thread in a VM cannot run.
    assert_eq!(
        w.invoke(THREAD, Invocation::Resume, &[]),
        Err(KernelError::InvalidArgument)
    );
    w.invoke(THREAD, Invocation::ThreadBindVcpu, &[VCPU])
        .unwrap();
    w.invoke(THREAD, Invocation::Resume, &[]).unwrap();
    let Object::Thread(thread) = w.cap(THREAD).unwrap().object else {
        unreachable!()
    };
    (w, thread)
}

/// The root receives the guest's fault; returns the decoded message.
fn receive(w: &mut World) -> FaultMessage {
    let (info, words) = receive_raw(w);
    FaultMessage::decode(info, words).unwrap()
}

/// The root replies with a fixed-layout message.
fn reply(w: &mut World, (info, words): (MessageInfo, fault::Words)) {
    w.syscall(w.root, Syscall::Reply, 0, info, words);
}

#[test]
fn binding_needs_an_inactive_thread_in_a_vm_and_a_free_vcpu() {
    let (mut w, _thread) = guest();
    // Already bound (and running): refused.
    assert_eq!(
        w.invoke(THREAD, Invocation::ThreadBindVcpu, &[VCPU]),
        Err(KernelError::IllegalOperation)
    );
    // A thread in a service space cannot take a vCPU.
    w.retype(World::kind(ObjectKind::Thread), 0, FREE + 10, 1)
        .unwrap();
    let args = [
        0x2000,
        0x9000,
        0,
        100,
        RootLayout::CNODE,
        RootLayout::SPACE,
        0,
    ];
    w.invoke_as(w.root, FREE + 10, THREAD_CONFIGURE, &args)
        .unwrap();
    w.retype(World::kind(ObjectKind::Vcpu), 0, FREE + 11, 1)
        .unwrap();
    assert_eq!(
        w.invoke(FREE + 10, Invocation::ThreadBindVcpu, &[FREE + 11]),
        Err(KernelError::IllegalOperation)
    );
    // Not a vCPU.
    assert_eq!(
        w.invoke(FREE + 10, Invocation::ThreadBindVcpu, &[EP]),
        Err(KernelError::WrongType)
    );
    w.k.check_invariants().unwrap();
}

/// The root receives the guest's fault; returns the raw message-info word and words.
fn receive_raw(w: &mut World) -> (MessageInfo, [u64; 4]) {
    let (regs, _) = w.syscall(w.root, Syscall::Recv, EP, info(0, 0, 0), [0; 4]);
    let regs = match regs.error_code() {
        None if regs.0[0] == 5 => regs,
        _ => w.k.take_syscall_result(w.root).unwrap(),
    };
    assert_eq!(regs.0[0], 5, "the fault carries the vCPU thread's badge");
    (MessageInfo::decode(regs.info()).unwrap(), regs.words())
}

#[test]
fn a_guest_hvc_goes_to_the_vmm_as_a_guest_call_and_either_reply_resumes_the_vcpu() {
    let (mut w, thread) = guest();
    let _vcpu = w.k.thread_vcpu(thread).unwrap();
    let hvc = GuestFault::Hvc {
        imm: 0,
        args: [0x8400_0000, 1, 2, 3],
    };
    let (outcome, _) = w.k.handle_guest_fault(thread, 0x4020_0010, hvc, &mut *w.fx);
    assert_eq!(outcome, FaultOutcome::Sent);
    // A guest call, in registers.
    let (info, words) = receive_raw(&mut w);
    let call = GuestCall::decode(info, words).unwrap();
    assert_eq!(
        (call.smc, call.imm, call.args),
        (false, 0, [0x8400_0000, 1, 2, 3])
    );
    assert_eq!(w.k.thread_state(thread), Ok(ThreadState::BlockedReply));
    let result = CallResult {
        values: [0x1_0001, 0, 0, 0],
        count: 1,
        advance_pc: false,
    };
    let (info, words) = result.encode();
    w.syscall(w.root, Syscall::Reply, 0, info, words);
    assert_eq!(w.k.thread_state(thread), Ok(ThreadState::Ready));
    assert_eq!(w.fx.resolutions, 1);
    let context = w.context(thread);
    assert_eq!((context.pc, context.x[0]), (0x4020_0000, 0x1_0001));
    // A guest reply is accepted too.
    w.k.handle_guest_fault(thread, 0x4020_0010, hvc, &mut *w.fx);
    receive_raw(&mut w);
    let mut writes = heapless::Vec::new();
    writes
        .push(RegisterWrite {
            register: fault::GpRegister::new(0).unwrap(),
            value: 0x1_0002,
        })
        .unwrap();
    let resolution = Resolution::Emulate {
        writes,
        advance_pc: false,
    };
    reply(&mut w, encode_guest_reply(&Ok(resolution)));
    assert_eq!(w.k.thread_state(thread), Ok(ThreadState::Ready));
    assert_eq!(w.fx.resolutions, 2);
    let context = w.context(thread);
    assert_eq!((context.pc, context.x[0]), (0x4020_0000, 0x1_0002));
    // A malformed fixed reply (five values) resolves nothing: the vCPU stays stopped.
    w.k.handle_guest_fault(thread, 0x4020_0010, hvc, &mut *w.fx);
    receive_raw(&mut w);
    let bad = MessageInfo::new(guest_call::REPLY_LABEL | 5, 32, 0).unwrap();
    w.syscall(w.root, Syscall::Reply, 0, bad, [0; 4]);
    assert_eq!(w.k.thread_state(thread), Ok(ThreadState::Inactive));
    assert_eq!(w.fx.resolutions, 2);
    w.k.check_invariants().unwrap();
}

/// The VMM's `ReplyRecv` with a guest-call result takes the fast path and leaves exactly the slow
/// path's state, whether the glue accepts the result or refuses it.
#[test]
fn a_guest_call_result_in_reply_recv_takes_the_fast_path() {
    for (refuse, priority) in [(false, 100), (true, 100), (false, 255), (true, 255)] {
        // The root (the VMM here) runs at 255; a vCPU's thread usually runs below its VMM.
        let (mut fast, thread) = guest_at(priority);
        let (mut slow, _) = guest_at(priority);
        let hvc = GuestFault::Hvc {
            imm: 0,
            args: [0x8400_0000, 0, 0, 0],
        };
        let before = crate::object::fastpath::TAKEN.with(std::cell::Cell::get);
        for w in [&mut fast, &mut slow] {
            w.fx.refuse_resolution = refuse;
            w.k.handle_guest_fault(thread, 0x4020_0010, hvc, &mut *w.fx);
            receive_raw(w);
        }
        let result = CallResult {
            values: [0x1_0001, 0, 0, 0],
            count: 1,
            advance_pc: false,
        };
        let (info, words) = result.encode();
        let entry = SyscallRegs([EP, info.raw(), words[0], words[1], words[2], words[3], 0, 2]);
        let (mut a, mut b) = (entry, entry);
        let root = fast.root;
        let fast_schedule = fast.raw_syscall(root, &mut a);
        let slow_schedule = slow.raw_syscall_slow(root, &mut b);
        assert_eq!((fast_schedule, a), (slow_schedule, b));
        let taken = crate::object::fastpath::TAKEN.with(std::cell::Cell::get) - before;
        assert_eq!(taken, 1);
        let expected = if refuse {
            ThreadState::Inactive
        } else {
            ThreadState::Ready
        };
        assert_eq!(fast.k.thread_state(thread), Ok(expected));
        assert_eq!(fast.k.describe(), slow.k.describe());
        assert_eq!(format!("{:?}", fast.fx), format!("{:?}", slow.fx));
        fast.k.check_invariants().unwrap();
    }
}

/// Every guest fault goes in the message registers: the VMM's IPC buffer is not written.
#[test]
fn guest_faults_go_in_registers_with_an_mmio_writes_value() {
    let (mut w, thread) = guest();
    let root = w.root;
    w.buffer(root).msg.fill(0x5a5a);
    let x: [u64; 31] = core::array::from_fn(|n| 0x1000 + n as u64);
    // STR x9, [x0] to a device: ISV, SAS doubleword, SRT 9, WnR.
    let store = Esr::new(0x24 << 26 | 1 << 25 | 1 << 24 | 0b11 << 22 | 9 << 16 | 1 << 6);
    let write = GuestFault::data_abort(Ipa::new(0x0900_0000), Far::new(0x0900_0000), store, &x);
    let fetch = GuestFault::InstructionAbort {
        ipa: Ipa::new(0x1000),
        far: Far::new(0x1000),
        esr: Esr::new(0x8200_0000),
    };
    for fault in [write, fetch, GuestFault::ListRegistersDrained] {
        w.k.handle_guest_fault(thread, 0x4020_0010, fault, &mut *w.fx);
        assert_eq!(receive(&mut w), FaultMessage::Guest(fault));
        reply(&mut w, encode_guest_reply(&Ok(Resolution::Resume)));
        assert_eq!(w.k.thread_state(thread), Ok(ThreadState::Ready));
    }
    assert!(matches!(
        write,
        GuestFault::DataAbort {
            write_value: Some(0x1009),
            ..
        }
    ));
    assert!(w.buffer(root).msg.iter().all(|&word| word == 0x5a5a));
    w.k.check_invariants().unwrap();
}

#[test]
fn a_refused_or_unhandled_resolution_leaves_the_vcpu_stopped() {
    let (mut w, thread) = guest();
    let wait = GuestFault::Wait { event: false };
    w.k.handle_guest_fault(thread, 0x4020_0000, wait, &mut *w.fx);
    receive(&mut w);
    reply(&mut w, encode_guest_reply(&Err(FaultError::Unhandled)));
    assert_eq!(w.k.thread_state(thread), Ok(ThreadState::Inactive));
    // The VMM may restart it; then a resolution the glue refuses stops it again.
    w.invoke(THREAD, Invocation::Resume, &[]).unwrap();
    w.fx.refuse_resolution = true;
    w.k.handle_guest_fault(thread, 0x4020_0000, wait, &mut *w.fx);
    receive(&mut w);
    reply(&mut w, encode_guest_reply(&Ok(Resolution::Resume)));
    assert_eq!(w.k.thread_state(thread), Ok(ThreadState::Inactive));
    // A service resolution for a guest fault is no resolution either.
    w.fx.refuse_resolution = false;
    w.invoke(THREAD, Invocation::Resume, &[]).unwrap();
    w.k.handle_guest_fault(thread, 0x4020_0000, wait, &mut *w.fx);
    receive(&mut w);
    reply(&mut w, encode_service_reply(Ok(ServiceResolution::Resume)));
    assert_eq!(w.k.thread_state(thread), Ok(ThreadState::Inactive));
    w.k.check_invariants().unwrap();
}

#[test]
fn vcpu_registers_need_rights_and_a_bound_vcpu() {
    let (mut w, thread) = guest();
    let _vcpu = w.k.thread_vcpu(thread).unwrap();
    w.invoke(VCPU, Invocation::VcpuWriteRegisters, &[32, 0x4020_0000])
        .unwrap();
    assert_eq!(
        w.invoke(VCPU, Invocation::VcpuReadRegisters, &[32]),
        Ok([0x4020_0000, 0, 0, 0])
    );
    assert_eq!(w.context(thread).pc, 0x4020_0000);
    assert_eq!(
        w.invoke(VCPU, Invocation::VcpuReadRegisters, &[63]),
        Err(KernelError::InvalidArgument)
    );
    assert_eq!(
        w.invoke(VCPU, Invocation::VcpuWriteRegisters, &[32]),
        Err(KernelError::TruncatedMessage)
    );
    // A read-only copy may read but not write.
    w.invoke(RootLayout::CNODE, Invocation::Copy, &[FREE + 20, VCPU, 0x1])
        .unwrap();
    assert!(
        w.invoke(FREE + 20, Invocation::VcpuReadRegisters, &[0])
            .is_ok()
    );
    assert_eq!(
        w.invoke(FREE + 20, Invocation::VcpuWriteRegisters, &[0, 1]),
        Err(KernelError::InsufficientRights)
    );
    // An unbound vCPU has no registers to reach.
    w.retype(World::kind(ObjectKind::Vcpu), 0, FREE + 21, 1)
        .unwrap();
    assert_eq!(
        w.invoke(FREE + 21, Invocation::VcpuReadRegisters, &[0]),
        Err(KernelError::IllegalOperation)
    );
    // Deleting the vCPU stops and unbinds its thread.
    w.invoke(RootLayout::CNODE, Invocation::Revoke, &[VCPU])
        .unwrap();
    w.invoke(RootLayout::CNODE, Invocation::Delete, &[VCPU])
        .unwrap();
    assert_eq!(w.k.thread_state(thread), Ok(ThreadState::Inactive));
    assert_eq!(w.k.thread_vcpu(thread), None);
    w.k.check_invariants().unwrap();
}

#[test]
fn injecting_an_interrupt_needs_write_rights_a_valid_intid_and_a_bound_vcpu() {
    let (mut w, thread) = guest();
    let vcpu = w.k.thread_vcpu(thread).unwrap();
    w.invoke(VCPU, Invocation::VcpuInjectIrq, &[27, 0xa0])
        .unwrap();
    w.invoke(VCPU, Invocation::VcpuInjectIrq, &[1019, 0])
        .unwrap();
    assert_eq!(&w.fx.injected[..], &[(vcpu, 27, 0xa0), (vcpu, 1019, 0)]);
    for bad in [[1020, 0], [27, 256], [u64::from(u32::MAX) + 1, 0]] {
        assert_eq!(
            w.invoke(VCPU, Invocation::VcpuInjectIrq, &bad),
            Err(KernelError::InvalidArgument)
        );
    }
    assert_eq!(
        w.invoke(VCPU, Invocation::VcpuInjectIrq, &[27]),
        Err(KernelError::TruncatedMessage)
    );
    // The glue's refusal comes back as it is.
    w.invoke(VCPU, Invocation::VcpuInjectIrq, &[30, 0]).unwrap();
    w.invoke(VCPU, Invocation::VcpuInjectIrq, &[31, 0]).unwrap();
    assert_eq!(
        w.invoke(VCPU, Invocation::VcpuInjectIrq, &[32, 0]),
        Err(KernelError::ListRegistersFull)
    );
    // A read-only copy may not inject.
    w.invoke(RootLayout::CNODE, Invocation::Copy, &[FREE + 20, VCPU, 0x1])
        .unwrap();
    assert_eq!(
        w.invoke(FREE + 20, Invocation::VcpuInjectIrq, &[27, 0]),
        Err(KernelError::InsufficientRights)
    );
    // An unbound vCPU has no guest to take it.
    w.retype(World::kind(ObjectKind::Vcpu), 0, FREE + 21, 1)
        .unwrap();
    assert_eq!(
        w.invoke(FREE + 21, Invocation::VcpuInjectIrq, &[27, 0]),
        Err(KernelError::IllegalOperation)
    );
    w.k.check_invariants().unwrap();
}

#[test]
fn maintenance_is_checked_before_the_glue_does_it() {
    let (mut w, _thread) = guest();
    w.retype(World::kind(ObjectKind::Frame), 12, FRAME, 1)
        .unwrap();
    let op = CacheOp::CleanInvalidatePoc.code();
    w.invoke(FRAME, Invocation::CacheMaintenance, &[op, VM])
        .unwrap();
    let Some((CacheOp::CleanInvalidatePoc, FakeMaintenance::Frame { size, vm, .. })) =
        w.fx.maintenance.last().copied()
    else {
        panic!("no frame maintenance recorded")
    };
    assert_eq!(size, 4096);
    assert!(vm.is_some());
    // The VM argument must be a VM.
    assert_eq!(
        w.invoke(FRAME, Invocation::CacheMaintenance, &[op, EP]),
        Err(KernelError::WrongType)
    );
    // TLB operations are for VMs, not frames; unknown operations are refused.
    let tlbi = CacheOp::TlbInvalidateVmid.code();
    assert_eq!(
        w.invoke(FRAME, Invocation::CacheMaintenance, &[tlbi, 0]),
        Err(KernelError::InvalidArgument)
    );
    assert_eq!(
        w.invoke(FRAME, Invocation::CacheMaintenance, &[99, 0]),
        Err(KernelError::InvalidArgument)
    );
    // A VM range must be page aligned and inside the IPA space.
    let ipa = CacheOp::TlbInvalidateIpa.code();
    w.invoke(
        VM,
        Invocation::CacheMaintenance,
        &[ipa, 0x4000_0000, 0x2000],
    )
    .unwrap();
    assert_eq!(
        w.fx.maintenance.last().map(|m| m.1),
        Some(FakeMaintenance::Vm {
            vm: match w.cap(VM).unwrap().object {
                Object::Vm(vm) => w.root_of(vm),
                _ => unreachable!(),
            },
            ipa: Ipa::new(0x4000_0000),
            size: 0x2000
        })
    );
    assert_eq!(
        w.invoke(
            VM,
            Invocation::CacheMaintenance,
            &[ipa, 0x4000_0800, 0x1000]
        ),
        Err(KernelError::AlignmentError)
    );
    assert_eq!(
        w.invoke(VM, Invocation::CacheMaintenance, &[ipa, 1 << 40, 0x1000]),
        Err(KernelError::BadAddress)
    );
    // Not a VM or a frame (an endpoint would take the label as a message: use a thread).
    assert_eq!(
        w.invoke(THREAD, Invocation::CacheMaintenance, &[ipa, 0, 0x1000]),
        Err(KernelError::IllegalOperation)
    );
    // Device frames are never cleaned by the kernel.
    w.invoke(
        MMIO_UNTYPED,
        Invocation::Retype,
        &[World::kind(ObjectKind::DeviceFrame), 12, 0, FREE + 30, 1],
    )
    .unwrap();
    assert_eq!(
        w.invoke(FREE + 30, Invocation::CacheMaintenance, &[op, 0]),
        Err(KernelError::MemoryTypeNotAllowed)
    );
}

#[test]
fn an_spi_handler_forwards_to_a_vcpu_until_told_not_to_or_the_vcpu_goes() {
    let (mut w, thread) = guest();
    let vcpu = w.k.thread_vcpu(thread).unwrap();
    let handler = FREE + 30;
    w.invoke(
        RootLayout::IRQ_CONTROL,
        Invocation::IrqIssueHandler,
        &[79, handler],
    )
    .unwrap();
    assert_eq!(w.k.irq_forward(79), None);
    w.invoke(handler, Invocation::IrqForwardToVcpu, &[VCPU, 79])
        .unwrap();
    assert_eq!(w.k.irq_forward(79), Some((vcpu, 79)));
    assert_eq!(w.fx.forwarding.last(), Some(&(79, true)));
    // Only SPIs, to a vCPU, with WRITE on it.
    for (cptr, vintid, error) in [
        (VCPU, 27, KernelError::InvalidArgument),
        (VCPU, 1020, KernelError::InvalidArgument),
        (EP, 79, KernelError::WrongType),
        (5000, 79, KernelError::InvalidSlot),
    ] {
        assert_eq!(
            w.invoke(handler, Invocation::IrqForwardToVcpu, &[cptr, vintid]),
            Err(error)
        );
    }
    w.invoke(RootLayout::CNODE, Invocation::Copy, &[FREE + 31, VCPU, 0x1])
        .unwrap();
    assert_eq!(
        w.invoke(handler, Invocation::IrqForwardToVcpu, &[FREE + 31, 79]),
        Err(KernelError::InsufficientRights)
    );
    // A PPI or SGI gets no handler at all: they are the kernel's (the timers, IPIs).
    for intid in [0, 15, 26, 27, 31, 1020] {
        assert_eq!(
            w.invoke(
                RootLayout::IRQ_CONTROL,
                Invocation::IrqIssueHandler,
                &[intid, FREE + 32],
            ),
            Err(KernelError::RangeError)
        );
    }
    // Stopping: 0 as the vCPU.
    w.invoke(handler, Invocation::IrqForwardToVcpu, &[0, 0])
        .unwrap();
    assert_eq!(w.k.irq_forward(79), None);
    assert_eq!(w.fx.forwarding.last(), Some(&(79, false)));
    // Deleting the vCPU ends the forward.
    w.invoke(handler, Invocation::IrqForwardToVcpu, &[VCPU, 79])
        .unwrap();
    w.invoke(RootLayout::CNODE, Invocation::Revoke, &[VCPU])
        .unwrap();
    w.invoke(RootLayout::CNODE, Invocation::Delete, &[VCPU])
        .unwrap();
    assert_eq!(w.k.irq_forward(79), None);
    // ... and the glue withdraws the interrupt (deactivating it if the guest held it).
    assert_eq!(w.fx.forwarding.last(), Some(&(79, false)));
    w.k.check_invariants().unwrap();
}

/// Issue 13, finding 7 (and issue 14, item 8): a vCPU in WFI was resumed at once, so an idle
/// guest kept its CPU. Now its VMM answers `WaitForInterrupt` and the vCPU's thread sleeps until
/// an interrupt is made pending for it or its timer's deadline passes.
#[test]
fn a_vcpu_in_wfi_sleeps_until_an_interrupt_or_its_timer() {
    let (mut w, thread) = guest();
    let vcpu = w.k.thread_vcpu(thread).unwrap();
    let wfi = fault::GuestFault::Wait { event: false };
    // Nothing pending: it sleeps; a virtual interrupt made pending wakes it.
    w.k.handle_guest_fault(thread, 0x4020_0010, wfi, &mut *w.fx);
    receive(&mut w);
    reply(
        &mut w,
        encode_guest_reply(&Ok(Resolution::WaitForInterrupt)),
    );
    assert_eq!(
        w.k.thread_state(thread),
        Ok(ThreadState::WaitingForInterrupt)
    );
    assert_eq!(w.k.pick_next(), Some(w.root));
    w.invoke(VCPU, Invocation::VcpuInjectIrq, &[40, 0xa0])
        .unwrap();
    assert_eq!(w.k.thread_state(thread), Ok(ThreadState::Ready));
    // With its timer armed it sleeps until the deadline, and an earlier tick does not wake it.
    w.fx.wait_finds = Some(Some(1000));
    w.k.handle_guest_fault(thread, 0x4020_0010, wfi, &mut *w.fx);
    receive(&mut w);
    reply(
        &mut w,
        encode_guest_reply(&Ok(Resolution::WaitForInterrupt)),
    );
    assert_eq!(w.k.next_deadline(), Some(1000));
    assert!(w.k.interrupts_deliver(), "its timer will wake it");
    w.k.wake_expired(999);
    assert_eq!(
        w.k.thread_state(thread),
        Ok(ThreadState::WaitingForInterrupt)
    );
    w.k.wake_expired(1000);
    assert_eq!(w.k.thread_state(thread), Ok(ThreadState::Ready));
    assert_eq!(w.k.next_deadline(), None);
    // Something already pending: the glue says run, and it never sleeps.
    w.fx.wait_finds = None;
    w.k.handle_guest_fault(thread, 0x4020_0010, wfi, &mut *w.fx);
    receive(&mut w);
    reply(
        &mut w,
        encode_guest_reply(&Ok(Resolution::WaitForInterrupt)),
    );
    assert_eq!(w.k.thread_state(thread), Ok(ThreadState::Ready));
    // Deleting the vCPU of a sleeping thread stops it cleanly.
    w.fx.wait_finds = Some(Some(5000));
    w.k.handle_guest_fault(thread, 0x4020_0010, wfi, &mut *w.fx);
    receive(&mut w);
    reply(
        &mut w,
        encode_guest_reply(&Ok(Resolution::WaitForInterrupt)),
    );
    w.invoke(RootLayout::CNODE, Invocation::Delete, &[VCPU])
        .unwrap();
    assert_eq!(w.k.thread_state(thread), Ok(ThreadState::Inactive));
    assert_eq!(w.k.next_deadline(), None);
    let _ = vcpu;
    w.k.check_invariants().unwrap();
}

/// Issue 13, finding 1, as a host test: a vCPU-bound thread configured into a service space,
/// given EL1h through VcpuWriteRegisters, its vCPU deleted and the thread resumed, was entered
/// at EL1 with HCR_EL2.TGE set (an illegal exception return that stopped the kernel). Now the
/// configure is refused, and whatever follows leaves the thread in its VM or stopped.
#[test]
fn a_vcpu_thread_cannot_be_moved_into_a_service_space() {
    let (mut w, thread) = guest();
    w.invoke(THREAD, Invocation::Suspend, &[]).unwrap();
    let args = [
        0x2000,
        0x9000,
        0,
        100,
        RootLayout::CNODE,
        RootLayout::SPACE,
        0,
    ];
    assert_eq!(
        w.invoke_as(w.root, THREAD, THREAD_CONFIGURE, &args),
        Err(KernelError::IllegalOperation)
    );
    // The rest of the chain: EL1h into its saved state, the vCPU deleted, the thread resumed.
    w.invoke(VCPU, Invocation::VcpuWriteRegisters, &[33, 0x3c5])
        .unwrap();
    w.invoke(RootLayout::CNODE, Invocation::Delete, &[VCPU])
        .unwrap();
    // In a VM without a vCPU it cannot run.
    assert_eq!(
        w.invoke(THREAD, Invocation::Resume, &[]),
        Err(KernelError::InvalidArgument)
    );
    // Configured into a service space now (no vCPU any more), it starts afresh at EL0.
    w.invoke_as(w.root, THREAD, THREAD_CONFIGURE, &args)
        .unwrap();
    w.invoke(THREAD, Invocation::Resume, &[]).unwrap();
    assert_eq!(w.context(thread).spsr & 0x1f, 0, "EL0t");
    w.k.check_invariants().unwrap();
}

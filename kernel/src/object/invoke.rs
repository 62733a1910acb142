//! Capability invocations: a `Call` (or `Send`) on a capability to a kernel object, with an
//! [`Invocation`] as the message label and the arguments as message words.
//!
//! Arguments (word `n` is message register `n`: `x2`–`x5`, then the IPC buffer):
//!
//! | object | invocation | words |
//! |---|---|---|
//! | any | `Identify` | → kind code, rights bits, badge, and for an untyped its size in bytes |
//! | Untyped | `UntypedDescribe` | → physical base, size in bytes, memory (0 RAM, 1–3 device) |
//! | IrqControl | `UntypedSetMemory` | untyped CPtr with `WRITE`, memory 1–3 (device types), only while nothing is made from it |
//! | CNode | `Copy` | dest index (in the invoked CNode), source CPtr (caller's CSpace), rights mask |
//! | CNode | `Mint` | as `Copy`, then the badge |
//! | CNode | `Move` | dest index, source CPtr |
//! | CNode | `Delete`, `Revoke` | index in the invoked CNode |
//! | Untyped | `Retype` | kind code, size bits, dest CNode CPtr (0: the caller's own), first dest index, count |
//! | Frame | `Map` | AddressSpace/Vm CPtr, IPA, access (R=1 W=2 X=4), memory type (0 WB, 1 NC, 2 Device-nGnRE) |
//! | Frame | `Unmap` | — |
//! | IrqControl | `IrqIssueHandler` | SPI INTID 32–1019, dest index (caller's CSpace) |
//! | IrqControl | `IrqControlNameThread` | thread CPtr with `WRITE`, image service entry index |
//! | IrqHandler | `IrqSetNotification` | notification CPtr (its badge is what the interrupt signals) |
//! | IrqHandler | `IrqAck` | — |
//! | IrqHandler | `IrqForwardToVcpu` | vCPU CPtr with `WRITE` (0: stop), vINTID 32–1019 |
//!
//! Every IrqHandler invocation needs `WRITE` on the handler capability.
//! | Thread | `Resume`, `Suspend`; [`THREAD_CONFIGURE`] | see `tcb.rs` |
//! | Thread | [`THREAD_BIND_NOTIFICATION`] | notification CPtr with `READ` (0: unbind) |
//! | Thread, Vcpu, Frame, Vm | vCPU binding, registers, cache/TLB maintenance | see `vcpu.rs` |
//!
//! CNode mutations need `WRITE` on the CNode capability; `Retype` needs `WRITE` on the untyped. Too
//! few argument words is [`KernelError::TruncatedMessage`]; an invocation the object does not
//! support is [`KernelError::IllegalOperation`] (`VcpuSetFaultEndpoint` is not implemented and
//! answers that too: a vCPU's faults go to its thread's fault endpoint).

use capvisor_ipc::abi::{Invocation, KernelError, MSG_REGS_IN_CPU, MessageInfo};
use capvisor_ipc::cap::{Badge, CPtr, Rights};

use super::Kernel;
use super::capability::{Capability, DeviceAttributes, Object, ObjectType};
use super::cspace::SlotId;
use super::delete::Progress;
use super::effects::{Effects, IPC_MSG_WORD, IpcWords};
use super::irq::IrqHandlerRef;
use super::memory::{ThreadRef, UntypedRef};
use super::regs::SyscallRegs;
use super::untyped::Retype;

/// The label of the thread-configure invocation (`Invocation::ThreadConfigure`).
pub const THREAD_CONFIGURE: u64 = Invocation::ThreadConfigure.code();

/// The label of the bind-notification invocation on a Thread (one word: the notification CPtr,
/// with `READ`; 0 unbinds): `Invocation::ThreadBindNotification`.
pub const THREAD_BIND_NOTIFICATION: u64 = Invocation::ThreadBindNotification.code();

/// Argument words an invocation can take.
pub(super) const ARG_WORDS: usize = 8;

/// An invocation's decoded arguments.
pub(super) struct Args {
    words: [u64; ARG_WORDS],
    count: usize,
}

impl Args {
    /// The first `N` words.
    ///
    /// # Errors
    /// [`KernelError::TruncatedMessage`] when the message carried fewer.
    pub(super) fn take<const N: usize>(&self) -> Result<[u64; N], KernelError> {
        if self.count < N || N > ARG_WORDS {
            return Err(KernelError::TruncatedMessage);
        }
        let mut out = [0; N];
        out.copy_from_slice(&self.words[..N]);
        Ok(out)
    }
}

/// Up to four result words.
type Results = heapless::Vec<u64, MSG_REGS_IN_CPU>;

impl Kernel {
    /// Performs the invocation of the capability in `slot` by `caller`.
    ///
    /// # Errors
    /// Every error of the invocation's object (see the module doc).
    pub(super) fn invoke(
        &mut self,
        caller: ThreadRef,
        slot: SlotId,
        info: MessageInfo,
        fx: &mut impl Effects,
    ) -> Result<(), KernelError> {
        let args = self.invocation_args(caller, info, fx)?;
        let cap = *self.slots.cap(slot).ok_or(KernelError::EmptySlot)?;
        let results = match Invocation::from_code(info.label()) {
            Some(Invocation::Identify) => {
                let size = match cap.object {
                    Object::Untyped(u) => self.untyped.get(u).map_or(0, |u| u.size),
                    _ => 0,
                };
                identify(&cap, size)
            }
            Some(Invocation::ThreadConfigure) => {
                let Object::Thread(thread) = cap.object else {
                    return Err(KernelError::IllegalOperation);
                };
                self.configure_thread(caller, thread, cap.rights, &args, fx)?;
                Results::new()
            }
            Some(Invocation::ThreadBindNotification) => {
                let Object::Thread(thread) = cap.object else {
                    return Err(KernelError::IllegalOperation);
                };
                self.bind_thread(caller, thread, cap.rights, &args)?;
                Results::new()
            }
            Some(invocation) => self.invoke_object(caller, slot, cap, invocation, &args, fx)?,
            None => return Err(KernelError::IllegalOperation),
        };
        // A revoke stopped at a preemption point: no results; the glue restarts the call.
        if self.restart {
            return Ok(());
        }
        let mut words = [0; MSG_REGS_IN_CPU];
        words[..results.len()].copy_from_slice(&results);
        let reply =
            MessageInfo::new(0, results.len() * 8, 0).map_err(|_| KernelError::InvalidArgument)?;
        self.set_result(caller, SyscallRegs::message(Badge::NONE, reply, words));
        Ok(())
    }

    fn invocation_args(
        &self,
        caller: ThreadRef,
        info: MessageInfo,
        fx: &mut impl Effects,
    ) -> Result<Args, KernelError> {
        let regs = SyscallRegs::of(&self.threads.get(caller)?.glue.context);
        let mut words = [0; ARG_WORDS];
        words[..MSG_REGS_IN_CPU].copy_from_slice(&regs.words());
        let count = info.length().div_ceil(8).min(ARG_WORDS);
        if count > MSG_REGS_IN_CPU {
            // Only the few words beyond the registers: never a copy of the whole buffer.
            let buffer = self.thread_buffer(caller, fx)?;
            buffer.read(
                IPC_MSG_WORD + MSG_REGS_IN_CPU,
                &mut words[MSG_REGS_IN_CPU..ARG_WORDS],
            );
        }
        Ok(Args { words, count })
    }

    fn invoke_object(
        &mut self,
        caller: ThreadRef,
        slot: SlotId,
        cap: Capability,
        invocation: Invocation,
        args: &Args,
        fx: &mut impl Effects,
    ) -> Result<Results, KernelError> {
        match (invocation, cap.object) {
            (
                Invocation::Copy
                | Invocation::Mint
                | Invocation::Move
                | Invocation::Delete
                | Invocation::Revoke,
                _,
            ) => {
                self.invoke_cnode(caller, cap, invocation, args, fx)?;
            }
            (Invocation::Retype, Object::Untyped(_)) => {
                self.invoke_retype(caller, slot, args, fx)?
            }
            (Invocation::IrqControlNameThread, Object::IrqControl) => {
                let [thread, entry] = args.take()?;
                self.name_thread(caller, thread, entry)?;
            }
            (Invocation::UntypedDescribe, Object::Untyped(untyped)) => {
                let mut results = Results::new();
                for word in self.describe_untyped(untyped)? {
                    // Three words fit the result registers.
                    let _ = results.push(word);
                }
                return Ok(results);
            }
            (Invocation::UntypedSetMemory, Object::IrqControl) => {
                let [untyped, memory] = args.take()?;
                self.set_untyped_memory(caller, untyped, memory)?;
            }
            (Invocation::Map, Object::Frame(_)) => {
                self.map_frame(caller, slot, args.take()?, fx)?
            }
            (Invocation::Unmap, Object::Frame(_)) => self.unmap_frame(slot, fx)?,
            (Invocation::IrqIssueHandler, Object::IrqControl) => {
                self.issue_irq_handler(caller, slot, args)?
            }
            (
                Invocation::IrqSetNotification | Invocation::IrqAck | Invocation::IrqForwardToVcpu,
                Object::IrqHandler(_),
            ) if !cap.rights.contains(Rights::WRITE) => {
                return Err(KernelError::InsufficientRights);
            }
            (Invocation::IrqSetNotification, Object::IrqHandler(handler)) => {
                self.irq_set_notification(caller, handler, args)?;
            }
            (Invocation::IrqAck, Object::IrqHandler(handler)) => {
                fx.irq_ack(self.irqs.get(handler)?.intid)
            }
            (Invocation::IrqForwardToVcpu, Object::IrqHandler(handler)) => {
                self.irq_forward_to_vcpu(caller, handler, args, fx)?;
            }
            (Invocation::Resume, Object::Thread(thread)) => {
                self.resume_thread(thread, cap.rights)?
            }
            (Invocation::Suspend, Object::Thread(thread)) => {
                self.suspend_thread(thread, cap.rights)?
            }
            (Invocation::ThreadBindVcpu, Object::Thread(thread)) => {
                self.bind_vcpu(caller, thread, cap.rights, args)?
            }
            (Invocation::VcpuReadRegisters, Object::Vcpu(_)) => {
                let value = self.vcpu_registers(cap, false, args, fx)?;
                let mut results = Results::new();
                // One word always fits the result registers.
                let _ = results.push(value);
                return Ok(results);
            }
            (Invocation::VcpuWriteRegisters, Object::Vcpu(_)) => {
                self.vcpu_registers(cap, true, args, fx)?;
            }
            (Invocation::VcpuInjectIrq, Object::Vcpu(_)) => {
                self.vcpu_inject_irq(cap, args, fx)?;
            }
            (Invocation::CacheMaintenance, Object::Frame(_) | Object::Vm(_)) => {
                self.cache_maintenance(caller, cap, args, fx)?
            }
            _ => return Err(KernelError::IllegalOperation),
        }
        Ok(Results::new())
    }

    fn invoke_cnode(
        &mut self,
        caller: ThreadRef,
        cap: Capability,
        invocation: Invocation,
        args: &Args,
        fx: &mut impl Effects,
    ) -> Result<(), KernelError> {
        let Object::CNode(cnode) = cap.object else {
            return Err(KernelError::IllegalOperation);
        };
        if !cap.rights.contains(Rights::WRITE) {
            return Err(KernelError::InsufficientRights);
        }
        let cnode = *self.live_cnode(cnode)?;
        match invocation {
            Invocation::Copy | Invocation::Mint => {
                let [dest, source, rights] = args.take()?;
                let badge = if invocation == Invocation::Mint {
                    Some(Badge::new(args.take::<4>()?[3]))
                } else {
                    None
                };
                let rights = u8::try_from(rights)
                    .ok()
                    .and_then(|r| Rights::from_bits(r).ok());
                let rights = rights.ok_or(KernelError::InvalidArgument)?;
                let (source_slot, source_cap) = self.lookup(caller, CPtr::new(source))?;
                let dest = cnode.slot(dest)?;
                if self.slots.cap(dest).is_some() {
                    return Err(KernelError::SlotOccupied);
                }
                let derived = source_cap.derive(rights, badge)?;
                self.install(dest, derived, Some(source_slot))
            }
            Invocation::Move => {
                let [dest, source] = args.take()?;
                let source = self.lookup(caller, CPtr::new(source))?.0;
                self.slots.move_cap(source, cnode.slot(dest)?)
            }
            Invocation::Delete | Invocation::Revoke => {
                let [index] = args.take()?;
                let slot = cnode.slot(index)?;
                if self.slots.cap(slot).is_none() {
                    return Err(KernelError::EmptySlot);
                }
                if invocation == Invocation::Delete {
                    self.delete_slot(slot, fx);
                } else if self.revoke_slot(slot, fx) == Progress::Preempted {
                    self.restart = true;
                }
                Ok(())
            }
            _ => Err(KernelError::IllegalOperation),
        }
    }

    fn invoke_retype(
        &mut self,
        caller: ThreadRef,
        slot: SlotId,
        args: &Args,
        fx: &mut impl Effects,
    ) -> Result<(), KernelError> {
        let [kind, size_bits, dest, first, count] = args.take()?;
        let dest = match dest {
            0 => self
                .threads
                .get(caller)?
                .cspace
                .ok_or(KernelError::InvalidSlot)?,
            cptr => match self.lookup(caller, CPtr::new(cptr))?.1.object {
                Object::CNode(cnode) => cnode,
                _ => return Err(KernelError::WrongType),
            },
        };
        let kind = ObjectType::from_code(kind)?;
        self.retype(
            slot,
            Retype {
                kind,
                size_bits,
                dest,
                first,
                count,
            },
            fx,
        )
    }

    fn irq_set_notification(
        &mut self,
        caller: ThreadRef,
        handler: IrqHandlerRef,
        args: &Args,
    ) -> Result<(), KernelError> {
        let [cptr] = args.take()?;
        let (_, target) = self.lookup(caller, CPtr::new(cptr))?;
        let Object::Notification(notification) = target.object else {
            return Err(KernelError::WrongType);
        };
        if !target.rights.contains(Rights::WRITE) {
            return Err(KernelError::InsufficientRights);
        }
        self.irqs.get_mut(handler)?.notification = Some((notification, target.badge));
        Ok(())
    }

    /// `IrqForwardToVcpu`.
    fn irq_forward_to_vcpu(
        &mut self,
        caller: ThreadRef,
        handler: IrqHandlerRef,
        args: &Args,
        fx: &mut impl Effects,
    ) -> Result<(), KernelError> {
        let [cptr, vintid] = args.take()?;
        let intid = self.irqs.get(handler)?.intid;
        if cptr == 0 {
            if self.irqs.get_mut(handler)?.forward.take().is_some() {
                fx.irq_forwarding(intid, false);
            }
            return Ok(());
        }
        let (_, target) = self.lookup(caller, CPtr::new(cptr))?;
        let Object::Vcpu(vcpu) = target.object else {
            return Err(KernelError::WrongType);
        };
        if !target.rights.contains(Rights::WRITE) {
            return Err(KernelError::InsufficientRights);
        }
        // SPIs only: a PPI or SGI is one CPU's own, and its active state would follow no vCPU.
        let spi = 32..=super::irq::MAX_INTID;
        let vintid = u32::try_from(vintid).ok().filter(|v| spi.contains(v));
        let (Some(vintid), true) = (vintid, spi.contains(&intid)) else {
            return Err(KernelError::InvalidArgument);
        };
        self.irqs.get_mut(handler)?.forward = Some((vcpu, vintid));
        fx.irq_forwarding(intid, true);
        Ok(())
    }

    fn issue_irq_handler(
        &mut self,
        caller: ThreadRef,
        control: SlotId,
        args: &Args,
    ) -> Result<(), KernelError> {
        let [intid, dest] = args.take()?;
        let dest = self.lookup_slot(caller, CPtr::new(dest))?;
        if self.slots.cap(dest).is_some() {
            return Err(KernelError::SlotOccupied);
        }
        let handler = self.irqs.create(intid)?;
        self.install(
            dest,
            Capability::new(Object::IrqHandler(handler)),
            Some(control),
        )
        .inspect_err(|_| {
            self.irqs.free(handler);
        })
    }
}

impl Kernel {
    /// `UntypedDescribe`: where an untyped is (base, size), and whether it is RAM (0) or which
    /// device types (1–3).
    fn describe_untyped(&self, untyped: UntypedRef) -> Result<[u64; 3], KernelError> {
        let untyped = self.untyped.get(untyped)?;
        let memory = match untyped.device {
            None => 0,
            Some(DeviceAttributes::Uncached { normal_nc: false }) => 1,
            Some(DeviceAttributes::Uncached { normal_nc: true }) => 2,
            Some(DeviceAttributes::Cacheable) => 3,
        };
        Ok([untyped.base.raw(), untyped.size, memory])
    }

    /// `UntypedSetMemory` (on IrqControl, the root's platform capability: only init decides
    /// what memory a region is): makes the untyped `cptr` (with `WRITE`), from which nothing was
    /// made, device memory of the types `memory` names, so no frame of another type can map it.
    /// RAM made device memory (a cacheable carve-out) keeps having its frames zeroed.
    fn set_untyped_memory(
        &mut self,
        caller: ThreadRef,
        cptr: u64,
        memory: u64,
    ) -> Result<(), KernelError> {
        let attributes = match memory {
            1 => DeviceAttributes::Uncached { normal_nc: false },
            2 => DeviceAttributes::Uncached { normal_nc: true },
            3 => DeviceAttributes::Cacheable,
            _ => return Err(KernelError::InvalidArgument),
        };
        let (_, cap) = self.lookup(caller, CPtr::new(cptr))?;
        let Object::Untyped(untyped) = cap.object else {
            return Err(KernelError::WrongType);
        };
        if !cap.rights.contains(Rights::WRITE) {
            return Err(KernelError::InsufficientRights);
        }
        let untyped = self.untyped.get_mut(untyped)?;
        if untyped.children != 0 || untyped.watermark != 0 {
            return Err(KernelError::IllegalOperation);
        }
        untyped.from_ram |= untyped.device.is_none();
        untyped.device = Some(attributes);
        Ok(())
    }
}

fn identify(cap: &Capability, size: u64) -> Results {
    let mut results = Results::new();
    for word in [
        u64::from(cap.object.kind_code()),
        u64::from(cap.rights.bits()),
        cap.badge.raw(),
        size,
    ] {
        // Four words fit in four.
        let _ = results.push(word);
    }
    results
}

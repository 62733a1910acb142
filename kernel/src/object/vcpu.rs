//! vCPUs and VMs: binding a vCPU to the thread that runs it, its registers, and the cache and TLB
//! maintenance a memory manager asks for.
//!
//! A vCPU runs the way seL4 runs one: a thread is configured with a `Vm` as its address space and
//! bound to a vCPU (`ThreadBindVcpu`); when the scheduler picks it, the glue enters the guest at
//! EL1 with the vCPU's state instead of returning to EL0. What the guest does that the kernel does
//! not handle itself becomes a `Fault::guest` message to the thread's fault endpoint (its VMM),
//! whose reply says how to go on (`fault.rs`).
//!
//! | object | invocation | words → results |
//! |---|---|---|
//! | Thread | `ThreadBindVcpu` | vCPU CPtr (WRITE); the thread inactive, in a VM, neither bound |
//! | Vcpu | `VcpuReadRegisters` | register (0–30, or a [`VcpuRegister`]) → value (READ) |
//! | Vcpu | `VcpuWriteRegisters` | register, value (WRITE); the vCPU's thread must not be running |
//! | Vcpu | `VcpuInjectIrq` | INTID (0–1019), priority (0–255) (WRITE); bound to a thread |
//! | Frame | `CacheMaintenance` | [`CacheOp`] (clean/invalidate to PoC, I-cache), Vm CPtr or 0 (READ) |
//! | Vm | `CacheMaintenance` | [`CacheOp`], IPA, size (WRITE); a clean to PoC covers at most [`MAX_CLEAN`] bytes |
//!
//! Every maintenance call does bounded work: a frame is at most 2 MiB; a clean of a VM's range is
//! at most [`MAX_CLEAN`] bytes (`RangeError` beyond: the caller splits it); an instruction-cache
//! invalidation is one `IC IALLUIS`; a TLB invalidation of a large range becomes one invalidation
//! of the VM's VMID in the glue.
//!
//! # Sleeping vCPUs
//! A VMM answers a trapped WFI with `Resolution::WaitForInterrupt`; when the glue finds nothing
//! pending for the vCPU, its thread sleeps (`WaitingForInterrupt`) instead of running, so an
//! idle guest gives its CPU to lower priorities. It wakes when a virtual interrupt is made
//! pending for its vCPU (`VcpuInjectIrq`, a forwarded device interrupt: [`Kernel::wake_vcpu`]) or
//! when its virtual timer's deadline passes ([`Kernel::wake_expired`], on each tick, at most
//! [`WAKES_PER_TICK`] per tick). Sleepers with a deadline are kept in a balanced tree by deadline
//! (`sleepers.rs`), so putting one to sleep, waking any one and finding the earliest each take
//! O(log n) steps.
//!
//! The kernel decides no policy here: which maintenance a fault needs is the memory manager's
//! decision (DESIGN.md, stage-2 rules 1–2 and the vCPU-reset rule); the kernel checks the
//! capabilities and performs it.

use capvisor_ipc::abi::{CacheOp, KernelError, VcpuRegister};
use capvisor_ipc::cap::{CPtr, Rights};
use capvisor_ipc::types::Ipa;

use super::Kernel;
use super::capability::{Capability, Object};
use super::effects::{Effects, MaintenanceTarget, RegisterAccess};
use super::invoke::Args;
use super::memory::{SpaceRef, ThreadRef, VcpuRef};
use super::regs::Schedule;
use super::thread::ThreadState;

/// Page size of the IPA ranges maintenance accepts.
const PAGE: u64 = 4096;
/// The most sleepers one tick wakes (the rest wake on the next ones: bounded work).
pub const WAKES_PER_TICK: usize = 32;

/// The most bytes one clean to PoC of a VM's range covers.
pub const MAX_CLEAN: u64 = 2 << 20;

impl Kernel {
    /// `ThreadBindVcpu`.
    pub(super) fn bind_vcpu(
        &mut self,
        caller: ThreadRef,
        thread: ThreadRef,
        rights: Rights,
        args: &Args,
    ) -> Result<(), KernelError> {
        let [cptr] = args.take()?;
        if !rights.contains(Rights::WRITE) {
            return Err(KernelError::InsufficientRights);
        }
        let (_, cap) = self.lookup(caller, CPtr::new(cptr))?;
        let Object::Vcpu(vcpu) = cap.object else {
            return Err(KernelError::WrongType);
        };
        if !cap.rights.contains(Rights::WRITE) {
            return Err(KernelError::InsufficientRights);
        }
        let t = self.threads.get(thread)?;
        let in_vm = t
            .space
            .and_then(|space| self.spaces.get(space).ok())
            .is_some_and(|space| space.vm);
        if t.state != ThreadState::Inactive || !in_vm {
            return Err(KernelError::IllegalOperation);
        }
        if t.vcpu.is_some() || self.vcpus.get(vcpu)?.thread.is_some() {
            return Err(KernelError::IllegalOperation);
        }
        self.vcpus.get_mut(vcpu)?.thread = Some(thread);
        self.threads.get_mut(thread)?.vcpu = Some(vcpu);
        Ok(())
    }

    /// The vCPU a thread runs, if it runs one (for the glue's world switch).
    #[must_use]
    #[inline]
    pub fn thread_vcpu(&self, thread: ThreadRef) -> Option<VcpuRef> {
        self.threads.get(thread).ok().and_then(|t| t.vcpu)
    }

    /// Whether a space is a VM.
    #[must_use]
    pub fn space_is_vm(&self, space: SpaceRef) -> bool {
        self.spaces.get(space).is_ok_and(|s| s.vm)
    }

    /// `VcpuReadRegisters` (`write` false) and `VcpuWriteRegisters`.
    pub(super) fn vcpu_registers(
        &mut self,
        cap: Capability,
        write: bool,
        args: &Args,
        fx: &mut impl Effects,
    ) -> Result<u64, KernelError> {
        let Object::Vcpu(vcpu) = cap.object else {
            return Err(KernelError::IllegalOperation);
        };
        let need = if write { Rights::WRITE } else { Rights::READ };
        if !cap.rights.contains(need) {
            return Err(KernelError::InsufficientRights);
        }
        let thread = self
            .vcpus
            .get(vcpu)?
            .thread
            .ok_or(KernelError::IllegalOperation)?;
        if self.current() == Some(thread) {
            return Err(KernelError::IllegalOperation);
        }
        let access = if write {
            let [register, value] = args.take()?;
            register_access(register, Some(value))?
        } else {
            let [register] = args.take()?;
            register_access(register, None)?
        };
        let t = self.threads.get_mut(thread)?;
        let v = self.vcpus.get_mut(vcpu)?;
        fx.vcpu_register(&mut t.glue, vcpu, &mut v.glue, access)
    }

    /// `VcpuInjectIrq`: virtual interrupt `intid` becomes pending for the vCPU at `priority`,
    /// through a list register of its virtual CPU interface (the guest acknowledges and ends it
    /// without an exit). Which interrupts a guest gets, and when, is its VMM's decision.
    pub(super) fn vcpu_inject_irq(
        &mut self,
        cap: Capability,
        args: &Args,
        fx: &mut impl Effects,
    ) -> Result<(), KernelError> {
        let Object::Vcpu(vcpu) = cap.object else {
            return Err(KernelError::IllegalOperation);
        };
        if !cap.rights.contains(Rights::WRITE) {
            return Err(KernelError::InsufficientRights);
        }
        let [intid, priority] = args.take()?;
        let (Ok(intid), Ok(priority)) = (u32::try_from(intid), u8::try_from(priority)) else {
            return Err(KernelError::InvalidArgument);
        };
        if intid > crate::vgic::MAX_INTID {
            return Err(KernelError::InvalidArgument);
        }
        let v = self.vcpus.get_mut(vcpu)?;
        v.thread.ok_or(KernelError::IllegalOperation)?;
        fx.vcpu_inject_irq(vcpu, &mut v.glue, intid, priority)?;
        self.wake_vcpu(vcpu);
        Ok(())
    }

    /// `CacheMaintenance` on a Frame or a Vm.
    pub(super) fn cache_maintenance(
        &mut self,
        caller: ThreadRef,
        cap: Capability,
        args: &Args,
        fx: &mut impl Effects,
    ) -> Result<(), KernelError> {
        match cap.object {
            Object::Frame(frame) => {
                let [op, vm] = args.take()?;
                let op = CacheOp::from_code(op).ok_or(KernelError::InvalidArgument)?;
                if !cap.rights.contains(Rights::READ) {
                    return Err(KernelError::InsufficientRights);
                }
                if !matches!(op, CacheOp::CleanInvalidatePoc | CacheOp::InvalidateIcache) {
                    return Err(KernelError::InvalidArgument);
                }
                // The kernel reaches only RAM by address: device memory is never cleaned here.
                if frame.memory.is_device() {
                    return Err(KernelError::MemoryTypeNotAllowed);
                }
                let vm = match vm {
                    0 => None,
                    cptr => Some(self.vm_of(caller, cptr, Rights::NONE)?),
                };
                let vm = match vm {
                    Some(vm) => Some(&mut self.spaces.get_mut(vm)?.glue),
                    None => None,
                };
                let target = MaintenanceTarget::Frame {
                    pa: frame.base,
                    size: frame.size.bytes(),
                    vm,
                };
                fx.maintenance(op, target);
                Ok(())
            }
            Object::Vm(vm) => {
                let [op, ipa, size] = args.take()?;
                let op = CacheOp::from_code(op).ok_or(KernelError::InvalidArgument)?;
                if !cap.rights.contains(Rights::WRITE) {
                    return Err(KernelError::InsufficientRights);
                }
                let limit = 1u64
                    .checked_shl(u32::from(self.features.ipa_bits))
                    .unwrap_or(u64::MAX);
                let aligned = ipa.is_multiple_of(PAGE) && size.is_multiple_of(PAGE);
                let inside = ipa.checked_add(size).is_some_and(|end| end <= limit);
                if !aligned {
                    return Err(KernelError::AlignmentError);
                }
                if !inside {
                    return Err(KernelError::BadAddress);
                }
                if op == CacheOp::CleanInvalidatePoc && size > MAX_CLEAN {
                    return Err(KernelError::RangeError);
                }
                let target = MaintenanceTarget::Vm {
                    vm: &mut self.spaces.get_mut(vm)?.glue,
                    ipa: Ipa::new(ipa),
                    size,
                };
                fx.maintenance(op, target);
                Ok(())
            }
            _ => Err(KernelError::IllegalOperation),
        }
    }

    /// Puts `thread` (a vCPU's, just resolved) to sleep until an interrupt can wake its vCPU.
    pub(super) fn sleep(&mut self, thread: ThreadRef, deadline: Option<u64>) {
        self.unlink_thread(thread);
        let Ok(t) = self.threads.get_mut(thread) else {
            return;
        };
        t.state = ThreadState::WaitingForInterrupt;
        t.deadline = deadline;
        if deadline.is_some() {
            self.sleepers.insert(&mut self.threads, thread);
        }
    }

    /// An interrupt was made pending for `vcpu`: its thread wakes if it sleeps in WFI.
    pub fn wake_vcpu(&mut self, vcpu: VcpuRef) {
        let Some(thread) = self.vcpus.get(vcpu).ok().and_then(|v| v.thread) else {
            return;
        };
        if self
            .threads
            .get(thread)
            .is_ok_and(|t| t.state == ThreadState::WaitingForInterrupt)
        {
            self.unlink_thread(thread);
            self.make_ready(thread);
        }
    }

    /// Wakes the sleepers whose virtual timer deadline is at or before `now` (physical counter
    /// ticks), at most [`WAKES_PER_TICK`]; returns what to run next.
    pub fn wake_expired(&mut self, now: u64) -> Schedule {
        for _ in 0..WAKES_PER_TICK {
            let Some(first) = self.sleepers.first() else {
                break;
            };
            if self
                .threads
                .get(first)
                .map_or(true, |t| t.deadline.is_some_and(|d| d > now))
            {
                break;
            }
            self.unlink_thread(first);
            self.make_ready(first);
        }
        self.decide()
    }

    /// The earliest deadline of a sleeping vCPU's timer.
    #[must_use]
    pub fn next_deadline(&self) -> Option<u64> {
        self.sleepers
            .first()
            .and_then(|t| self.threads.get(t).ok())
            .and_then(|t| t.deadline)
    }

    /// What to run next, after the glue changed who is ready (woke a vCPU).
    #[must_use]
    pub fn schedule_now(&self) -> Schedule {
        self.decide()
    }

    /// Whether a sleeping vCPU's timer will wake it.
    #[must_use]
    pub fn timers_pending(&self) -> bool {
        !self.sleepers.is_empty()
    }

    /// The VM a capability in the caller's CSpace names, with at least `rights`.
    fn vm_of(&self, caller: ThreadRef, cptr: u64, rights: Rights) -> Result<SpaceRef, KernelError> {
        let (_, cap) = self.lookup(caller, CPtr::new(cptr))?;
        let Object::Vm(vm) = cap.object else {
            return Err(KernelError::WrongType);
        };
        if !cap.rights.contains(rights) {
            return Err(KernelError::InsufficientRights);
        }
        Ok(vm)
    }
}

/// Decodes a register number (and the value, for a write).
fn register_access(register: u64, value: Option<u64>) -> Result<RegisterAccess, KernelError> {
    if register <= 30 {
        let n = register as u8;
        return Ok(match value {
            Some(value) => RegisterAccess::WriteGp(n, value),
            None => RegisterAccess::ReadGp(n),
        });
    }
    let named = VcpuRegister::from_code(register).ok_or(KernelError::InvalidArgument)?;
    match (named, value) {
        (VcpuRegister::Reset, None) => Err(KernelError::InvalidArgument),
        (named, Some(value)) => Ok(RegisterAccess::Write(named, value)),
        (named, None) => Ok(RegisterAccess::Read(named)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_numbers_decode_and_reset_is_write_only() {
        assert_eq!(register_access(3, None), Ok(RegisterAccess::ReadGp(3)));
        assert_eq!(
            register_access(30, Some(7)),
            Ok(RegisterAccess::WriteGp(30, 7))
        );
        assert_eq!(register_access(31, None), Err(KernelError::InvalidArgument));
        assert_eq!(
            register_access(32, None),
            Ok(RegisterAccess::Read(VcpuRegister::Pc))
        );
        assert_eq!(register_access(63, None), Err(KernelError::InvalidArgument));
        assert_eq!(
            register_access(63, Some(0)),
            Ok(RegisterAccess::Write(VcpuRegister::Reset, 0))
        );
        assert_eq!(
            register_access(64, Some(0)),
            Ok(RegisterAccess::Write(VcpuRegister::ListRegister0, 0))
        );
        assert_eq!(
            register_access(80, Some(0)),
            Err(KernelError::InvalidArgument)
        );
    }
}

//! A host fake of [`Effects`] for tests and the fuzz target: it records what the kernel asked for
//! and keeps IPC buffers per (space, address), checking what a real glue would check. Like the real
//! glue, it keeps a thread's registers in the thread's [`ThreadGlue`] (so a vCPU's PC and x0 are
//! its thread's context) and names a space by its root table's address, which it takes from the
//! space's own memory.
//!
//! The fake's stage-2 "table" is the list of live mappings; mapping over a live one fails as a real
//! table walk would, so tests can assert that revoke and delete leave no mapping behind. A space's
//! table budget is modelled too: each mapping in a new 1 GiB region takes one page of it.

use capvisor_ipc::abi::{CacheOp, IpcBuffer, KernelError, VcpuRegister};
use capvisor_ipc::protocols::fault::{GuestFault, Resolution};
use capvisor_ipc::types::{Ipa, PhysAddr};

use super::effects::{
    Effects, IpcWords, MaintenanceTarget, RegisterAccess, Resumption, SpaceGlue, ThreadGlue,
    VcpuGlue,
};
use super::memory::{PAGE, VcpuRef};
use crate::context::ThreadContext;
use crate::stage2::S2Access;
use capvisor_ipc::memory::MemoryType;
use zerocopy::IntoBytes;

/// One live mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FakeMapping {
    /// The space (its root table's address).
    pub space: u64,
    /// First IPA.
    pub ipa: Ipa,
    /// Physical address.
    pub pa: PhysAddr,
    /// Bytes.
    pub size: u64,
    /// Access.
    pub access: S2Access,
    /// Memory type.
    pub memtype: MemoryType,
}

/// What a maintenance call covered, as the fake records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FakeMaintenance {
    /// A frame, for a VM (its root) or none.
    Frame {
        /// The frame's base.
        pa: PhysAddr,
        /// Its size.
        size: u64,
        /// The VM named, by root.
        vm: Option<u64>,
    },
    /// A range of a VM.
    Vm {
        /// The VM, by root.
        vm: u64,
        /// Start.
        ipa: Ipa,
        /// Size.
        size: u64,
    },
}

/// The fake glue.
#[derive(Debug)]
pub struct FakeEffects {
    /// Live mappings.
    pub mappings: heapless::Vec<FakeMapping, 256>,
    /// Number of `unmap` calls.
    pub unmaps: usize,
    /// Spaces created and not yet destroyed.
    pub live_spaces: usize,
    /// Next VMID to hand out.
    next_vmid: u16,
    /// Frames cleared, by count.
    pub cleared_frames: usize,
    /// IPC buffers: (space root, address, contents).
    pub buffers: heapless::Vec<(u64, u64, IpcBuffer), 64>,
    /// Acknowledged interrupts, by count.
    pub irq_acks: heapless::Vec<u32, 64>,
    /// `irq_forwarding` calls: (INTID, forwarding).
    pub forwarding: heapless::Vec<(u32, bool), 16>,
    /// `vcpu_inject_irq` calls: (vCPU, INTID, priority).
    pub injected: heapless::Vec<(VcpuRef, u32, u8), 16>,
    /// When set, `map` fails with this error (to test error propagation).
    pub fail_map: Option<KernelError>,
    /// Guest resolutions applied, by count; `refuse_resolution` makes the next ones fail.
    pub resolutions: usize,
    /// When set, `resolve_guest_fault` refuses.
    pub refuse_resolution: bool,
    /// Maintenance performed, in order.
    pub maintenance: heapless::Vec<(CacheOp, FakeMaintenance), 64>,
    /// System calls restarted at a preemption point.
    pub restarts: usize,
    /// vCPUs destroyed.
    pub destroyed_vcpus: usize,
    /// What a `WaitForInterrupt` resolution finds: `None` an interrupt pending (it runs),
    /// `Some(deadline)` nothing pending (it sleeps, with that timer deadline).
    pub wait_finds: Option<Option<u64>>,
}

impl Default for FakeEffects {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeEffects {
    /// A fake with nothing mapped.
    #[must_use]
    pub fn new() -> Self {
        Self {
            mappings: heapless::Vec::new(),
            unmaps: 0,
            live_spaces: 0,
            next_vmid: 1,
            cleared_frames: 0,
            buffers: heapless::Vec::new(),
            irq_acks: heapless::Vec::new(),
            injected: heapless::Vec::new(),
            forwarding: heapless::Vec::new(),
            fail_map: None,
            resolutions: 0,
            refuse_resolution: false,
            maintenance: heapless::Vec::new(),
            restarts: 0,
            destroyed_vcpus: 0,
            wait_finds: Some(None),
        }
    }

    /// The IPC buffer at `addr` of the space with root `root` (created empty on first use).
    ///
    /// # Panics
    /// When more buffers are used than the fake holds (a test's mistake).
    pub fn buffer_at(&mut self, root: u64, addr: u64) -> &mut IpcBuffer {
        let index = match self.buffers.iter().position(|b| b.0 == root && b.1 == addr) {
            Some(index) => index,
            None => {
                assert!(
                    self.buffers
                        .push((root, addr, IpcBuffer::default()))
                        .is_ok(),
                    "the fake holds 64 IPC buffers"
                );
                self.buffers.len() - 1
            }
        };
        &mut self.buffers[index].2
    }

    fn check(space: &SpaceGlue, addr: Ipa) -> Result<(u64, u64), KernelError> {
        let addr = addr.raw();
        if space.root == 0 || addr == 0 || !addr.is_multiple_of(8) || addr >= 1 << 40 {
            return Err(KernelError::BadAddress);
        }
        Ok((space.root, addr))
    }

    /// The live mappings in the space with root `root`.
    pub fn mappings_in(&self, root: u64) -> impl Iterator<Item = &FakeMapping> {
        self.mappings.iter().filter(move |m| m.space == root)
    }
}
/// The fake's word view of a thread's buffer.
#[derive(Debug)]
pub struct FakeIpcWords<'a>(&'a mut IpcBuffer);

impl IpcWords for FakeIpcWords<'_> {
    fn read(&self, first: usize, words: &mut [u64]) {
        let bytes = self.0.as_bytes();
        for (n, word) in words.iter_mut().enumerate() {
            let at = (first + n) * 8;
            if let Some(Ok(raw)) = bytes.get(at..at + 8).map(<[u8; 8]>::try_from) {
                *word = u64::from_le_bytes(raw);
            }
        }
    }

    fn write(&mut self, first: usize, words: &[u64]) {
        let bytes = self.0.as_mut_bytes();
        for (n, word) in words.iter().enumerate() {
            let at = (first + n) * 8;
            if let Some(raw) = bytes.get_mut(at..at + 8) {
                raw.copy_from_slice(&word.to_le_bytes());
            }
        }
    }
}

impl Effects for FakeEffects {
    type IpcBuffer<'a> = FakeIpcWords<'a>;

    fn ipc_buffer(
        &mut self,
        space: &SpaceGlue,
        addr: Ipa,
    ) -> Result<FakeIpcWords<'_>, KernelError> {
        let (root, addr) = Self::check(space, addr)?;
        Ok(FakeIpcWords(self.buffer_at(root, addr)))
    }

    fn map(
        &mut self,
        space: &mut SpaceGlue,
        ipa: Ipa,
        pa: PhysAddr,
        size: u64,
        access: S2Access,
        memtype: MemoryType,
    ) -> Result<(), KernelError> {
        if let Some(error) = self.fail_map {
            return Err(error);
        }
        let end = ipa.raw().saturating_add(size);
        let root = space.root;
        let overlaps = self
            .mappings_in(root)
            .any(|m| ipa.raw() < m.ipa.raw().saturating_add(m.size) && m.ipa.raw() < end);
        if overlaps {
            return Err(KernelError::SlotOccupied);
        }
        // A mapping in a 1 GiB region no earlier mapping touched needs a table page.
        let region = ipa.raw() >> 30;
        let new_region = !self.mappings_in(root).any(|m| m.ipa.raw() >> 30 == region);
        if new_region {
            if space.next_table >= space.end {
                return Err(KernelError::NotEnoughMemory);
            }
            space.next_table += PAGE;
        }
        self.mappings
            .push(FakeMapping {
                space: root,
                ipa,
                pa,
                size,
                access,
                memtype,
            })
            .map_err(|_| KernelError::NotEnoughMemory)
    }

    fn unmap(&mut self, space: &mut SpaceGlue, ipa: Ipa, size: u64) {
        self.unmaps += 1;
        let root = space.root;
        self.mappings
            .retain(|m| !(m.space == root && m.ipa == ipa && m.size == size));
    }

    fn space_created(
        &mut self,
        space: &mut SpaceGlue,
        memory: PhysAddr,
        bytes: u64,
    ) -> Result<(), KernelError> {
        if bytes < 2 * PAGE {
            return Err(KernelError::NotEnoughMemory);
        }
        space.root = memory.raw() + PAGE;
        space.next_table = memory.raw() + 2 * PAGE;
        space.end = memory.raw() + bytes;
        space.vmid = self.next_vmid;
        space.vmid_generation = 1;
        self.next_vmid = self.next_vmid.wrapping_add(1).max(1);
        self.live_spaces += 1;
        Ok(())
    }

    fn space_destroyed(&mut self, space: &mut SpaceGlue) {
        self.live_spaces = self.live_spaces.saturating_sub(1);
        let root = space.root;
        self.mappings.retain(|m| m.space != root);
        self.buffers.retain(|b| b.0 != root);
    }

    fn clear_frame(&mut self, _pa: PhysAddr, _size: u64) {
        self.cleared_frames += 1;
    }

    fn read_ipc_buffer(&mut self, space: &SpaceGlue, addr: Ipa) -> Result<IpcBuffer, KernelError> {
        let (root, addr) = Self::check(space, addr)?;
        Ok(self.buffer_at(root, addr).clone())
    }

    fn write_ipc_buffer(
        &mut self,
        space: &SpaceGlue,
        addr: Ipa,
        data: &IpcBuffer,
    ) -> Result<(), KernelError> {
        let (root, addr) = Self::check(space, addr)?;
        *self.buffer_at(root, addr) = data.clone();
        Ok(())
    }

    fn thread_start(&mut self, thread: &mut ThreadGlue, pc: u64, sp: u64, ipc_buffer: u64) {
        thread.context = ThreadContext::service_start(pc, sp, ipc_buffer);
    }

    fn restart_syscall(&mut self, thread: &mut ThreadGlue) {
        thread.context.pc = thread.context.pc.wrapping_sub(4);
        self.restarts += 1;
    }

    fn irq_ack(&mut self, intid: u32) {
        let _ = self.irq_acks.push(intid);
    }

    fn vcpu_created(&mut self, _vcpu: VcpuRef, state: &mut VcpuGlue) {
        *state = VcpuGlue::RESET;
    }

    fn vcpu_destroyed(&mut self, _vcpu: VcpuRef) {
        self.destroyed_vcpus += 1;
    }

    fn irq_forwarding(&mut self, intid: u32, forwarding: bool) {
        let _ = self.forwarding.push((intid, forwarding));
    }

    fn vcpu_inject_irq(
        &mut self,
        vcpu: VcpuRef,
        _state: &mut VcpuGlue,
        intid: u32,
        priority: u8,
    ) -> Result<(), KernelError> {
        // Four list registers, as QEMU implements.
        self.injected
            .push((vcpu, intid, priority))
            .ok()
            .filter(|()| self.injected.len() <= 4)
            .ok_or(KernelError::ListRegistersFull)
    }

    fn vcpu_register(
        &mut self,
        thread: &mut ThreadGlue,
        _vcpu: VcpuRef,
        _state: &mut VcpuGlue,
        access: RegisterAccess,
    ) -> Result<u64, KernelError> {
        let context = &mut thread.context;
        Ok(match access {
            RegisterAccess::ReadGp(n) => context.x.get(usize::from(n)).copied().unwrap_or(0),
            RegisterAccess::WriteGp(n, value) => {
                if let Some(x) = context.x.get_mut(usize::from(n)) {
                    *x = value;
                }
                0
            }
            RegisterAccess::Read(VcpuRegister::Pc) => context.pc,
            RegisterAccess::Write(VcpuRegister::Pc, value) => {
                context.pc = value;
                0
            }
            RegisterAccess::Write(VcpuRegister::Reset, _) => {
                *context = ThreadContext::ZERO;
                0
            }
            _ => 0,
        })
    }

    fn apply_guest_call(
        &mut self,
        thread: &mut ThreadGlue,
        state: &mut VcpuGlue,
        fault: &GuestFault,
        result: &capvisor_ipc::protocols::guest_call::CallResult,
    ) -> Result<Resumption, KernelError> {
        if self.refuse_resolution {
            return Err(KernelError::InvalidArgument);
        }
        self.resolutions += 1;
        super::effects::apply_call_result(&mut thread.context, state.exit_esr, fault, result);
        Ok(Resumption::Run)
    }

    fn resolve_guest_fault(
        &mut self,
        thread: &mut ThreadGlue,
        _vcpu: VcpuRef,
        _state: &mut VcpuGlue,
        fault: &GuestFault,
        resolution: &Resolution,
    ) -> Result<Resumption, KernelError> {
        if self.refuse_resolution {
            return Err(KernelError::InvalidArgument);
        }
        self.resolutions += 1;
        let context = &mut thread.context;
        match resolution {
            Resolution::Emulate { writes, advance_pc } => {
                for write in writes {
                    if let Some(x) = context.x.get_mut(usize::from(write.register.index())) {
                        *x = write.value;
                    }
                }
                if *advance_pc && !matches!(fault, GuestFault::Hvc { .. }) {
                    context.pc += 4;
                }
            }
            Resolution::WaitForInterrupt => {
                context.pc += 4;
                if let Some(deadline) = self.wait_finds {
                    return Ok(Resumption::Sleep { deadline });
                }
            }
            Resolution::Resume | Resolution::InjectAbort { .. } => {}
        }
        Ok(Resumption::Run)
    }

    fn maintenance(&mut self, op: CacheOp, target: MaintenanceTarget<'_>) {
        let recorded = match target {
            MaintenanceTarget::Frame { pa, size, vm } => FakeMaintenance::Frame {
                pa,
                size,
                vm: vm.map(|v| v.root),
            },
            MaintenanceTarget::Vm { vm, ipa, size } => FakeMaintenance::Vm {
                vm: vm.root,
                ipa,
                size,
            },
        };
        let _ = self.maintenance.push((op, recorded));
    }
}

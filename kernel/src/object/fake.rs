//! A host fake of [`Effects`] for tests and the fuzz target: it records what the kernel asked for
//! and keeps one IPC buffer per thread index, checking what a real glue would check.
//!
//! The fake's stage-2 "table" is the list of live mappings; mapping over a live one fails as a real
//! table walk would, so tests can assert that revoke and delete leave no mapping behind.

use capvisor_ipc::abi::{CacheOp, IpcBuffer, KernelError, VcpuRegister};
use capvisor_ipc::protocols::fault::{GuestFault, Resolution};
use capvisor_ipc::types::{Ipa, PhysAddr};

use super::MAX_THREADS;
use super::arena::{SpaceRef, ThreadRef, VcpuRef};
use super::effects::{Effects, IpcWords, MaintenanceTarget, RegisterAccess, UserBuffer, Vmid};
use crate::stage2::{MemType, S2Access};
use zerocopy::IntoBytes;

/// One live mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FakeMapping {
    /// The space.
    pub space: SpaceRef,
    /// First IPA.
    pub ipa: Ipa,
    /// Physical address.
    pub pa: PhysAddr,
    /// Bytes.
    pub size: u64,
    /// Access.
    pub access: S2Access,
    /// Memory type.
    pub memtype: MemType,
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
    /// Per thread index: its IPC buffer contents.
    pub buffers: [IpcBuffer; MAX_THREADS],
    /// `thread_start` calls: the last `(pc, sp)` per thread index.
    pub starts: [Option<(u64, u64)>; MAX_THREADS],
    /// The IPC buffer address each thread was last started with.
    pub start_buffers: [u64; MAX_THREADS],
    /// Acknowledged interrupts, by count.
    pub irq_acks: heapless::Vec<u32, 64>,
    /// `irq_forwarding` calls: (INTID, forwarding).
    pub forwarding: heapless::Vec<(u32, bool), 16>,
    /// `vcpu_inject_irq` calls: (vCPU index, INTID, priority).
    pub injected: heapless::Vec<(usize, u32, u8), 16>,
    /// When set, `map` fails with this error (to test error propagation).
    pub fail_map: Option<KernelError>,
    /// Per vCPU index: its PC and x0 (the registers the tests look at).
    pub vcpu_regs: [(u64, u64); super::MAX_VCPUS],
    /// Guest resolutions applied, by count; `refuse_resolution` makes the next ones fail.
    pub resolutions: usize,
    /// When set, `resolve_guest_fault` refuses.
    pub refuse_resolution: bool,
    /// Maintenance performed, in order.
    pub maintenance: heapless::Vec<(CacheOp, MaintenanceTarget), 64>,
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
            buffers: core::array::from_fn(|_| IpcBuffer::default()),
            starts: [None; MAX_THREADS],
            start_buffers: [0; MAX_THREADS],
            irq_acks: heapless::Vec::new(),
            injected: heapless::Vec::new(),
            forwarding: heapless::Vec::new(),
            fail_map: None,
            vcpu_regs: [(0, 0); super::MAX_VCPUS],
            resolutions: 0,
            refuse_resolution: false,
            maintenance: heapless::Vec::new(),
        }
    }

    /// The IPC buffer of `thread` (by index).
    pub fn buffer(&mut self, thread: ThreadRef) -> &mut IpcBuffer {
        let index = thread.index() % MAX_THREADS;
        // In range by the modulo.
        &mut self.buffers[index]
    }

    fn check(buffer: UserBuffer) -> Result<usize, KernelError> {
        let addr = buffer.addr.raw();
        if buffer.space.is_none() || addr == 0 || !addr.is_multiple_of(8) || addr >= 1 << 40 {
            return Err(KernelError::BadAddress);
        }
        Ok(buffer.thread.index() % MAX_THREADS)
    }

    /// The live mappings in `space`.
    pub fn mappings_in(&self, space: SpaceRef) -> impl Iterator<Item = &FakeMapping> {
        self.mappings.iter().filter(move |m| m.space == space)
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

    fn ipc_buffer(&mut self, buffer: UserBuffer) -> Result<FakeIpcWords<'_>, KernelError> {
        let index = Self::check(buffer)?;
        Ok(FakeIpcWords(&mut self.buffers[index]))
    }

    fn map(
        &mut self,
        space: SpaceRef,
        ipa: Ipa,
        pa: PhysAddr,
        size: u64,
        access: S2Access,
        memtype: MemType,
    ) -> Result<(), KernelError> {
        if let Some(error) = self.fail_map {
            return Err(error);
        }
        let end = ipa.raw().saturating_add(size);
        let overlaps = self
            .mappings_in(space)
            .any(|m| ipa.raw() < m.ipa.raw().saturating_add(m.size) && m.ipa.raw() < end);
        if overlaps {
            return Err(KernelError::SlotOccupied);
        }
        self.mappings
            .push(FakeMapping {
                space,
                ipa,
                pa,
                size,
                access,
                memtype,
            })
            .map_err(|_| KernelError::NotEnoughMemory)
    }

    fn unmap(&mut self, space: SpaceRef, ipa: Ipa, size: u64) {
        self.unmaps += 1;
        self.mappings
            .retain(|m| !(m.space == space && m.ipa == ipa && m.size == size));
    }

    fn space_created(&mut self, _space: SpaceRef, _vm: bool) -> Result<Vmid, KernelError> {
        let vmid = Vmid::new(self.next_vmid);
        self.next_vmid = self
            .next_vmid
            .checked_add(1)
            .ok_or(KernelError::NotEnoughMemory)?;
        self.live_spaces += 1;
        Ok(vmid)
    }

    fn space_destroyed(&mut self, space: SpaceRef, _vmid: Vmid) {
        self.live_spaces = self.live_spaces.saturating_sub(1);
        self.mappings.retain(|m| m.space != space);
    }

    fn clear_frame(&mut self, _pa: PhysAddr, _size: u64) {
        self.cleared_frames += 1;
    }

    fn read_ipc_buffer(&mut self, buffer: UserBuffer) -> Result<IpcBuffer, KernelError> {
        let index = Self::check(buffer)?;
        Ok(self.buffers[index].clone())
    }

    fn write_ipc_buffer(
        &mut self,
        buffer: UserBuffer,
        data: &IpcBuffer,
    ) -> Result<(), KernelError> {
        let index = Self::check(buffer)?;
        self.buffers[index] = data.clone();
        Ok(())
    }

    fn thread_start(&mut self, thread: ThreadRef, pc: u64, sp: u64, ipc_buffer: u64) {
        self.starts[thread.index() % MAX_THREADS] = Some((pc, sp));
        self.start_buffers[thread.index() % MAX_THREADS] = ipc_buffer;
    }

    fn irq_ack(&mut self, intid: u32) {
        let _ = self.irq_acks.push(intid);
    }

    fn vcpu_created(&mut self, vcpu: VcpuRef) {
        self.vcpu_regs[vcpu.index() % super::MAX_VCPUS] = (0, 0);
    }

    fn irq_forwarding(&mut self, intid: u32, forwarding: bool) {
        let _ = self.forwarding.push((intid, forwarding));
    }

    fn vcpu_inject_irq(
        &mut self,
        vcpu: VcpuRef,
        intid: u32,
        priority: u8,
    ) -> Result<(), KernelError> {
        // Four list registers, as QEMU implements.
        self.injected
            .push((vcpu.index(), intid, priority))
            .ok()
            .filter(|()| self.injected.len() <= 4)
            .ok_or(KernelError::ListRegistersFull)
    }

    fn vcpu_register(
        &mut self,
        _thread: ThreadRef,
        vcpu: VcpuRef,
        access: RegisterAccess,
    ) -> Result<u64, KernelError> {
        let regs = &mut self.vcpu_regs[vcpu.index() % super::MAX_VCPUS];
        Ok(match access {
            RegisterAccess::ReadGp(0) => regs.1,
            RegisterAccess::WriteGp(0, value) => {
                regs.1 = value;
                0
            }
            RegisterAccess::Read(VcpuRegister::Pc) => regs.0,
            RegisterAccess::Write(VcpuRegister::Pc, value) => {
                regs.0 = value;
                0
            }
            RegisterAccess::Write(VcpuRegister::Reset, _) => {
                *regs = (0, 0);
                0
            }
            _ => 0,
        })
    }

    fn resolve_guest_fault(
        &mut self,
        _thread: ThreadRef,
        vcpu: VcpuRef,
        fault: &GuestFault,
        resolution: &Resolution,
    ) -> Result<(), KernelError> {
        if self.refuse_resolution {
            return Err(KernelError::InvalidArgument);
        }
        self.resolutions += 1;
        let regs = &mut self.vcpu_regs[vcpu.index() % super::MAX_VCPUS];
        if let Resolution::Emulate { writes, advance_pc } = resolution {
            for write in writes {
                if write.register.index() == 0 {
                    regs.1 = write.value;
                }
            }
            if *advance_pc && !matches!(fault, GuestFault::Hvc { .. }) {
                regs.0 += 4;
            }
        }
        Ok(())
    }

    fn maintenance(&mut self, op: CacheOp, target: MaintenanceTarget) {
        let _ = self.maintenance.push((op, target));
    }
}

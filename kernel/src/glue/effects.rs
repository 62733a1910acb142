//! The glue's half of the object model: the [`Effects`] the kernel asks for (stage-2 tables in each
//! space's own memory, VMIDs, IPC buffer access, frame clearing, thread start, interrupt
//! unmasking). The per-object state (a thread's registers, a vCPU's EL1 state, a space's tables)
//! lives in the kernel objects, in memory their untyped paid for; the kernel hands it to each call.
//!
//! Invariants: the kernel reads or writes only physical memory inside `ram` (all of it
//! identity-mapped read/write at boot), so a device frame mapped where an IPC buffer should be is
//! refused, never dereferenced; a space's VMID is valid only for the allocator generation it
//! records ([`Vmids`]), and every TLB entry tagged with an older generation's VMID was invalidated
//! when the generation changed.

use crate::arch::aarch64::el0::ThreadContext;
use crate::arch::aarch64::stage2::{AddressSpace, BLOCK_SIZE, MapError, TableBudget};
use crate::arch::aarch64::{cache, gic};
use capvisor_ipc::abi::{CacheOp, IpcBuffer, KernelError};
use capvisor_ipc::memory::MemoryType;
use capvisor_ipc::protocols::fault::{GuestFault, Resolution};
use capvisor_ipc::types::{Ipa, PhysAddr};
use capvisor_kernel::memmap::MemoryMap;
use capvisor_kernel::object::effects::IPC_BUFFER_WORDS;
use capvisor_kernel::object::{
    Effects, IpcWords, MaintenanceTarget, RegisterAccess, Resumption, SpaceGlue, ThreadGlue,
    VcpuGlue, VcpuRef,
};
use capvisor_kernel::stage2::{self, S2Access};
use zerocopy::{FromZeros, IntoBytes};

use super::stats::{self, Op};
use super::vcpu::Guests;
use super::{IPA_BITS, PAGE};

/// The hardware VMIDs, handed out by generation (as KVM does): when all 255 8-bit VMIDs of a
/// generation are used, the next generation starts with every TLB entry of every VMID
/// invalidated, and each space takes a new VMID the next time it is entered. So there is no
/// limit on how many spaces exist, and no VMID is ever shared by two live translations.
pub struct Vmids {
    generation: u64,
    next: u16,
}

/// The largest VMID used (8-bit VMIDs work on every CPU; 0 is never used).
const MAX_VMID: u16 = 255;

impl Vmids {
    const fn new() -> Self {
        Self {
            generation: 1,
            next: 1,
        }
    }

    /// Whether `space`'s VMID belongs to the current generation (its TLB entries may exist).
    pub fn current(&self, space: &SpaceGlue) -> bool {
        space.vmid_generation == self.generation
    }

    /// `space`'s VMID, assigned (and the generation rolled over) if it has none now.
    pub fn of(&mut self, space: &mut SpaceGlue) -> u16 {
        if self.current(space) {
            return space.vmid;
        }
        if self.next > MAX_VMID {
            self.generation += 1;
            self.next = 1;
            crate::arch::aarch64::tlb::invalidate_all_vmids();
        }
        space.vmid = self.next;
        space.vmid_generation = self.generation;
        space.stats.vmid = u64::from(self.next);
        self.next += 1;
        space.vmid
    }
}

/// The glue's state beside the kernel's.
pub struct Glue {
    /// RAM the kernel maps read/write (all free RAM at boot).
    pub ram: MemoryMap,
    /// Whether descriptors use the FEAT_S2FWB encoding.
    pub fwb: bool,
    /// The VMID allocator.
    pub vmids: Vmids,
    /// The loaded vCPU and interrupts held back.
    pub guests: Guests,
    /// The HCR_EL2 and VTTBR_EL2 values last written on the way to a thread (0: none yet; one
    /// CPU runs threads).
    pub loaded_translation: (u64, u64),
    /// The service thread that last ran (whose TPIDR_EL0 values the CPU holds).
    pub last_service: Option<capvisor_kernel::object::ThreadRef>,
}

impl Glue {
    /// [`Effects::clear_frame`]'s clean and invalidate to PoC of the zeroed frame, with DSB SY,
    /// without FEAT_S2FWB. Out of line: with FWB (the common case) the retype path keeps only
    /// the zeroing.
    #[inline(never)]
    fn clean_cleared_frame(&mut self, pa: PhysAddr, size: u64) {
        let frame = MaintenanceTarget::Frame { pa, size, vm: None };
        self.guest_maintenance(CacheOp::CleanInvalidatePoc, frame);
    }
}

/// The translation tables of `space`, for an operation now.
pub fn tables(space: &SpaceGlue) -> AddressSpace {
    AddressSpace::from_root(space.root, space.vmid, IPA_BITS)
}

impl Glue {
    /// No spaces, no threads.
    pub const fn new() -> Self {
        Self {
            ram: MemoryMap::empty(),
            fwb: false,
            vmids: Vmids::new(),
            guests: Guests::new(),
            loaded_translation: (0, 0),
            last_service: None,
        }
    }

    /// Calls `each(physical address, offset, length)` for the pieces of `[addr, addr + len)` in
    /// `space`, after checking that every page of it is mapped with `need` and is kernel RAM.
    pub fn user_range(
        &self,
        space: &SpaceGlue,
        addr: u64,
        len: u64,
        need: S2Access,
        mut each: impl FnMut(u64, usize, usize),
    ) -> Result<(), KernelError> {
        let end = addr.checked_add(len).ok_or(KernelError::BadAddress)?;
        if space.root == 0 {
            return Err(KernelError::BadAddress);
        }
        let mut table = tables(space);
        for pass in 0..2 {
            let mut at = addr;
            while at < end {
                let chunk = (PAGE - (at & (PAGE - 1))).min(end - at);
                let granted = table.access(at & !(PAGE - 1)).unwrap_or_default();
                let pa = table.translate(at).ok_or(KernelError::BadAddress)?;
                let allowed = (granted.read || !need.read) && (granted.write || !need.write);
                if !allowed || !self.ram.contains(pa, pa + chunk) {
                    return Err(KernelError::BadAddress);
                }
                if pass == 1 {
                    each(pa, (at - addr) as usize, chunk as usize);
                }
                at += chunk;
            }
        }
        Ok(())
    }

    fn buffer_range(
        &self,
        space: &SpaceGlue,
        addr: Ipa,
        each: impl FnMut(u64, usize, usize),
    ) -> Result<(), KernelError> {
        let read_write = S2Access {
            read: true,
            write: true,
            exec: false,
        };
        let len = size_of::<IpcBuffer>() as u64;
        self.user_range(space, addr.raw(), len, read_write, each)
    }
}

/// A checked IPC buffer's physical pieces: `split` bytes from `first`, then the rest from `rest`
/// (the next page's frame, when the buffer crosses a page; `split` is the whole size otherwise).
pub struct GlueIpcWords {
    first: u64,
    split: u64,
    rest: u64,
}

impl GlueIpcWords {
    /// The physical address of the word at byte `offset`, when the word lies in one piece.
    fn word_address(&self, offset: u64) -> Option<u64> {
        if offset + 8 <= self.split {
            Some(self.first + offset)
        } else if offset >= self.split {
            Some(self.rest + (offset - self.split))
        } else {
            None
        }
    }

    /// Calls `each(physical address, byte of the word)` for word `index`'s bytes.
    fn bytes(&self, index: usize, mut each: impl FnMut(u64, usize)) {
        let offset = index as u64 * 8;
        for byte in 0..8 {
            let at = offset + byte as u64;
            let pa = if at < self.split {
                self.first + at
            } else {
                self.rest + (at - self.split)
            };
            each(pa, byte);
        }
    }
}

impl IpcWords for GlueIpcWords {
    fn read(&self, first: usize, words: &mut [u64]) {
        for (index, word) in (first..IPC_BUFFER_WORDS).zip(words.iter_mut()) {
            match self.word_address(index as u64 * 8) {
                Some(pa) if pa.is_multiple_of(8) => {
                    // SAFETY: the address is inside the buffer, which `ipc_buffer` checked is
                    // kernel-mapped RAM the thread maps read/write; 8-aligned (checked here). A
                    // racing writer can only change the value read.
                    *word = unsafe { (pa as *const u64).read_volatile() }
                }
                _ => {
                    let mut raw = [0u8; 8];
                    self.bytes(index, |pa, byte| {
                        // SAFETY: as above, byte by byte.
                        raw[byte] = unsafe { (pa as *const u8).read_volatile() };
                    });
                    *word = u64::from_le_bytes(raw);
                }
            }
        }
    }

    fn write(&mut self, first: usize, words: &[u64]) {
        for (index, word) in (first..IPC_BUFFER_WORDS).zip(words.iter()) {
            match self.word_address(index as u64 * 8) {
                // SAFETY: as in `read`: RAM the thread maps read/write, never kernel memory.
                Some(pa) if pa.is_multiple_of(8) => unsafe {
                    (pa as *mut u64).write_volatile(*word)
                },
                _ => {
                    let raw = word.to_le_bytes();
                    self.bytes(index, |pa, byte| {
                        // SAFETY: as above, byte by byte.
                        unsafe { (pa as *mut u8).write_volatile(raw[byte]) };
                    });
                }
            }
        }
    }
}

fn kernel_error(error: MapError) -> KernelError {
    match error {
        MapError::BadAddress => KernelError::BadAddress,
        MapError::AlreadyMapped => KernelError::SlotOccupied,
        MapError::OutOfMemory => KernelError::NotEnoughMemory,
    }
}

impl Effects for Glue {
    type IpcBuffer<'a> = GlueIpcWords;

    fn ipc_buffer(&mut self, space: &SpaceGlue, addr: Ipa) -> Result<GlueIpcWords, KernelError> {
        let addr = addr.raw();
        let len = size_of::<IpcBuffer>() as u64;
        let end = addr.checked_add(len).ok_or(KernelError::BadAddress)?;
        if space.root == 0 {
            return Err(KernelError::BadAddress);
        }
        let mut table = tables(space);
        // The buffer is smaller than a page, so it has one or two pieces; each must be RAM the
        // thread maps read/write (the checks of `user_range`).
        let mut piece = |at: u64, size: u64| -> Result<u64, KernelError> {
            let granted = table.access(at & !(PAGE - 1)).unwrap_or_default();
            let pa = table.translate(at).ok_or(KernelError::BadAddress)?;
            if !(granted.read && granted.write && self.ram.contains(pa, pa + size)) {
                return Err(KernelError::BadAddress);
            }
            Ok(pa)
        };
        let split = (PAGE - (addr & (PAGE - 1))).min(len);
        let first = piece(addr, split)?;
        let rest = if split < len {
            piece(addr + split, end - (addr + split))?
        } else {
            first + split
        };
        Ok(GlueIpcWords { first, split, rest })
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
        let attributes = stage2::leaf_attributes(access, memtype, self.fwb);
        let mut table = tables(space);
        let mut budget = TableBudget::of(space);
        if size == BLOCK_SIZE && (ipa.raw() | pa.raw()) & (BLOCK_SIZE - 1) == 0 {
            table
                .map_block(ipa.raw(), pa.raw(), attributes, &mut budget)
                .map_err(kernel_error)?;
            budget.commit(space);
            stats::count(space, Op::Map, ipa.raw(), size);
            return Ok(());
        }
        let pages = size / PAGE;
        for n in 0..pages {
            let offset = n * PAGE;
            let mapped = table.map_page(
                ipa.raw() + offset,
                pa.raw() + offset,
                attributes,
                &mut budget,
            );
            if let Err(error) = mapped {
                // All or nothing: take back the pages mapped so far (their tables stay: they
                // are the space's, paid for).
                table.unmap_pages(ipa.raw(), n, self.vmids.current(space));
                budget.commit(space);
                return Err(kernel_error(error));
            }
        }
        budget.commit(space);
        stats::count(space, Op::Map, ipa.raw(), size);
        Ok(())
    }

    fn unmap(&mut self, space: &mut SpaceGlue, ipa: Ipa, size: u64) {
        if space.root != 0 {
            // A space whose VMID is from an older generation has no TLB entries to invalidate.
            let current = self.vmids.current(space);
            let mut table = tables(space);
            // A 2 MiB frame was mapped as a block when aligned (see `map`), else page by page.
            if !(size == BLOCK_SIZE && table.unmap_block(ipa.raw(), current)) {
                table.unmap_pages(ipa.raw(), size / PAGE, current);
            }
        }
        stats::count(space, Op::Unmap, ipa.raw(), size);
    }

    fn space_created(
        &mut self,
        space: &mut SpaceGlue,
        memory: PhysAddr,
        bytes: u64,
    ) -> Result<(), KernelError> {
        // The first page is the kernel's record; the root table and the budget follow.
        space.next_table = memory.raw() + PAGE;
        space.end = memory.raw() + bytes;
        let mut budget = TableBudget::of(space);
        let root = AddressSpace::new_root(&mut budget).map_err(kernel_error)?;
        budget.commit(space);
        space.root = root;
        self.vmids.of(space);
        Ok(())
    }

    fn space_destroyed(&mut self, space: &mut SpaceGlue) {
        // No stale translation may outlive the VMID's reuse, and no walk may use a table page
        // once its memory is handed out again: invalidate the VMID now.
        if space.root != 0 && self.vmids.current(space) {
            tables(space).invalidate_all();
        }
        space.root = 0;
    }

    /// A frame reaches its new owner zeroed, before any mapping of it can exist: DC ZVA through
    /// the kernel's write-back map of RAM (`cpu::zero`, ending with DSB ISH). Without FEAT_S2FWB
    /// the zeroes are also cleaned and invalidated to the Point of Coherency, with DSB SY
    /// (`guest_maintenance`): DC ZVA stores into the cache like any store (DDI 0487, DC ZVA), and
    /// a reader whose access is non-cacheable — a guest with its MMU off, whose Device stage 1
    /// combined with stage 2's Normal write-back is non-cacheable (B2.16, "Mismatched memory
    /// attributes") — reads memory, which would still hold the previous owner's bytes; and no
    /// clean line may survive for such a guest to hit once it turns its MMU on. With FWB every
    /// stage-2 mapping is forced write-back, so every reader is coherent with these stores.
    ///
    /// This covers RAM carve-outs and `ram_identity` RAM too: they are in [`Glue::ram`]
    /// (`vms::kernel_ram`).
    fn clear_frame(&mut self, pa: PhysAddr, size: u64) {
        if !self.ram.contains(pa.raw(), pa.raw().saturating_add(size)) {
            return;
        }
        // SAFETY: the range is kernel-mapped RAM (checked above) retyped into a new frame that
        // no capability names yet, so nothing else uses it.
        unsafe { crate::arch::aarch64::cpu::zero(pa.raw(), size) };
        if !self.fwb {
            self.clean_cleared_frame(pa, size);
        }
    }

    fn read_ipc_buffer(&mut self, space: &SpaceGlue, addr: Ipa) -> Result<IpcBuffer, KernelError> {
        let mut data = IpcBuffer::new_zeroed();
        let bytes = data.as_mut_bytes();
        self.buffer_range(space, addr, |pa, offset, len| {
            if let Some(dest) = bytes.get_mut(offset..offset + len) {
                // SAFETY: `pa..pa + len` is kernel-mapped RAM the thread maps read/write
                // (checked by `user_range`); a racing writer can only change the bytes read.
                unsafe { core::ptr::copy_nonoverlapping(pa as *const u8, dest.as_mut_ptr(), len) };
            }
        })?;
        Ok(data)
    }

    fn write_ipc_buffer(
        &mut self,
        space: &SpaceGlue,
        addr: Ipa,
        data: &IpcBuffer,
    ) -> Result<(), KernelError> {
        let bytes = data.as_bytes();
        self.buffer_range(space, addr, |pa, offset, len| {
            if let Some(source) = bytes.get(offset..offset + len) {
                // SAFETY: as in `read_ipc_buffer`: RAM the thread maps read/write, never kernel
                // memory.
                unsafe { core::ptr::copy_nonoverlapping(source.as_ptr(), pa as *mut u8, len) };
            }
        })
    }

    fn thread_start(&mut self, thread: &mut ThreadGlue, pc: u64, sp: u64, ipc_buffer: u64) {
        thread.context = ThreadContext::service_start(pc, sp, ipc_buffer);
    }

    fn restart_syscall(&mut self, thread: &mut ThreadGlue) {
        // ELR_EL2 is the instruction after the `svc` (4 bytes: services are AArch64).
        thread.context.pc = thread.context.pc.wrapping_sub(4);
    }

    fn irq_ack(&mut self, intid: u32) {
        gic::set_enabled(intid, true);
    }

    fn irq_forwarding(&mut self, intid: u32, forwarding: bool) {
        if !forwarding {
            // A guest may still hold it active: it never will deactivate it now.
            gic::deactivate(intid);
            self.guests.forget_held_back(intid);
        }
        gic::set_enabled(intid, forwarding);
    }

    fn vcpu_created(&mut self, _vcpu: VcpuRef, state: &mut VcpuGlue) {
        *state = VcpuGlue::RESET;
    }

    fn vcpu_destroyed(&mut self, vcpu: VcpuRef) {
        self.guests.forget(vcpu);
    }

    fn vcpu_register(
        &mut self,
        thread: &mut ThreadGlue,
        vcpu: VcpuRef,
        state: &mut VcpuGlue,
        access: RegisterAccess,
    ) -> Result<u64, KernelError> {
        self.guests
            .register(&mut thread.context, vcpu, state, access)
    }

    fn vcpu_inject_irq(
        &mut self,
        vcpu: VcpuRef,
        state: &mut VcpuGlue,
        intid: u32,
        priority: u8,
    ) -> Result<(), KernelError> {
        // The virtual timer's INTID is the kernel's to deliver (hardware-linked): a software
        // copy next to it would put one INTID in two list registers (UNPREDICTABLE).
        if intid == crate::arch::aarch64::gic::vtimer() {
            return Err(KernelError::InvalidArgument);
        }
        self.guests
            .inject(vcpu, state, intid, priority)
            .map_err(|_| KernelError::ListRegistersFull)
    }

    fn resolve_guest_fault(
        &mut self,
        thread: &mut ThreadGlue,
        vcpu: VcpuRef,
        state: &mut VcpuGlue,
        fault: &GuestFault,
        resolution: &Resolution,
    ) -> Result<Resumption, KernelError> {
        self.guests
            .resolve(&mut thread.context, vcpu, state, fault, resolution)
    }

    fn maintenance(&mut self, op: CacheOp, target: MaintenanceTarget<'_>) {
        self.guest_maintenance(op, target);
    }
}

impl Glue {
    /// `maintenance` (the object model bounded the range: a clean covers at most 2 MiB, a TLB
    /// range beyond 64 pages becomes one invalidation of the VMID).
    pub fn guest_maintenance(&mut self, op: CacheOp, target: MaintenanceTarget<'_>) {
        match (op, target) {
            (CacheOp::CleanInvalidatePoc, MaintenanceTarget::Frame { pa, size, vm }) => {
                if self.ram.contains(pa.raw(), pa.raw().saturating_add(size)) {
                    cache::clean_invalidate_to_poc(pa.raw(), pa.raw() + size);
                }
                if let Some(vm) = vm {
                    stats::count(vm, Op::CleanPoc, pa.raw(), size);
                }
            }
            (CacheOp::InvalidateIcache, MaintenanceTarget::Frame { pa, size, vm }) => {
                cache::invalidate_icache();
                if let Some(vm) = vm {
                    stats::count(vm, Op::Icache, pa.raw(), size);
                }
            }
            (CacheOp::CleanInvalidatePoc, MaintenanceTarget::Vm { vm, ipa, size }) => {
                if vm.root != 0 {
                    // Leaf by leaf: one walk per page or block mapped, one per unmapped page.
                    let mut table = tables(vm);
                    let end = ipa.raw() + size;
                    let mut at = ipa.raw();
                    while at < end {
                        let Some((pa, extent)) = table.translate_extent(at) else {
                            at = (at | 0xfff) + 1;
                            continue;
                        };
                        let bytes = extent.min(end - at);
                        if self.ram.contains(pa, pa + bytes) {
                            cache::clean_invalidate_to_poc(pa, pa + bytes);
                        }
                        at += bytes;
                    }
                }
                stats::count(vm, Op::CleanPoc, ipa.raw(), size);
            }
            (CacheOp::InvalidateIcache, MaintenanceTarget::Vm { vm, ipa, size }) => {
                cache::invalidate_icache();
                stats::count(vm, Op::Icache, ipa.raw(), size);
            }
            (CacheOp::TlbInvalidateIpa, MaintenanceTarget::Vm { vm, ipa, size }) => {
                if vm.root != 0 && self.vmids.current(vm) {
                    tables(vm).invalidate_range(ipa.raw(), size);
                }
                stats::count(vm, Op::TlbiIpa, ipa.raw(), size);
            }
            (CacheOp::TlbInvalidateVmid, MaintenanceTarget::Vm { vm, .. }) => {
                if vm.root != 0 && self.vmids.current(vm) {
                    tables(vm).invalidate_all();
                }
                stats::count(vm, Op::TlbiVmid, 0, 0);
            }
            // The object model never asks for TLB maintenance on a frame.
            (CacheOp::TlbInvalidateIpa | CacheOp::TlbInvalidateVmid, _) => {}
        }
    }
}

//! The glue's half of the object model: the [`Effects`] the kernel asks for (stage-2 tables per
//! address space, VMIDs, IPC buffer access, frame clearing, thread start, interrupt unmasking) and
//! every thread's saved registers, indexed by the thread's arena index.
//!
//! Invariants: `spaces[i]` is the table of the live [`SpaceRef`] with arena index `i` (the kernel
//! calls `space_created` before naming a space and `space_destroyed` when it dies); a VMID is in
//! `vmids` exactly while a space holds it; the kernel reads or writes only physical memory inside
//! `ram` (all of it identity-mapped read/write at boot), so a device frame mapped where an IPC
//! buffer should be is refused, never dereferenced.

use crate::arch::aarch64::el0::{SPSR_EL0T, ThreadContext};
use crate::arch::aarch64::gic;
use crate::arch::aarch64::stage2::{AddressSpace, BLOCK_SIZE, MapError, TablePages};
use capvisor_ipc::abi::{CacheOp, IpcBuffer, KernelError};
use capvisor_ipc::protocols::fault::{GuestFault, Resolution};
use capvisor_ipc::types::{Ipa, PhysAddr};
use capvisor_kernel::memmap::MemoryMap;
use capvisor_kernel::object::effects::IPC_BUFFER_WORDS;
use capvisor_kernel::object::{
    Effects, IpcWords, MAX_SPACES, MAX_THREADS, MaintenanceTarget, RegisterAccess, SpaceRef,
    ThreadRef, UserBuffer, VcpuRef, Vmid,
};
use capvisor_kernel::stage2::{self, MemType, S2Access};
use zerocopy::{FromZeros, IntoBytes};

use super::{IPA_BITS, PAGE};

/// Most table pages the pool can take back (its size: every page it can ever hand out).
const POOL_PAGES: usize = super::TABLE_POOL_PAGES as usize;

/// The stage-2 table pages: a range set aside at boot, and the pages of destroyed spaces.
pub struct TablePool {
    fresh: MemoryMap,
    reused: heapless::Vec<u64, POOL_PAGES>,
}

impl TablePool {
    const fn new() -> Self {
        Self {
            fresh: MemoryMap::empty(),
            reused: heapless::Vec::new(),
        }
    }

    /// A pool of the pages in `[start, end)`.
    pub fn set_range(&mut self, start: u64, end: u64) {
        self.fresh = MemoryMap::new(&[capvisor_kernel::memmap::Range { start, end }]);
    }

    /// Takes back a page of a destroyed space.
    fn give_back(&mut self, page: u64) {
        // Every page came from this pool's range, so the list never holds more than it has
        // handed out; a full list (impossible) would only leak the page.
        let _ = self.reused.push(page);
    }
}

impl TablePages for TablePool {
    fn take_page(&mut self) -> Option<u64> {
        self.reused.pop().or_else(|| self.fresh.take_page())
    }
}

/// VMIDs the glue hands out: 1 to 255 (8-bit VMIDs work on every CPU; 0 is never used).
const VMIDS: usize = 256;

/// The glue's state beside the kernel's.
pub struct Glue {
    /// Pages for stage-2 tables (reserved at boot, before the rest of RAM went to the root).
    pub tables: TablePool,
    /// RAM the kernel maps read/write (all free RAM at boot).
    pub ram: MemoryMap,
    spaces: [Option<AddressSpace>; MAX_SPACES],
    vmids: [bool; VMIDS],
    /// Saved registers per thread index.
    pub contexts: [ThreadContext; MAX_THREADS],
    /// Image service names per thread index (threads the services create have none).
    pub names: [Option<&'static str>; MAX_THREADS],
    /// Whether a thread's console output is at a line start (where its name prefix goes).
    pub line_start: [bool; MAX_THREADS],
    /// Whether descriptors use the FEAT_S2FWB encoding.
    pub fwb: bool,
    /// vCPU state, VM flags and per-VM counters.
    pub guests: super::guest::Guests,
    /// The HCR_EL2 and VTTBR_EL2 values last written on the way to a thread (0: none yet; one
    /// CPU runs threads).
    pub loaded_translation: (u64, u64),
}

impl Glue {
    /// No spaces, no threads.
    pub const fn new() -> Self {
        Self {
            tables: TablePool::new(),
            ram: MemoryMap::empty(),
            spaces: [const { None }; MAX_SPACES],
            vmids: [false; VMIDS],
            contexts: [ThreadContext::ZERO; MAX_THREADS],
            names: [None; MAX_THREADS],
            line_start: [true; MAX_THREADS],
            fwb: false,
            guests: super::guest::Guests::new(),
            loaded_translation: (0, 0),
        }
    }

    /// The table of a live space.
    pub fn space(&mut self, space: SpaceRef) -> Option<&mut AddressSpace> {
        self.spaces.get_mut(space.index())?.as_mut()
    }

    /// The saved registers of a thread.
    pub fn context(&mut self, thread: ThreadRef) -> &mut ThreadContext {
        // Thread indices are below MAX_THREADS (the kernel's arena capacity).
        let index = thread.index() % MAX_THREADS;
        &mut self.contexts[index]
    }

    /// Calls `each(physical address, offset, length)` for the pieces of `[addr, addr + len)` in
    /// `space`, after checking that every page of it is mapped with `need` and is kernel RAM.
    pub fn user_range(
        &mut self,
        space: SpaceRef,
        addr: u64,
        len: u64,
        need: S2Access,
        mut each: impl FnMut(u64, usize, usize),
    ) -> Result<(), KernelError> {
        let end = addr.checked_add(len).ok_or(KernelError::BadAddress)?;
        let ram = &self.ram;
        let table = self
            .spaces
            .get_mut(space.index())
            .and_then(Option::as_mut)
            .ok_or(KernelError::BadAddress)?;
        for pass in 0..2 {
            let mut at = addr;
            while at < end {
                let chunk = (PAGE - (at & (PAGE - 1))).min(end - at);
                let granted = table.access(at & !(PAGE - 1)).unwrap_or_default();
                let pa = table.translate(at).ok_or(KernelError::BadAddress)?;
                let allowed = (granted.read || !need.read) && (granted.write || !need.write);
                if !allowed || !ram.contains(pa, pa + chunk) {
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
        &mut self,
        buffer: UserBuffer,
        each: impl FnMut(u64, usize, usize),
    ) -> Result<(), KernelError> {
        let space = buffer.space.ok_or(KernelError::BadAddress)?;
        let read_write = S2Access {
            read: true,
            write: true,
            exec: false,
        };
        let len = size_of::<IpcBuffer>() as u64;
        self.user_range(space, buffer.addr.raw(), len, read_write, each)
    }

    fn allocate_vmid(&mut self) -> Option<u16> {
        let (index, used) = self
            .vmids
            .iter_mut()
            .enumerate()
            .skip(1)
            .find(|(_, u)| !**u)?;
        *used = true;
        u16::try_from(index).ok()
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

    fn ipc_buffer(&mut self, buffer: UserBuffer) -> Result<GlueIpcWords, KernelError> {
        let space = buffer.space.ok_or(KernelError::BadAddress)?;
        let addr = buffer.addr.raw();
        let len = size_of::<IpcBuffer>() as u64;
        let end = addr.checked_add(len).ok_or(KernelError::BadAddress)?;
        let table = self
            .spaces
            .get_mut(space.index())
            .and_then(Option::as_mut)
            .ok_or(KernelError::BadAddress)?;
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
        space: SpaceRef,
        ipa: Ipa,
        pa: PhysAddr,
        size: u64,
        access: S2Access,
        memtype: MemType,
    ) -> Result<(), KernelError> {
        let attributes = stage2::leaf_attributes(access, memtype, self.fwb);
        let tables = &mut self.tables;
        let table = self
            .spaces
            .get_mut(space.index())
            .and_then(Option::as_mut)
            .ok_or(KernelError::BadAddress)?;
        if size == BLOCK_SIZE && (ipa.raw() | pa.raw()) & (BLOCK_SIZE - 1) == 0 {
            table
                .map_block(ipa.raw(), pa.raw(), attributes, tables)
                .map_err(kernel_error)?;
            self.guests
                .count(space, super::guest::Op::Map, ipa.raw(), size);
            return Ok(());
        }
        let pages = size / PAGE;
        for n in 0..pages {
            let offset = n * PAGE;
            let mapped = table.map_page(ipa.raw() + offset, pa.raw() + offset, attributes, tables);
            if let Err(error) = mapped {
                // All or nothing: take back the pages mapped so far.
                for back in 0..n {
                    table.unmap_page(ipa.raw() + back * PAGE);
                }
                return Err(kernel_error(error));
            }
        }
        self.guests
            .count(space, super::guest::Op::Map, ipa.raw(), size);
        Ok(())
    }

    fn unmap(&mut self, space: SpaceRef, ipa: Ipa, size: u64) {
        if let Some(table) = self.space(space) {
            // A 2 MiB frame was mapped as a block when aligned (see `map`), else page by page.
            if !(size == BLOCK_SIZE && table.unmap_block(ipa.raw())) {
                for n in 0..size / PAGE {
                    table.unmap_page(ipa.raw() + n * PAGE);
                }
            }
        }
        self.guests
            .count(space, super::guest::Op::Unmap, ipa.raw(), size);
    }

    fn space_created(&mut self, space: SpaceRef, vm: bool) -> Result<Vmid, KernelError> {
        let slot = self
            .spaces
            .get(space.index())
            .ok_or(KernelError::NotEnoughMemory)?;
        if slot.is_some() {
            return Err(KernelError::IllegalOperation);
        }
        let vmid = self.allocate_vmid().ok_or(KernelError::NotEnoughMemory)?;
        match AddressSpace::new(vmid, IPA_BITS, &mut self.tables) {
            Ok(table) => {
                self.spaces[space.index()] = Some(table);
                self.guests.is_vm[space.index()] = vm;
                self.guests.stats[space.index()] = super::guest::VmStats {
                    vmid: u64::from(vmid),
                    ..Default::default()
                };
                Ok(Vmid::new(vmid))
            }
            Err(_) => {
                self.vmids[usize::from(vmid)] = false;
                Err(KernelError::NotEnoughMemory)
            }
        }
    }

    fn space_destroyed(&mut self, space: SpaceRef, vmid: Vmid) {
        if let Some(table) = self.spaces.get_mut(space.index()).and_then(Option::take) {
            // No stale translation may outlive the VMID's reuse, and no walk may use a table
            // page after it is reused: invalidate first, then hand the pages back.
            table.invalidate_all();
            table.table_pages(|page| self.tables.give_back(page));
        }
        if let Some(used) = self.vmids.get_mut(usize::from(vmid.raw())) {
            *used = false;
        }
    }

    fn clear_frame(&mut self, pa: PhysAddr, size: u64) {
        if self.ram.contains(pa.raw(), pa.raw().saturating_add(size)) {
            // SAFETY: the range is kernel-mapped RAM (checked above) retyped into a new frame
            // that no capability names yet, so nothing else uses it.
            unsafe { crate::arch::aarch64::cpu::zero(pa.raw(), size) };
        }
    }

    fn read_ipc_buffer(&mut self, buffer: UserBuffer) -> Result<IpcBuffer, KernelError> {
        let mut data = IpcBuffer::new_zeroed();
        let bytes = data.as_mut_bytes();
        self.buffer_range(buffer, |pa, offset, len| {
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
        buffer: UserBuffer,
        data: &IpcBuffer,
    ) -> Result<(), KernelError> {
        let bytes = data.as_bytes();
        self.buffer_range(buffer, |pa, offset, len| {
            if let Some(source) = bytes.get(offset..offset + len) {
                // SAFETY: as in `read_ipc_buffer`: RAM the thread maps read/write, never kernel
                // memory.
                unsafe { core::ptr::copy_nonoverlapping(source.as_ptr(), pa as *mut u8, len) };
            }
        })
    }

    fn thread_start(&mut self, thread: ThreadRef, pc: u64, sp: u64, ipc_buffer: u64) {
        let context = self.context(thread);
        *context = ThreadContext {
            pc,
            sp,
            spsr: SPSR_EL0T,
            ..ThreadContext::ZERO
        };
        context.x[0] = ipc_buffer;
        self.line_start[thread.index() % MAX_THREADS] = true;
    }

    fn irq_ack(&mut self, intid: u32) {
        gic::set_enabled(intid, true);
    }

    fn irq_forwarding(&mut self, intid: u32, forwarding: bool) {
        gic::set_enabled(intid, forwarding);
    }

    fn vcpu_created(&mut self, vcpu: VcpuRef) {
        *self.guests.state_mut(vcpu) = crate::arch::aarch64::vcpu::El1State::RESET;
        *self.guests.vgic_mut(vcpu) = capvisor_kernel::vgic::VgicState::RESET;
    }

    fn vcpu_register(
        &mut self,
        thread: ThreadRef,
        vcpu: VcpuRef,
        access: RegisterAccess,
    ) -> Result<u64, KernelError> {
        self.guest_register(thread, vcpu, access)
    }

    fn vcpu_inject_irq(
        &mut self,
        vcpu: VcpuRef,
        intid: u32,
        priority: u8,
    ) -> Result<(), KernelError> {
        // The virtual timer's INTID is the kernel's to deliver (hardware-linked): a software
        // copy next to it would put one INTID in two list registers (UNPREDICTABLE).
        if intid == crate::arch::aarch64::gic::vtimer() {
            return Err(KernelError::InvalidArgument);
        }
        self.guests
            .inject(vcpu, intid, priority)
            .map_err(|_| KernelError::ListRegistersFull)
    }

    fn resolve_guest_fault(
        &mut self,
        thread: ThreadRef,
        vcpu: VcpuRef,
        fault: &GuestFault,
        resolution: &Resolution,
    ) -> Result<(), KernelError> {
        self.guest_resolve(thread, vcpu, fault, resolution)
    }

    fn maintenance(&mut self, op: CacheOp, target: MaintenanceTarget) {
        self.guest_maintenance(op, target);
    }
}

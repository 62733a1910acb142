//! The memory manager's policy, apart from the kernel: which frame backs which guest IPA, and
//! the cache maintenance `DESIGN.md` stage-2 rules 1–2 and the vCPU-reset rule (seed 002) ask
//! for around each mapping. The runtime's typed [`Kernel`] performs the effects (the system calls
//! on the target, `capvisor_rt::fake::FakeKernel` in the tests), so every rule is checked on the
//! host against the same model of the kernel as the other services'. Frames are written through
//! [`Window`]s, so this crate has no `unsafe`.
//!
//! Frames are a small state machine per guest region:
//! - *allocated*: retyped, mapped read/write into the memory manager's own window (so it can
//!   write payloads), not in the VM; `needs_clean` once `load`/`write_word` wrote it through that
//!   cacheable alias. A frame fresh from retype does not need it: the kernel hands every RAM
//!   frame over zeroed and, without FEAT_S2FWB, already cleaned and invalidated to PoC
//!   (`Effects::clear_frame`), so a second clean of the same zeroes would only cost time;
//! - *mapped*: in the VM, read/write execute-never (a data fault) or read/write/execute (an
//!   instruction fault);
//! - a reset without FEAT_S2FWB drops every *mapped* frame back to *allocated*, `needs_clean`.
//!
//! Without FWB a frame is cleaned and invalidated to PoC whenever it enters the VM while
//! `needs_clean` (rule 1: a guest with its MMU off reads memory non-cacheable), and right after a
//! write while it is in the VM. With FWB the stage-2 descriptors force write-back and no PoC
//! maintenance is ever made. Executable mappings come only after an instruction-cache
//! invalidation, unless CTR_EL0.DIC (rule 2).
//!
//! A guest whose RAM is mapped at IPA = PA (`ram_identity`) comes with an untyped covering
//! exactly its RAM: at its first use all its frames are retyped from it in address order (an
//! untyped hands out memory from its start upwards), so the frame backing an IPA is the one at
//! the same physical address; they enter the VM on faults like any other frame.
//!
//! Every other guest's frames come from the shared pool, and no guest may take more of the pool
//! or of the frame table than its quota ([`crate::quota`]): `MemError::Quota` beyond it, so no
//! guest can exhaust what another was promised.

use capvisor_ipc::abi::{CacheOp, KernelError};
use capvisor_ipc::bootinfo::{GuestInfo, Payload};
use capvisor_ipc::cap::{CPtr, Cap, Frame as FrameCap, Rights, Untyped, Vm};
use capvisor_ipc::memory::MemoryType;
pub use capvisor_ipc::memory::{CacheFeatures, FrameSize};
use capvisor_ipc::protocol::Context;
use capvisor_ipc::protocols::memmgr::{FaultOutcome, GuestPayload, Handler, MemError, ResetPolicy};
use capvisor_ipc::types::{Access, Ipa, VcpuId, VmId};
use capvisor_rt::kernel::{Kernel, Space};
use capvisor_rt::window::Window;

use crate::quota::{self, Need, Pool, Quota};

/// A 4 KiB page.
pub const PAGE: u64 = 1 << 12;
/// A 2 MiB block (a level-2 block mapping with the 4K granule).
pub const BLOCK: u64 = 1 << 21;
/// Where the memory manager maps guest frames in its own address space: guest `n` (its place in
/// the boot-info page) at `WINDOW + n * WINDOW_STRIDE + (ipa % WINDOW_STRIDE)`, which keeps a
/// block's 2 MiB alignment.
pub const WINDOW: u64 = 0x30_0000_0000;
/// The window of one guest (64 GiB: its RAM must fit).
pub const WINDOW_STRIDE: u64 = 0x10_0000_0000;
/// Frames the memory manager tracks, for all guests together (16 MiB of RAM in blocks is 8).
pub const MAX_FRAMES: usize = 192;
/// Guests one memory manager serves.
pub const MAX_GUESTS: usize = capvisor_ipc::bootinfo::MAX_GUESTS;

/// Guest RAM is mapped Normal write-back, in the VM and in the window alike.
const WRITE_BACK: MemoryType = MemoryType::NormalWriteBack;

/// The part of a write that lies in one frame.
#[derive(Debug, Clone, Copy)]
struct Chunk {
    /// Bytes of the write before it.
    done: u64,
    /// Where it starts in the frame.
    offset: u64,
    /// Bytes.
    length: u64,
}

/// One frame of guest RAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Frame {
    /// The guest's place in the boot-info page.
    guest: u8,
    size: FrameSize,
    /// First IPA.
    ipa: u64,
    /// The capability mapped into the VM.
    vm_cap: Cap<FrameCap>,
    /// The copy mapped into the memory manager's window.
    own_cap: Cap<FrameCap>,
    /// In the VM: `Some(executable)`.
    mapped: Option<bool>,
    /// Written through a cacheable alias since its last clean to PoC.
    needs_clean: bool,
}

/// A guest, as the memory manager serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guest {
    /// Its `VmId`.
    pub id: VmId,
    /// The `Vm` capability.
    pub vm: Cap<Vm>,
    /// The badge its VMM calls with.
    pub vmm_badge: u64,
    /// First IPA of RAM.
    pub ram_base: u64,
    /// Bytes of RAM.
    pub ram_size: u64,
    /// Its payloads: kernel, device tree, initrd.
    pub payloads: [Payload; 3],
    /// RAM at IPA = PA: the untyped covering exactly the RAM (`None`: RAM comes from the shared
    /// pool).
    pub identity_untyped: Option<Cap<Untyped>>,
}

impl Guest {
    /// The guest a boot-info entry describes.
    #[must_use]
    pub fn from_info(info: &GuestInfo) -> Self {
        Self {
            id: VmId::new(info.index),
            vm: Cap::from_cptr(CPtr::new(info.vm)),
            vmm_badge: info.vmm_badge,
            ram_base: info.ram_base,
            ram_size: info.ram_size,
            payloads: [info.kernel, info.dtb, info.initrd],
            identity_untyped: (info.ram_untyped != 0)
                .then(|| Cap::from_cptr(CPtr::new(info.ram_untyped))),
        }
    }

    fn ram_end(&self) -> u64 {
        self.ram_base.saturating_add(self.ram_size)
    }

    fn in_ram(&self, ipa: u64, size: u64) -> bool {
        ipa >= self.ram_base
            && ipa
                .checked_add(size)
                .is_some_and(|end| end <= self.ram_end())
    }

    /// The frame that backs `ipa`: a block when its 2 MiB region lies wholly in RAM.
    fn region(&self, ipa: u64) -> (u64, FrameSize) {
        let block = ipa & !(BLOCK - 1);
        if self.in_ram(block, BLOCK) {
            (block, FrameSize::Block2M)
        } else {
            (ipa & !(PAGE - 1), FrameSize::Page4K)
        }
    }
}

/// The memory manager.
#[derive(Debug)]
pub struct MemMgr<K> {
    kernel: K,
    features: CacheFeatures,
    guests: heapless::Vec<Guest, MAX_GUESTS>,
    frames: heapless::Vec<Frame, MAX_FRAMES>,
    /// Per guest: its identity-mapped RAM's frames were all made.
    identity_made: [bool; MAX_GUESTS],
    pool: Pool,
    /// Per guest: its quota, and what is left of it.
    quotas: heapless::Vec<Quota, MAX_GUESTS>,
    left: [Quota; MAX_GUESTS],
}

fn refused(_: KernelError) -> MemError {
    MemError::MappingRefused
}

fn out_of_memory(_: KernelError) -> MemError {
    MemError::OutOfMemory
}

impl<K: Kernel> MemMgr<K> {
    /// A memory manager for `guests` (extra ones beyond [`MAX_GUESTS`] are ignored), whose pool
    /// is the untyped in slots `untyped`: it sizes and splits the pool and sets every guest's
    /// quota ([`crate::quota`]).
    pub fn new(
        mut kernel: K,
        features: CacheFeatures,
        guests: &[Guest],
        untyped: &[Cap<Untyped>],
    ) -> Self {
        let mut list: heapless::Vec<Guest, MAX_GUESTS> = heapless::Vec::new();
        for guest in guests.iter().take(MAX_GUESTS) {
            let _ = list.push(*guest);
        }
        let pages = list
            .iter()
            .filter(|guest| guest.identity_untyped.is_none())
            .map(|guest| Need::of(guest).pages)
            .sum();
        let pool = Pool::carve(&mut kernel, untyped, pages);
        // Each frame takes two slots: the VM's capability and the window's copy.
        let frames = (MAX_FRAMES as u64).min(kernel.free_slots() / 2);
        let quotas = quota::quotas(&list, &pool, frames);
        Self {
            kernel,
            features,
            guests: list,
            frames: heapless::Vec::new(),
            identity_made: [false; MAX_GUESTS],
            pool,
            left: core::array::from_fn(|i| quotas.get(i).copied().unwrap_or_default()),
            quotas,
        }
    }

    /// Guest `index`'s quota and its need (to report at start).
    #[must_use]
    pub fn quota(&self, index: usize) -> Option<(Quota, Need)> {
        let quota = *self.quotas.get(index)?;
        Some((quota, Need::of(self.guests.get(index)?)))
    }

    /// What the pool holds: blocks and pages.
    #[must_use]
    pub const fn capacity(&self) -> (u64, u64) {
        (self.pool.block_capacity(), self.pool.page_capacity())
    }

    /// The kernel (for the tests' fake).
    #[cfg(test)]
    pub fn kernel(&mut self) -> &mut K {
        &mut self.kernel
    }

    /// The guest `vm`, if the caller (`badge`) is its VMM.
    fn guest(&self, ctx: &Context, vm: VmId) -> Result<(usize, Guest), MemError> {
        let (index, guest) = self
            .guests
            .iter()
            .enumerate()
            .find(|(_, g)| g.id == vm)
            .ok_or(MemError::UnknownVm)?;
        if ctx.badge().raw() != guest.vmm_badge {
            return Err(MemError::NotPermitted);
        }
        Ok((index, *guest))
    }

    fn window(index: usize, ipa: u64) -> u64 {
        WINDOW + index as u64 * WINDOW_STRIDE + (ipa % WINDOW_STRIDE)
    }

    /// The frame backing `ipa` of guest `index`, allocated (and mapped into the window) if new.
    fn frame(&mut self, index: usize, guest: &Guest, ipa: u64) -> Result<usize, MemError> {
        if guest.identity_untyped.is_some() && !self.identity_made[index] {
            self.make_identity_frames(index, guest)?;
        }
        let (base, size) = guest.region(ipa);
        if let Some(found) = self
            .frames
            .iter()
            .position(|f| usize::from(f.guest) == index && f.ipa == base)
        {
            return Ok(found);
        }
        if guest.identity_untyped.is_some() {
            // Every frame of identity-mapped RAM was made up front; none may come from the pool.
            return Err(MemError::OutOfMemory);
        }
        self.new_frame(index, base, size, None)
    }

    /// Makes every frame of identity-mapped guest `index`, in address order, from its untyped.
    fn make_identity_frames(&mut self, index: usize, guest: &Guest) -> Result<(), MemError> {
        let mut ipa = guest.ram_base;
        while ipa < guest.ram_end() {
            let (base, size) = guest.region(ipa);
            // After a refusal (its quota), the frames made before it stay: none is made twice.
            let made = self
                .frames
                .iter()
                .any(|f| usize::from(f.guest) == index && f.ipa == base);
            if !made {
                self.new_frame(index, base, size, guest.identity_untyped)?;
            }
            ipa = base + size.bytes();
        }
        self.identity_made[index] = true;
        Ok(())
    }

    /// Retypes a frame of `size` for `base` of guest `index` (from `untyped`, or from the pool)
    /// and maps it into the memory manager's window.
    fn new_frame(
        &mut self,
        index: usize,
        base: u64,
        size: FrameSize,
        untyped: Option<Cap<Untyped>>,
    ) -> Result<usize, MemError> {
        let left = &mut self.left[index];
        let from_pool = match (untyped, size) {
            (Some(_), _) => None,
            (None, FrameSize::Block2M) => Some(&mut left.blocks),
            (None, FrameSize::Page4K) => Some(&mut left.pages),
        };
        if left.frames == 0 || from_pool.as_deref() == Some(&0) {
            return Err(MemError::Quota);
        }
        if self.frames.is_full() {
            return Err(MemError::OutOfMemory);
        }
        let vm_cap = match untyped {
            Some(untyped) => self.kernel.retype(untyped, size.bits() as u32),
            None => self.pool.take(&mut self.kernel, size),
        }
        .map_err(out_of_memory)?;
        // Charged as soon as it exists: should a later step fail, the frame is lost to this
        // guest's quota only.
        if let Some(left) = from_pool {
            *left -= 1;
        }
        left.frames -= 1;
        let own_cap = self.kernel.copy(vm_cap).map_err(out_of_memory)?;
        let window = Self::window(index, base);
        self.kernel
            .map(
                own_cap,
                Space::Own,
                window,
                Rights::READ_WRITE.word(),
                WRITE_BACK,
            )
            .map_err(refused)?;
        let frame = Frame {
            guest: index as u8,
            size,
            ipa: base,
            vm_cap,
            own_cap,
            mapped: None,
            // The kernel zeroed it and, without FWB, cleaned the zeroes to PoC: nothing written
            // since is only in a cache.
            needs_clean: false,
        };
        self.frames.push(frame).map_err(|_| MemError::OutOfMemory)?;
        Ok(self.frames.len() - 1)
    }

    /// Maps frame `at` into guest `guest`'s VM, executable or not, with the maintenance rules 1–2
    /// require first.
    fn enter_vm(&mut self, at: usize, guest: &Guest, execute: bool) -> Result<(), MemError> {
        let frame = self.frames[at];
        if frame.mapped.is_some() {
            // Only a change to executable gets here: break before make (the kernel
            // invalidates the TLB on unmap).
            self.kernel.unmap(frame.vm_cap).map_err(refused)?;
            self.frames[at].mapped = None;
        }
        if frame.needs_clean && !self.features.fwb {
            self.kernel
                .frame_cache(frame.vm_cap, CacheOp::CleanInvalidatePoc, guest.vm)
                .map_err(refused)?;
        }
        self.frames[at].needs_clean = false;
        if execute && !self.features.dic {
            self.kernel
                .frame_cache(frame.vm_cap, CacheOp::InvalidateIcache, guest.vm)
                .map_err(refused)?;
        }
        let access = if execute {
            Rights::READ_WRITE_EXECUTE
        } else {
            Rights::READ_WRITE
        };
        self.kernel
            .map(
                frame.vm_cap,
                Space::Vm(guest.vm),
                frame.ipa,
                access.word(),
                WRITE_BACK,
            )
            .map_err(refused)?;
        self.frames[at].mapped = Some(execute);
        Ok(())
    }

    /// After the memory manager wrote frame `at`: a frame in the VM is made visible now (it will
    /// not refault); one outside it is cleaned when it enters.
    fn written(&mut self, at: usize, guest: &Guest) -> Result<(), MemError> {
        let frame = self.frames[at];
        match frame.mapped {
            None => self.frames[at].needs_clean = true,
            Some(executable) => {
                if !self.features.fwb {
                    self.kernel
                        .frame_cache(frame.vm_cap, CacheOp::CleanInvalidatePoc, guest.vm)
                        .map_err(refused)?;
                }
                if executable && !self.features.dic {
                    self.kernel
                        .frame_cache(frame.vm_cap, CacheOp::InvalidateIcache, guest.vm)
                        .map_err(refused)?;
                }
            }
        }
        Ok(())
    }

    /// Writes `length` bytes at `ipa` of guest `index`, frame by frame: `source` writes each
    /// [`Chunk`] into the frame's window.
    fn write_ram(
        &mut self,
        (index, guest): (usize, &Guest),
        ipa: u64,
        length: u64,
        mut source: impl FnMut(&mut Window, Chunk) -> Result<(), MemError>,
    ) -> Result<(), MemError> {
        if !guest.in_ram(ipa, length) {
            return Err(MemError::NotGuestRam);
        }
        let mut done = 0;
        while done < length {
            let at = self.frame(index, guest, ipa + done)?;
            let frame = self.frames[at];
            let offset = ipa + done - frame.ipa;
            let chunk = (frame.size.bytes() - offset).min(length - done);
            let mut window = Window::new(Self::window(index, frame.ipa), frame.size.bytes())
                .map_err(|_| MemError::MappingRefused)?;
            source(
                &mut window,
                Chunk {
                    done,
                    offset,
                    length: chunk,
                },
            )?;
            self.written(at, guest)?;
            done += chunk;
        }
        Ok(())
    }

    /// Takes every frame of guest `index` out of its VM, to be cleaned when it refaults.
    fn drop_mappings(&mut self, index: usize) -> Result<u64, MemError> {
        let mut bytes = 0;
        for at in 0..self.frames.len() {
            let frame = self.frames[at];
            if usize::from(frame.guest) == index && frame.mapped.is_some() {
                self.kernel.unmap(frame.vm_cap).map_err(refused)?;
                self.frames[at].mapped = None;
                self.frames[at].needs_clean = true;
                bytes += frame.size.bytes();
            }
        }
        Ok(bytes)
    }
}

impl<K: Kernel> Handler for MemMgr<K> {
    async fn add_ram(
        &mut self,
        ctx: &mut Context,
        vm: VmId,
        base: Ipa,
        size: u64,
    ) -> Result<(), MemError> {
        // RAM comes from the image (the boot-info page); only that range can be declared.
        let (_, guest) = self.guest(ctx, vm)?;
        if base.raw() == guest.ram_base && size == guest.ram_size {
            Ok(())
        } else {
            Err(MemError::BadRange)
        }
    }

    async fn handle_stage2_fault(
        &mut self,
        ctx: &mut Context,
        vm: VmId,
        _vcpu: VcpuId,
        ipa: Ipa,
        access: Access,
    ) -> Result<FaultOutcome, MemError> {
        let (index, guest) = self.guest(ctx, vm)?;
        if !guest.in_ram(ipa.raw(), 1) {
            return Err(MemError::NotGuestRam);
        }
        let at = self.frame(index, &guest, ipa.raw())?;
        let frame = self.frames[at];
        let execute = access == Access::Execute;
        match frame.mapped {
            Some(true) => return Ok(FaultOutcome::AlreadyMapped),
            Some(false) if !execute => return Ok(FaultOutcome::AlreadyMapped),
            _ => {}
        }
        self.enter_vm(at, &guest, execute)?;
        Ok(FaultOutcome::Mapped {
            base: Ipa::new(frame.ipa),
            size: frame.size.bytes(),
        })
    }

    async fn reset_vcpu(
        &mut self,
        ctx: &mut Context,
        vm: VmId,
        _vcpu: VcpuId,
    ) -> Result<ResetPolicy, MemError> {
        let (index, guest) = self.guest(ctx, vm)?;
        match (self.features.fwb, self.features.dic) {
            (false, _) => {
                self.drop_mappings(index)?;
                Ok(ResetPolicy::DropAllMappings)
            }
            (true, false) => {
                let op = CacheOp::InvalidateIcache;
                self.kernel
                    .vm_cache(guest.vm, op, guest.ram_base, guest.ram_size)
                    .map_err(refused)?;
                Ok(ResetPolicy::InvalidateInstructionCache)
            }
            (true, true) => Ok(ResetPolicy::Nothing),
        }
    }

    async fn release_vm(&mut self, ctx: &mut Context, vm: VmId) -> Result<u64, MemError> {
        // The frames stay allocated to the guest (the kernel has no way to give retyped memory
        // back short of revoking the whole untyped); it only leaves the VM.
        let (index, _) = self.guest(ctx, vm)?;
        self.drop_mappings(index)
    }

    async fn load(
        &mut self,
        ctx: &mut Context,
        vm: VmId,
        payload: GuestPayload,
        ipa: Ipa,
    ) -> Result<u64, MemError> {
        let (index, guest) = self.guest(ctx, vm)?;
        let which = match payload {
            GuestPayload::Kernel => guest.payloads[0],
            GuestPayload::DeviceTree => guest.payloads[1],
            GuestPayload::Initrd => guest.payloads[2],
        };
        if which.size == 0 {
            return Err(MemError::NoPayload);
        }
        let bytes = capvisor_rt::boot_payload(which);
        self.write_ram((index, &guest), ipa.raw(), which.size, |window, chunk| {
            let from = usize::try_from(chunk.done).map_err(|_| MemError::BadRange)?;
            let length = usize::try_from(chunk.length).map_err(|_| MemError::BadRange)?;
            let part = from
                .checked_add(length)
                .and_then(|to| bytes.get(from..to))
                .ok_or(MemError::NoPayload)?;
            window
                .copy_from(chunk.offset, part)
                .map_err(|_| MemError::BadRange)
        })?;
        Ok(which.size)
    }

    async fn write_word(
        &mut self,
        ctx: &mut Context,
        vm: VmId,
        ipa: Ipa,
        value: u64,
    ) -> Result<(), MemError> {
        let (index, guest) = self.guest(ctx, vm)?;
        if !ipa.raw().is_multiple_of(8) {
            return Err(MemError::BadRange);
        }
        let bytes = value.to_le_bytes();
        self.write_ram((index, &guest), ipa.raw(), 8, |window, chunk| {
            window
                .write_volatile(chunk.offset, &bytes)
                .map_err(|_| MemError::BadRange)
        })
    }
}

//! The memory manager (`svc-memmgr`): serves `capvisor_ipc::protocols::memmgr` to the guests'
//! VMMs. It owns guest RAM (its manifest's untyped), demand-maps it into each VM on stage-2
//! faults and writes the guests' payloads; the rules it applies (`DESIGN.md` stage-2 rules 1–2,
//! vCPU reset) are in [`policy`], tested on the host. This file is the EL0 glue: the boot-info
//! page, capability discovery and the syscalls behind [`policy::Kernel`].
#![cfg_attr(target_os = "none", no_std, no_main)]

capvisor_rt::service_async!(run);

#[cfg_attr(
    not(any(target_os = "none", test)),
    allow(dead_code, reason = "the host program does not serve")
)]
mod policy;
#[cfg_attr(
    not(any(target_os = "none", test)),
    allow(dead_code, reason = "the host program does not serve")
)]
mod quota;

#[cfg(test)]
mod tests;

/// The memory manager's server generation.
#[cfg(target_os = "none")]
const GENERATION: capvisor_ipc::protocol::Generation = capvisor_ipc::protocol::Generation::new(1);

#[cfg(target_os = "none")]
async fn run() -> u64 {
    use capvisor_ipc::cap::Cap;
    use capvisor_ipc::protocols::memmgr;
    use capvisor_rt::ipc::{EndpointServer, ReceiveWindow};
    use capvisor_rt::println;

    let Some(info) = capvisor_rt::boot_info() else {
        println!("no valid boot-info page");
        return 1;
    };
    let Some(kernel) = el0::Kernel::discover(&info) else {
        println!("no endpoint or no free capability slots");
        return 1;
    };
    let guests: heapless::Vec<policy::Guest, { policy::MAX_GUESTS }> =
        info.guests().iter().map(policy::Guest::from_info).collect();
    let features = policy::CacheFeatures {
        fwb: info.fwb(),
        dic: info.dic(),
    };
    let endpoint = kernel.endpoint;
    println!(
        "memmgr: {} guest(s), endpoint slot {endpoint}, {} untyped piece(s), fwb={} dic={}",
        guests.len(),
        kernel.untyped_count(),
        features.fwb,
        features.dic
    );
    for (guest, info) in guests.iter().zip(info.guests()) {
        if guest.identity_untyped != 0 {
            println!(
                "memmgr: guest {}: RAM {:#x}..{:#x} at IPA = PA, from its own untyped",
                capvisor_ipc::bootinfo::BootInfo::name(info),
                guest.ram_base,
                guest.ram_base + guest.ram_size
            );
        }
    }
    let untyped: heapless::Vec<u64, 32> = info.untyped().iter().copied().collect();
    let manager = policy::MemMgr::new(kernel, features, &guests, &untyped);
    let (blocks, pages) = manager.capacity();
    println!(
        "memmgr: pool of {} MiB: {blocks} x 2 MiB for blocks, {pages} x 4 KiB for pages",
        (blocks * policy::BLOCK + pages * policy::PAGE) >> 20
    );
    for (index, info) in info.guests().iter().enumerate() {
        let Some((quota, need)) = manager.quota(index) else {
            continue;
        };
        let name = capvisor_ipc::bootinfo::BootInfo::name(info);
        let fair = if quota.frames < need.frames()
            || (info.ram_untyped == 0 && (quota.blocks, quota.pages) != (need.blocks, need.pages))
        {
            " (a fair share: the memory manager holds less than its guests' RAM)"
        } else {
            ""
        };
        println!(
            "memmgr: guest {name}: quota {} x 2 MiB and {} x 4 KiB from the pool, {} frames{fair}",
            quota.blocks, quota.pages, quota.frames
        );
    }
    let mut manager = manager;
    let mut server = EndpointServer::new(
        Cap::from_cptr(capvisor_rt::CPtr::new(endpoint)),
        ReceiveWindow::NONE,
    );
    let error = memmgr::serve(&mut server, &mut manager, GENERATION).await;
    println!("unexpected {error:?}");
    1
}

/// Without the kernel there is nothing to serve: the host program does nothing (the policy is
/// tested in `tests.rs`).
#[cfg(not(target_os = "none"))]
async fn run() -> u64 {
    0
}

/// The syscalls behind [`policy::Kernel`].
#[cfg(target_os = "none")]
mod el0 {
    use capvisor_ipc::abi::{CacheOp, Invocation, KernelError};
    use capvisor_ipc::bootinfo::{BOOT_INFO, BootInfo, Payload};
    use capvisor_ipc::cap::ObjectKind;
    use capvisor_ipc::memory::MemoryType;
    use capvisor_rt::{CPtr, Rights, sys};

    use crate::policy::{FrameSize, Space};

    /// This service's CNode and AddressSpace (`kernel/src/services/spawn.rs`: the same slots for
    /// the root and for a spawned service).
    const CNODE: u64 = 1;
    const SPACE: u64 = 2;

    /// The kernel, as the memory manager reaches it.
    #[derive(Debug)]
    pub struct Kernel {
        /// This service's endpoint (taken by `run`).
        pub endpoint: u64,
        untyped_count: usize,
        next_free: u64,
        free_end: u64,
    }

    impl Kernel {
        /// This service's endpoint, untyped memory and free slots, as the kernel lists them in
        /// the boot-info page (no slot is probed: `Identify` is made with `Call`, which on an
        /// endpoint would be an IPC call).
        pub fn discover(info: &BootInfo) -> Option<Self> {
            (info.endpoint != 0 && info.free_first < info.free_end).then(|| Self {
                endpoint: info.endpoint,
                untyped_count: info.untyped().len(),
                next_free: info.free_first,
                free_end: info.free_end,
            })
        }

        /// How many untyped capabilities were found.
        pub fn untyped_count(&self) -> usize {
            self.untyped_count
        }

        /// Fills the next empty slot of this service's CNode with `make` (the kernel left
        /// `[free_first, free_end)` empty, and only this service fills it, in order); a slot
        /// `make` could not fill stays free.
        fn in_free_slot(
            &mut self,
            make: impl FnOnce(u64) -> Result<(), KernelError>,
        ) -> Result<u64, KernelError> {
            if self.next_free >= self.free_end {
                return Err(KernelError::NotEnoughMemory);
            }
            make(self.next_free)?;
            self.next_free += 1;
            Ok(self.next_free - 1)
        }
    }

    impl crate::policy::Kernel for Kernel {
        fn new_untyped(&mut self, parent: u64, bits: u32) -> Result<u64, KernelError> {
            let kind = u64::from(ObjectKind::Untyped.code());
            self.in_free_slot(|slot| {
                sys::retype(CPtr::new(parent), kind, bits.into(), CPtr::NULL, slot, 1)
            })
        }

        fn untyped_size(&mut self, untyped: u64) -> Result<u64, KernelError> {
            let [kind, _, _, size] =
                sys::invoke(CPtr::new(untyped), Invocation::Identify.code(), &[])?;
            if kind != u64::from(ObjectKind::Untyped.code()) {
                return Err(KernelError::WrongType);
            }
            Ok(size)
        }

        fn new_frame_from(&mut self, untyped: u64, size: FrameSize) -> Result<u64, KernelError> {
            let frame = u64::from(ObjectKind::Frame.code());
            self.in_free_slot(|slot| {
                sys::retype(CPtr::new(untyped), frame, size.bits(), CPtr::NULL, slot, 1)
            })
        }

        fn free_slots(&self) -> u64 {
            self.free_end - self.next_free
        }

        fn copy_frame(&mut self, frame: u64) -> Result<u64, KernelError> {
            self.in_free_slot(|slot| {
                sys::copy(CPtr::new(CNODE), slot, CPtr::new(frame), Rights::ALL)
            })
        }

        fn map(
            &mut self,
            frame: u64,
            space: Space,
            ipa: u64,
            access: u64,
        ) -> Result<(), KernelError> {
            let space = match space {
                Space::Vm(vm) => vm,
                Space::Own => SPACE,
            };
            let memtype = MemoryType::NormalWriteBack.code();
            sys::map(CPtr::new(frame), CPtr::new(space), ipa, access, memtype)
        }

        fn unmap(&mut self, frame: u64) -> Result<(), KernelError> {
            sys::unmap(CPtr::new(frame))
        }

        fn clean_to_poc(&mut self, frame: u64, vm: u64) -> Result<(), KernelError> {
            let args = [CacheOp::CleanInvalidatePoc.code(), vm];
            sys::invoke(CPtr::new(frame), Invocation::CacheMaintenance.code(), &args).map(|_| ())
        }

        fn invalidate_icache(&mut self, frame: u64, vm: u64) -> Result<(), KernelError> {
            let args = [CacheOp::InvalidateIcache.code(), vm];
            sys::invoke(CPtr::new(frame), Invocation::CacheMaintenance.code(), &args).map(|_| ())
        }

        fn invalidate_vm_icache(
            &mut self,
            vm: u64,
            ipa: u64,
            size: u64,
        ) -> Result<(), KernelError> {
            let args = [CacheOp::InvalidateIcache.code(), ipa, size];
            sys::invoke(CPtr::new(vm), Invocation::CacheMaintenance.code(), &args).map(|_| ())
        }

        fn write(&mut self, address: u64, bytes: &[u8]) {
            for (n, byte) in bytes.iter().enumerate() {
                // SAFETY: the policy writes only inside frames it mapped read/write into this
                // service's window, which nothing else in this service refers to.
                unsafe { ((address + n as u64) as *mut u8).write_volatile(*byte) };
            }
        }

        fn copy_payload(&mut self, payload: Payload, offset: u64, address: u64, length: u64) {
            let source = BOOT_INFO + payload.offset + offset;
            // SAFETY: (1) the kernel maps each payload read-only right after the boot-info page,
            // `payload.size` bytes from `BOOT_INFO + payload.offset`, and the policy copies
            // `offset + length <= payload.size` bytes; (2) the destination is inside a frame the
            // policy mapped read/write into the window; (3) the two never overlap.
            unsafe {
                core::ptr::copy_nonoverlapping(
                    source as *const u8,
                    address as *mut u8,
                    length as usize,
                );
            }
        }
    }
}

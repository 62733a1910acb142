//! Address spaces, vCPUs, and mapping frames into address spaces under the memory-type rules.
//!
//! The rules (DESIGN.md, "Layers and trust" and stage-2 rules 3–8), checked in this order:
//! 1. a frame capability maps once (`InvalidArgument` while it is mapped; copy it to map again);
//! 2. the access asked for is R/W/X only and non-empty (`InvalidArgument`), and within the
//!    capability's rights (`InsufficientRights`);
//! 3. memory mapped cacheable by its owner (RAM, a cacheable PFNMAP) is never mapped non-cacheable
//!    (`MismatchedAttributes`); any other type the frame does not carry is `MemoryTypeNotAllowed`;
//! 4. device memory is mapped cacheable only with FEAT_S2FWB and CTR_EL0.DIC
//!    (`CacheableDeviceUnsupported`);
//! 5. nothing is executable unless it is RAM mapped write-back (`ExecuteFromDevice`);
//! 6. a 2 MiB block is mapped write-back only: non-cacheable memory is never a block mapping
//!    (`UncachedBlock`, rule 8), so a broker that asks for one is refused here too;
//! 7. the IPA is aligned to the frame's size (`AlignmentError`) and inside the space
//!    (`BadAddress`).
//!
//! Only then does the glue write the descriptor ([`Effects::map`]); the mapping is recorded on the
//! capability, so deleting or revoking it unmaps (see `delete.rs`). The mapped space is named by a
//! capability to an `AddressSpace` or `Vm` with `WRITE`.

use capvisor_ipc::abi::KernelError;
use capvisor_ipc::cap::{CPtr, Rights};
use capvisor_ipc::types::Ipa;

use super::capability::{FrameCap, FrameSize, Mapping, Object};
use super::cspace::SlotId;
use super::effects::{Effects, SpaceGlue, VcpuGlue};
use super::memory::{KernelObject, PageKind, UntypedRef};
use super::{Kernel, MAX_SPACE_THREADS, PlatformFeatures, ThreadRef};
use crate::stage2::S2Access;
use capvisor_ipc::memory::MemoryType;

/// An address space (service or VM): its record, in the first page of its memory; the glue keeps
/// its tables in the rest.
#[derive(Debug, Clone)]
pub struct Space {
    pub(super) caps: u32,
    /// A VM (its threads run vCPUs at EL1), not a service space.
    pub(super) vm: bool,
    /// The untyped it was retyped from (`None` at boot).
    pub(super) origin: Option<UntypedRef>,
    /// The threads configured into it (deleting the space stops them: a bounded list).
    pub(super) threads: [Option<ThreadRef>; MAX_SPACE_THREADS],
    /// The glue's state: stage-2 tables in the space's own memory, VMID, counters.
    pub glue: SpaceGlue,
}

impl KernelObject for Space {
    const KIND: PageKind = PageKind::Space;
}

/// A vCPU: the EL1 state the glue keeps for it, run by the thread it is bound to
/// (`ThreadBindVcpu`, see `vcpu.rs`).
#[derive(Debug, Clone)]
pub struct Vcpu {
    pub(super) caps: u32,
    pub(super) thread: Option<ThreadRef>,
    /// The untyped it was retyped from.
    pub(super) origin: Option<UntypedRef>,
    /// The glue's state: EL1 registers and virtual CPU interface.
    pub glue: VcpuGlue,
}

impl KernelObject for Vcpu {
    const KIND: PageKind = PageKind::Vcpu;
}

/// Checks rules 1–6 for mapping `frame` (held with `rights`) with `access` and `memtype`.
///
/// # Errors
/// As the module doc lists.
pub fn check_mapping(
    features: PlatformFeatures,
    frame: &FrameCap,
    rights: Rights,
    access: u64,
    memtype: MemoryType,
) -> Result<S2Access, KernelError> {
    if frame.mapping.is_some() {
        return Err(KernelError::InvalidArgument);
    }
    let rwx = Rights::READ.union(Rights::WRITE).union(Rights::EXECUTE);
    let access = u8::try_from(access)
        .ok()
        .and_then(|a| Rights::from_bits(a).ok())
        .ok_or(KernelError::InvalidArgument)?;
    if access == Rights::NONE || !rwx.contains(access) {
        return Err(KernelError::InvalidArgument);
    }
    if !rights.contains(access) {
        return Err(KernelError::InsufficientRights);
    }
    if frame.memory.cacheable() && memtype != MemoryType::NormalWriteBack {
        return Err(KernelError::MismatchedAttributes);
    }
    if !frame.memory.allowed().contains(memtype) {
        return Err(KernelError::MemoryTypeNotAllowed);
    }
    if frame.memory.is_device() && memtype == MemoryType::NormalWriteBack {
        features
            .cache
            .cacheable_device()
            .map_err(|_| KernelError::CacheableDeviceUnsupported)?;
    }
    let execute = access.contains(Rights::EXECUTE);
    if execute && (frame.memory.is_device() || memtype != MemoryType::NormalWriteBack) {
        return Err(KernelError::ExecuteFromDevice);
    }
    if frame.size == FrameSize::Block2M && memtype != MemoryType::NormalWriteBack {
        return Err(KernelError::UncachedBlock);
    }
    Ok(S2Access {
        read: access.contains(Rights::READ),
        write: access.contains(Rights::WRITE),
        exec: execute,
    })
}

impl Kernel {
    /// `Map`: maps the frame in `frame_slot` into the space `space_cptr` names (in the caller's
    /// CSpace) at `ipa`.
    ///
    /// # Errors
    /// The rules of the module doc; `WrongType`/`InsufficientRights` for the space capability; the
    /// glue's errors from [`Effects::map`].
    pub(super) fn map_frame(
        &mut self,
        caller: ThreadRef,
        frame_slot: SlotId,
        args: [u64; 4],
        fx: &mut impl Effects,
    ) -> Result<(), KernelError> {
        let [space_cptr, ipa, access, memtype] = args;
        let cap = *self.slots.cap(frame_slot).ok_or(KernelError::EmptySlot)?;
        let Object::Frame(frame) = cap.object else {
            return Err(KernelError::WrongType);
        };
        let (_, space_cap) = self.lookup(caller, CPtr::new(space_cptr))?;
        let (Object::AddressSpace(space) | Object::Vm(space)) = space_cap.object else {
            return Err(KernelError::WrongType);
        };
        if !space_cap.rights.contains(Rights::WRITE) {
            return Err(KernelError::InsufficientRights);
        }
        let memtype = MemoryType::from_code(memtype)?;
        let s2 = check_mapping(self.features, &frame, cap.rights, access, memtype)?;
        let size = frame.size.bytes();
        if !ipa.is_multiple_of(size) {
            return Err(KernelError::AlignmentError);
        }
        let limit = 1u64
            .checked_shl(u32::from(self.features.ipa_bits))
            .unwrap_or(u64::MAX);
        if ipa.checked_add(size).is_none_or(|end| end > limit) {
            return Err(KernelError::BadAddress);
        }
        let glue = &mut self.spaces.get_mut(space)?.glue;
        fx.map(glue, Ipa::new(ipa), frame.base, size, s2, memtype)?;
        if let Some(Capability {
            object: Object::Frame(f),
            ..
        }) = self.slots.cap_mut(frame_slot)
        {
            f.mapping = Some(Mapping {
                space,
                ipa: Ipa::new(ipa),
            });
        }
        Ok(())
    }

    /// `Unmap`: removes the frame capability's mapping, if it has one.
    ///
    /// # Errors
    /// [`KernelError::WrongType`] for a capability that is not a frame.
    pub(super) fn unmap_frame(
        &mut self,
        frame_slot: SlotId,
        fx: &mut impl Effects,
    ) -> Result<(), KernelError> {
        let Some(Capability {
            object: Object::Frame(frame),
            ..
        }) = self.slots.cap_mut(frame_slot)
        else {
            return Err(KernelError::WrongType);
        };
        let (mapping, size) = (frame.mapping.take(), frame.size.bytes());
        if let Some(mapping) = mapping
            && let Ok(space) = self.spaces.get_mut(mapping.space)
        {
            fx.unmap(&mut space.glue, mapping.ipa, size);
        }
        Ok(())
    }
}

use super::capability::Capability;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::capability::{DeviceAttributes, FrameMemory};
    use capvisor_ipc::memory::CacheFeatures;
    use capvisor_ipc::types::PhysAddr;

    const R: u64 = 1;
    const RW: u64 = 3;
    const RX: u64 = 5;

    fn frame(memory: FrameMemory) -> FrameCap {
        FrameCap {
            base: PhysAddr::new(0x4000_0000),
            size: FrameSize::Page4K,
            memory,
            mapping: None,
        }
    }

    fn both() -> PlatformFeatures {
        PlatformFeatures {
            cache: CacheFeatures {
                fwb: true,
                dic: true,
            },
            ipa_bits: 40,
        }
    }

    #[test]
    fn ram_is_write_back_only_and_executable() {
        let ram = frame(FrameMemory::Ram);
        let f = both();
        assert!(
            check_mapping(f, &ram, Rights::ALL, RX, MemoryType::NormalWriteBack)
                .is_ok_and(|a| a.exec && !a.write)
        );
        assert_eq!(
            check_mapping(f, &ram, Rights::ALL, R, MemoryType::NormalNonCacheable),
            Err(KernelError::MismatchedAttributes)
        );
        assert_eq!(
            check_mapping(f, &ram, Rights::READ, RW, MemoryType::NormalWriteBack),
            Err(KernelError::InsufficientRights)
        );
        assert_eq!(
            check_mapping(f, &ram, Rights::ALL, 0, MemoryType::NormalWriteBack),
            Err(KernelError::InvalidArgument)
        );
        assert_eq!(
            check_mapping(f, &ram, Rights::ALL, 8, MemoryType::NormalWriteBack),
            Err(KernelError::InvalidArgument)
        );
        assert_eq!(
            check_mapping(f, &ram, Rights::ALL, 1 << 9, MemoryType::NormalWriteBack),
            Err(KernelError::InvalidArgument)
        );
    }

    #[test]
    fn device_memory_types_follow_the_grant() {
        let f = both();
        let mmio = frame(FrameMemory::Device(DeviceAttributes::Uncached {
            normal_nc: false,
        }));
        assert!(check_mapping(f, &mmio, Rights::ALL, RW, MemoryType::DeviceNgnre).is_ok());
        assert_eq!(
            check_mapping(f, &mmio, Rights::ALL, RW, MemoryType::NormalNonCacheable),
            Err(KernelError::MemoryTypeNotAllowed)
        );
        assert_eq!(
            check_mapping(f, &mmio, Rights::ALL, RW, MemoryType::NormalWriteBack),
            Err(KernelError::MemoryTypeNotAllowed)
        );
        assert_eq!(
            check_mapping(f, &mmio, Rights::ALL, RX, MemoryType::DeviceNgnre),
            Err(KernelError::ExecuteFromDevice)
        );
        let nc = frame(FrameMemory::Device(DeviceAttributes::Uncached {
            normal_nc: true,
        }));
        assert!(check_mapping(f, &nc, Rights::ALL, RW, MemoryType::NormalNonCacheable).is_ok());
        assert_eq!(
            check_mapping(f, &nc, Rights::ALL, RX, MemoryType::NormalNonCacheable),
            Err(KernelError::ExecuteFromDevice)
        );
    }

    #[test]
    fn non_cacheable_memory_is_never_a_block_mapping() {
        let block = |memory| FrameCap {
            size: FrameSize::Block2M,
            ..frame(memory)
        };
        let f = both();
        let mmio = block(FrameMemory::Device(DeviceAttributes::Uncached {
            normal_nc: true,
        }));
        assert_eq!(
            check_mapping(f, &mmio, Rights::ALL, RW, MemoryType::DeviceNgnre),
            Err(KernelError::UncachedBlock)
        );
        assert_eq!(
            check_mapping(f, &mmio, Rights::ALL, RW, MemoryType::NormalNonCacheable),
            Err(KernelError::UncachedBlock)
        );
        // The same memory in 4 KiB pages maps; write-back blocks (RAM, a cacheable PFNMAP) too.
        let page = frame(FrameMemory::Device(DeviceAttributes::Uncached {
            normal_nc: true,
        }));
        assert!(check_mapping(f, &page, Rights::ALL, RW, MemoryType::DeviceNgnre).is_ok());
        let pfnmap = block(FrameMemory::Device(DeviceAttributes::Cacheable));
        assert!(check_mapping(f, &pfnmap, Rights::ALL, RW, MemoryType::NormalWriteBack).is_ok());
        let ram = block(FrameMemory::Ram);
        assert!(check_mapping(f, &ram, Rights::ALL, RW, MemoryType::NormalWriteBack).is_ok());
    }

    #[test]
    fn cacheable_device_needs_fwb_and_dic() {
        let pfnmap = frame(FrameMemory::Device(DeviceAttributes::Cacheable));
        assert!(
            check_mapping(
                both(),
                &pfnmap,
                Rights::ALL,
                RW,
                MemoryType::NormalWriteBack
            )
            .is_ok()
        );
        for (fwb, dic) in [(false, false), (true, false), (false, true)] {
            let f = PlatformFeatures {
                cache: CacheFeatures { fwb, dic },
                ipa_bits: 40,
            };
            assert_eq!(
                check_mapping(f, &pfnmap, Rights::ALL, RW, MemoryType::NormalWriteBack),
                Err(KernelError::CacheableDeviceUnsupported)
            );
        }
        assert_eq!(
            check_mapping(both(), &pfnmap, Rights::ALL, RW, MemoryType::DeviceNgnre),
            Err(KernelError::MismatchedAttributes)
        );
        assert_eq!(
            check_mapping(
                both(),
                &pfnmap,
                Rights::ALL,
                RX,
                MemoryType::NormalWriteBack
            ),
            Err(KernelError::ExecuteFromDevice)
        );
    }

    #[test]
    fn a_mapped_capability_does_not_map_twice() {
        let mut ram = frame(FrameMemory::Ram);
        ram.mapping = Some(Mapping {
            space: <crate::object::SpaceRef as crate::object::memory::ObjectRef>::from_parts(0, 0),
            ipa: Ipa::new(0),
        });
        assert_eq!(
            check_mapping(both(), &ram, Rights::ALL, R, MemoryType::NormalWriteBack),
            Err(KernelError::InvalidArgument)
        );
    }
}

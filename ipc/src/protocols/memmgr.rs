//! The memory manager's protocol: guest RAM ranges, stage-2 faults on them, and vCPU-reset policy.
//!
//! Callers are VMMs (badged per VM). The memory manager holds the untyped RAM and each VM's stage-2
//! capability; the kernel installs its mappings and performs the cache maintenance that DESIGN.md rules
//! 1–2 require, the memory manager decides which frame goes where.

use serde::{Deserialize, Serialize};

use crate::protocol::{ProtocolId, Version};
use crate::types::{Access, Ipa, VcpuId, VmId};

crate::stable_codes! {
    /// The memory manager's errors.
    ///
    /// # Errors
    /// Each variant is one reason the memory manager refused.
    pub enum MemError: u16 {
        /// No free RAM is left for this VM.
        OutOfMemory = 1,
        /// The address is not in any RAM range of the VM (the VMM should emulate it as MMIO).
        NotGuestRam = 2,
        /// The caller does not own this VM.
        NotPermitted = 3,
        /// The range overlaps an existing one, or is empty, or is not page aligned.
        BadRange = 4,
        /// The kernel refused the mapping (a memory-type or cacheability rule).
        MappingRefused = 5,
        /// The VM is not known.
        UnknownVm = 6,
        /// The guest has no such payload (its manifest declares no device tree or initrd).
        NoPayload = 7,
        /// The VM already has all the memory (or frames) its quota allows: its share of what the
        /// memory manager holds, which no other guest can take (1.2).
        Quota = 8,
    }
}

/// What resolving a stage-2 fault did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FaultOutcome {
    /// RAM was mapped at `base` for `size` bytes; the vCPU can retry the access.
    Mapped {
        /// First IPA of the new mapping.
        base: Ipa,
        /// Bytes mapped (a page or a block).
        size: u64,
    },
    /// The page was already mapped with enough rights (a race with another vCPU); just retry.
    AlreadyMapped,
}

/// What the kernel and memory manager do when a vCPU that has run is reset (DESIGN.md, seed 002).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResetPolicy {
    /// No FEAT_S2FWB: every stage-2 mapping of the VM is dropped, so each page is cleaned and
    /// invalidated to PoC again when it refaults.
    DropAllMappings,
    /// FEAT_S2FWB: mappings stay; only the instruction cache is invalidated (FWB does not imply DIC).
    InvalidateInstructionCache,
    /// FEAT_S2FWB and CTR_EL0.DIC: nothing to do.
    Nothing,
}

crate::protocol! {
    /// The memory manager's protocol.
    protocol MemMgr {
        id: ProtocolId::MEMMGR,
        version: Version::new(1, 2),
        error: MemError,
    }
    /// Declares `[base, base + size)` as RAM of `vm`, allocated lazily on fault.
    fn add_ram(vm: VmId, base: Ipa, size: u64) -> () as AddRam;
    /// Resolves a stage-2 fault of `vcpu` at `ipa` (the kernel's fault message, forwarded by the VMM).
    fn handle_stage2_fault(vm: VmId, vcpu: VcpuId, ipa: Ipa, access: Access) -> FaultOutcome as HandleStage2Fault;
    /// The cache policy for resetting `vcpu` after it has run; the memory manager applies the mapping
    /// side before it answers.
    fn reset_vcpu(vm: VmId, vcpu: VcpuId) -> ResetPolicy as ResetVcpu;
    /// Unmaps and frees all RAM of `vm`; returns the bytes freed.
    fn release_vm(vm: VmId) -> u64 as ReleaseVm;
    /// Copies one of the guest's payloads (from the image) into its RAM at `ipa`; returns its size.
    /// The VMM decides what goes where; the memory manager, which owns the RAM, writes it (and
    /// makes sure a guest with its MMU off sees it: rule 1 and the vCPU-reset rule).
    fn load(vm: VmId, payload: GuestPayload, ipa: Ipa) -> u64 as Load;
    /// Writes one little-endian word into the guest's RAM at `ipa` (8-byte aligned).
    fn write_word(vm: VmId, ipa: Ipa, value: u64) -> () as WriteWord;
}

/// A payload of the guest's image entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GuestPayload {
    /// The kernel (an arm64 `Image`).
    Kernel,
    /// The device tree.
    DeviceTree,
    /// The initial RAM disk.
    Initrd,
}

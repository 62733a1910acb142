//! Capabilities: what a slot holds (object, rights, badge), frame capabilities with their fixed
//! memory types and their one mapping, and the object types `Retype` creates.
//!
//! Invariant: a frame's memory is fixed when the frame is created ([`FrameMemory`]); no operation
//! changes it, and derived copies inherit it. A frame capability records at most one mapping.

use capvisor_ipc::abi::KernelError;
use capvisor_ipc::cap::{Badge, ObjectKind, Rights};
use capvisor_ipc::types::{Ipa, PhysAddr};

use super::irq::IrqHandlerRef;
use super::memory::{
    CNodeRef, EndpointRef, NotificationRef, SpaceRef, ThreadRef, UntypedRef, VcpuRef,
};
pub use capvisor_ipc::memory::FrameSize;
use capvisor_ipc::memory::MemoryType;

/// The object-kind code of a service address space (`ObjectKind::AddressSpace`): what `Retype`
/// takes and what the kernel reports for such capabilities.
pub const ADDRESS_SPACE_KIND: u16 = ObjectKind::AddressSpace.code();

/// A set of stage-2 memory types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemTypes(u8);

impl MemTypes {
    const fn bit(memtype: MemoryType) -> u8 {
        match memtype {
            MemoryType::NormalWriteBack => 1,
            MemoryType::NormalNonCacheable => 2,
            MemoryType::DeviceNgnre => 4,
        }
    }

    /// Only `memtype`.
    #[must_use]
    pub const fn only(memtype: MemoryType) -> Self {
        Self(Self::bit(memtype))
    }

    /// This set plus `memtype`.
    #[must_use]
    pub const fn with(self, memtype: MemoryType) -> Self {
        Self(self.0 | Self::bit(memtype))
    }

    /// Whether `memtype` is in the set.
    #[must_use]
    pub const fn contains(self, memtype: MemoryType) -> bool {
        self.0 & Self::bit(memtype) != 0
    }
}

/// How a device region may be mapped, as its grant (the device tree and the broker) says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceAttributes {
    /// Uncached MMIO: Device-nGnRE, and Normal non-cacheable too when `normal_nc`.
    Uncached {
        /// The grant allows any uncached type, so Normal non-cacheable is allowed as well.
        normal_nc: bool,
    },
    /// A region its owner maps cacheable (a "cacheable PFNMAP", e.g. coherent accelerator memory):
    /// only Normal write-back, and only on a CPU with FEAT_S2FWB and CTR_EL0.DIC.
    Cacheable,
}

/// What memory a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameMemory {
    /// RAM: Normal write-back only.
    Ram,
    /// A device region (not in the kernel's RAM map).
    Device(DeviceAttributes),
}

impl FrameMemory {
    /// The memory types a mapping of this frame may use.
    #[must_use]
    pub const fn allowed(self) -> MemTypes {
        match self {
            Self::Ram | Self::Device(DeviceAttributes::Cacheable) => {
                MemTypes::only(MemoryType::NormalWriteBack)
            }
            Self::Device(DeviceAttributes::Uncached { normal_nc: false }) => {
                MemTypes::only(MemoryType::DeviceNgnre)
            }
            Self::Device(DeviceAttributes::Uncached { normal_nc: true }) => {
                MemTypes::only(MemoryType::DeviceNgnre).with(MemoryType::NormalNonCacheable)
            }
        }
    }

    /// Whether the memory is mapped cacheable by its owner (RAM, or a cacheable PFNMAP): such memory
    /// is never mapped non-cacheable (mismatched attributes).
    #[must_use]
    pub const fn cacheable(self) -> bool {
        matches!(self, Self::Ram | Self::Device(DeviceAttributes::Cacheable))
    }

    /// Whether this is device memory.
    #[must_use]
    pub const fn is_device(self) -> bool {
        matches!(self, Self::Device(_))
    }
}

/// Where a frame capability is mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    /// The address space.
    pub space: SpaceRef,
    /// The IPA the frame starts at.
    pub ipa: Ipa,
}

/// A frame capability's object: the physical range itself (frames need no kernel record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameCap {
    /// First byte.
    pub base: PhysAddr,
    /// Size.
    pub size: FrameSize,
    /// RAM or device, with the types it allows.
    pub memory: FrameMemory,
    /// The mapping this capability made, if any (one per capability, as in seL4).
    pub mapping: Option<Mapping>,
}

/// What a capability refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Object {
    /// Untyped memory.
    Untyped(UntypedRef),
    /// An endpoint.
    Endpoint(EndpointRef),
    /// A notification.
    Notification(NotificationRef),
    /// A capability space.
    CNode(CNodeRef),
    /// A thread.
    Thread(ThreadRef),
    /// A service address space.
    AddressSpace(SpaceRef),
    /// A VM (its stage-2 space).
    Vm(SpaceRef),
    /// A vCPU.
    Vcpu(VcpuRef),
    /// A frame of RAM or device memory.
    Frame(FrameCap),
    /// The right to create IRQ handlers.
    IrqControl,
    /// One interrupt's handler.
    IrqHandler(IrqHandlerRef),
}

impl Object {
    /// The kind code reported to user space (`ObjectKind` codes, plus [`ADDRESS_SPACE_KIND`]).
    #[must_use]
    pub const fn kind_code(&self) -> u16 {
        let kind = match self {
            Self::Untyped(_) => ObjectKind::Untyped,
            Self::Endpoint(_) => ObjectKind::Endpoint,
            Self::Notification(_) => ObjectKind::Notification,
            Self::CNode(_) => ObjectKind::CNode,
            Self::Thread(_) => ObjectKind::Thread,
            Self::AddressSpace(_) => return ADDRESS_SPACE_KIND,
            Self::Vm(_) => ObjectKind::Vm,
            Self::Vcpu(_) => ObjectKind::Vcpu,
            Self::Frame(FrameCap {
                memory: FrameMemory::Ram,
                ..
            }) => ObjectKind::Frame,
            Self::Frame(_) => ObjectKind::DeviceFrame,
            Self::IrqControl => ObjectKind::IrqControl,
            Self::IrqHandler(_) => ObjectKind::IrqHandler,
        };
        kind.code()
    }

    /// Whether a badge can be minted into a capability to this object.
    #[must_use]
    pub const fn badgeable(&self) -> bool {
        matches!(self, Self::Endpoint(_) | Self::Notification(_))
    }
}

/// A capability: an object, the rights to it, a badge and the untyped memory it was paid from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capability {
    /// The object.
    pub object: Object,
    /// Rights; derived capabilities only ever have fewer.
    pub rights: Rights,
    /// Badge (endpoints and notifications; `Badge::NONE` otherwise).
    pub badge: Badge,
    /// The untyped object whose memory this object occupies (`None` for boot-time objects). Each
    /// capability with an origin counts as a child of that untyped (`untyped.rs`), so its memory
    /// is not handed out again while the capability, or the object it names, lives.
    pub origin: Option<UntypedRef>,
}

impl Capability {
    /// A capability with all rights, no badge and no origin.
    #[must_use]
    pub const fn new(object: Object) -> Self {
        Self {
            object,
            rights: Rights::ALL,
            badge: Badge::NONE,
            origin: None,
        }
    }

    /// The capability a copy or mint makes: rights narrowed by `mask`, badge set if `badge` is
    /// not `None`, and no mapping (a frame's mapping belongs to the capability that made it).
    ///
    /// # Errors
    /// [`KernelError::InvalidArgument`] when minting a badge into an object that takes none, or
    /// into a capability that is already badged.
    pub fn derive(&self, mask: Rights, badge: Option<Badge>) -> Result<Self, KernelError> {
        let mut derived = *self;
        derived.rights = self.rights.intersection(mask);
        if let Some(badge) = badge {
            if !self.object.badgeable() || self.badge != Badge::NONE {
                return Err(KernelError::InvalidArgument);
            }
            derived.badge = badge;
        }
        if let Object::Frame(frame) = &mut derived.object {
            frame.mapping = None;
        }
        Ok(derived)
    }
}

/// The kinds of object `Retype` creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectType {
    /// A smaller untyped region (`size_bits` = log2 bytes).
    Untyped,
    /// An endpoint.
    Endpoint,
    /// A notification.
    Notification,
    /// A CNode (`size_bits` = log2 slots).
    CNode,
    /// A RAM frame (`size_bits` 12 or 21).
    Frame,
    /// A device frame, from device untyped only (`size_bits` 12 or 21).
    DeviceFrame,
    /// A VM.
    Vm,
    /// A vCPU.
    Vcpu,
    /// A thread.
    Thread,
    /// A service address space.
    AddressSpace,
}

impl ObjectType {
    /// The type with `ObjectKind` code `code`.
    ///
    /// # Errors
    /// [`KernelError::InvalidArgument`] for a code that names no retypable kind.
    pub fn from_code(code: u64) -> Result<Self, KernelError> {
        let kind = u16::try_from(code)
            .ok()
            .and_then(ObjectKind::from_code)
            .ok_or(KernelError::InvalidArgument)?;
        Ok(match kind {
            ObjectKind::Untyped => Self::Untyped,
            ObjectKind::Endpoint => Self::Endpoint,
            ObjectKind::Notification => Self::Notification,
            ObjectKind::CNode => Self::CNode,
            ObjectKind::Frame => Self::Frame,
            ObjectKind::DeviceFrame => Self::DeviceFrame,
            ObjectKind::Vm => Self::Vm,
            ObjectKind::Vcpu => Self::Vcpu,
            ObjectKind::Thread => Self::Thread,
            ObjectKind::AddressSpace => Self::AddressSpace,
            ObjectKind::Reply | ObjectKind::IrqHandler | ObjectKind::IrqControl => {
                return Err(KernelError::InvalidArgument);
            }
        })
    }

    /// log2 of the bytes of untyped memory one object occupies, given the `Retype` size argument.
    /// Every kernel object lives in the memory it is charged (`memory.rs`), in whole pages:
    /// - endpoints, notifications, threads and vCPUs take one 4 KiB page (size argument 0);
    /// - a CNode of `2^n` slots (`n` = 2..=12) takes `2^n` slots of 128 bytes, at least a page;
    /// - an AddressSpace or Vm of `2^n` bytes (`n` = 13..=24; 0 means 16: 64 KiB) holds its
    ///   record, its root stage-2 table and the rest as its own table budget;
    /// - a child untyped of `2^n` bytes (`n` = 12..=47) also takes one page for its record
    ///   ([`ObjectType::RECORD_BITS`], placed before the regions);
    /// - frames are 4 KiB or 2 MiB.
    ///
    /// # Errors
    /// [`KernelError::RangeError`] for a size argument the type does not accept.
    pub fn charge(self, size_bits: u64) -> Result<u32, KernelError> {
        let fixed = |bits: u32| {
            if size_bits == 0 {
                Ok(bits)
            } else {
                Err(KernelError::RangeError)
            }
        };
        match self {
            Self::Untyped if (12..=47).contains(&size_bits) => Ok(size_bits as u32),
            Self::Untyped => Err(KernelError::RangeError),
            Self::CNode if (2..=12).contains(&size_bits) => {
                Ok((size_bits as u32 + super::cspace::SLOT_BITS).max(Self::RECORD_BITS))
            }
            Self::CNode => Err(KernelError::RangeError),
            Self::Frame | Self::DeviceFrame => {
                FrameSize::from_bits(size_bits).map(|s| s.bytes().trailing_zeros())
            }
            Self::Endpoint | Self::Notification | Self::Thread | Self::Vcpu => {
                fixed(Self::RECORD_BITS)
            }
            Self::Vm | Self::AddressSpace => match size_bits {
                0 => Ok(Self::DEFAULT_SPACE_BITS),
                13..=24 => Ok(size_bits as u32),
                _ => Err(KernelError::RangeError),
            },
        }
    }

    /// log2 of a page: the least any kernel object takes, and an untyped's record.
    pub const RECORD_BITS: u32 = 12;
    /// log2 of an AddressSpace's or Vm's bytes when `Retype` asks for size 0.
    pub const DEFAULT_SPACE_BITS: u32 = 16;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_memory_allows_only_its_types() {
        assert!(
            FrameMemory::Ram
                .allowed()
                .contains(MemoryType::NormalWriteBack)
        );
        assert!(!FrameMemory::Ram.allowed().contains(MemoryType::DeviceNgnre));
        let mmio = FrameMemory::Device(DeviceAttributes::Uncached { normal_nc: false });
        assert!(mmio.allowed().contains(MemoryType::DeviceNgnre));
        assert!(!mmio.allowed().contains(MemoryType::NormalNonCacheable));
        let nc = FrameMemory::Device(DeviceAttributes::Uncached { normal_nc: true });
        assert!(nc.allowed().contains(MemoryType::NormalNonCacheable) && !nc.cacheable());
        let pfnmap = FrameMemory::Device(DeviceAttributes::Cacheable);
        assert!(pfnmap.cacheable() && pfnmap.is_device());
        assert!(!pfnmap.allowed().contains(MemoryType::NormalNonCacheable));
    }

    #[test]
    fn derive_narrows_rights_and_badges_once() {
        let cap = Capability::new(Object::IrqControl);
        assert_eq!(cap.derive(Rights::READ, None).unwrap().rights, Rights::READ);
        assert_eq!(
            cap.derive(Rights::READ, Some(Badge::new(1))),
            Err(KernelError::InvalidArgument)
        );
        let ep = Capability::new(Object::Endpoint(arena_ref()));
        let minted = ep.derive(Rights::ALL, Some(Badge::new(5))).unwrap();
        assert_eq!(minted.badge, Badge::new(5));
        assert_eq!(
            minted.derive(Rights::ALL, Some(Badge::new(6))),
            Err(KernelError::InvalidArgument)
        );
    }

    fn arena_ref() -> EndpointRef {
        use super::super::memory::ObjectRef;
        EndpointRef::from_parts(0, 0)
    }

    #[test]
    fn retype_codes_and_charges() {
        assert_eq!(
            ObjectType::from_code(u64::from(ObjectKind::Endpoint.code())),
            Ok(ObjectType::Endpoint)
        );
        assert_eq!(ObjectType::from_code(13), Ok(ObjectType::AddressSpace));
        assert_eq!(
            ObjectType::from_code(u64::from(ObjectKind::Reply.code())),
            Err(KernelError::InvalidArgument)
        );
        assert_eq!(
            ObjectType::from_code(1 << 40),
            Err(KernelError::InvalidArgument)
        );
        assert_eq!(ObjectType::Frame.charge(12), Ok(12));
        assert_eq!(ObjectType::Frame.charge(13), Err(KernelError::RangeError));
        assert_eq!(ObjectType::CNode.charge(4), Ok(12));
        assert_eq!(ObjectType::CNode.charge(10), Ok(17));
        assert_eq!(ObjectType::Endpoint.charge(0), Ok(12));
        assert_eq!(ObjectType::Endpoint.charge(1), Err(KernelError::RangeError));
        assert_eq!(ObjectType::Vm.charge(0), Ok(16));
        assert_eq!(ObjectType::AddressSpace.charge(13), Ok(13));
        assert_eq!(
            ObjectType::AddressSpace.charge(12),
            Err(KernelError::RangeError)
        );
        assert_eq!(ObjectType::Vm.charge(25), Err(KernelError::RangeError));
    }
}

//! Capability handles: `CPtr`, typed `Cap<T>` with one checked cast, `Rights` and `Badge`.
//!
//! A capability is named by a [`CPtr`], an address in the holder's capability space; the kernel resolves
//! it. User code never holds a bare `CPtr` for long: it wraps it in [`Cap<T>`], where `T` is one of the
//! sealed [`ObjectType`] markers, so an endpoint cannot be passed where a frame is expected (the design of
//! rust-sel4's `cptr.rs`, STYLE.md 7). The only way from an untyped [`AnyCap`] to a `Cap<T>` is
//! [`AnyCap::downcast`], which checks the object type that the kernel attested (when it transferred or
//! identified the capability).
//!
//! `Cap<T>` deliberately does not implement `Serialize`: a `CPtr` means nothing in another address
//! space, so capabilities travel in the IPC buffer's capability slots, never inside a payload.

use core::marker::PhantomData;

#[cfg(feature = "postcard")]
use serde::{Deserialize, Serialize};
use zerocopy::{Immutable, IntoBytes, KnownLayout};

/// An address in a capability space (seL4's `seL4_CPtr`). Meaningful only to its holder.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, IntoBytes, Immutable, KnownLayout,
)]
#[repr(transparent)]
pub struct CPtr(u64);

impl CPtr {
    /// The null capability pointer: slot 0 is never populated, so it names no capability.
    pub const NULL: Self = Self(0);

    /// A capability pointer with the given raw value.
    #[must_use]
    pub const fn new(raw: u64) -> Self {
        Self(raw)
    }

    /// The raw value, for the syscall registers and the IPC buffer.
    #[must_use]
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// Whether this is [`CPtr::NULL`].
    #[must_use]
    pub const fn is_null(self) -> bool {
        self.0 == 0
    }
}

/// A destination slot in the caller's capability space, for invocations that create capabilities
/// (retype, copy, mint, receiving a transferred capability). Distinct from [`CPtr`] so that "the
/// capability to use" and "where to put a new one" cannot be swapped by accident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(transparent)]
pub struct Slot(u64);

impl Slot {
    /// The slot with the given index.
    #[must_use]
    pub const fn new(index: u64) -> Self {
        Self(index)
    }

    /// The raw slot index.
    #[must_use]
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// The capability that will live in this slot once it is filled.
    #[must_use]
    pub const fn cptr(self) -> CPtr {
        CPtr(self.0)
    }
}

mod sealed {
    pub trait Sealed {}
}

crate::stable_codes! {
    /// The kind of kernel object a capability refers to; the stable numbers are used by `retype` and
    /// by the kernel when it reports a transferred capability's type.
    ///
    /// # Errors
    /// Not an error type; it shares the stable-code machinery so the numbers are const-checked.
    pub enum ObjectKind: u16 {
        /// Untyped memory, from which every other object is retyped.
        Untyped = 1,
        /// A synchronous IPC endpoint.
        Endpoint = 2,
        /// An asynchronous notification word.
        Notification = 3,
        /// A one-shot reply capability.
        Reply = 4,
        /// A capability-space node.
        CNode = 5,
        /// A page of RAM (Normal write-back).
        Frame = 6,
        /// A device region, with the memory types its grant allows.
        DeviceFrame = 7,
        /// A virtual machine: its stage-2 address space and VMID.
        Vm = 8,
        /// A virtual CPU of a VM.
        Vcpu = 9,
        /// A service thread.
        Thread = 10,
        /// The right to acknowledge and route one interrupt.
        IrqHandler = 11,
        /// The right to create `IrqHandler` capabilities.
        IrqControl = 12,
        /// A service's stage-2 address space (with its VMID).
        AddressSpace = 13,
    }
}

/// A kernel object type; sealed, so the set of `Cap<T>` types is exactly the kernel's.
pub trait ObjectType: sealed::Sealed + Copy + core::fmt::Debug {
    /// The kernel's number for this object type.
    const KIND: ObjectKind;
}

macro_rules! object_types {
    ($( $(#[$meta:meta])* $name:ident ),+ $(,)?) => {
        $(
            $(#[$meta])*
            #[derive(Debug, Clone, Copy, PartialEq, Eq)]
            pub enum $name {}
            impl sealed::Sealed for $name {}
            impl ObjectType for $name {
                const KIND: ObjectKind = ObjectKind::$name;
            }
        )+
    };
}

object_types! {
    /// Marker for [`ObjectKind::Untyped`].
    Untyped,
    /// Marker for [`ObjectKind::Endpoint`].
    Endpoint,
    /// Marker for [`ObjectKind::Notification`].
    Notification,
    /// Marker for [`ObjectKind::Reply`].
    Reply,
    /// Marker for [`ObjectKind::CNode`].
    CNode,
    /// Marker for [`ObjectKind::Frame`].
    Frame,
    /// Marker for [`ObjectKind::DeviceFrame`].
    DeviceFrame,
    /// Marker for [`ObjectKind::Vm`].
    Vm,
    /// Marker for [`ObjectKind::Vcpu`].
    Vcpu,
    /// Marker for [`ObjectKind::Thread`].
    Thread,
    /// Marker for [`ObjectKind::IrqHandler`].
    IrqHandler,
    /// Marker for [`ObjectKind::IrqControl`].
    IrqControl,
    /// Marker for [`ObjectKind::AddressSpace`].
    AddressSpace,
}

/// A capability to an object of type `T`.
#[derive(Debug, PartialEq, Eq, Hash)]
#[repr(transparent)]
pub struct Cap<T: ObjectType> {
    cptr: CPtr,
    kind: PhantomData<T>,
}

impl<T: ObjectType> Clone for Cap<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T: ObjectType> Copy for Cap<T> {}

impl<T: ObjectType> Cap<T> {
    /// Wraps a `CPtr` that the caller knows, by construction of its capability space (the image's
    /// capability layout, computed at build time), to name an object of type `T`. A wrong claim is not
    /// unsafe: the kernel checks every invocation and answers `KernelError::WrongType`.
    #[must_use]
    pub const fn from_cptr(cptr: CPtr) -> Self {
        Self {
            cptr,
            kind: PhantomData,
        }
    }

    /// The capability pointer.
    #[must_use]
    pub const fn cptr(self) -> CPtr {
        self.cptr
    }

    /// Forgets the static type, keeping the kind as a value.
    #[must_use]
    pub const fn erase(self) -> AnyCap {
        AnyCap {
            cptr: self.cptr,
            kind: T::KIND,
        }
    }
}

/// A capability whose type is known only at run time, as the kernel reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AnyCap {
    cptr: CPtr,
    kind: ObjectKind,
}

/// The error of [`AnyCap::downcast`].
///
/// # Errors
/// Returned when the attested object kind is not the one asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrongObjectType {
    /// The kind the caller asked for.
    pub expected: ObjectKind,
    /// The kind the capability has.
    pub found: ObjectKind,
}

impl AnyCap {
    /// A capability with an attested kind (from the kernel's transfer report or `identify`).
    #[must_use]
    pub const fn new(cptr: CPtr, kind: ObjectKind) -> Self {
        Self { cptr, kind }
    }

    /// The capability pointer.
    #[must_use]
    pub const fn cptr(self) -> CPtr {
        self.cptr
    }

    /// The attested kind.
    #[must_use]
    pub const fn kind(self) -> ObjectKind {
        self.kind
    }

    /// The one checked cast to a typed capability.
    ///
    /// # Errors
    /// [`WrongObjectType`] when the attested kind is not `T`'s.
    pub fn downcast<T: ObjectType>(self) -> Result<Cap<T>, WrongObjectType> {
        if self.kind == T::KIND {
            Ok(Cap::from_cptr(self.cptr))
        } else {
            Err(WrongObjectType {
                expected: T::KIND,
                found: self.kind,
            })
        }
    }
}

/// Access rights carried by a capability; a derived capability (copy, mint) can only have fewer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "postcard", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "postcard", serde(try_from = "u8", into = "u8"))]
pub struct Rights(u8);

impl Rights {
    /// No rights.
    pub const NONE: Self = Self(0);
    /// Read a frame; receive on an endpoint.
    pub const READ: Self = Self(1 << 0);
    /// Write a frame; send on an endpoint.
    pub const WRITE: Self = Self(1 << 1);
    /// Map a frame executable.
    pub const EXECUTE: Self = Self(1 << 2);
    /// Transfer capabilities through an endpoint (seL4's Grant).
    pub const GRANT: Self = Self(1 << 3);
    /// Transfer capabilities in a reply only (seL4's GrantReply).
    pub const GRANT_REPLY: Self = Self(1 << 4);
    /// Every defined right.
    pub const ALL: Self = Self(0b1_1111);
    /// Read and write: a data mapping (the `Map` invocation's access word takes rights).
    pub const READ_WRITE: Self = Self::READ.union(Self::WRITE);
    /// Read, write and execute: a mapping of code that is also written.
    pub const READ_WRITE_EXECUTE: Self = Self::READ_WRITE.union(Self::EXECUTE);

    /// The rights with the given bits.
    ///
    /// # Errors
    /// [`UnknownRights`] when a bit outside [`Rights::ALL`] is set.
    pub const fn from_bits(bits: u8) -> Result<Self, UnknownRights> {
        if bits & !Self::ALL.0 == 0 {
            Ok(Self(bits))
        } else {
            Err(UnknownRights(bits))
        }
    }

    /// The raw bits.
    #[must_use]
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// The bits as an invocation word (the `Map` invocation's access word, `Mint`'s rights).
    #[must_use]
    pub const fn word(self) -> u64 {
        self.0 as u64
    }

    /// Whether every right in `other` is also in `self`.
    #[must_use]
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// The rights in either.
    #[must_use]
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// The rights in both: what a derived capability gets when it asks for `other`.
    #[must_use]
    pub const fn intersection(self, other: Self) -> Self {
        Self(self.0 & other.0)
    }
}

/// Bits outside the defined rights were set.
///
/// # Errors
/// Returned by [`Rights::from_bits`]; carries the offending bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownRights(pub u8);

impl core::fmt::Display for UnknownRights {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("unknown rights bits")
    }
}

impl TryFrom<u8> for Rights {
    type Error = UnknownRights;
    fn try_from(bits: u8) -> Result<Self, UnknownRights> {
        Self::from_bits(bits)
    }
}

impl From<Rights> for u8 {
    fn from(rights: Rights) -> u8 {
        rights.0
    }
}

/// The word a minted endpoint or notification capability carries; the receiver sees it with each
/// message and uses it to tell its clients apart (seL4's badge). Badge 0 means "unbadged".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[repr(transparent)]
pub struct Badge(u64);

impl Badge {
    /// The badge of an unminted capability.
    pub const NONE: Self = Self(0);

    /// A badge with the given value.
    #[must_use]
    pub const fn new(raw: u64) -> Self {
        Self(raw)
    }

    /// The raw value.
    #[must_use]
    pub const fn raw(self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downcast_checks_the_attested_kind() {
        let any = AnyCap::new(CPtr::new(5), ObjectKind::Frame);
        assert_eq!(any.downcast::<Frame>().unwrap().cptr(), CPtr::new(5));
        assert_eq!(
            any.downcast::<Endpoint>(),
            Err(WrongObjectType {
                expected: ObjectKind::Endpoint,
                found: ObjectKind::Frame
            })
        );
        assert_eq!(
            Cap::<Vcpu>::from_cptr(CPtr::new(9)).erase().kind(),
            ObjectKind::Vcpu
        );
    }

    #[test]
    fn rights_reject_unknown_bits_and_only_shrink() {
        assert_eq!(Rights::from_bits(0x20), Err(UnknownRights(0x20)));
        let rw = Rights::READ.union(Rights::WRITE);
        assert!(rw.contains(Rights::READ));
        assert!(!rw.contains(Rights::EXECUTE));
        assert_eq!(rw.intersection(Rights::ALL), rw);
        #[cfg(feature = "postcard")]
        assert!(postcard::from_bytes::<Rights>(&[0x40]).is_err());
    }
}

/// Where the kernel puts the root service's (init's) capabilities in its CNode: the kernel's
/// `RootLayout` and init's boot (`services/init/src/boot.rs`) both read them here.
pub mod root {
    /// Slots in the root's CNode.
    pub const CNODE_SLOTS: u64 = 1024;
    /// Its own CNode.
    pub const CNODE: u64 = 1;
    /// Its own AddressSpace.
    pub const SPACE: u64 = 2;
    /// Its own Thread.
    pub const THREAD: u64 = 3;
    /// IrqControl.
    pub const IRQ_CONTROL: u64 = 4;
    /// The first of its untyped (RAM, then device), then the image's frames, then empty slots.
    pub const FIRST_UNTYPED: u64 = 5;
}

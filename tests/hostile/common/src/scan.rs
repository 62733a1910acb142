//! Finding a service's capabilities by probing its own CNode, slot by slot, without assuming the
//! boot layout (which the kernel fix may change) and without side effects a test would notice.

use crate::abi::kind;
use crate::invoke::{self, Identity};
use crate::{SlotList, SlotPool, slots::POOL_SLOTS};
use capvisor_ipc::abi::KernelError;
use capvisor_rt::{CPtr, sys};

/// What a slot holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Held {
    /// Nothing.
    Empty,
    /// A kernel object that answered `Identify`.
    Object(Identity),
    /// An endpoint (it refused the probe's send: rights unknown).
    Endpoint,
    /// A notification (`Poll` took its word, zero at boot).
    Notification,
    /// Something that answered neither way.
    Unknown(KernelError),
}

/// What slot `slot` holds; `None` beyond the CNode.
///
/// `Poll` first: it names notifications (taking a word nobody has signalled yet when services
/// scan at start), empty slots and the CNode's end, and answers `WrongType` for anything else,
/// which [`invoke::identify`] then names without ever sending on an endpoint.
#[must_use]
pub fn probe(slot: u64) -> Option<Held> {
    Some(match sys::poll(CPtr::new(slot)) {
        Err(KernelError::InvalidSlot) => return None,
        Err(KernelError::EmptySlot) => Held::Empty,
        Ok(_) | Err(KernelError::InsufficientRights) => Held::Notification,
        Err(KernelError::WrongType) => match invoke::identify(slot) {
            Ok(identity) => Held::Object(identity),
            Err(_) => Held::Endpoint,
        },
        Err(other) => Held::Unknown(other),
    })
}

/// A service's capabilities, found by [`Inventory::scan`]. The first of each kind is the
/// service's own (its CNode is slot 1, its space 2, its thread 3 at boot; the root also holds the
/// CNodes, spaces and threads of the services made for it, further on).
#[derive(Debug, Clone)]
pub struct Inventory {
    /// Its CNode.
    pub cnode: u64,
    /// Its AddressSpace.
    pub space: u64,
    /// Its Thread.
    pub thread: u64,
    /// IrqControl (the root only).
    pub irq_control: Option<u64>,
    /// Untyped capabilities, in slot order.
    pub untyped: SlotList,
    /// Endpoints, in slot order.
    pub endpoints: SlotList,
    /// RAM frames (its image's pages), in slot order.
    pub frames: SlotList,
    /// Empty slots.
    pub free: SlotPool,
}

impl Inventory {
    /// Probes every slot of the caller's CNode (up to 1024).
    #[must_use]
    pub fn scan() -> Self {
        let mut inventory = Self {
            cnode: 0,
            space: 0,
            thread: 0,
            irq_control: None,
            untyped: SlotList::default(),
            endpoints: SlotList::default(),
            frames: SlotList::default(),
            free: SlotPool::new(),
        };
        for slot in 1..POOL_SLOTS {
            match probe(slot) {
                None => break,
                Some(Held::Empty) => inventory.free.give(slot),
                Some(Held::Endpoint) => inventory.endpoints.push(slot),
                Some(Held::Object(identity)) => inventory.note(slot, identity.kind),
                Some(Held::Notification | Held::Unknown(_)) => {}
            }
        }
        inventory
    }

    fn note(&mut self, slot: u64, kind: u64) {
        let first = |found: &mut u64| {
            if *found == 0 {
                *found = slot;
            }
        };
        match kind {
            kind::CNODE => first(&mut self.cnode),
            kind::ADDRESS_SPACE => first(&mut self.space),
            kind::THREAD => first(&mut self.thread),
            kind::IRQ_CONTROL => {
                self.irq_control.get_or_insert(slot);
            }
            kind::UNTYPED => self.untyped.push(slot),
            kind::FRAME => self.frames.push(slot),
            _ => {}
        }
    }

    /// Retypes one object from the first of its untyped with room for it (the root's first RAM
    /// range may be a small one, or spent on the other services' grants); the last error when
    /// none has room.
    ///
    /// # Errors
    /// The kernel's.
    pub fn retype(&self, kind: u64, size_bits: u64, dest: u64) -> Result<(), KernelError> {
        self.each_untyped(|untyped| invoke::retype(untyped, kind, size_bits, dest))
    }

    /// As [`Inventory::retype`], for an AddressSpace (`vm` false) or a Vm
    /// ([`invoke::retype_space`]).
    ///
    /// # Errors
    /// The kernel's.
    pub fn retype_space(&self, vm: bool, dest: u64) -> Result<(), KernelError> {
        self.each_untyped(|untyped| invoke::retype_space(untyped, vm, dest))
    }

    fn each_untyped(
        &self,
        mut retype: impl FnMut(u64) -> Result<(), KernelError>,
    ) -> Result<(), KernelError> {
        let mut last = Err(KernelError::NotEnoughMemory);
        for &untyped in self.untyped.as_slice() {
            last = retype(untyped);
            if last != Err(KernelError::NotEnoughMemory) {
                break;
            }
        }
        last
    }

    /// A free slot, or `None` when the CNode is full.
    pub fn slot(&mut self) -> Option<u64> {
        self.free.take()
    }
}

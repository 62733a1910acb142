//! Installing, deleting and revoking capabilities, and destroying an object with its last capability.
//!
//! Each arena object counts the capabilities that name it (`caps`); [`Kernel::install`] and
//! [`Kernel::delete_slot`] are the only places that change a slot's content count, so the count is
//! exact (invariant 1 of the module root). Deleting a capability:
//! 1. removes it from the derivation tree (its children move up to its parent);
//! 2. unmaps the frame it mapped, if any (the glue invalidates the TLB before returning);
//! 3. destroys the object when this was its last capability: an endpoint or notification wakes its
//!    waiters with `Cancelled`; a thread leaves every queue; an address space's threads are stopped
//!    (so no thread ever runs without a live space) and the glue tears it down; a CNode's slots are
//!    deleted in turn.
//!
//! CNode destruction can cascade (a CNode may hold the last capability to another CNode). The cascade
//! runs from a worklist, never by recursion, so kernel stack use is bounded.
//!
//! Revoke deletes every descendant of a capability, leaves first, one at a time. Revoking an untyped
//! capability also resets the untyped's watermark once no capability paid from it remains.

use capvisor_ipc::abi::KernelError;

use super::arena::{SpaceRef, ThreadRef, UntypedRef};
use super::capability::{Capability, Object};
use super::cspace::SlotId;
use super::effects::Effects;
use super::{Kernel, MAX_CNODES, MAX_SLOTS, MAX_THREADS};

impl Kernel {
    /// The capability count of the arena object `object` names (`None` for frames and IrqControl,
    /// which have no arena entry, and for dead objects).
    fn refcount(&mut self, object: &Object) -> Option<&mut u32> {
        match *object {
            Object::Untyped(r) => self.untyped.get_mut(r).ok().map(|o| &mut o.caps),
            Object::Endpoint(r) => self.endpoints.get_mut(r).ok().map(|o| &mut o.caps),
            Object::Notification(r) => self.notifications.get_mut(r).ok().map(|o| &mut o.caps),
            Object::CNode(r) => self.cnodes.get_mut(r).ok().map(|o| &mut o.caps),
            Object::Thread(r) => self.threads.get_mut(r).ok().map(|o| &mut o.caps),
            Object::AddressSpace(r) | Object::Vm(r) => {
                self.spaces.get_mut(r).ok().map(|o| &mut o.caps)
            }
            Object::Vcpu(r) => self.vcpus.get_mut(r).ok().map(|o| &mut o.caps),
            Object::IrqHandler(r) => self.irqs.get_mut(r).ok().map(|o| &mut o.caps),
            Object::Frame(_) | Object::IrqControl => None,
        }
    }

    /// Puts `cap` into the empty `slot` as a child of `parent`, counting it on its object.
    ///
    /// # Errors
    /// [`KernelError::SlotOccupied`]; [`KernelError::Revoked`] when the object is gone.
    pub(super) fn install(
        &mut self,
        slot: SlotId,
        cap: Capability,
        parent: Option<SlotId>,
    ) -> Result<(), KernelError> {
        let counted = !matches!(cap.object, Object::Frame(_) | Object::IrqControl);
        if counted && self.refcount(&cap.object).is_none() {
            return Err(KernelError::Revoked);
        }
        self.slots.insert(slot, cap, parent)?;
        if let Some(count) = self.refcount(&cap.object) {
            *count += 1;
        }
        Ok(())
    }

    /// Deletes the capability in `slot` (nothing happens to an empty slot).
    pub(super) fn delete_slot(&mut self, slot: SlotId, fx: &mut impl Effects) {
        let mut dying: heapless::Vec<(u16, u16), MAX_CNODES> = heapless::Vec::new();
        self.delete_one(slot, fx, &mut dying);
        while let Some((base, len)) = dying.pop() {
            for index in base..base.saturating_add(len) {
                if usize::from(index) < MAX_SLOTS {
                    self.delete_one(SlotId::from_index(index), fx, &mut dying);
                }
            }
        }
    }

    fn delete_one(
        &mut self,
        slot: SlotId,
        fx: &mut impl Effects,
        dying: &mut heapless::Vec<(u16, u16), MAX_CNODES>,
    ) {
        let Some(cap) = self.slots.remove(slot) else {
            return;
        };
        if let Object::Frame(frame) = cap.object
            && let Some(mapping) = frame.mapping
            && self.spaces.get(mapping.space).is_ok()
        {
            fx.unmap(mapping.space, mapping.ipa, frame.size.bytes());
        }
        let last = match self.refcount(&cap.object) {
            Some(count) => {
                *count = count.saturating_sub(1);
                *count == 0
            }
            None => false,
        };
        if last {
            self.destroy(cap.object, fx, dying);
        }
    }

    fn destroy(
        &mut self,
        object: Object,
        fx: &mut impl Effects,
        dying: &mut heapless::Vec<(u16, u16), MAX_CNODES>,
    ) {
        match object {
            Object::Endpoint(r) => self.destroy_endpoint(r),
            Object::Notification(r) => self.destroy_notification(r),
            Object::Thread(r) => self.destroy_thread(r),
            Object::CNode(r) => {
                if let Some(cnode) = self.cnodes.free(r) {
                    // At most MAX_CNODES CNodes exist, each freed once: the list cannot overflow.
                    let _ = dying.push(cnode.range());
                }
            }
            Object::AddressSpace(r) | Object::Vm(r) => {
                if let Some(space) = self.spaces.free(r) {
                    self.stop_threads_in(r);
                    fx.space_destroyed(r, space.vmid);
                }
            }
            Object::Untyped(r) => {
                self.untyped.free(r);
            }
            Object::Vcpu(r) => {
                // Interrupts forwarded to it are not any more.
                self.unforward_vcpu(r);
                // Its thread can no longer run it: stopped and unbound (it may be bound again).
                if let Some(thread) = self.vcpus.free(r).and_then(|v| v.thread) {
                    let _ = self.stop_thread(thread);
                    if let Ok(t) = self.threads.get_mut(thread) {
                        t.vcpu = None;
                    }
                }
            }
            Object::IrqHandler(r) => {
                self.irqs.free(r);
            }
            Object::Frame(_) | Object::IrqControl => {}
        }
    }

    /// Stops every thread that runs in `space` (which is being destroyed) and detaches it.
    fn stop_threads_in(&mut self, space: SpaceRef) {
        for index in 0..MAX_THREADS {
            let Some((thread, t)) = self.threads.at::<ThreadRef>(index) else {
                continue;
            };
            if t.space == Some(space) {
                let _ = self.stop_thread(thread);
                if let Ok(t) = self.threads.get_mut(thread) {
                    t.space = None;
                }
            }
        }
    }

    /// Deletes every capability derived from the one in `slot`, and their mappings.
    pub(super) fn revoke_slot(&mut self, slot: SlotId, fx: &mut impl Effects) {
        // Each round deletes one slot, so MAX_SLOTS rounds always suffice.
        for _ in 0..MAX_SLOTS {
            match self.slots.leaf_descendant(slot) {
                Some(leaf) => self.delete_slot(leaf, fx),
                None => break,
            }
        }
        if let Some(Object::Untyped(untyped)) = self.slots.cap(slot).map(|c| c.object) {
            self.reset_if_unused(untyped);
        }
    }

    /// Resets an untyped's watermark when no capability paid from it remains anywhere.
    fn reset_if_unused(&mut self, untyped: UntypedRef) {
        let used = self
            .slots
            .occupied()
            .any(|(_, cap)| cap.origin == Some(untyped));
        if !used && let Ok(u) = self.untyped.get_mut(untyped) {
            u.watermark = 0;
        }
    }
}

//! Installing, deleting and revoking capabilities; destroying an object with its last capability;
//! the reaper that finishes dying objects a bounded step at a time.
//!
//! Each object counts the capabilities that name it (`caps`); [`Kernel::install`] and
//! [`Kernel::delete_slot`] are the only places that change a slot's content, so the count is exact.
//! Deleting a capability, in constant time:
//! 1. removes it from the derivation tree (its children take its place);
//! 2. unmaps the frame it mapped, if any (the glue invalidates the TLB before returning);
//! 3. when this was the object's last capability, finishes the object:
//!    - a thread, a vCPU, an address space (whose at most [`MAX_SPACE_THREADS`] threads are
//!      stopped), an IRQ handler or an untyped without children is freed at once;
//!    - an untyped that still has children becomes a zombie until its last child goes;
//!    - an endpoint, a notification or a CNode may hold unboundedly many waiters or capabilities,
//!      so it becomes *dying*: unreachable at once (no capability names it; lookups through a dying
//!      CNode fail; a dying notification takes no signal), it joins the reaper's queue, and the
//!      reaper cancels its waiters or deletes its slots one at a time before freeing it.
//!
//! The reaper runs a bounded number of steps after every `Delete` and `Revoke`, on every timer
//! tick and whenever the CPU would idle, so dying objects finish soon without any kernel entry
//! doing unbounded work. A CNode dying inside a dying CNode simply joins the queue: no recursion.
//!
//! Revoke deletes the first child of the capability until it has none — each deletion splices the
//! child's own children in front, so this reaches every descendant. It does at most
//! [`REVOKE_STEPS`] deletions per kernel entry; if more remain it asks the glue to restart the
//! system call, which the thread re-executes after any pending interrupt is taken (seL4's
//! preemption points). Revoking an untyped capability also waits, the same way, until the reaper
//! has freed every dying object paid from it, so that the untyped's memory is free when the call
//! returns.

use capvisor_ipc::abi::KernelError;

use super::capability::{Capability, Object};
use super::cspace::{Dying, SlotId};
use super::effects::Effects;
use super::memory::{SpaceRef, UntypedRef, VcpuRef};
use super::{Kernel, MAX_SPACE_THREADS};

/// Deletions one `Revoke` does per kernel entry before it restarts.
pub const REVOKE_STEPS: usize = 64;
/// Reaper steps after a `Delete` or `Revoke`.
pub const REAP_STEPS: usize = 32;
/// Reaper steps on a timer tick.
pub const TICK_REAP_STEPS: usize = 16;

/// The queue of dying objects, linked through their records.
#[derive(Debug, Clone, Copy, Default)]
pub struct Reaper {
    pub(super) head: Option<Dying>,
    tail: Option<Dying>,
}

impl Reaper {
    /// An empty queue.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            head: None,
            tail: None,
        }
    }
}

/// How far a revoke got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Progress {
    /// Finished.
    Done,
    /// Stopped at a preemption point: the system call restarts.
    Preempted,
}

impl Kernel {
    /// The capability count of the object `object` names (`None` for frames and IrqControl,
    /// which have no record, and for dead objects).
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

    /// Puts `cap` into the empty `slot` as a child of `parent`, counting it on its object and
    /// on the untyped it was paid from.
    ///
    /// # Errors
    /// [`KernelError::SlotOccupied`]; [`KernelError::Revoked`] when the object is gone (or
    /// dying: a dying object gets no new capability).
    pub(super) fn install(
        &mut self,
        slot: SlotId,
        cap: Capability,
        parent: Option<SlotId>,
    ) -> Result<(), KernelError> {
        let counted = !matches!(cap.object, Object::Frame(_) | Object::IrqControl);
        if counted && (self.refcount(&cap.object).is_none() || self.is_dying(&cap.object)) {
            return Err(KernelError::Revoked);
        }
        self.slots.insert(slot, cap, parent)?;
        if let Some(count) = self.refcount(&cap.object) {
            *count += 1;
        }
        if let Some(u) = cap.origin.and_then(|o| self.untyped.get_mut(o).ok()) {
            u.children += 1;
        }
        Ok(())
    }

    /// Whether the object is dying or a zombie (it has no capability any more).
    fn is_dying(&self, object: &Object) -> bool {
        match *object {
            Object::Endpoint(r) => self.endpoints.get(r).is_ok_and(|e| e.dying),
            Object::Notification(r) => self.notifications.get(r).is_ok_and(|n| n.dying),
            Object::CNode(r) => self.cnodes.get(r).is_ok_and(|c| c.dying),
            Object::Untyped(r) => self.untyped.get(r).is_ok_and(|u| u.zombie),
            _ => false,
        }
    }

    /// Deletes the capability in `slot` (nothing happens to an empty slot), then lets the reaper
    /// take a few steps.
    pub(super) fn delete_slot(&mut self, slot: SlotId, fx: &mut impl Effects) {
        self.delete_one(slot, fx);
        self.reap(REAP_STEPS, fx);
    }

    /// Deletes one capability, in constant time (module doc).
    fn delete_one(&mut self, slot: SlotId, fx: &mut impl Effects) {
        let Some(cap) = self.slots.remove(slot) else {
            return;
        };
        if let Object::Frame(frame) = cap.object
            && let Some(mapping) = frame.mapping
            && let Ok(space) = self.spaces.get_mut(mapping.space)
        {
            fx.unmap(&mut space.glue, mapping.ipa, frame.size.bytes());
        }
        let last = match self.refcount(&cap.object) {
            Some(count) => {
                *count = count.saturating_sub(1);
                *count == 0
            }
            None => false,
        };
        if last {
            // The object's own record remembers its origin and releases it when it is freed:
            // this capability's count passes to the object until then.
            self.destroy(cap.object, fx);
        } else {
            self.release_child(cap.origin);
        }
    }

    /// The object's last capability is gone (module doc, step 3). Each record's `origin` is
    /// released when the record is freed; a capability's own count transfers to the object.
    fn destroy(&mut self, object: Object, fx: &mut impl Effects) {
        match object {
            Object::Endpoint(r) => {
                if let Ok(e) = self.endpoints.get_mut(r) {
                    e.dying = true;
                    let origin = e.origin;
                    self.count_queued(origin, true);
                    self.enqueue_dying(Dying::Endpoint(r));
                }
            }
            Object::Notification(r) => {
                if let Ok(n) = self.notifications.get_mut(r) {
                    n.dying = true;
                    let origin = n.origin;
                    self.count_queued(origin, true);
                    self.enqueue_dying(Dying::Notification(r));
                }
            }
            Object::CNode(r) => {
                if let Ok(c) = self.cnodes.get_mut(r) {
                    c.dying = true;
                    let origin = c.origin;
                    self.count_queued(origin, true);
                    self.enqueue_dying(Dying::CNode(r));
                }
            }
            Object::Thread(r) => self.destroy_thread(r),
            Object::AddressSpace(r) | Object::Vm(r) => self.destroy_space(r, fx),
            Object::Untyped(r) => {
                if let Ok(u) = self.untyped.get_mut(r) {
                    if u.children == 0 {
                        let origin = u.origin;
                        self.untyped.free(r);
                        self.release_child(origin);
                    } else {
                        u.zombie = true;
                    }
                }
            }
            Object::Vcpu(r) => self.destroy_vcpu(r, fx),
            Object::IrqHandler(r) => {
                if let Some(handler) = self.irqs.free(r)
                    && handler.forward.is_some()
                {
                    fx.irq_forwarding(handler.intid, false);
                }
            }
            Object::Frame(_) | Object::IrqControl => {}
        }
    }

    /// Frees a space whose last capability is gone: its threads are stopped and detached (so no
    /// thread ever runs without a live space), the glue drops its VMID's translations, and its
    /// memory — tables included — returns to its untyped.
    fn destroy_space(&mut self, space: SpaceRef, fx: &mut impl Effects) {
        let Ok(s) = self.spaces.get_mut(space) else {
            return;
        };
        let threads = core::mem::replace(&mut s.threads, [None; MAX_SPACE_THREADS]);
        fx.space_destroyed(&mut s.glue);
        for thread in threads.into_iter().flatten() {
            let _ = self.stop_thread(thread);
            if let Ok(t) = self.threads.get_mut(thread) {
                t.space = None;
            }
        }
        let origin = self.spaces.free(space).and_then(|s| s.origin);
        self.release_child(origin);
    }

    /// Frees a vCPU whose last capability is gone: interrupts forwarded to it are withdrawn
    /// (deactivated if the guest held them), and its thread can no longer run it: stopped and
    /// unbound (it may be bound again).
    fn destroy_vcpu(&mut self, vcpu: VcpuRef, fx: &mut impl Effects) {
        self.unforward_vcpu(vcpu, |intid| fx.irq_forwarding(intid, false));
        fx.vcpu_destroyed(vcpu);
        let Some(v) = self.vcpus.free(vcpu) else {
            return;
        };
        if let Some(thread) = v.thread {
            let _ = self.stop_thread(thread);
            if let Ok(t) = self.threads.get_mut(thread) {
                t.vcpu = None;
            }
        }
        self.release_child(v.origin);
    }

    /// Appends a dying object to the reaper's queue.
    pub(super) fn enqueue_dying(&mut self, dying: Dying) {
        self.set_next_dying(dying, None);
        match self.reaper.tail {
            Some(tail) => self.set_next_dying(tail, Some(dying)),
            None => self.reaper.head = Some(dying),
        }
        self.reaper.tail = Some(dying);
    }

    fn set_next_dying(&mut self, dying: Dying, next: Option<Dying>) {
        match dying {
            Dying::CNode(r) => {
                if let Ok(c) = self.cnodes.get_mut(r) {
                    c.next_dying = next;
                }
            }
            Dying::Endpoint(r) => {
                if let Ok(e) = self.endpoints.get_mut(r) {
                    e.next_dying = next;
                }
            }
            Dying::Notification(r) => {
                if let Ok(n) = self.notifications.get_mut(r) {
                    n.next_dying = next;
                }
            }
            Dying::Untyped(r) => {
                if let Ok(u) = self.untyped.get_mut(r) {
                    u.next_dying = next;
                }
            }
        }
    }

    fn next_dying(&self, dying: Dying) -> Option<Dying> {
        match dying {
            Dying::CNode(r) => self.cnodes.get(r).ok().and_then(|c| c.next_dying),
            Dying::Endpoint(r) => self.endpoints.get(r).ok().and_then(|e| e.next_dying),
            Dying::Notification(r) => self.notifications.get(r).ok().and_then(|n| n.next_dying),
            Dying::Untyped(r) => self.untyped.get(r).ok().and_then(|u| u.next_dying),
        }
    }

    /// Whether dying objects wait for the reaper.
    #[must_use]
    pub fn reaper_busy(&self) -> bool {
        self.reaper.head.is_some()
    }

    /// Runs at most `steps` reaper steps; returns how many it ran. Each step is constant work:
    /// one slot of a dying CNode deleted (or found empty), one waiter cancelled, or one record
    /// freed.
    pub fn reap(&mut self, steps: usize, fx: &mut impl Effects) -> usize {
        let mut done = 0;
        while done < steps {
            let Some(head) = self.reaper.head else { break };
            // The head leaves the queue while it is worked on: finishing it can queue another
            // object (its untyped's record, once its last child is gone), which must link
            // behind the rest of the queue, not behind the object being freed.
            let next = self.next_dying(head);
            self.reaper.head = next;
            if next.is_none() {
                self.reaper.tail = None;
            }
            self.set_next_dying(head, None);
            done += 1;
            let freed = match head {
                Dying::CNode(r) => self.reap_cnode(r, fx),
                Dying::Endpoint(r) => self.reap_endpoint_counted(r),
                Dying::Notification(r) => self.reap_notification_counted(r),
                Dying::Untyped(r) => {
                    let origin = self.untyped.free(r).and_then(|u| u.origin);
                    self.count_queued(origin, false);
                    self.release_child(origin);
                    true
                }
            };
            if !freed {
                // More to do: it stays first.
                self.set_next_dying(head, self.reaper.head);
                if self.reaper.head.is_none() {
                    self.reaper.tail = Some(head);
                }
                self.reaper.head = Some(head);
            }
        }
        done
    }

    fn reap_endpoint_counted(&mut self, r: super::EndpointRef) -> bool {
        let origin = self.endpoints.get(r).ok().and_then(|e| e.origin);
        let freed = self.reap_endpoint(r);
        if freed {
            self.count_queued(origin, false);
        }
        freed
    }

    fn reap_notification_counted(&mut self, r: super::NotificationRef) -> bool {
        let origin = self.notifications.get(r).ok().and_then(|n| n.origin);
        let freed = self.reap_notification(r);
        if freed {
            self.count_queued(origin, false);
        }
        freed
    }

    /// One step of a dying CNode: its next slot is deleted (a no-op when empty), or, past its
    /// last slot, the CNode is freed. Returns whether it is freed.
    fn reap_cnode(&mut self, cnode: super::CNodeRef, fx: &mut impl Effects) -> bool {
        let Ok(c) = self.cnodes.get_mut(cnode) else {
            return true;
        };
        if (c.cursor as usize) < c.len() {
            let slot = c.slot(u64::from(c.cursor));
            c.cursor += 1;
            if let Ok(slot) = slot {
                self.delete_one(slot, fx);
            }
            return false;
        }
        let origin = self.cnodes.free(cnode).and_then(|c| c.origin);
        self.count_queued(origin, false);
        self.release_child(origin);
        true
    }

    /// Deletes every capability derived from the one in `slot`, and their mappings: at most
    /// [`REVOKE_STEPS`] per call (module doc). For an untyped, also waits until the reaper has
    /// freed every dying object paid from it, then resets its watermark if nothing it paid for
    /// lives.
    pub(super) fn revoke_slot(&mut self, slot: SlotId, fx: &mut impl Effects) -> Progress {
        let mut steps = 0;
        while let Some(child) = self.slots.first_child(slot) {
            if steps == REVOKE_STEPS {
                return Progress::Preempted;
            }
            self.delete_one(child, fx);
            steps += 1;
        }
        let untyped = match self.slots.cap(slot).map(|c| c.object) {
            Some(Object::Untyped(untyped)) => untyped,
            _ => {
                self.reap(REAP_STEPS, fx);
                return Progress::Done;
            }
        };
        while self.queued_children(untyped) > 0 {
            if steps >= REVOKE_STEPS {
                return Progress::Preempted;
            }
            let ran = self.reap(REVOKE_STEPS - steps, fx);
            if ran == 0 {
                break;
            }
            steps += ran;
        }
        if let Ok(u) = self.untyped.get_mut(untyped)
            && u.children == 0
        {
            u.watermark = 0;
            u.top = u.size;
        }
        Progress::Done
    }

    fn queued_children(&self, untyped: UntypedRef) -> u64 {
        self.untyped.get(untyped).map_or(0, |u| u.queued)
    }
}

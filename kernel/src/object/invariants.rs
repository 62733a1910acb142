//! The object model's invariants (module root, "Invariants"), checked as a whole: used by the
//! property tests and the fuzz target after every operation. These scans walk the whole frame
//! table, so they are for tests only, never a kernel path: the module is compiled only for tests
//! and with the `invariants` feature (the fuzz target's).

use super::capability::{Capability, FrameCap, Object};
use super::cspace::{Dying, SlotId};
use super::memory::{
    CNodeRef, EndpointRef, KernelObject, NotificationRef, ObjectRef, PAGE, PageKind, SpaceRef,
    Store, ThreadRef, UntypedRef, VcpuRef,
};
use super::thread::ThreadState;
use super::{Kernel, MAX_SPACE_THREADS};

extern crate alloc;
use alloc::vec::Vec;

impl Kernel {
    /// Checks every invariant of the module root.
    ///
    /// # Errors
    /// The first violated invariant.
    pub fn check_invariants(&self) -> Result<(), &'static str> {
        let slots = self.all_slots();
        self.slots.check_tree(&slots)?;
        let caps: Vec<(SlotId, Capability)> = slots
            .iter()
            .filter_map(|&s| self.slots.cap(s).map(|c| (s, *c)))
            .collect();
        let objs = &self.object_list();
        self.check_counts(objs, &caps)?;
        self.check_memory(objs, &caps)?;
        self.check_queues(objs)?;
        self.check_threads(objs)?;
        self.check_reaper(objs)?;
        self.check_bindings(objs)
    }

    /// Every object's first page: one scan of the frame table.
    fn object_list(&self) -> Objects {
        let memory = self.untyped.memory();
        let mut list = Vec::new();
        let mut page = 0;
        while memory.covers(memory.address(page), PAGE) {
            let info = memory.info(page);
            if !matches!(info.kind(), PageKind::Free | PageKind::Tail) {
                list.push((info.kind(), page, info.generation()));
            }
            page += 1;
        }
        Objects(list)
    }

    /// Every capability in every CNode (dying ones included), with its slot.
    #[must_use]
    pub fn capabilities(&self) -> Vec<(SlotId, Capability)> {
        self.all_slots()
            .into_iter()
            .filter_map(|s| self.slots.cap(s).map(|c| (s, *c)))
            .collect()
    }

    /// The whole object state as text (every object, capability, queue; no addresses of the
    /// host's memory), for tests that compare two kernels.
    #[must_use]
    pub fn describe(&self) -> alloc::string::String {
        use core::fmt::Write;
        let mut out = alloc::string::String::new();
        let objs = self.object_list();
        let _ = writeln!(
            out,
            "{:?} booted={} restart={}",
            self.features, self.booted, self.restart
        );
        for (r, o) in objs.each::<_, ThreadRef>(&self.threads) {
            let _ = writeln!(out, "{r:?} {o:?}");
        }
        for (r, o) in objs.each::<_, EndpointRef>(&self.endpoints) {
            let _ = writeln!(out, "{r:?} {o:?}");
        }
        for (r, o) in objs.each::<_, NotificationRef>(&self.notifications) {
            let _ = writeln!(out, "{r:?} {o:?}");
        }
        for (r, o) in objs.each::<_, CNodeRef>(&self.cnodes) {
            let _ = writeln!(out, "{r:?} {o:?}");
        }
        for (r, o) in objs.each::<_, SpaceRef>(&self.spaces) {
            let _ = writeln!(out, "{r:?} {o:?}");
        }
        for (r, o) in objs.each::<_, VcpuRef>(&self.vcpus) {
            let _ = writeln!(out, "{r:?} {:?} {:?}", o.caps, o.thread);
        }
        for (r, o) in objs.each::<_, UntypedRef>(&self.untyped) {
            let _ = writeln!(out, "{r:?} {o:?}");
        }
        for (slot, cap) in self.capabilities() {
            let _ = writeln!(out, "{slot:?} {cap:?}");
        }
        for (r, h) in self.irqs.iter() {
            let _ = writeln!(out, "{r:?} {h:?}");
        }
        let _ = writeln!(out, "{:?} {:?}", self.sched, self.reaper);
        out
    }

    /// Every slot of every CNode, dying ones included.
    fn all_slots(&self) -> Vec<SlotId> {
        let objs = self.object_list();
        objs.each::<_, CNodeRef>(&self.cnodes)
            .flat_map(|(_, c)| c.slots())
            .collect()
    }

    fn check_bindings(&self, objs: &Objects) -> Result<(), &'static str> {
        for (t, thread) in objs.each::<_, ThreadRef>(&self.threads) {
            if let Some(n) = thread.bound
                && self.notifications.get(n).map(|n| n.bound) != Ok(Some(t))
            {
                return Err("a thread's bound notification does not name it");
            }
        }
        for (n, notification) in objs.each::<_, NotificationRef>(&self.notifications) {
            if let Some(t) = notification.bound
                && self.threads.get(t).map(|t| t.bound) != Ok(Some(n))
            {
                return Err("a notification's bound thread does not name it");
            }
        }
        Ok(())
    }

    fn check_counts(
        &self,
        objs: &Objects,
        caps: &[(SlotId, Capability)],
    ) -> Result<(), &'static str> {
        use alloc::collections::BTreeMap;
        let mut counts: BTreeMap<(u8, u32, u32), u32> = BTreeMap::new();
        let mut origins: BTreeMap<UntypedRef, u64> = BTreeMap::new();
        for (_, cap) in caps {
            if !self.is_live(&cap.object) {
                return Err("a capability names a freed object");
            }
            if let Some(key) = key(&cap.object) {
                *counts.entry(key).or_default() += 1;
            }
            if let Some(origin) = cap.origin {
                *origins.entry(origin).or_default() += 1;
            }
        }
        let count = |object: Object| {
            key(&object)
                .and_then(|k| counts.get(&k))
                .copied()
                .unwrap_or(0)
        };
        let ok = objs
            .each::<_, UntypedRef>(&self.untyped)
            .all(|(r, o)| o.caps == count(Object::Untyped(r)))
            && objs
                .each::<_, EndpointRef>(&self.endpoints)
                .all(|(r, o)| o.caps == count(Object::Endpoint(r)))
            && objs
                .each::<_, NotificationRef>(&self.notifications)
                .all(|(r, o)| o.caps == count(Object::Notification(r)))
            && objs
                .each::<_, CNodeRef>(&self.cnodes)
                .all(|(r, o)| o.caps == count(Object::CNode(r)))
            && objs
                .each::<_, ThreadRef>(&self.threads)
                .all(|(r, o)| o.caps == count(Object::Thread(r)))
            && objs
                .each::<_, SpaceRef>(&self.spaces)
                .all(|(r, o)| o.caps == count(Object::AddressSpace(r)))
            && objs
                .each::<_, VcpuRef>(&self.vcpus)
                .all(|(r, o)| o.caps == count(Object::Vcpu(r)));
        if !ok {
            return Err("an object's capability count is wrong");
        }
        // Only dying objects and zombie untyped outlive their last capability (threads, spaces
        // and vCPUs never do); each still counts as a child of its untyped.
        let mut uncapped = |caps: u32, may: bool, origin: Option<UntypedRef>| {
            if caps == 0 {
                if let Some(origin) = origin {
                    *origins.entry(origin).or_default() += 1;
                }
                if !may {
                    return Err("an object with no capability is still alive");
                }
            }
            Ok(())
        };
        for (_, o) in objs.each::<_, EndpointRef>(&self.endpoints) {
            uncapped(o.caps, o.dying, o.origin)?;
        }
        for (_, o) in objs.each::<_, NotificationRef>(&self.notifications) {
            uncapped(o.caps, o.dying, o.origin)?;
        }
        for (_, o) in objs.each::<_, CNodeRef>(&self.cnodes) {
            uncapped(o.caps, o.dying, o.origin)?;
        }
        for (_, o) in objs.each::<_, UntypedRef>(&self.untyped) {
            uncapped(o.caps, true, o.origin)?;
        }
        for (_, o) in objs.each::<_, ThreadRef>(&self.threads) {
            uncapped(o.caps, false, None)?;
        }
        for (_, o) in objs.each::<_, VcpuRef>(&self.vcpus) {
            uncapped(o.caps, false, None)?;
        }
        for (_, o) in objs.each::<_, SpaceRef>(&self.spaces) {
            uncapped(o.caps, false, None)?;
        }
        for (u, untyped) in objs.each::<_, UntypedRef>(&self.untyped) {
            if untyped.children != origins.get(&u).copied().unwrap_or(0) {
                return Err("an untyped's count of children is wrong");
            }
            if untyped.watermark > untyped.top || untyped.top > untyped.size {
                return Err("an untyped's watermark is above its top, or its top above its size");
            }
        }
        Ok(())
    }

    fn is_live(&self, object: &Object) -> bool {
        match *object {
            Object::Untyped(r) => self.untyped.get(r).is_ok(),
            Object::Endpoint(r) => self.endpoints.get(r).is_ok(),
            Object::Notification(r) => self.notifications.get(r).is_ok(),
            Object::CNode(r) => self.cnodes.get(r).is_ok(),
            Object::Thread(r) => self.threads.get(r).is_ok(),
            Object::AddressSpace(r) | Object::Vm(r) => self.spaces.get(r).is_ok(),
            Object::Vcpu(r) => self.vcpus.get(r).is_ok(),
            Object::IrqHandler(r) => self.irqs.get(r).is_ok(),
            Object::Frame(_) | Object::IrqControl => true,
        }
    }

    /// No two live objects overlap, and each lies below its untyped's watermark.
    fn check_memory(
        &self,
        objs: &Objects,
        caps: &[(SlotId, Capability)],
    ) -> Result<(), &'static str> {
        let memory = self.untyped.memory();
        // (start, end, origin) of every kernel object record and every frame.
        let mut ranges: Vec<(u64, u64, Option<UntypedRef>)> = Vec::new();
        let object_end = |page: u32| {
            let mut end = page + 1;
            while memory.info(end).kind() == PageKind::Tail {
                end += 1;
            }
            memory.address(end).raw()
        };
        let mut record = |page: u32, origin: Option<UntypedRef>| {
            ranges.push((memory.address(page).raw(), object_end(page), origin));
        };
        for (r, o) in objs.each::<_, ThreadRef>(&self.threads) {
            record(r.page(), o.origin);
        }
        for (r, o) in objs.each::<_, EndpointRef>(&self.endpoints) {
            record(r.page(), o.origin);
        }
        for (r, o) in objs.each::<_, NotificationRef>(&self.notifications) {
            record(r.page(), o.origin);
        }
        for (r, o) in objs.each::<_, CNodeRef>(&self.cnodes) {
            record(r.page(), o.origin);
        }
        for (r, o) in objs.each::<_, SpaceRef>(&self.spaces) {
            record(r.page(), o.origin);
        }
        for (r, o) in objs.each::<_, VcpuRef>(&self.vcpus) {
            record(r.page(), o.origin);
        }
        for (r, o) in objs.each::<_, UntypedRef>(&self.untyped) {
            record(r.page(), o.origin);
        }
        let mut frames: Vec<(u64, u64, Option<UntypedRef>)> = caps
            .iter()
            .filter_map(|(_, c)| match c.object {
                Object::Frame(FrameCap { base, size, .. }) => {
                    Some((base.raw(), base.raw() + size.bytes(), c.origin))
                }
                _ => None,
            })
            .collect();
        frames.sort_unstable();
        frames.dedup();
        ranges.extend(frames);
        ranges.sort_unstable();
        for pair in ranges.windows(2) {
            if pair[0].1 > pair[1].0 {
                return Err("two live objects overlap");
            }
        }
        for &(start, end, origin) in &ranges {
            let Some(origin) = origin else { continue };
            let inside = self.untyped.get(origin).is_ok_and(|u| {
                let (base, watermark, top) = (u.base.raw(), u.watermark, u.top);
                let below = start >= base && end <= base + watermark;
                let above = start >= base + top && end <= base + u.size;
                below || above
            });
            if !inside {
                return Err("an object lies outside its untyped's used range");
            }
        }
        // Child untyped regions are objects of their parent too.
        for (_, u) in objs.each::<_, UntypedRef>(&self.untyped) {
            if let Some(parent) = u.origin {
                let inside = self.untyped.get(parent).is_ok_and(|p| {
                    u.base.raw() >= p.base.raw()
                        && u.base.raw() + u.size <= p.base.raw() + p.watermark
                });
                if !inside {
                    return Err("a child untyped lies outside its parent's used range");
                }
            }
        }
        Ok(())
    }

    fn check_threads(&self, objs: &Objects) -> Result<(), &'static str> {
        for (t, thread) in objs.each::<_, ThreadRef>(&self.threads) {
            if let Some(space) = thread.space {
                let listed = self
                    .spaces
                    .get(space)
                    .is_ok_and(|s| s.threads.contains(&Some(t)));
                if !listed {
                    return Err("a thread's space does not list it");
                }
            }
            match thread.vcpu {
                Some(vcpu) => {
                    let in_vm = thread
                        .space
                        .is_some_and(|s| self.spaces.get(s).is_ok_and(|s| s.vm));
                    if !in_vm {
                        return Err("a thread with a vCPU is not in a VM");
                    }
                    if self.vcpus.get(vcpu).map(|v| v.thread) != Ok(Some(t)) {
                        return Err("a thread's vCPU does not name it");
                    }
                }
                // A service thread only ever resumes at EL0t, AArch64.
                None if thread.glue.context.spsr & 0x1f != 0 => {
                    return Err("a service thread's saved state is not EL0");
                }
                None => {}
            }
        }
        for (s, space) in objs.each::<_, SpaceRef>(&self.spaces) {
            for t in space.threads.iter().flatten() {
                if self.threads.get(*t).map(|t| t.space) != Ok(Some(s)) {
                    return Err("a space lists a thread that is not in it");
                }
            }
            if space.threads.len() > MAX_SPACE_THREADS {
                return Err("a space lists too many threads");
            }
        }
        Ok(())
    }

    fn check_reaper(&self, objs: &Objects) -> Result<(), &'static str> {
        let objects = objs.each::<_, CNodeRef>(&self.cnodes).count()
            + objs.each::<_, EndpointRef>(&self.endpoints).count()
            + objs.each::<_, NotificationRef>(&self.notifications).count()
            + objs.each::<_, UntypedRef>(&self.untyped).count();
        let mut queued = 0usize;
        let mut at = self.reaper.head;
        while let Some(dying) = at {
            queued += 1;
            if queued > objects {
                return Err("the reaper's queue does not end");
            }
            at = self.next_dying_for_check(dying);
        }
        let dying = objs
            .each::<_, EndpointRef>(&self.endpoints)
            .filter(|(_, o)| o.dying)
            .count()
            + objs
                .each::<_, NotificationRef>(&self.notifications)
                .filter(|(_, o)| o.dying)
                .count()
            + objs
                .each::<_, CNodeRef>(&self.cnodes)
                .filter(|(_, o)| o.dying)
                .count();
        // Untyped records in the queue are not zombies any more (their last child is gone).
        let untyped = objs
            .each::<_, UntypedRef>(&self.untyped)
            .filter(|(_, o)| o.caps == 0 && !o.zombie)
            .count();
        if queued != dying + untyped {
            return Err("the reaper's queue does not hold exactly the dying objects");
        }
        Ok(())
    }

    fn next_dying_for_check(&self, dying: Dying) -> Option<Dying> {
        match dying {
            Dying::CNode(r) => self.cnodes.get(r).ok().and_then(|c| c.next_dying),
            Dying::Endpoint(r) => self.endpoints.get(r).ok().and_then(|e| e.next_dying),
            Dying::Notification(r) => self.notifications.get(r).ok().and_then(|n| n.next_dying),
            Dying::Untyped(r) => self.untyped.get(r).ok().and_then(|u| u.next_dying),
        }
    }

    fn check_queues(&self, objs: &Objects) -> Result<(), &'static str> {
        let limit = objs.each::<_, ThreadRef>(&self.threads).count() + 1;
        let mut queued = 0;
        for (priority, thread) in self.sched.queued(&self.threads, limit) {
            let t = self
                .threads
                .get(thread)
                .map_err(|_| "a ready queue holds a dead thread")?;
            if t.state != ThreadState::Ready || t.priority != priority {
                return Err("a ready queue holds a thread that is not ready at that priority");
            }
            queued += 1;
        }
        for (ep, endpoint) in objs.each::<_, EndpointRef>(&self.endpoints) {
            for thread in endpoint.queue.iter(&self.threads, limit) {
                let state = self.threads.get(thread).map(|t| t.state);
                if state != Ok(ThreadState::BlockedSend(ep))
                    && state != Ok(ThreadState::BlockedRecv(ep))
                {
                    return Err("an endpoint queue holds a thread not blocked on it");
                }
                queued += 1;
            }
        }
        for (n, notification) in objs.each::<_, NotificationRef>(&self.notifications) {
            for thread in notification.queue.iter(&self.threads, limit) {
                if self.threads.get(thread).map(|t| t.state)
                    != Ok(ThreadState::BlockedNotification(n))
                {
                    return Err("a notification queue holds a thread not waiting on it");
                }
                queued += 1;
            }
        }
        queued += self.sleepers.check(&self.threads, &mut |thread| match self
            .threads
            .get(thread)
            .map(|t| t.state)
        {
            Ok(ThreadState::WaitingForInterrupt) => Ok(()),
            _ => Err("the sleepers' tree holds a thread not sleeping in WFI"),
        })?;
        let in_queue_states = objs
            .each::<_, ThreadRef>(&self.threads)
            .filter(|(_, t)| match t.state {
                ThreadState::Inactive | ThreadState::BlockedReply => false,
                ThreadState::WaitingForInterrupt => t.deadline.is_some(),
                _ => true,
            })
            .count();
        if queued != in_queue_states {
            return Err("a thread's state names a queue it is not in");
        }
        let spaceless = objs.each::<_, ThreadRef>(&self.threads).any(|(_, t)| {
            t.state != ThreadState::Inactive
                && t.space.is_none_or(|space| self.spaces.get(space).is_err())
        });
        if spaceless {
            return Err("a thread that is not inactive has no live address space");
        }
        Ok(())
    }
}

/// A comparable name for the object a capability names (`None` for frames and IrqControl).
fn key(object: &Object) -> Option<(u8, u32, u32)> {
    Some(match *object {
        Object::Untyped(r) => (0, r.page(), r.generation()),
        Object::Endpoint(r) => (1, r.page(), r.generation()),
        Object::Notification(r) => (2, r.page(), r.generation()),
        Object::CNode(r) => (3, r.page(), r.generation()),
        Object::Thread(r) => (4, r.page(), r.generation()),
        Object::AddressSpace(r) | Object::Vm(r) => (5, r.page(), r.generation()),
        Object::Vcpu(r) => (6, r.page(), r.generation()),
        Object::IrqHandler(r) => (7, r.intid(), 0),
        Object::Frame(_) | Object::IrqControl => return None,
    })
}

/// The first page of every live object: (kind, page, generation).
struct Objects(Vec<(PageKind, u32, u32)>);

impl Objects {
    /// The live objects of `store`'s kind, with references.
    fn each<'a, T: KernelObject, R: ObjectRef + 'a>(
        &'a self,
        store: &'a Store<T>,
    ) -> impl Iterator<Item = (R, &'a T)> + 'a {
        self.0
            .iter()
            .filter(|(kind, _, _)| *kind == T::KIND)
            .filter_map(move |&(_, page, generation)| {
                let r = R::from_parts(page, generation);
                store.get(r).ok().map(|object| (r, object))
            })
    }
}

//! The object model's invariants (module root, "Invariants"), checked as a whole: used by the
//! property tests and the fuzz target after every operation.

use super::arena::{EndpointRef, NotificationRef, ThreadRef, UntypedRef};
use super::capability::Object;
use super::thread::ThreadState;
use super::{Kernel, MAX_THREADS};

impl Kernel {
    /// Checks every invariant; `Err` names the first one broken.
    ///
    /// # Errors
    /// A static description of the violated invariant.
    pub fn check_invariants(&self) -> Result<(), &'static str> {
        self.slots.check()?;
        self.check_counts()?;
        if self
            .untyped
            .iter::<UntypedRef>()
            .any(|(_, u)| u.watermark > u.size)
        {
            return Err("an untyped's watermark is above its size");
        }
        self.check_queues()?;
        self.check_bindings()
    }

    fn check_bindings(&self) -> Result<(), &'static str> {
        for (t, thread) in self.threads.iter::<ThreadRef>() {
            if let Some(n) = thread.bound
                && self.notifications.get(n).map(|n| n.bound) != Ok(Some(t))
            {
                return Err("a thread's bound notification does not name it");
            }
        }
        for (n, notification) in self.notifications.iter::<NotificationRef>() {
            if let Some(t) = notification.bound
                && self.threads.get(t).map(|t| t.bound) != Ok(Some(n))
            {
                return Err("a notification's bound thread does not name it");
            }
        }
        Ok(())
    }

    fn check_counts(&self) -> Result<(), &'static str> {
        let mut counts = Counts::default();
        for (_, cap) in self.slots.occupied() {
            if !self.is_live(&cap.object) {
                return Err("a capability names a freed object");
            }
            counts.add(&cap.object);
        }
        let sums = [
            self.untyped
                .iter::<UntypedRef>()
                .map(|(_, o)| o.caps)
                .sum::<u32>(),
            self.endpoints
                .iter::<EndpointRef>()
                .map(|(_, o)| o.caps)
                .sum(),
            self.notifications
                .iter::<NotificationRef>()
                .map(|(_, o)| o.caps)
                .sum(),
            self.cnodes
                .iter::<super::CNodeRef>()
                .map(|(_, o)| o.caps)
                .sum(),
            self.threads.iter::<ThreadRef>().map(|(_, o)| o.caps).sum(),
            self.spaces
                .iter::<super::SpaceRef>()
                .map(|(_, o)| o.caps)
                .sum(),
        ];
        if sums != counts.0 {
            return Err("an object's capability count is wrong");
        }
        let unreferenced = self
            .endpoints
            .iter::<EndpointRef>()
            .any(|(_, o)| o.caps == 0)
            || self
                .notifications
                .iter::<NotificationRef>()
                .any(|(_, o)| o.caps == 0)
            || self
                .cnodes
                .iter::<super::CNodeRef>()
                .any(|(_, o)| o.caps == 0);
        if unreferenced {
            return Err("an object with no capability is still alive");
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

    fn check_queues(&self) -> Result<(), &'static str> {
        let mut queued = 0;
        for (priority, thread) in self.sched.queued(&self.threads) {
            let t = self
                .threads
                .get(thread)
                .map_err(|_| "a ready queue holds a dead thread")?;
            if t.state != ThreadState::Ready || t.priority != priority {
                return Err("a ready queue holds a thread that is not ready at that priority");
            }
            queued += 1;
        }
        for (ep, endpoint) in self.endpoints.iter::<EndpointRef>() {
            for thread in endpoint.queue.iter(&self.threads) {
                let state = self.threads.get(thread).map(|t| t.state);
                if state != Ok(ThreadState::BlockedSend(ep))
                    && state != Ok(ThreadState::BlockedRecv(ep))
                {
                    return Err("an endpoint queue holds a thread not blocked on it");
                }
                queued += 1;
            }
        }
        for (n, notification) in self.notifications.iter::<NotificationRef>() {
            for thread in notification.queue.iter(&self.threads) {
                if self.threads.get(thread).map(|t| t.state)
                    != Ok(ThreadState::BlockedNotification(n))
                {
                    return Err("a notification queue holds a thread not waiting on it");
                }
                queued += 1;
            }
        }
        let in_queue_states = self
            .threads
            .iter::<ThreadRef>()
            .filter(|(_, t)| !matches!(t.state, ThreadState::Inactive | ThreadState::BlockedReply))
            .count();
        if queued != in_queue_states || queued > MAX_THREADS {
            return Err("a thread's state names a queue it is not in");
        }
        let spaceless = self.threads.iter::<ThreadRef>().any(|(_, t)| {
            t.state != ThreadState::Inactive
                && t.space.is_none_or(|space| self.spaces.get(space).is_err())
        });
        if spaceless {
            return Err("a thread that is not inactive has no live address space");
        }
        Ok(())
    }
}

#[derive(Default)]
struct Counts([u32; 6]);

impl Counts {
    fn add(&mut self, object: &Object) {
        let index = match object {
            Object::Untyped(_) => 0,
            Object::Endpoint(_) => 1,
            Object::Notification(_) => 2,
            Object::CNode(_) => 3,
            Object::Thread(_) => 4,
            Object::AddressSpace(_) | Object::Vm(_) => 5,
            _ => return,
        };
        if let Some(count) = self.0.get_mut(index) {
            *count += 1;
        }
    }
}

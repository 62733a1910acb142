//! Surviving a revoked lent page: the fault handler of the walker thread.
//!
//! A lender may revoke a lent frame whenever it likes; the kernel then deletes the walker's copy
//! of the capability and removes its mapping, and the walker's next read of that window page is
//! a stage-2 translation fault of the service itself. Checking the frame before each read cannot
//! close that race (the walker can be preempted between the check and the read, and the lender
//! run), so the service handles the fault instead, the seL4 way: the walker runs in a thread of
//! its own whose fault endpoint is held by the service's first thread, which runs [`Recovery`].
//!
//! On a read fault inside the window, [`Recovery`] puts a placeholder page where the frame was
//! (a copy of a zeroed frame of the service's own, read-only, in the gone frame's slot), marks the
//! window page in [`RevokedPages`], and resumes the walker at the faulting read. The read
//! completes with a meaningless word, and the walker's [`Platform::read`](crate::Platform::read)
//! checks the mark *after* the read and answers `None`: the walk reports a synchronous external
//! abort on the walk (the page is no longer lent), and the walker drops the page's book entry,
//! the placeholder and the mark before it answers. Any other fault of the walker thread is a bug
//! of this service: it is reported and the thread stopped.

use core::sync::atomic::{AtomicU64, Ordering};

use capvisor_ipc::abi::KernelError;
use capvisor_ipc::cap::Badge;
use capvisor_ipc::protocols::fault::{
    FaultError, GuestFault, Handler, Resolution, ServiceFault, ServiceResolution,
};
use capvisor_ipc::types::Access;

use crate::{MAX_PAGES, PAGE_SIZE, WINDOW};

/// Which window pages lost their frame, shared by the recovery thread (which marks them) and the
/// walker thread (which checks and clears them). Atomics, since two threads use it.
#[derive(Debug)]
pub struct RevokedPages([AtomicU64; MAX_PAGES / 64]);

impl Default for RevokedPages {
    fn default() -> Self {
        Self::new()
    }
}

impl RevokedPages {
    /// No page marked.
    #[must_use]
    pub const fn new() -> Self {
        Self([const { AtomicU64::new(0) }; MAX_PAGES / 64])
    }

    /// The word and bit of window page `index`.
    const fn word_bit(index: usize) -> (usize, u64) {
        (index / 64, 1 << (index % 64))
    }

    /// Marks window page `index`: its frame is gone. Release: the placeholder mapped before is
    /// visible to whoever sees the mark.
    pub fn mark(&self, index: usize) {
        let (word, bit) = Self::word_bit(index);
        if let Some(word) = self.0.get(word) {
            word.fetch_or(bit, Ordering::Release);
        }
    }

    /// Whether window page `index` is marked.
    #[must_use]
    pub fn is_marked(&self, index: usize) -> bool {
        let (word, bit) = Self::word_bit(index);
        self.0
            .get(word)
            .is_some_and(|word| word.load(Ordering::Acquire) & bit != 0)
    }

    /// Clears window page `index`'s mark (once the placeholder is gone).
    pub fn clear(&self, index: usize) {
        let (word, bit) = Self::word_bit(index);
        if let Some(word) = self.0.get(word) {
            word.fetch_and(!bit, Ordering::Release);
        }
    }
}

/// The window page a walker-thread fault is in, when it is a read of one: what a revoked lent
/// frame causes. Anything else (a write, a fetch, an address outside the window, another kind of
/// exception) is not.
#[must_use]
pub fn window_page(fault: &ServiceFault) -> Option<usize> {
    let ServiceFault::Memory {
        address,
        access: Access::Read,
        ..
    } = fault
    else {
        return None;
    };
    let offset = address.raw().checked_sub(WINDOW)?;
    let index = usize::try_from(offset / PAGE_SIZE).ok()?;
    (index < MAX_PAGES).then_some(index)
}

/// What the recovery asks of the kernel.
pub trait Placeholder {
    /// Maps a zeroed placeholder page, read-only, at window page `index` (whose frame is gone),
    /// with its capability in the gone frame's slot, so the walker's `forget` removes it.
    ///
    /// # Errors
    /// The kernel's refusal: the slot is not empty or the page still mapped (the fault was not
    /// a revoked frame's), or the placeholder cannot be copied.
    fn place(&mut self, index: usize) -> Result<(), KernelError>;
}

/// What the recovery reports, for the service to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The first revoked page the walker met (later ones are counted, not reported, so a client
    /// cannot fill the console by revoking).
    FirstRevoked {
        /// The window page.
        index: usize,
    },
    /// The walker thread faulted for another reason (or the placeholder could not be placed):
    /// it is stopped.
    Stopped {
        /// Where it faulted.
        pc: u64,
        /// The fault.
        fault: ServiceFault,
        /// The kernel's refusal of the placeholder, when that was the reason.
        refused: Option<KernelError>,
    },
}

/// The walker thread's fault handler (the `fault` protocol's [`Handler`]).
#[derive(Debug)]
pub struct Recovery<'a, P, R> {
    placeholder: P,
    revoked: &'a RevokedPages,
    report: R,
    /// Revoked pages recovered from so far.
    pub recovered: u64,
}

impl<'a, P: Placeholder, R: FnMut(Event)> Recovery<'a, P, R> {
    /// A handler that marks pages in `revoked` and tells `report` what happened.
    pub const fn new(placeholder: P, revoked: &'a RevokedPages, report: R) -> Self {
        Self {
            placeholder,
            revoked,
            report,
            recovered: 0,
        }
    }

    /// The kernel stand-in (for tests).
    pub const fn placeholder(&self) -> &P {
        &self.placeholder
    }
}

impl<P: Placeholder, R: FnMut(Event)> Handler for Recovery<'_, P, R> {
    /// The walker is a service thread; a vCPU's faults never come here.
    async fn guest(&mut self, _badge: Badge, _fault: GuestFault) -> Result<Resolution, FaultError> {
        Err(FaultError::Unhandled)
    }

    async fn service(
        &mut self,
        _badge: Badge,
        pc: u64,
        fault: ServiceFault,
    ) -> Result<ServiceResolution, FaultError> {
        let refused = match window_page(&fault) {
            Some(index) => match self.placeholder.place(index) {
                Ok(()) => {
                    self.revoked.mark(index);
                    if self.recovered == 0 {
                        (self.report)(Event::FirstRevoked { index });
                    }
                    self.recovered += 1;
                    return Ok(ServiceResolution::Resume);
                }
                Err(error) => Some(error),
            },
            None => None,
        };
        (self.report)(Event::Stopped { pc, fault, refused });
        Ok(ServiceResolution::Stop)
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context as TaskContext, Poll, Waker};

    use capvisor_ipc::types::{Esr, Ipa};

    use super::*;

    /// Window pages given a placeholder, and whether the next placement is refused.
    #[derive(Default)]
    struct Fake {
        placed: Vec<usize>,
        refuse: Option<KernelError>,
    }

    impl Placeholder for Fake {
        fn place(&mut self, index: usize) -> Result<(), KernelError> {
            if let Some(error) = self.refuse {
                return Err(error);
            }
            self.placed.push(index);
            Ok(())
        }
    }

    fn block_on<F: Future>(future: F) -> F::Output {
        let mut future = pin!(future);
        match future
            .as_mut()
            .poll(&mut TaskContext::from_waker(Waker::noop()))
        {
            Poll::Ready(output) => output,
            Poll::Pending => panic!("the recovery never waits"),
        }
    }

    /// A data abort on a read (a translation fault at level 3, as the kernel reports one).
    fn read_of(address: u64) -> ServiceFault {
        ServiceFault::Memory {
            address: Ipa::new(address),
            access: Access::Read,
            esr: Esr::new(0x9200_0007),
        }
    }

    #[test]
    fn only_reads_inside_the_window_are_a_revoked_page() {
        let last = WINDOW + (MAX_PAGES as u64 - 1) * PAGE_SIZE;
        assert_eq!(window_page(&read_of(WINDOW)), Some(0));
        assert_eq!(window_page(&read_of(WINDOW + 0x1ff8)), Some(1));
        assert_eq!(window_page(&read_of(last + 0xff8)), Some(MAX_PAGES - 1));
        assert_eq!(window_page(&read_of(last + PAGE_SIZE)), None);
        assert_eq!(window_page(&read_of(WINDOW - 8)), None);
        assert_eq!(window_page(&read_of(0)), None);
        let write = ServiceFault::Memory {
            address: Ipa::new(WINDOW),
            access: Access::Write,
            esr: Esr::new(0x9200_0047),
        };
        assert_eq!(window_page(&write), None);
        let undefined = ServiceFault::Exception {
            esr: Esr::new(0x0200_0000),
        };
        assert_eq!(window_page(&undefined), None);
    }

    #[test]
    fn a_revoked_page_gets_a_placeholder_and_a_mark_and_the_walker_resumes() {
        let revoked = RevokedPages::new();
        let mut events = Vec::new();
        let mut recovery = Recovery::new(Fake::default(), &revoked, |e| events.push(e));
        let walker = Badge::NONE;
        for address in [WINDOW + 5 * PAGE_SIZE + 16, WINDOW + 70 * PAGE_SIZE] {
            let resolution = block_on(recovery.service(walker, 0x20_1000, read_of(address)));
            assert_eq!(resolution, Ok(ServiceResolution::Resume));
        }
        assert_eq!(recovery.placeholder().placed, [5, 70]);
        assert_eq!(recovery.recovered, 2);
        assert!(revoked.is_marked(5) && revoked.is_marked(70));
        assert!(!revoked.is_marked(4) && !revoked.is_marked(6) && !revoked.is_marked(69));
        revoked.clear(5);
        assert!(!revoked.is_marked(5) && revoked.is_marked(70));
        drop(recovery);
        assert_eq!(events, [Event::FirstRevoked { index: 5 }], "reported once");
    }

    #[test]
    fn any_other_fault_stops_the_walker_and_is_reported() {
        let revoked = RevokedPages::new();
        let mut events = Vec::new();
        let mut recovery = Recovery::new(Fake::default(), &revoked, |e| events.push(e));
        let walker = Badge::NONE;
        let stack_overflow = read_of(0x3F_FFE0_0000);
        let resolution = block_on(recovery.service(walker, 0x20_2000, stack_overflow));
        assert_eq!(resolution, Ok(ServiceResolution::Stop));
        // A window page whose placeholder the kernel refuses (its frame is still mapped there:
        // not a revocation) stops it too.
        recovery.placeholder.refuse = Some(KernelError::SlotOccupied);
        let resolution = block_on(recovery.service(walker, 0x20_3000, read_of(WINDOW)));
        assert_eq!(resolution, Ok(ServiceResolution::Stop));
        assert!(!revoked.is_marked(0));
        let guest = GuestFault::Other { esr: Esr::new(0) };
        let answer = block_on(recovery.guest(walker, guest));
        assert_eq!(answer, Err(FaultError::Unhandled));
        drop(recovery);
        assert_eq!(
            events,
            [
                Event::Stopped {
                    pc: 0x20_2000,
                    fault: stack_overflow,
                    refused: None
                },
                Event::Stopped {
                    pc: 0x20_3000,
                    fault: read_of(WINDOW),
                    refused: Some(KernelError::SlotOccupied)
                },
            ]
        );
    }
}

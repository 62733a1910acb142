//! The walker's handler under the hosted transport (`capvisor_ipc::hosted`): the generated
//! `serve` loop on its own thread, the generated `Client` on the test's, guest pages lent as
//! frame capabilities of the hosted capability table. Every walk of the sample tree is checked
//! against the hand-derived result and against the library's reference model.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use capvisor_ipc::abi::KernelError;
use capvisor_ipc::cap::{Badge, Cap, Frame, Notification};
use capvisor_ipc::hosted::{self, HostedEndpoint, HostedKernel};
use capvisor_ipc::protocol::{Error, Generation};
use capvisor_ipc::protocols::s2walk::{self, WalkError, WalkOutcome};
use capvisor_ipc::types::{Access, Ipa, VmId, Vtcr, Vttbr};

use crate::sample::{self, CASES, Expect, SampleMemory};
use crate::{
    MAX_PAGES, MAX_VMS, PAGE_SIZE, PAGES_PER_CLIENT, Platform, VMS_PER_CLIENT, Walker, outcome,
    registers,
};

/// The host stand-in for the kernel: each frame capability's page of words, which frame each
/// window page maps, and the frames their lenders revoked (the kernel would have deleted the
/// walker's copy and unmapped its page).
#[derive(Debug, Clone, Default)]
pub(crate) struct Host {
    frames: Arc<Mutex<HashMap<u64, Vec<u64>>>>,
    window: Arc<Mutex<Vec<Option<u64>>>>,
    revoked: Arc<Mutex<HashSet<u64>>>,
}

impl Host {
    /// A frame holding sample page `base`.
    pub(crate) fn frame(&self, kernel: &HostedKernel, base: u64) -> Cap<Frame> {
        let frame: Cap<Frame> = kernel.create();
        let words = (0..512).map(|i| sample::word(base, i)).collect();
        self.frames
            .lock()
            .unwrap()
            .insert(frame.cptr().raw(), words);
        frame
    }

    /// The lender revokes `frame`.
    pub(crate) fn revoke(&self, frame: Cap<Frame>) {
        self.revoked.lock().unwrap().insert(frame.cptr().raw());
    }

    /// Window pages that map a frame.
    fn in_use(&self) -> usize {
        self.window.lock().unwrap().iter().flatten().count()
    }

    fn frame_at(&self, index: usize) -> Option<u64> {
        self.window.lock().unwrap().get(index).copied().flatten()
    }
}

impl Platform for Host {
    fn map(&mut self, frame: Cap<Frame>, index: usize) -> Result<(), KernelError> {
        let frame = frame.cptr().raw();
        if !self.frames.lock().unwrap().contains_key(&frame)
            || self.revoked.lock().unwrap().contains(&frame)
        {
            return Err(KernelError::EmptySlot);
        }
        let mut window = self.window.lock().unwrap();
        assert!(index < MAX_PAGES);
        if window.len() <= index {
            window.resize(index + 1, None);
        }
        assert_eq!(
            window[index], None,
            "a window page in use is not mapped again"
        );
        window[index] = Some(frame);
        Ok(())
    }

    fn read(&self, index: usize, offset: usize) -> Option<u64> {
        assert!(offset < PAGE_SIZE as usize && offset.is_multiple_of(8));
        let frame = self
            .frame_at(index)
            .expect("the walker reads only mapped pages");
        if self.revoked.lock().unwrap().contains(&frame) {
            return None;
        }
        Some(self.frames.lock().unwrap()[&frame][offset / 8])
    }

    fn gone(&self, index: usize) -> bool {
        let frame = self.frame_at(index).expect("only pages in use are checked");
        self.revoked.lock().unwrap().contains(&frame)
    }

    fn forget(&mut self, index: usize) {
        let mut window = self.window.lock().unwrap();
        let frame = window[index]
            .take()
            .expect("only pages in use are forgotten");
        assert!(
            self.revoked.lock().unwrap().contains(&frame),
            "only a revoked page is forgotten"
        );
    }
}

fn serve(kernel: &HostedKernel) -> (HostedEndpoint, Host) {
    let endpoint = kernel.endpoint();
    let host = Host::default();
    let mut server = endpoint.server();
    let platform = host.clone();
    let _served = hosted::spawn(move || async move {
        s2walk::serve(&mut server, &mut Walker::new(platform), Generation::new(1)).await
    });
    (endpoint, host)
}

const VM: VmId = VmId::new(7);

fn expected(outcome: WalkOutcome) -> Expect {
    match outcome {
        WalkOutcome::Translated(t) => Expect::Ok {
            pa: t.output.raw(),
            level: t.level,
        },
        WalkOutcome::Fault(fault) => Expect::Fault(fault.status),
    }
}

#[test]
fn walks_of_lent_pages_match_the_hand_derived_results_and_the_reference() {
    let kernel = HostedKernel::new();
    let (endpoint, host) = serve(&kernel);
    let frames: Vec<_> = sample::PAGES
        .iter()
        .map(|&base| (base, host.frame(&kernel, base)))
        .collect();
    hosted::block_on(|_| async {
        let mut client = s2walk::Client::new(endpoint.client(Badge::new(1)), Generation::ANY);
        client.nest(VM, sample::PA_BITS).await.unwrap();
        for &(base, frame) in &frames {
            client.core().attach(frame).unwrap();
            client.lend(VM, Ipa::new(base)).await.unwrap();
        }
        let machine = ::s2walk::Machine::new(::s2walk::PaBits::from_bits(40).unwrap());
        for case in CASES {
            let vtcr = Vtcr::new(sample::VTCR);
            let vttbr = Vttbr::new(case.vttbr);
            let answer = client
                .walk(VM, vtcr, vttbr, Ipa::new(case.ipa), case.access)
                .await
                .unwrap();
            assert_eq!(expected(answer), case.expect, "{}", case.name);
            let (vtcr, vttbr) = registers(vtcr, vttbr);
            let reference = ::s2walk::reference::s2_translate(
                &machine,
                vtcr,
                vttbr,
                &SampleMemory,
                ::s2walk::Ipa::new(case.ipa),
                crate::access(case.access),
            );
            assert_eq!(answer, outcome(reference), "{}", case.name);
        }
        // The external abort is marked as one; the 2M block reports its raw bits.
        let (vtcr, vttbr) = (Vtcr::new(sample::VTCR), Vttbr::new(sample::VTTBR));
        let read = Access::Read;
        let abort = client
            .walk(VM, vtcr, vttbr, Ipa::new(0x8000_0000), read)
            .await;
        assert!(matches!(abort, Ok(WalkOutcome::Fault(f)) if f.external && f.level == 2));
        let block = client
            .walk(VM, vtcr, vttbr, Ipa::new(0x20_0000), read)
            .await;
        let Ok(WalkOutcome::Translated(block)) = block else {
            panic!("the 2M block translates: {block:?}");
        };
        assert_eq!(
            (block.size, block.s2ap, block.xn, block.mem_attr),
            (0x20_0000, 0b01, 0b10, 0b1111)
        );
    });
}

#[test]
fn vm_ids_are_each_clients_own() {
    let kernel = HostedKernel::new();
    let (endpoint, host) = serve(&kernel);
    let frames: Vec<_> = sample::PAGES
        .iter()
        .map(|&base| (base, host.frame(&kernel, base)))
        .collect();
    hosted::block_on(|_| async {
        let mut owner = s2walk::Client::new(endpoint.client(Badge::new(1)), Generation::ANY);
        let mut other = s2walk::Client::new(endpoint.client(Badge::new(2)), Generation::ANY);
        let (vtcr, vttbr) = (Vtcr::new(sample::VTCR), Vttbr::new(sample::VTTBR));
        let read = Access::Read;
        assert_eq!(
            owner.walk(VM, vtcr, vttbr, Ipa::new(0), read).await,
            Err(Error::Service(WalkError::UnknownVm))
        );
        owner.nest(VM, 40).await.unwrap();
        for &(base, frame) in &frames {
            owner.core().attach(frame).unwrap();
            owner.lend(VM, Ipa::new(base)).await.unwrap();
        }
        // To another client, the owner's VM 7 does not exist: it can neither walk it nor lend
        // into it, and nesting its own VM 7 takes nothing from the owner's.
        let unknown = Error::Service(WalkError::UnknownVm);
        let walked = other.walk(VM, vtcr, vttbr, Ipa::new(0x123), read).await;
        assert_eq!(walked, Err(unknown));
        other.core().attach(frames[0].1).unwrap();
        assert_eq!(other.lend(VM, Ipa::new(0x1000)).await, Err(unknown));
        assert_eq!(other.invalidate(VM, vttbr, None).await, Err(unknown));
        other.nest(VM, 48).await.unwrap();
        let own = other.walk(VM, vtcr, vttbr, Ipa::new(0x123), read).await;
        assert!(
            matches!(own, Ok(WalkOutcome::Fault(f)) if f.external && f.level == 1),
            "the other client's VM 7 has no pages lent: {own:?}"
        );
        let owners = owner.walk(VM, vtcr, vttbr, Ipa::new(0x123), read).await;
        assert_eq!(
            expected(owners.unwrap()),
            CASES[0].expect,
            "the owner's VM is untouched"
        );
        assert_eq!(owner.invalidate(VM, vttbr, Some(Ipa::new(0))).await, Ok(()));
        assert_eq!(host.in_use(), 3);
    });
}

#[test]
fn bad_arguments_and_missing_frames_are_refused() {
    let kernel = HostedKernel::new();
    let (endpoint, host) = serve(&kernel);
    let frame = host.frame(&kernel, 0x1000);
    let notification: Cap<Notification> = kernel.create();
    let unknown: Cap<Frame> = kernel.create();
    hosted::block_on(|_| async {
        let mut client = s2walk::Client::new(endpoint.client(Badge::new(1)), Generation::ANY);
        let refused = |error| Err(Error::Service(error));
        assert_eq!(client.nest(VM, 41).await, refused(WalkError::BadArgument));
        client.nest(VM, 48).await.unwrap();
        assert_eq!(
            client.lend(VM, Ipa::new(0x1000)).await,
            refused(WalkError::MissingFrame)
        );
        client.core().attach(notification).unwrap();
        assert_eq!(
            client.lend(VM, Ipa::new(0x1000)).await,
            refused(WalkError::MissingFrame)
        );
        client.core().attach(unknown).unwrap();
        assert_eq!(
            client.lend(VM, Ipa::new(0x1000)).await,
            refused(WalkError::MissingFrame),
            "the platform refuses to map it"
        );
        client.core().attach(frame).unwrap();
        assert_eq!(
            client.lend(VM, Ipa::new(0x1008)).await,
            refused(WalkError::BadArgument)
        );
        client.core().attach(frame).unwrap();
        assert_eq!(client.lend(VM, Ipa::new(0x1000)).await, Ok(()));
        client.core().attach(frame).unwrap();
        assert_eq!(
            client.lend(VM, Ipa::new(0x1000)).await,
            refused(WalkError::BadArgument),
            "a page is lent once"
        );
        client.nest(VmId::new(100), 48).await.unwrap();
        assert_eq!(
            client.nest(VmId::new(99), 48).await,
            refused(WalkError::Quota)
        );
        assert_eq!(
            client.nest(VmId::new(100), 40).await,
            Ok(()),
            "re-nesting is not a new VM"
        );
    });
}

#[test]
fn one_client_cannot_take_every_vm() {
    let kernel = HostedKernel::new();
    let (endpoint, _host) = serve(&kernel);
    hosted::block_on(|_| async {
        let mut greedy = s2walk::Client::new(endpoint.client(Badge::new(1)), Generation::ANY);
        let mut taken = 0;
        let refusal = loop {
            match greedy.nest(VmId::new(taken), 40).await {
                Ok(()) => taken += 1,
                Err(error) => break error,
            }
        };
        assert_eq!(
            (taken as usize, refusal),
            (VMS_PER_CLIENT, Error::Service(WalkError::Quota))
        );
        // Every other badge an image can have (services are at most 16; badge 0 is the root's
        // own endpoint) still gets its quota, whatever the others took.
        for badge in 0..16 {
            if badge == 1 {
                continue;
            }
            let mut other =
                s2walk::Client::new(endpoint.client(Badge::new(badge)), Generation::ANY);
            for vm in 0..VMS_PER_CLIENT as u32 {
                assert_eq!(other.nest(VmId::new(vm), 40).await, Ok(()), "badge {badge}");
            }
        }
        const { assert!(16 * VMS_PER_CLIENT <= MAX_VMS) };
    });
}

/// Walks the sample's first case (a read through all three levels) for `client`'s VM.
async fn page_read(client: &mut s2walk::Client<hosted::HostedClient>) -> WalkOutcome {
    let (vtcr, vttbr) = (Vtcr::new(sample::VTCR), Vttbr::new(sample::VTTBR));
    client
        .walk(VM, vtcr, vttbr, Ipa::new(CASES[0].ipa), CASES[0].access)
        .await
        .unwrap()
}

fn external_abort(level: i8) -> WalkOutcome {
    WalkOutcome::Fault(s2walk::WalkFault {
        status: 0x14 + level as u8,
        level,
        external: true,
    })
}

#[test]
fn a_revoked_lent_page_is_no_longer_lent_and_can_be_lent_again() {
    let kernel = HostedKernel::new();
    let (endpoint, host) = serve(&kernel);
    let frames: Vec<_> = sample::PAGES
        .iter()
        .map(|&base| (base, host.frame(&kernel, base)))
        .collect();
    let [l1, _, l3] = [frames[0].1, frames[1].1, frames[2].1];
    hosted::block_on(|_| async {
        let mut client = s2walk::Client::new(endpoint.client(Badge::new(1)), Generation::ANY);
        let mut bystander = s2walk::Client::new(endpoint.client(Badge::new(2)), Generation::ANY);
        client.nest(VM, sample::PA_BITS).await.unwrap();
        bystander.nest(VM, sample::PA_BITS).await.unwrap();
        for &(base, frame) in &frames {
            client.core().attach(frame).unwrap();
            client.lend(VM, Ipa::new(base)).await.unwrap();
        }
        let bystander_frames: Vec<_> = sample::PAGES
            .iter()
            .map(|&base| host.frame(&kernel, base))
            .collect();
        for (&base, &frame) in sample::PAGES.iter().zip(&bystander_frames) {
            bystander.core().attach(frame).unwrap();
            bystander.lend(VM, Ipa::new(base)).await.unwrap();
        }
        let translated = page_read(&mut client).await;
        assert_eq!(expected(translated), CASES[0].expect);

        // The level-3 table goes: the walk reads levels 1 and 2, then aborts at level 3, and the
        // page's entry is dropped (its window page is free again).
        host.revoke(l3);
        assert_eq!(page_read(&mut client).await, external_abort(3));
        assert_eq!(host.in_use(), 5);
        assert_eq!(
            page_read(&mut client).await,
            external_abort(3),
            "still not lent"
        );
        // The level-1 table goes too.
        host.revoke(l1);
        assert_eq!(page_read(&mut client).await, external_abort(1));
        assert_eq!(host.in_use(), 4);
        // The bystander's tables are its own frames: untouched.
        assert_eq!(page_read(&mut bystander).await, translated);

        // Lent again (fresh frames), the walks translate again.
        for base in [0x1000, 0x3000] {
            client.core().attach(host.frame(&kernel, base)).unwrap();
            client.lend(VM, Ipa::new(base)).await.unwrap();
        }
        assert_eq!(page_read(&mut client).await, translated);

        // A page revoked but never walked through is found when it is lent again.
        host.revoke(frames[1].1);
        client.core().attach(host.frame(&kernel, 0x2000)).unwrap();
        assert_eq!(client.lend(VM, Ipa::new(0x2000)).await, Ok(()));
        assert_eq!(page_read(&mut client).await, translated);
        assert_eq!(host.in_use(), 6);
    });
}

#[test]
fn lent_pages_are_bounded_per_client_and_revoked_ones_are_given_back() {
    let kernel = HostedKernel::new();
    let (endpoint, host) = serve(&kernel);
    hosted::block_on(|_| async {
        let mut greedy = s2walk::Client::new(endpoint.client(Badge::new(1)), Generation::ANY);
        let mut other = s2walk::Client::new(endpoint.client(Badge::new(2)), Generation::ANY);
        greedy.nest(VM, 48).await.unwrap();
        other.nest(VM, 48).await.unwrap();
        let mut lent = Vec::new();
        let refusal = loop {
            let base = 0x10_0000 + lent.len() as u64 * PAGE_SIZE;
            let frame = host.frame(&kernel, base);
            greedy.core().attach(frame).unwrap();
            match greedy.lend(VM, Ipa::new(base)).await {
                Ok(()) => lent.push(frame),
                Err(error) => break error,
            }
        };
        assert_eq!(
            (lent.len(), refusal),
            (PAGES_PER_CLIENT, Error::Service(WalkError::Quota))
        );
        other.core().attach(host.frame(&kernel, 0x1000)).unwrap();
        assert_eq!(other.lend(VM, Ipa::new(0x1000)).await, Ok(()));
        // Revoked pages count until the walker notices; at the quota it looks, and gives them
        // back.
        for &frame in &lent[..4] {
            host.revoke(frame);
        }
        for n in 0..4 {
            greedy
                .core()
                .attach(host.frame(&kernel, 0x80_0000))
                .unwrap();
            let base = Ipa::new(0x80_0000 + n * PAGE_SIZE);
            assert_eq!(greedy.lend(VM, base).await, Ok(()), "page {n}");
        }
        greedy
            .core()
            .attach(host.frame(&kernel, 0x90_0000))
            .unwrap();
        assert_eq!(
            greedy.lend(VM, Ipa::new(0x90_0000)).await,
            Err(Error::Service(WalkError::Quota))
        );
        assert_eq!(host.in_use(), PAGES_PER_CLIENT + 1);
    });
}

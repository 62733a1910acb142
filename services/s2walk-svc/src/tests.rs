//! The walker's handler under the hosted transport (`capvisor_ipc::hosted`): the generated
//! `serve` loop on its own thread, the generated `Client` on the test's, guest pages lent as
//! frame capabilities of the hosted capability table. Every walk of the sample tree is checked
//! against the hand-derived result and against the library's reference model.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use capvisor_ipc::abi::KernelError;
use capvisor_ipc::cap::{Badge, Cap, Frame, Notification};
use capvisor_ipc::hosted::{self, HostedEndpoint, HostedKernel};
use capvisor_ipc::protocol::{Error, Generation};
use capvisor_ipc::protocols::s2walk::{self, WalkError, WalkOutcome};
use capvisor_ipc::types::{Ipa, VmId, Vtcr, Vttbr};

use crate::sample::{self, CASES, Expect, SampleMemory};
use crate::{PAGE_SIZE, Platform, Walker, outcome, registers};

/// The host stand-in for the kernel: each frame capability's page of words, and which frame
/// each window page maps.
#[derive(Debug, Clone, Default)]
struct Host {
    frames: Arc<Mutex<HashMap<u64, Vec<u64>>>>,
    window: Arc<Mutex<Vec<u64>>>,
}

impl Host {
    /// A frame holding sample page `base`.
    fn frame(&self, kernel: &HostedKernel, base: u64) -> Cap<Frame> {
        let frame: Cap<Frame> = kernel.create();
        let words = (0..512).map(|i| sample::word(base, i)).collect();
        self.frames
            .lock()
            .unwrap()
            .insert(frame.cptr().raw(), words);
        frame
    }
}

impl Platform for Host {
    fn map(&mut self, frame: Cap<Frame>, index: usize) -> Result<(), KernelError> {
        if !self
            .frames
            .lock()
            .unwrap()
            .contains_key(&frame.cptr().raw())
        {
            return Err(KernelError::EmptySlot);
        }
        let mut window = self.window.lock().unwrap();
        assert_eq!(window.len(), index, "window pages are used in order");
        window.push(frame.cptr().raw());
        Ok(())
    }

    fn read(&self, index: usize, offset: usize) -> u64 {
        assert!(offset < PAGE_SIZE as usize && offset.is_multiple_of(8));
        let frame = self.window.lock().unwrap()[index];
        self.frames.lock().unwrap()[&frame][offset / 8]
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
        let read = capvisor_ipc::types::Access::Read;
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
fn only_the_owner_may_walk_lend_or_renest() {
    let kernel = HostedKernel::new();
    let (endpoint, host) = serve(&kernel);
    let frame = host.frame(&kernel, 0x1000);
    hosted::block_on(|_| async {
        let mut owner = s2walk::Client::new(endpoint.client(Badge::new(1)), Generation::ANY);
        let mut other = s2walk::Client::new(endpoint.client(Badge::new(2)), Generation::ANY);
        let (vtcr, vttbr) = (Vtcr::new(sample::VTCR), Vttbr::new(sample::VTTBR));
        let read = capvisor_ipc::types::Access::Read;
        assert_eq!(
            owner.walk(VM, vtcr, vttbr, Ipa::new(0), read).await,
            Err(Error::Service(WalkError::UnknownVm))
        );
        owner.nest(VM, 40).await.unwrap();
        assert_eq!(
            other.walk(VM, vtcr, vttbr, Ipa::new(0), read).await,
            Err(Error::Service(WalkError::NotPermitted))
        );
        assert_eq!(
            other.nest(VM, 48).await,
            Err(Error::Service(WalkError::NotPermitted))
        );
        other.core().attach(frame).unwrap();
        assert_eq!(
            other.lend(VM, Ipa::new(0x1000)).await,
            Err(Error::Service(WalkError::NotPermitted))
        );
        assert_eq!(
            other.invalidate(VM, vttbr, None).await,
            Err(Error::Service(WalkError::NotPermitted))
        );
        assert_eq!(owner.invalidate(VM, vttbr, Some(Ipa::new(0))).await, Ok(()));
        assert!(host.window.lock().unwrap().is_empty());
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
        for vm in 100..100 + crate::MAX_VMS as u32 - 1 {
            client.nest(VmId::new(vm), 48).await.unwrap();
        }
        assert_eq!(
            client.nest(VmId::new(99), 48).await,
            refused(WalkError::Full)
        );
    });
}

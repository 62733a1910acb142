//! Property: whatever several clients do — nest VMs, lend pages, revoke lent frames at any time,
//! walk — every answer is the one a model of the protocol predicts: a nest or lend is refused
//! exactly when the client is at its quota (or the page is lent and its frame still there), and
//! a walk equals the reference model's over exactly the pages still lent to that client's VM.
//! The host platform's own checks (a window page is never mapped twice, only a revoked page is
//! forgotten, only mapped pages are read) hold throughout.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::pin;
use std::task::{Context as TaskContext, Poll, Waker};

use capvisor_ipc::cap::{AnyCap, Badge, CPtr, Cap, ObjectKind};
use capvisor_ipc::hosted::HostedKernel;
use capvisor_ipc::protocol::{Context, ReceivedCaps};
use capvisor_ipc::protocols::s2walk::{Handler, WalkError};
use capvisor_ipc::types::{Ipa, VmId, Vtcr, Vttbr};
use proptest::prelude::*;
use s2walk::{GuestMemory, Machine, OutputAddr, PaBits, ReadError};

use crate::sample::{self, word};
use crate::tests::Host;
use crate::{PAGES_PER_CLIENT, VMS_PER_CLIENT, Walker, outcome, registers};

/// The guest pages clients lend: the sample's tables, one page a level-1 entry points at, and
/// pages no table points into (so that a client can reach its quota).
fn base(page: u8) -> u64 {
    const TABLES: [u64; 4] = [0x1000, 0x2000, 0x3000, 0x9000];
    TABLES
        .get(usize::from(page))
        .copied()
        .unwrap_or(0x10_0000 + u64::from(page) * 0x1000)
}

#[derive(Debug, Clone)]
enum Op {
    Nest {
        client: u8,
        vm: u8,
    },
    Lend {
        client: u8,
        vm: u8,
        page: u8,
    },
    /// Revokes the `n`th frame lent so far (modulo their number).
    Revoke {
        n: u16,
    },
    Walk {
        client: u8,
        vm: u8,
        case: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (0..3u8, 0..3u8).prop_map(|(client, vm)| Op::Nest { client, vm }),
        12 => (0..3u8, 0..3u8, 0..40u8).prop_map(|(client, vm, page)| Op::Lend { client, vm, page }),
        1 => any::<u16>().prop_map(|n| Op::Revoke { n }),
        2 => (0..3u8, 0..3u8, 0..17u8).prop_map(|(client, vm, case)| Op::Walk { client, vm, case }),
    ]
}

fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut TaskContext::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the walker never waits"),
    }
}

fn context(client: u8, frame: Option<u64>) -> Context {
    let mut received = ReceivedCaps::new();
    if let Some(cptr) = frame {
        let cap = AnyCap::new(CPtr::new(cptr), ObjectKind::Frame);
        received.push(Some(cap)).unwrap();
    }
    Context::new(Badge::new(u64::from(client) + 1), received)
}

/// What the protocol promises: each client's VMs, and the frame lent at each (client, vm, base).
#[derive(Default)]
struct Model {
    vms: HashMap<u8, HashSet<u8>>,
    lent: HashMap<(u8, u8, u64), u64>,
    revoked: HashSet<u64>,
    frames: Vec<u64>,
}

impl Model {
    fn live(&self, client: u8) -> usize {
        self.lent
            .iter()
            .filter(|((c, _, _), frame)| *c == client && !self.revoked.contains(frame))
            .count()
    }
}

/// The pages still lent to one client's VM, as the reference model reads them.
struct StillLent<'a>(&'a Model, u8, u8);

impl GuestMemory for StillLent<'_> {
    fn read_u64(&self, addr: OutputAddr) -> Result<u64, ReadError> {
        let (addr, Self(model, client, vm)) = (addr.get(), self);
        let base = addr & !0xfff;
        match model.lent.get(&(*client, *vm, base)) {
            Some(frame) if !model.revoked.contains(frame) && addr.is_multiple_of(8) => {
                Ok(word(base, ((addr - base) / 8) as usize))
            }
            _ => Err(ReadError::Unbacked),
        }
    }
}

fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    let kernel = HostedKernel::new();
    let host = Host::default();
    let mut walker = Walker::new(host.clone());
    let mut model = Model::default();
    let machine = Machine::new(PaBits::from_bits(u32::from(sample::PA_BITS)).unwrap());
    for op in ops {
        match *op {
            Op::Nest { client, vm } => {
                let got = block_on(walker.nest(
                    &mut context(client, None),
                    VmId::new(vm.into()),
                    sample::PA_BITS,
                ));
                let vms = model.vms.entry(client).or_default();
                let want = if vms.contains(&vm) || vms.len() < VMS_PER_CLIENT {
                    vms.insert(vm);
                    Ok(())
                } else {
                    Err(WalkError::Quota)
                };
                prop_assert_eq!(got, want, "{:?}", op);
            }
            Op::Lend { client, vm, page } => {
                let base = base(page);
                let frame = host.frame(&kernel, base);
                let got = block_on(walker.lend(
                    &mut context(client, Some(frame.cptr().raw())),
                    VmId::new(vm.into()),
                    Ipa::new(base),
                ));
                let nested = model.vms.get(&client).is_some_and(|v| v.contains(&vm));
                let held = model.lent.get(&(client, vm, base));
                let want = if !nested {
                    Err(WalkError::UnknownVm)
                } else if held.is_some_and(|f| !model.revoked.contains(f)) {
                    Err(WalkError::BadArgument)
                } else if model.live(client) >= PAGES_PER_CLIENT {
                    Err(WalkError::Quota)
                } else {
                    model.lent.insert((client, vm, base), frame.cptr().raw());
                    model.frames.push(frame.cptr().raw());
                    Ok(())
                };
                prop_assert_eq!(got, want, "{:?}", op);
            }
            Op::Revoke { n } => {
                if !model.frames.is_empty() {
                    let frame = model.frames[usize::from(n) % model.frames.len()];
                    model.revoked.insert(frame);
                    host.revoke(Cap::from_cptr(CPtr::new(frame)));
                }
            }
            Op::Walk { client, vm, case } => {
                let case = &sample::CASES[usize::from(case)];
                let (vtcr, vttbr) = (Vtcr::new(sample::VTCR), Vttbr::new(case.vttbr));
                let got = block_on(walker.walk(
                    &mut context(client, None),
                    VmId::new(vm.into()),
                    vtcr,
                    vttbr,
                    Ipa::new(case.ipa),
                    case.access,
                ));
                let nested = model.vms.get(&client).is_some_and(|v| v.contains(&vm));
                let want = if nested {
                    let (vtcr, vttbr) = registers(vtcr, vttbr);
                    Ok(outcome(s2walk::reference::s2_translate(
                        &machine,
                        vtcr,
                        vttbr,
                        &StillLent(&model, client, vm),
                        s2walk::Ipa::new(case.ipa),
                        crate::access(case.access),
                    )))
                } else {
                    Err(WalkError::UnknownVm)
                };
                prop_assert_eq!(got, want, "{:?}", op);
            }
        }
    }
    // Whatever happened, a newcomer is served.
    let newcomer = 9;
    let nested = block_on(walker.nest(&mut context(newcomer, None), VmId::new(0), 40));
    prop_assert_eq!(nested, Ok(()));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_answer_is_the_models_whatever_clients_lend_and_revoke(
        ops in prop::collection::vec(op(), 1..400)
    ) {
        run(&ops)?;
    }
}

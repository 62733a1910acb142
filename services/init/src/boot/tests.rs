//! Carrying out hand-made plans against a recording kernel: the invocations init makes, what it
//! writes into frames, and the messages of a plan it cannot carry out.

use super::*;
use capvisor_image::plan::{
    NameKind, PlanHeader, PlanName, Purpose, RetypeKind, encode, encode_op,
};
use std::string::ToString;
use std::vec::Vec;
use zerocopy::FromZeros;

/// Slot 5: a RAM untyped of `ram` bytes; 6: the image's one frame; 7 on: empty.
struct Fake {
    ram: u64,
    calls: Vec<(u64, Invocation, Vec<u64>)>,
    written: Vec<Vec<u8>>,
}

impl Fake {
    fn new(ram: u64) -> Self {
        Self {
            ram,
            calls: Vec::new(),
            written: Vec::new(),
        }
    }

    fn calls_of(&self, invocation: Invocation) -> Vec<(u64, Vec<u64>)> {
        self.calls
            .iter()
            .filter(|(_, i, _)| *i == invocation)
            .map(|(cptr, _, args)| (*cptr, args.clone()))
            .collect()
    }
}

impl Kernel for Fake {
    fn invoke(
        &mut self,
        cptr: u64,
        invocation: Invocation,
        args: &[u64],
    ) -> Result<[u64; 4], KernelError> {
        self.calls.push((cptr, invocation, args.to_vec()));
        match (invocation, cptr) {
            (Invocation::Identify, 5) => Ok([u64::from(ObjectKind::Untyped.code()), 0, 0, 0]),
            (Invocation::Identify, 6) => Ok([u64::from(ObjectKind::Frame.code()), 0, 0, 0]),
            (Invocation::Identify, _) => Err(KernelError::EmptySlot),
            (Invocation::Retype, 5) => {
                let kind = args[0];
                let bytes = if kind == RetypeKind::Untyped as u64 {
                    1 << args[1]
                } else {
                    4096
                };
                self.ram = self
                    .ram
                    .checked_sub(bytes)
                    .ok_or(KernelError::NotEnoughMemory)?;
                Ok([0; 4])
            }
            _ => Ok([0; 4]),
        }
    }

    fn write_scratch(&mut self, bytes: &[u8]) {
        self.written.push(bytes.to_vec());
    }
}

const FIRST_FREE: u64 = 7;

fn plan_bytes(steps: &[Step<'_>], supervisor: u32) -> Vec<u8> {
    let mut header = PlanHeader::new_zeroed();
    header.slot_count = 8;
    header.service_count = 1;
    header.supervisor = supervisor;
    if supervisor != NONE {
        header.flags = capvisor_image::plan::PLAN_SUPERVISED;
    }
    let names = [PlanName::new(NameKind::Service, "greedy", 3)];
    let items: Vec<_> = steps.iter().map(|s| encode_op(s, (0, 0))).collect();
    encode(header, &names, &items, &[])
}

fn step(op: Op<'static>, purpose: Purpose) -> Step<'static> {
    Step {
        op,
        purpose,
        owner: 0,
    }
}

fn service_steps() -> Vec<Step<'static>> {
    vec![
        step(
            Op::Retype {
                slot: 0,
                kind: RetypeKind::CNode,
                bits: 9,
            },
            Purpose::Cnode,
        ),
        step(
            Op::Retype {
                slot: 1,
                kind: RetypeKind::AddressSpace,
                bits: 18,
            },
            Purpose::Space,
        ),
        step(
            Op::Retype {
                slot: 2,
                kind: RetypeKind::Thread,
                bits: 0,
            },
            Purpose::Thread,
        ),
        step(
            Op::Pages {
                slot: 3,
                count: 2,
                source: 0x1000,
                data_size: 5000,
                space: 1,
                ipa: 0x20_0000,
                access: 5,
                cnode: 0,
                dest: 64,
                flags: 0,
            },
            Purpose::Code,
        ),
        step(
            Op::Configure {
                slot: 2,
                cspace: 0,
                space: 1,
                registers: [0x20_0000, 0x40_0000_0000, 0x40_0010_0000],
                priorities: 100 | 100 << 8,
                fault: NONE,
            },
            Purpose::Thread,
        ),
        step(
            Op::Name {
                slot: 2,
                service: 1,
            },
            Purpose::Thread,
        ),
        step(Op::Resume { slot: 2 }, Purpose::Start),
    ]
}

fn payload() -> Vec<u8> {
    let mut payload = vec![0u8; 2 << 20];
    for (i, byte) in payload[0x1000..0x1000 + 5000].iter_mut().enumerate() {
        *byte = i as u8 | 1;
    }
    payload
}

#[test]
fn the_kernels_capabilities_are_found_and_the_image_mapped_read_only() {
    let mut fake = Fake::new(1 << 30);
    let given = Given::find(&mut fake).unwrap();
    assert_eq!((&given.ram[..], &given.image[..]), (&[5][..], &[6][..]));
    assert_eq!(given.first_free, FIRST_FREE);
    assert_eq!(given.map_image(&mut fake).unwrap(), 2 << 20);
    assert_eq!(
        fake.calls_of(Invocation::Map),
        [(6, vec![SPACE, PAYLOAD_WINDOW, 1, 0])]
    );
}

#[test]
fn a_service_is_made_with_ordinary_invocations() {
    let mut fake = Fake::new(1 << 30);
    let given = Given::find(&mut fake).unwrap();
    let bytes = plan_bytes(&service_steps(), NONE);
    let payload = payload();
    let plan = Plan::decode(&bytes, payload.len() as u64).unwrap();
    fake.calls.clear();
    let made = carry_out(&mut fake, &given, plan, &payload).unwrap();
    let slot = |n: u64| FIRST_FREE + n;
    // Retypes from the untyped into plan slots: CNode, space, thread, then the two frames.
    let retyped: Vec<u64> = fake
        .calls_of(Invocation::Retype)
        .iter()
        .map(|(_, args)| args[3])
        .collect();
    assert_eq!(retyped, [slot(0), slot(1), slot(2), slot(3), slot(4)]);
    // Each frame filled through the scratch page with its share of the 5000 bytes.
    assert_eq!(fake.written.len(), 2);
    assert_eq!(fake.written[0][..], payload[0x1000..0x2000]);
    assert_eq!(fake.written[1][..], payload[0x2000..0x1000 + 5000]);
    // Code: cleaned to PoC and the instruction cache invalidated, then mapped in the service's
    // space and moved to its CNode.
    let maintenance = fake.calls_of(Invocation::CacheMaintenance);
    assert_eq!(maintenance.len(), 4);
    let maps = fake.calls_of(Invocation::Map);
    assert!(maps.contains(&(slot(3), vec![slot(1), 0x20_0000, 5, 0])));
    assert!(maps.contains(&(slot(4), vec![slot(1), 0x20_1000, 5, 0])));
    let moves = fake.calls_of(Invocation::Move);
    assert_eq!(
        moves,
        [(slot(0), vec![64, slot(3)]), (slot(0), vec![65, slot(4)])]
    );
    let configure = fake.calls_of(Invocation::ThreadConfigure);
    assert_eq!(
        configure,
        [(
            slot(2),
            vec![
                0x20_0000,
                0x40_0000_0000,
                0x40_0010_0000,
                100 | 100 << 8,
                slot(0),
                slot(1),
                0
            ]
        )]
    );
    assert_eq!(
        fake.calls_of(Invocation::IrqControlNameThread),
        [(IRQ, vec![slot(2), 1])]
    );
    assert_eq!(fake.calls_of(Invocation::Resume), [(slot(2), vec![])]);
    assert_eq!(made.started, 1);
    assert_eq!(&made.services[..], &[(1, slot(2), "greedy")]);
    assert_eq!(made.endpoint, None);
}

#[test]
fn a_supervised_plan_names_init_s_endpoint() {
    let mut fake = Fake::new(1 << 30);
    let given = Given::find(&mut fake).unwrap();
    let mut steps = service_steps();
    steps.push(step(
        Op::Retype {
            slot: 7,
            kind: RetypeKind::Endpoint,
            bits: 0,
        },
        Purpose::Endpoint,
    ));
    let bytes = plan_bytes(&steps, 7);
    let payload = payload();
    let plan = Plan::decode(&bytes, payload.len() as u64).unwrap();
    let made = carry_out(&mut fake, &given, plan, &payload).unwrap();
    assert_eq!(made.endpoint, Some(FIRST_FREE + 7));
}

#[test]
fn a_step_that_fails_names_the_manifest_item_and_what_it_was_for() {
    let mut fake = Fake::new(1 << 30);
    let given = Given::find(&mut fake).unwrap();
    let greedy = [step(
        Op::Retype {
            slot: 0,
            kind: RetypeKind::Untyped,
            bits: 31,
        },
        Purpose::Untyped,
    )];
    let bytes = plan_bytes(&greedy, NONE);
    let payload = payload();
    let plan = Plan::decode(&bytes, payload.len() as u64).unwrap();
    let refused = carry_out(&mut fake, &given, plan, &payload).unwrap_err();
    assert_eq!(
        refused.failure,
        Failure::Kernel(KernelError::NotEnoughMemory)
    );
    assert_eq!(
        refused.to_string(),
        "service 'greedy' (manifest line 3): out of memory for its untyped memory \
         (step 0: retype Untyped (31) into p0)"
    );
    // A step this init does not carry out yet is refused, not skipped.
    let device = [step(
        Op::Device {
            slot: 0,
            locator: "x",
            compatible: false,
            attributes: 1,
        },
        Purpose::Device,
    )];
    let mut header = PlanHeader::new_zeroed();
    header.slot_count = 1;
    header.supervisor = NONE;
    let names = [PlanName::new(NameKind::Device, "rtc", 5)];
    let items: Vec<_> = device.iter().map(|s| encode_op(s, (0, 1))).collect();
    let bytes = encode(header, &names, &items, b"x");
    let plan = Plan::decode(&bytes, payload.len() as u64).unwrap();
    let refused = carry_out(&mut fake, &given, plan, &payload).unwrap_err();
    assert_eq!(refused.failure, Failure::Unsupported);
    assert!(
        refused
            .to_string()
            .starts_with("device 'rtc' (manifest line 5): init cannot make its device region yet"),
        "{refused}"
    );
}

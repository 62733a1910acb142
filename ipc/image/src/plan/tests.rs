//! The plan decoder on hand-made plans: every step kind round-trips, every kind of malformed
//! plan is refused with the step that is wrong, and arbitrary or damaged bytes never panic.

use super::*;
use proptest::prelude::*;
use std::vec::Vec;

const PAYLOAD: u64 = 4 << 20;

fn steps() -> Vec<Step<'static>> {
    let step = |op, purpose| Step {
        op,
        purpose,
        owner: 0,
    };
    vec![
        step(
            Op::Carveout {
                slot: 0,
                base: 0x7000_0000,
                size: 2 << 20,
                cacheable: true,
            },
            Purpose::Carveout,
        ),
        step(
            Op::Device {
                slot: 1,
                locator: "arm,pl031",
                compatible: true,
                attributes: 1,
            },
            Purpose::Device,
        ),
        step(
            Op::Retype {
                slot: 2,
                kind: RetypeKind::CNode,
                bits: 9,
            },
            Purpose::Cnode,
        ),
        step(
            Op::Retype {
                slot: 3,
                kind: RetypeKind::AddressSpace,
                bits: 18,
            },
            Purpose::Space,
        ),
        step(
            Op::Retype {
                slot: 4,
                kind: RetypeKind::Thread,
                bits: 0,
            },
            Purpose::Thread,
        ),
        step(
            Op::Retype {
                slot: 5,
                kind: RetypeKind::Endpoint,
                bits: 0,
            },
            Purpose::Endpoint,
        ),
        step(
            Op::Copy {
                slot: 2,
                cnode: 2,
                dest: 1,
                rights: 0x1f,
            },
            Purpose::Cnode,
        ),
        step(
            Op::Mint {
                slot: 5,
                cnode: INIT_CNODE,
                dest: 6,
                rights: 2,
                badge: 1,
            },
            Purpose::FaultEndpoint,
        ),
        step(
            Op::Pages {
                slot: 7,
                count: 2,
                source: 0x1000,
                data_size: 5000,
                space: 3,
                ipa: 0x20_0000,
                access: 0b101,
                cnode: 2,
                dest: 64,
                flags: 0,
            },
            Purpose::Code,
        ),
        step(
            Op::Pages {
                slot: 7,
                count: 1,
                source: 0x3000,
                data_size: 100,
                space: NONE,
                ipa: 0,
                access: 0,
                cnode: NONE,
                dest: 0,
                flags: 0,
            },
            Purpose::BootInfo,
        ),
        step(Op::InfoPlatform { slot: 7 }, Purpose::BootInfo),
        step(
            Op::InfoDevice {
                slot: 7,
                region: 1,
                index: 0,
            },
            Purpose::BootInfo,
        ),
        step(
            Op::InfoDevice {
                slot: 7,
                region: 0,
                index: 1,
            },
            Purpose::BootInfo,
        ),
        step(
            Op::InfoDtb {
                slot: 7,
                space: 3,
                ipa: 0x20_0000_1000,
            },
            Purpose::BootInfo,
        ),
        step(
            Op::Irqs {
                slot: 1,
                cnode: 2,
                info: 7,
                dest: 40,
                guest: 0,
            },
            Purpose::Irq,
        ),
        step(
            Op::Map {
                slot: 7,
                space: 3,
                ipa: 0x20_0000_0000,
                access: 1,
                memtype: 0,
            },
            Purpose::BootInfo,
        ),
        step(Op::ImageFrame { slot: 8, block: 1 }, Purpose::GuestPayload),
        step(Op::IdentityRam { slot: 9, bits: 24 }, Purpose::IdentityRam),
        step(
            Op::InfoGuestRam {
                slot: 7,
                region: 9,
                index: 0,
            },
            Purpose::BootInfo,
        ),
        step(
            Op::Retype {
                slot: 10,
                kind: RetypeKind::Vcpu,
                bits: 0,
            },
            Purpose::Vcpu,
        ),
        step(
            Op::Retype {
                slot: 11,
                kind: RetypeKind::Vm,
                bits: 16,
            },
            Purpose::Vm,
        ),
        step(
            Op::Retype {
                slot: 12,
                kind: RetypeKind::Thread,
                bits: 0,
            },
            Purpose::VcpuThread,
        ),
        step(
            Op::Configure {
                slot: 12,
                cspace: 2,
                space: 11,
                registers: [0; 3],
                priorities: 99 | 99 << 8,
                fault: 6,
            },
            Purpose::VcpuThread,
        ),
        step(Op::BindVcpu { slot: 12, vcpu: 10 }, Purpose::VcpuThread),
        step(
            Op::Configure {
                slot: 4,
                cspace: 2,
                space: 3,
                registers: [0x20_0010, 0x40_0000_0000, 0x40_0010_0000],
                priorities: 100 | 100 << 8,
                fault: NONE,
            },
            Purpose::Thread,
        ),
        step(
            Op::Name {
                slot: 4,
                service: 1,
            },
            Purpose::Thread,
        ),
        step(
            Op::Copy {
                slot: IRQ_CONTROL,
                cnode: 2,
                dest: 4,
                rights: 0x1f,
            },
            Purpose::Root,
        ),
        step(
            Op::GiveRam {
                cnode: 2,
                first: 5,
                end: 64,
            },
            Purpose::Root,
        ),
        step(Op::Resume { slot: 4 }, Purpose::Start),
        step(
            Op::Move {
                slot: 8,
                cnode: 2,
                dest: 100,
            },
            Purpose::GuestPayload,
        ),
    ]
}

fn encode_steps(steps: &[Step<'_>], header: PlanHeader) -> Vec<u8> {
    let strings = b"arm,pl031";
    let items: Vec<PlanItem> = steps
        .iter()
        .map(|step| encode_op(step, (0, strings.len() as u64)))
        .collect();
    let names = [PlanName::new(NameKind::Service, "memmgr", 12)];
    encode(header, &names, &items, strings)
}

fn header() -> PlanHeader {
    let mut header = PlanHeader::new_zeroed();
    header.slot_count = 16;
    header.service_count = 1;
    header.supervisor = NONE;
    header
}

#[test]
fn every_step_round_trips() {
    let steps = steps();
    let bytes = encode_steps(&steps, header());
    let plan = Plan::decode(&bytes, PAYLOAD).unwrap();
    let decoded: Vec<Step<'_>> = plan.steps().collect();
    assert_eq!(decoded, steps);
    assert_eq!(
        plan.names()[0].to_string(),
        "service 'memmgr' (manifest line 12)"
    );
    assert!(!plan.supervised());
}

#[test]
fn inspect_lines_say_what_each_step_does() {
    let steps = steps();
    assert_eq!(
        steps[8].op.to_string(),
        "2 page(s) into p7.., 5000 bytes from payload 0x1000, mapped r-x at 0x200000 in p3, moved \
         to slot 64 of p2"
    );
    assert_eq!(
        steps[22].op.to_string(),
        "configure p12 entry 0x0 sp 0x0 ipc buffer 0x0 priority 99 max 99 cspace p2 space p11 \
         fault endpoint p6"
    );
    assert_eq!(Purpose::Stack.text(), "its stack");
}

/// The plan of `steps` with step `index` replaced by `op`: refused as that step.
fn refused_at(index: usize, op: Op<'static>) -> Option<PlanError> {
    let mut steps = steps();
    steps[index].op = op;
    Plan::decode(&encode_steps(&steps, header()), PAYLOAD).err()
}

#[test]
fn references_must_name_live_objects_of_the_right_kind() {
    let item = |i| Some(PlanError::Item(i));
    // A slot made twice.
    assert_eq!(
        refused_at(
            3,
            Op::Retype {
                slot: 2,
                kind: RetypeKind::Thread,
                bits: 0
            }
        ),
        item(3)
    );
    // Configure of something that is not a thread, in a CNode that is not one.
    let configure = |slot, cspace| Op::Configure {
        slot,
        cspace,
        space: 3,
        registers: [0; 3],
        priorities: 0,
        fault: NONE,
    };
    assert_eq!(refused_at(24, configure(2, 2)), item(24));
    assert_eq!(refused_at(24, configure(4, 3)), item(24));
    // A reference beyond the slots, or to a slot emptied by a move (p7's pages moved away
    // before step 9 made p7 again: using p8 after its move is refused).
    assert_eq!(refused_at(28, Op::Resume { slot: 99 }), item(28));
    let mut steps = steps();
    steps.push(Step {
        op: Op::Map {
            slot: 8,
            space: 3,
            ipa: 0,
            access: 1,
            memtype: 0,
        },
        purpose: Purpose::Code,
        owner: 0,
    });
    let last = steps.len() - 1;
    assert_eq!(
        Plan::decode(&encode_steps(&steps, header()), PAYLOAD).err(),
        item(last)
    );
    // A payload range beyond the payload; a block beyond it.
    let pages = |source, data_size| Op::Pages {
        slot: 7,
        count: 1,
        source,
        data_size,
        space: NONE,
        ipa: 0,
        access: 0,
        cnode: NONE,
        dest: 0,
        flags: 0,
    };
    assert_eq!(refused_at(9, pages(PAYLOAD - 10, 11)), item(9));
    assert_eq!(refused_at(9, pages(u64::MAX, 2)), item(9));
    assert_eq!(
        refused_at(16, Op::ImageFrame { slot: 8, block: 2 }),
        item(16)
    );
    // Numbers out of range: a carve-out not naturally aligned, identity RAM below 2 MiB.
    assert_eq!(
        refused_at(
            0,
            Op::Carveout {
                slot: 0,
                base: 0x7010_0000,
                size: 2 << 20,
                cacheable: true
            }
        ),
        item(0)
    );
    assert_eq!(
        refused_at(17, Op::IdentityRam { slot: 9, bits: 20 }),
        item(17)
    );
    // Moving into init's own CNode.
    assert_eq!(
        refused_at(
            29,
            Op::Move {
                slot: 8,
                cnode: INIT_CNODE,
                dest: 13
            }
        ),
        item(29)
    );
}

#[test]
fn headers_and_names_are_checked() {
    let bytes = encode_steps(&steps(), header());
    let mut bad = bytes.clone();
    bad[0] = b'X';
    assert_eq!(Plan::decode(&bad, PAYLOAD).err(), Some(PlanError::Magic));
    let mut bad = bytes.clone();
    bad[8] = 9;
    assert_eq!(
        Plan::decode(&bad, PAYLOAD).err(),
        Some(PlanError::Version(9))
    );
    // Supervised, but the supervisor slot holds no endpoint.
    let mut supervised = header();
    supervised.flags = PLAN_SUPERVISED;
    supervised.supervisor = 2;
    assert_eq!(
        Plan::decode(&encode_steps(&steps(), supervised), PAYLOAD).err(),
        Some(PlanError::Header)
    );
    supervised.supervisor = 6;
    assert!(
        Plan::decode(&encode_steps(&steps(), supervised), PAYLOAD)
            .unwrap()
            .supervised()
    );
    // A name of unknown kind.
    let mut bad = bytes.clone();
    bad[64] = 77;
    assert_eq!(Plan::decode(&bad, PAYLOAD).err(), Some(PlanError::Name(0)));
    assert_eq!(
        Plan::decode(&bytes[..bytes.len() - 1], PAYLOAD).err(),
        Some(PlanError::Truncated)
    );
}

proptest! {
    /// Arbitrary bytes and damaged valid plans never panic the decoder; whatever it accepts
    /// encodes back to the same items.
    #[test]
    fn decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400),
                             flips in proptest::collection::vec((0usize..2200, any::<u8>()), 1..6)) {
        let _ = Plan::decode(&bytes, PAYLOAD);
        let mut damaged = encode_steps(&steps(), header());
        for (at, value) in flips {
            if let Some(b) = damaged.get_mut(at) { *b = value; }
        }
        if let Ok(plan) = Plan::decode(&damaged, PAYLOAD) {
            let offset = 64 + 40 * plan.names().len();
            for (n, step) in plan.steps().enumerate() {
                let strings = plan.header.strings_size as u64;
                let mut item = encode_op(&step, (0, 0));
                let stored = PlanItem::read_from_bytes(&damaged[offset + 64 * n..offset + 64 * (n + 1)]).unwrap();
                if let Op::Device { .. } = step.op {
                    item.args[0] = stored.args[0];
                    item.args[1] = stored.args[1];
                    prop_assert!(stored.args[0] + stored.args[1] <= strings);
                }
                prop_assert_eq!(item, stored);
            }
            prop_assert_eq!(plan.steps().count(), plan.len());
        }
    }
}

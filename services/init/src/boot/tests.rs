//! Carrying out hand-made plans against a recording kernel: the invocations init makes, what it
//! writes into frames, and the messages of a plan it cannot carry out.

use super::*;
use capvisor_image::plan::{
    NameKind, PlanHeader, PlanName, Purpose, RetypeKind, encode, encode_op,
};
use std::string::ToString;
use std::vec::Vec;
use zerocopy::{FromBytes, FromZeros};

/// Slot 5: a RAM untyped of `ram` bytes; 6: the image's one frame; 7: the device untyped of
/// QEMU virt's PL031 page; 8 on: empty.
struct Fake {
    ram: u64,
    calls: Vec<(u64, Invocation, Vec<u64>)>,
    written: Vec<(usize, Vec<u8>)>,
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
            (Invocation::Identify, DEVICE_SLOT) => {
                Ok([u64::from(ObjectKind::Untyped.code()), 0, 0, 0x1000])
            }
            (Invocation::UntypedDescribe, 5) => Ok([0x4000_0000, self.ram, 0, 0]),
            (Invocation::UntypedDescribe, DEVICE_SLOT) => Ok([0x0901_0000, 0x1000, 1, 0]),
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

    fn write_scratch(&mut self, offset: usize, bytes: &[u8]) {
        self.written.push((offset, bytes.to_vec()));
    }
}

const DEVICE_SLOT: u64 = 7;
const FIRST_FREE: u64 = 8;

/// QEMU `virt`'s device tree (`-machine dumpdtb`), as the kernel copies it after the page.
const DTB: &[u8] = include_bytes!("../../../devbroker/tests/qemu-virt-max.dtb");

fn platform() -> Platform<'static> {
    Platform {
        page: PLATFORM,
        dtb: DTB,
    }
}

/// A platform with FWB and DIC, as the kernel's platform page says it.
const PLATFORM: PlatformPage = PlatformPage {
    magic: PlatformPage::MAGIC,
    version: PlatformPage::VERSION,
    flags: capvisor_ipc::bootinfo::FLAG_FWB | capvisor_ipc::bootinfo::FLAG_DIC,
    smccc_workarounds: [1, -1, 0],
    reserved: 0,
    dtb_size: 0,
};

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
    let made = carry_out(&mut fake, (&given, platform()), plan, &payload).unwrap();
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
    assert_eq!(fake.written[0], (0, payload[0x1000..0x2000].to_vec()));
    assert_eq!(
        fake.written[1],
        (0, payload[0x2000..0x1000 + 5000].to_vec())
    );
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
    let made = carry_out(&mut fake, (&given, platform()), plan, &payload).unwrap();
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
    let refused = carry_out(&mut fake, (&given, platform()), plan, &payload).unwrap_err();
    assert_eq!(
        refused.failure,
        Failure::Kernel(KernelError::NotEnoughMemory)
    );
    assert_eq!(
        refused.to_string(),
        "service 'greedy' (manifest line 3): out of memory for its untyped memory \
         (step 0: retype Untyped (31) into p0)"
    );
}

/// A one-step plan for device `name` at `locator`.
fn device_plan(name: &str, locator: &'static str, compatible: bool) -> Vec<u8> {
    let device = [step(
        Op::Device {
            slot: 0,
            locator,
            compatible,
            attributes: 2,
        },
        Purpose::Device,
    )];
    let mut header = PlanHeader::new_zeroed();
    header.slot_count = 1;
    header.supervisor = NONE;
    let names = [PlanName::new(NameKind::Device, name, 5)];
    let strings = (0, locator.len() as u64);
    let items: Vec<_> = device.iter().map(|s| encode_op(s, strings)).collect();
    encode(header, &names, &items, locator.as_bytes())
}

#[test]
fn a_device_is_found_in_the_device_tree_and_its_region_given_its_memory_types() {
    let mut fake = Fake::new(1 << 30);
    let given = Given::find(&mut fake).unwrap();
    let payload = payload();
    let bytes = device_plan("rtc", "arm,pl031", true);
    let plan = Plan::decode(&bytes, payload.len() as u64).unwrap();
    fake.calls.clear();
    carry_out(&mut fake, (&given, platform()), plan, &payload).unwrap();
    // QEMU virt's PL031 is at 0x9010000: the kernel's device untyped for its page (slot 8).
    assert_eq!(
        fake.calls_of(Invocation::UntypedSetMemory),
        [(IRQ, vec![DEVICE_SLOT, 2])]
    );
    assert_eq!(
        fake.calls_of(Invocation::Copy),
        [(CNODE, vec![FIRST_FREE, DEVICE_SLOT, 0b1_1111])]
    );
}

#[test]
fn a_device_missing_on_this_board_is_refused_naming_it() {
    let mut fake = Fake::new(1 << 30);
    let given = Given::find(&mut fake).unwrap();
    let payload = payload();
    for (locator, compatible) in [("acme,no-such-device", true), ("/no@0", false)] {
        let bytes = device_plan("sensor", locator, compatible);
        let plan = Plan::decode(&bytes, payload.len() as u64).unwrap();
        let refused = carry_out(&mut fake, (&given, platform()), plan, &payload).unwrap_err();
        assert_eq!(refused.failure, Failure::DeviceNotFound);
        assert!(
            refused.to_string().starts_with(
                "device 'sensor' (manifest line 5): its device region: no such device \
                 on this board"
            ),
            "{refused}"
        );
    }
    // The board's GPIO controller is there, but the kernel gave no region for it here.
    let bytes = device_plan("gpio", "arm,pl061", true);
    let plan = Plan::decode(&bytes, payload.len() as u64).unwrap();
    let refused = carry_out(&mut fake, (&given, platform()), plan, &payload).unwrap_err();
    assert_eq!(refused.failure, Failure::DeviceNotFound);
}

#[test]
fn a_vcpu_is_bound_and_a_boot_info_page_completed_with_the_platform() {
    let mut fake = Fake::new(1 << 30);
    let given = Given::find(&mut fake).unwrap();
    let mut steps = service_steps();
    steps.truncate(3);
    let retype = |slot, kind| {
        step(
            Op::Retype {
                slot,
                kind,
                bits: 0,
            },
            Purpose::Vcpu,
        )
    };
    steps.push(retype(3, RetypeKind::Vcpu));
    steps.push(step(Op::BindVcpu { slot: 2, vcpu: 3 }, Purpose::VcpuThread));
    steps.push(step(
        Op::Pages {
            slot: 4,
            count: 1,
            source: 0x1000,
            data_size: 16,
            space: NONE,
            ipa: 0,
            access: 0,
            cnode: NONE,
            dest: 0,
            flags: 0,
        },
        Purpose::BootInfo,
    ));
    steps.push(step(Op::InfoPlatform { slot: 4 }, Purpose::BootInfo));
    let bytes = plan_bytes(&steps, NONE);
    let payload = payload();
    let plan = Plan::decode(&bytes, payload.len() as u64).unwrap();
    fake.calls.clear();
    carry_out(&mut fake, (&given, platform()), plan, &payload).unwrap();
    let slot = |n: u64| FIRST_FREE + n;
    assert_eq!(
        fake.calls_of(Invocation::ThreadBindVcpu),
        [(slot(2), vec![slot(3)])]
    );
    // The page's copy from the payload, then the platform's flags and SMCCC answers over it,
    // each through the scratch mapping, unmapped afterwards.
    let mut page = vec![0u8; 4096];
    for (offset, bytes) in &fake.written {
        page[*offset..offset + bytes.len()].copy_from_slice(bytes);
    }
    assert_eq!(fake.written[0], (0, payload[0x1000..0x1010].to_vec()));
    let completed = BootInfo::read_from_prefix(&page).unwrap().0;
    assert_eq!(completed.flags, PLATFORM.flags);
    assert_eq!(completed.smccc_workarounds, [1, -1, 0]);
    let maps = fake.calls_of(Invocation::Map);
    assert_eq!(
        maps.last(),
        Some(&(slot(4), vec![SPACE, SCRATCH_PAGE, 3, 0]))
    );
    assert_eq!(
        fake.calls_of(Invocation::Unmap).len(),
        fake.calls_of(Invocation::Map).len()
    );
}

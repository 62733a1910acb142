//! The plans of small manifests: checked as init checks them, with the manifest's stacks,
//! priorities, grants and guests where the plan says they are.

use super::{GuestPayloads, Inputs, Placed, plan};
use capvisor_image::plan::{NameKind, Op, Plan, Purpose};
use capvisor_image::service::{ACCESS_EXECUTE, ACCESS_READ, NewSegment, STACK_TOP, encode};

const MANIFEST: &str = r#"
name = "plan"
[[service]]
name = "memmgr"
crate = "memmgr"
priority = 30
memory = "1M"
stack = "128K"
caps = [{ untyped = "1M" }]
[[service]]
name = "vmm"
crate = "vmm"
priority = 20
memory = "1M"
caps = [{ endpoint = "memmgr" }]
[[guest]]
name = "g"
crate = "guest-mmu"
memory = "16M"
vmm = "vmm"
"#;

/// A service entry: one code page at 2 MiB.
fn service(stack: u64) -> Vec<u8> {
    let code = NewSegment {
        ipa: 0x20_0000,
        pages: 1,
        access: ACCESS_READ | ACCESS_EXECUTE,
        data: vec![0xd5; 100],
    };
    encode(0x20_0000, stack, &[code])
}

/// The plan of `text` with each service's entry at a page of its own and the guest's kernel
/// on a 2 MiB block.
fn planned(text: &str, supervised: bool) -> Result<(Vec<u8>, u64), String> {
    let manifest = capvisor_manifest::parse(text, std::path::Path::new("plan.toml")).unwrap();
    let entries: Vec<Vec<u8>> = manifest.services.iter().map(|s| service(s.stack)).collect();
    let kernel = vec![1u8; 5000];
    let services = entries
        .iter()
        .enumerate()
        .map(|(i, bytes)| Placed {
            offset: (i as u64 + 1) << 16,
            bytes,
        })
        .collect();
    let guests = manifest
        .guests
        .iter()
        .map(|_| GuestPayloads {
            kernel: Placed {
                offset: 2 << 20,
                bytes: &kernel,
            },
            dtb: None,
            initrd: None,
            cmdline: None,
        })
        .collect();
    let payload_size = 4 << 20;
    let inputs = Inputs {
        manifest: &manifest,
        services,
        first_entry: u64::from(!supervised),
        guests,
        boot_infos: vec![0; manifest.services.len()],
        payload_size,
    };
    plan(&inputs, supervised).map(|p| (p.plan, payload_size))
}

#[test]
fn a_plan_is_checked_and_names_the_manifest_items() {
    let (bytes, size) = planned(MANIFEST, false).unwrap();
    let plan = Plan::decode(&bytes, size).unwrap();
    assert!(!plan.supervised());
    let names: Vec<String> = plan.names().iter().map(ToString::to_string).collect();
    assert_eq!(names[0], "service 'memmgr' (manifest line 4)");
    assert_eq!(names[1], "service 'vmm' (manifest line 11)");
    assert_eq!(names[2], "guest 'g' (manifest line 17)");
    assert_eq!(
        plan.names().last().map(|n| n.kind),
        Some(NameKind::Init as u32)
    );
    assert_eq!(plan.steps().count(), plan.len());
}

#[test]
fn the_manifest_stack_is_honoured() {
    let (bytes, size) = planned(MANIFEST, false).unwrap();
    let plan = Plan::decode(&bytes, size).unwrap();
    let stacks: Vec<(u32, u64, u64)> = plan
        .steps()
        .filter(|s| s.purpose == Purpose::Stack)
        .filter_map(|s| match s.op {
            Op::Pages { count, ipa, .. } => Some((s.owner, count, ipa)),
            _ => None,
        })
        .collect();
    // memmgr asked for 128 KiB; vmm has the default, 64 KiB.
    assert_eq!(
        stacks,
        [
            (0, 32, STACK_TOP - (128 << 10)),
            (1, 16, STACK_TOP - (64 << 10))
        ]
    );
}

#[test]
fn priorities_grants_and_the_guest_are_planned() {
    let (bytes, size) = planned(MANIFEST, false).unwrap();
    let plan = Plan::decode(&bytes, size).unwrap();
    let configured: Vec<(u32, u64)> = plan
        .steps()
        .filter_map(|s| match s.op {
            Op::Configure { priorities, .. } => Some((s.owner, priorities)),
            _ => None,
        })
        .collect();
    // The first service keeps the root's maximum priority; the others their own.
    assert!(configured.contains(&(0, 30 | 255 << 8)));
    assert!(configured.contains(&(1, 20 | 20 << 8)));
    // vmm's endpoint of memmgr is minted with vmm's badge (its index plus one); memmgr's 1 MiB
    // of untyped is retyped and copied to it.
    let minted = plan.steps().any(|s| {
        s.owner == 1 && s.purpose == Purpose::Grant && matches!(s.op, Op::Mint { badge: 2, .. })
    });
    assert!(minted);
    let untyped = plan.steps().any(|s| {
        s.owner == 0
            && matches!(
                s.op,
                Op::Retype {
                    kind: capvisor_image::plan::RetypeKind::Untyped,
                    bits: 20,
                    ..
                }
            )
    });
    assert!(untyped);
    let guest = |purpose| {
        plan.steps()
            .any(|s| s.owner == 2 && s.purpose == purpose && matches!(s.op, Op::Retype { .. }))
    };
    assert!(guest(Purpose::Vm) && guest(Purpose::Vcpu));
    // Both services start, in manifest order, at the end.
    let resumed: Vec<u32> = plan
        .steps()
        .filter(|s| matches!(s.op, Op::Resume { .. }))
        .map(|s| s.owner)
        .collect();
    assert_eq!(resumed, [0, 1]);
}

#[test]
fn a_supervised_plan_faults_to_init() {
    let text = r#"
name = "supervised"
[[service]]
name = "init"
crate = "svc-init"
priority = 200
memory = "1M"
[[service]]
name = "hello"
crate = "hello"
priority = 100
memory = "1M"
"#;
    let (bytes, size) = planned(text, true).unwrap();
    let plan = Plan::decode(&bytes, size).unwrap();
    assert!(plan.supervised());
    let faults: Vec<u64> = plan
        .steps()
        .filter_map(|s| match s.op {
            Op::Mint { badge, .. } if s.purpose == Purpose::FaultEndpoint => Some(badge),
            _ => None,
        })
        .collect();
    assert_eq!(
        faults,
        [2],
        "hello's faults reach init badged with its index plus one"
    );
    let configured = plan.steps().any(
        |s| matches!(s.op, Op::Configure { fault, .. } if fault != capvisor_image::plan::NONE),
    );
    assert!(configured);
}

#[test]
fn a_carveout_init_cannot_make_is_refused_by_name() {
    let text = r#"
name = "carveout"
[[carveout]]
name = "odd"
base = 0x7000_0000
size = "3M"
[[service]]
name = "hello"
crate = "hello"
priority = 100
memory = "1M"
caps = [{ carveout = "odd" }]
"#;
    let error = planned(text, false).unwrap_err();
    assert!(
        error.starts_with(
            "carve-out 'odd' (manifest line 4): init makes a carve-out one untyped region"
        ),
        "{error}"
    );
}

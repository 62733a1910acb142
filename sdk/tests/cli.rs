//! The `capvisor` command as a user runs it: `capvisor run` builds the default image, boots it,
//! streams the console and exits with the system's status.

use std::process::Command;

fn capvisor(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_capvisor"))
        .args(args)
        .output()
        .expect("run capvisor");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn run_cpu(cpu: &str, expect: &str) {
    let (code, stdout, stderr) = capvisor(&["run", "--cpu", cpu, "--timeout", "60"]);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("capvisor: platform "))
        .unwrap_or_else(|| panic!("no platform line in:\n{stdout}"));
    assert!(line.contains(expect), "{line}");
    assert!(line.ends_with(" gic=v3"), "{line}");
    assert!(
        stderr.contains("capvisor: exit status 0 (success)"),
        "{stderr}"
    );
}

#[test]
fn run_cortex_a710_has_fwb_without_dic() {
    run_cpu("cortex-a710", " fwb=1 dic=0 ");
}

#[test]
fn run_neoverse_n1_has_neither() {
    run_cpu("neoverse-n1", " fwb=0 dic=0 ");
}

#[test]
fn run_max_has_fwb_and_dic() {
    run_cpu("max", " fwb=1 dic=1 ");
}

#[test]
fn run_passes_on_the_kernel_fault_status() {
    let (code, stdout, stderr) = capvisor(&[
        "run",
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/images/fault-data-abort.toml"
        ),
    ]);
    assert_eq!(code, 1, "stdout:\n{stdout}\nstderr:\n{stderr}");
    // The faulting address is resolved to its source line.
    assert!(
        stdout.contains("inlined into capvisor_kernel::selftest::run at "),
        "{stdout}"
    );
    assert!(stdout.contains("kernel/src/selftest.rs:"), "{stdout}");
}

#[test]
fn bad_manifest_is_a_clear_error() {
    let (code, _, stderr) = capvisor(&["run", "images/does-not-exist.toml"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("capvisor: error: "), "{stderr}");
    assert!(stderr.contains("does-not-exist.toml"), "{stderr}");
}

#[test]
fn unknown_cpu_count_is_refused_by_clap() {
    let (code, _, stderr) = capvisor(&["run", "--smp", "0"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--smp"), "{stderr}");
}

#[test]
fn bench_reports_json_with_floors() {
    let (code, stdout, stderr) = capvisor(&["bench", "--json", "--cpu", "cortex-a57"]);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let json: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(json["cpu"], "cortex-a57");
    let results = json["results"].as_array().expect("results");
    let null = results
        .iter()
        .find(|r| r["name"] == "null_syscall")
        .expect("null_syscall");
    let (instructions, floor) = (
        null["instructions"].as_u64().unwrap(),
        null["floor"].as_u64().unwrap(),
    );
    // A round trip EL0 -> EL2 -> EL0 takes at least the exception entry and return.
    assert!(instructions > floor + 20, "{null}");
    assert_eq!(null["net"].as_u64().unwrap(), instructions - floor);
    // The boot row: the counter as the first service's first instruction read it, from reset.
    let boot = results
        .iter()
        .find(|r| r["name"] == "boot_to_first_service")
        .expect("boot_to_first_service");
    assert!(boot["instructions"].as_u64().unwrap() > 0, "{boot}");
    // The guest rows: an hvc through the EL0 VMM costs more than a null syscall (two IPC
    // transfers and two world switches), and a stage-2 fault through the memory manager more still.
    let row = |name: &str| {
        results
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("no {name} row in {stdout}"))["instructions"]
            .as_u64()
            .unwrap()
    };
    assert!(row("guest_hvc_round_trip") > instructions, "{stdout}");
    assert!(
        row("guest_s2_fault_memmgr") > row("guest_hvc_round_trip"),
        "{stdout}"
    );
}

#[test]
fn run_trace_prints_each_maintenance_operation_and_the_counters() {
    let manifest = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/images/guest-icache.toml"
    );
    let (code, stdout, stderr) = capvisor(&[
        "run",
        manifest,
        "--cpu",
        "cortex-a57",
        "--trace",
        "--timeout",
        "60",
    ]);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    // Without FWB or DIC: a PoC clean before the first mapping, an I-cache invalidation for
    // an instruction fault, each traced as it happens, then the VM's counters.
    for op in ["map", "clean-poc", "icache"] {
        assert!(
            stdout.contains(&format!(" {op} ipa=0x")) && stdout.contains("capvisor: trace vm"),
            "no traced {op}:\n{stdout}"
        );
    }
    assert!(stdout.contains(" stats: vmid="), "{stdout}");
    assert!(stdout.contains("guest icache: PASS"), "{stdout}");
}

#[test]
fn inspect_lists_entries_and_refuses_corruption() {
    let (code, _, stderr) = capvisor(&["build", "-o", "../target/images/inspect-test.img"]);
    assert_eq!(code, 0, "{stderr}");
    let image = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../target/images/inspect-test.img"
    );
    let (code, stdout, stderr) = capvisor(&["inspect", image]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("capvisor image, layout version 2"),
        "{stdout}"
    );
    assert!(stdout.contains("entry 0: boot-config"), "{stdout}");
    // An image with services carries the boot plan, printed step by step after the manifest
    // item each step is done for; an init is added to a manifest without one.
    let manifest = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/images/el0-services.toml"
    );
    let planned = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../target/images/inspect-plan.img"
    );
    let (code, _, stderr) = capvisor(&["build", manifest, "-o", planned]);
    assert_eq!(code, 0, "{stderr}");
    let (code, stdout, stderr) = capvisor(&["inspect", planned]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("service \"init\" (the root): entry 0x"),
        "{stdout}"
    );
    assert!(stdout.contains("init added by the SDK"), "{stdout}");
    assert!(
        stdout.contains("service 'faulter' (manifest line 13): 16 page(s) into p")
            && stdout.contains("mapped rw- at 0x3fffff0000 in p"),
        "{stdout}"
    );
    assert!(
        stdout.contains("service 'faulter' (manifest line 13): resume p"),
        "{stdout}"
    );
    let mut bytes = std::fs::read(image).unwrap();
    bytes[200] ^= 0xff;
    let corrupt = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../target/images/inspect-corrupt.img"
    );
    std::fs::write(corrupt, &bytes).unwrap();
    let (code, _, stderr) = capvisor(&["inspect", corrupt]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("not a valid capvisor image: kernel checksum mismatch"),
        "{stderr}"
    );
}

#[test]
fn doctor_reports_a_ready_machine() {
    let (code, stdout, _) = capvisor(&["doctor"]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("ok       QEMU 10"), "{stdout}");
    assert!(
        stdout.contains("capvisor doctor: ready to build and boot images"),
        "{stdout}"
    );
}

#[test]
fn new_service_refuses_bad_names_and_existing_services() {
    let (code, _, stderr) = capvisor(&["new", "service", "Bad_Name"]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("use lowercase letters, digits and '-'"),
        "{stderr}"
    );
    let (code, _, stderr) = capvisor(&["new", "service", "bench"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("services/bench already exists"), "{stderr}");
}

/// Every hand-made case file of the walker answers exactly as its expected file says, through
/// the real `capvisor s2walk` command (the JSON contract of the s2walk issue).
#[test]
fn s2walk_answers_the_hand_made_cases() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../services/s2walk/cases");
    let mut checked = 0;
    for granule in ["4k", "16k", "64k", "lpa2"] {
        let input = format!("{dir}/{granule}.json");
        let expected = std::fs::read_to_string(format!("{dir}/{granule}.expected.jsonl")).unwrap();
        let (code, stdout, stderr) = capvisor(&["s2walk", &input]);
        assert_eq!(code, 0, "{granule}: {stderr}");
        assert_eq!(stdout, expected, "{granule}");
        for line in stdout.lines() {
            let value: serde_json::Value =
                serde_json::from_str(line).expect("one JSON object a line");
            assert!(
                value["result"] == "ok" || value["result"] == "fault",
                "{line}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} cases");
    let (code, stdout, stderr) = capvisor(&["s2walk", &format!("{dir}/malformed.json")]);
    assert_eq!(code, 2, "{stdout}");
    assert!(stdout.is_empty(), "{stdout}");
    let expected = std::fs::read_to_string(format!("{dir}/malformed.expected.stderr")).unwrap();
    assert_eq!(stderr, expected);
}

#[test]
fn s2walk_reads_standard_input() {
    let case = r#"{"vtcr":"0x80023559","vttbr":"0x0","pa_bits":48,"memory":[],"ipa":"0x1000","access":"read"}"#;
    let mut child = Command::new(env!("CARGO_BIN_EXE_capvisor"))
        .arg("s2walk")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(case.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    // The root table at 0x0 is outside the (empty) guest memory: an external abort on the walk.
    assert_eq!(value["result"], "fault", "{value}");
    assert_eq!(value["type"], "external_abort", "{value}");
}

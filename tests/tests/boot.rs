//! The kernel boots at EL2 on every supported CPU model with one and two CPUs, prints the
//! platform line with the values the model really has, and powers off cleanly.

use capvisor_tests::{assert_exited_ok, assert_line, boot, build, expected_platform_line};

fn boots(cpu: &str, smp: u32) {
    let image = build("images/hello.toml");
    let outcome = boot(&image.path, cpu, smp);
    assert_line(&outcome, expected_platform_line(cpu));
    assert_line(
        &outcome,
        &format!(
            "capvisor: {smp} cpu(s) online; secondaries parked until the scheduler needs them"
        ),
    );
    for cpu in 1..smp {
        assert_line(
            &outcome,
            &format!("capvisor: cpu {cpu} online (mpidr={cpu:#x}), parked"),
        );
    }
    assert_line(
        &outcome,
        "capvisor: image verified (kernel and payload checksums match)",
    );
    assert_line(&outcome, "capvisor: boot complete");
    assert_exited_ok(&outcome);
}

macro_rules! boot_tests {
    ($($name:ident: $cpu:literal, $smp:literal;)*) => {
        $(#[test] fn $name() { boots($cpu, $smp) })*
    };
}

boot_tests! {
    cortex_a57_smp1: "cortex-a57", 1;
    cortex_a57_smp2: "cortex-a57", 2;
    neoverse_n1_smp1: "neoverse-n1", 1;
    neoverse_n1_smp2: "neoverse-n1", 2;
    cortex_a710_smp1: "cortex-a710", 1;
    cortex_a710_smp2: "cortex-a710", 2;
    neoverse_v1_smp1: "neoverse-v1", 1;
    neoverse_v1_smp2: "neoverse-v1", 2;
    max_smp1: "max", 1;
    max_smp2: "max", 2;
}

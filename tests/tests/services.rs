//! EL0 services run in their own stage-2 address spaces: they print through the kernel, take
//! turns by yielding, and a service that touches memory it has no mapping for is stopped alone,
//! reported by name with its decoded fault, while the others go on.

use capvisor_tests::{assert_contains, assert_exited_ok, assert_line, boot, build};

fn services_run(cpu: &str) {
    let image = build("tests/images/el0-services.toml");
    let outcome = boot(&image.path, cpu, 1);
    // The kernel creates init only; init makes the services from the boot plan.
    assert_contains(&outcome, "capvisor: created init with ");
    assert_line(
        &outcome,
        "[init] init: made 2 service(s) from the boot plan (30 steps)",
    );
    assert_line(&outcome, "[hello] hello from EL0");
    assert_line(&outcome, "[faulter] about to touch an unmapped address");
    // A stage-2 translation fault at level 1 (the services' tables start at level 1 and the
    // address is in no mapped 1 GiB region), with the load's syndrome: 8 bytes into x8.
    assert_contains(
        &outcome,
        "capvisor: service 'faulter' faulted and was stopped: EC=0x24 (data abort from a lower EL) \
         IL=1 ISS=0x1c88005: DFSC=0x05 translation fault, level 1; read; ISV=1 size=8B register=x8",
    );
    assert_contains(&outcome, "far=0x1000000000");
    assert!(
        !outcome.console.contains("still running after the fault"),
        "{}",
        outcome.console
    );
    for round in ["first", "second", "third"] {
        assert_line(&outcome, &format!("[hello] {round} round after yielding"));
    }
    assert_line(
        &outcome,
        "capvisor: service 'hello' halted the system with status 0",
    );
    assert_exited_ok(&outcome);
}

#[test]
fn services_run_on_cortex_a57() {
    services_run("cortex-a57");
}

#[test]
fn services_run_on_neoverse_n1() {
    services_run("neoverse-n1");
}

#[test]
fn services_run_on_cortex_a710() {
    services_run("cortex-a710");
}

#[test]
fn services_run_on_neoverse_v1() {
    services_run("neoverse-v1");
}

#[test]
fn services_run_on_max() {
    services_run("max");
}

/// The spinner never yields and runs first: the hello service gets to run (and finish) only
/// because the EL2 timer ends the spinner's time slice.
fn preempts(cpu: &str) {
    let image = build("tests/images/el0-preempt.toml");
    let outcome = boot(&image.path, cpu, 1);
    assert_line(&outcome, "[spinner] spinning without yielding");
    assert_line(&outcome, "[hello] third round after yielding");
    assert_line(
        &outcome,
        "capvisor: service 'hello' halted the system with status 0",
    );
    assert_exited_ok(&outcome);
}

#[test]
fn time_slices_preempt_on_cortex_a57() {
    preempts("cortex-a57");
}

#[test]
fn time_slices_preempt_on_cortex_a710() {
    preempts("cortex-a710");
}

#[test]
fn time_slices_preempt_on_max() {
    preempts("max");
}

/// The only service faults (as the root, with all RAM as untyped): with nothing ready and no
/// interrupt that could wake a thread, the kernel reports it and powers off (status 0).
#[test]
fn no_service_left_ends_the_system_on_cortex_a57() {
    let image = build("tests/images/el0-stopped.toml");
    let outcome = boot(&image.path, "cortex-a57", 1);
    assert_line(&outcome, "[faulter] about to touch an unmapped address");
    assert_contains(
        &outcome,
        "capvisor: service 'faulter' faulted and was stopped: EC=0x24",
    );
    assert_line(&outcome, "capvisor: no service left to run");
    assert_exited_ok(&outcome);
}

/// With equal priorities the root (first in the image) runs first (`services_run`); here the
/// second service has the higher manifest priority and runs before the root says hello.
#[test]
fn manifest_priorities_order_the_services_on_cortex_a57() {
    let image = build("tests/images/el0-priorities.toml");
    let outcome = boot(&image.path, "cortex-a57", 1);
    let position = |text: &str| {
        outcome
            .console
            .find(text)
            .unwrap_or_else(|| panic!("no {text:?} in:\n{}", outcome.console))
    };
    assert!(
        position("[faulter] about to touch an unmapped address")
            < position("[hello] hello from EL0"),
        "{}",
        outcome.console
    );
    assert_line(
        &outcome,
        "capvisor: service 'hello' halted the system with status 0",
    );
    assert_exited_ok(&outcome);
}

/// A supervised image: init starts the other services and is told of the faulter's fault, which
/// it reports by name with the decoded fault; hello goes on to the end.
fn supervised(cpu: &str) {
    let built = build("tests/images/init-supervised.toml");
    let outcome = boot(&built.path, cpu, 1);
    assert_line(&outcome, "[init] init: started 2 service(s)");
    assert_line(&outcome, "[faulter] about to touch an unmapped address");
    assert_contains(&outcome, "[init] init: service 'faulter' faulted at pc=0x");
    assert_contains(
        &outcome,
        ": read of 0x1000000000: translation fault, level 1 (ESR 0x",
    );
    assert_contains(&outcome, "); stopped it, the others go on");
    assert_line(&outcome, "[hello] third round after yielding");
    assert!(
        !outcome.console.contains("still running after the fault"),
        "{}",
        outcome.console
    );
    // The kernel left the report to the supervisor.
    assert!(
        !outcome
            .console
            .contains("capvisor: service 'faulter' faulted"),
        "{}",
        outcome.console
    );
    assert_exited_ok(&outcome);
}

#[test]
fn init_supervises_on_cortex_a57() {
    supervised("cortex-a57");
}

#[test]
fn init_supervises_on_max() {
    supervised("max");
}

//! The custom services in `examples/` run as their manifests describe: the self-contained
//! key-value service with its client, and the s2walk client calling the s2walk system service.

use capvisor_tests::{assert_exited_ok, assert_line, boot, build};

#[test]
fn kv_example_runs() {
    let image = build("examples/kv/image.toml");
    let outcome = boot(&image.path, "max", 1);
    for line in [
        "[client] stored 3 keys; the store counts 3",
        "[client] key 2 replaced Some(200); now 222",
        "[client] removed key 1 holding 100",
        "[client] key 1 after removal: Err(Service(NotFound))",
        "[client] done",
    ] {
        assert_line(&outcome, line);
    }
    assert_exited_ok(&outcome);
}

#[test]
fn s2walk_client_example_runs() {
    let image = build("examples/s2walk-client/image.toml");
    let outcome = boot(&image.path, "max", 1);
    assert_line(
        &outcome,
        "[client] table not lent: fault fsc 0x16 level 2 external, as the reference",
    );
    assert_line(&outcome, "[client] all 17 walks agree with the reference");
    assert_exited_ok(&outcome);
}

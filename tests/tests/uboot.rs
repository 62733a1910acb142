//! The hardware-like boot path: Debian's U-Boot for QEMU's virt board loads the image with
//! `booti`, as on a board, at another address than QEMU's `-kernel` uses, with its own device
//! tree copy, and the kernel (relocating itself) and its services run the same.

use capvisor_tests::{
    assert_contains, assert_exited_ok, assert_line, boot_uboot, build, expected_platform_line,
};

#[test]
fn hello_boots_through_uboot_booti() {
    let image = build("images/hello.toml");
    for cpu in ["cortex-a57", "max"] {
        let outcome = boot_uboot(&image.path, cpu);
        assert_contains(&outcome, "Starting kernel ...");
        assert_contains(&outcome, "capvisor 0.1.0: EL2, loaded at 0x40400000");
        assert_line(&outcome, expected_platform_line(cpu));
        assert_line(&outcome, "capvisor: boot complete");
        assert_exited_ok(&outcome);
    }
}

#[test]
fn services_run_after_uboot_booti() {
    let image = build("tests/images/el0-services.toml");
    let outcome = boot_uboot(&image.path, "neoverse-n1");
    assert_line(&outcome, "[hello] third round after yielding");
    assert_contains(
        &outcome,
        "capvisor: service 'faulter' faulted and was stopped",
    );
    assert_exited_ok(&outcome);
}

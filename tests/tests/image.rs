//! The kernel verifies the image it was loaded from and refuses a corrupted one, and refuses to
//! start a system whose requirements the platform does not meet, naming what is missing.

use capvisor::qemu::Ending;
use capvisor_image::ImageView;
use capvisor_tests::{assert_contains, boot, build, build_text, root};

fn corrupted_copy(name: &str, offset: impl Fn(&ImageView<'_>) -> usize) -> std::path::PathBuf {
    let image = build("images/hello.toml");
    let mut bytes = std::fs::read(&image.path).expect("read image");
    let at = offset(&ImageView::parse(&bytes).expect("a fresh image parses"));
    bytes[at] ^= 0x40;
    let path = root().join(format!("target/images/{name}.img"));
    std::fs::write(&path, &bytes).expect("write corrupted image");
    path
}

#[test]
fn corrupted_kernel_is_refused() {
    // A byte of read-only data (the first page after the headers is code).
    let path = corrupted_copy("corrupt-kernel", |v| v.header.kernel_ro_size as usize - 8);
    let outcome = boot(&path, "cortex-a57", 1);
    assert_contains(
        &outcome,
        "capvisor: refusing a corrupted image: kernel checksum mismatch",
    );
    assert_eq!(
        outcome.ending,
        Ending::Exited(3),
        "console:\n{}",
        outcome.console
    );
}

#[test]
fn corrupted_payload_is_refused() {
    let path = corrupted_copy("corrupt-payload", |v| {
        v.header.payload_offset as usize + 100
    });
    let outcome = boot(&path, "max", 1);
    assert_contains(
        &outcome,
        "capvisor: refusing a corrupted image: payload checksum mismatch",
    );
    assert_eq!(
        outcome.ending,
        Ending::Exited(3),
        "console:\n{}",
        outcome.console
    );
}

#[test]
fn unmet_requirements_are_refused_by_name() {
    let image = build_text(
        "requires-fwb-dic",
        "name = \"requires-fwb-dic\"\n[platform]\nrequires = [\"fwb\", \"dic\"]\n",
    );
    let n1 = boot(&image.path, "neoverse-n1", 1);
    assert_contains(
        &n1,
        "capvisor: refusing to start this system: the image requires FEAT_S2FWB",
    );
    assert_eq!(n1.ending, Ending::Exited(3), "console:\n{}", n1.console);
    let a710 = boot(&image.path, "cortex-a710", 1);
    assert_contains(
        &a710,
        "capvisor: refusing to start this system: the image requires CTR_EL0.DIC",
    );
    assert_eq!(a710.ending, Ending::Exited(3));
    let max = boot(&image.path, "max", 1);
    assert_contains(&max, "capvisor: boot complete");
    assert_eq!(max.ending, Ending::Exited(0));
}

#[test]
fn too_few_cpus_are_refused() {
    let image = build_text(
        "requires-2-cpus",
        "name = \"requires-2-cpus\"\n[platform]\nmin_cpus = 2\n",
    );
    let one = boot(&image.path, "cortex-a57", 1);
    assert_contains(&one, "the image requires at least 2 CPUs; 1 are online");
    assert_eq!(one.ending, Ending::Exited(3));
    assert_eq!(boot(&image.path, "cortex-a57", 2).ending, Ending::Exited(0));
}

//! The kernel verifies the image it was loaded from and refuses a corrupted one, refuses to
//! start a system whose requirements the platform does not meet, naming what is missing, and
//! refuses a guest whose command line entry is malformed.

use capvisor::qemu::Ending;
use capvisor_image::{CAPVISOR_HEADER_OFFSET, CapvisorHeader, EntryKind, ImageView, crc32};
use capvisor_tests::{assert_contains, boot, build, build_text, root};
use std::mem::offset_of;

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

/// A copy of `tests/images/guest-boot.toml`'s image whose guest command line has a control
/// character (0x01) in place of its first space, with the payload checksum recomputed so that
/// the image is whole: only the kernel's own check of the entry stands between it and the guest.
/// (The manifest refuses such a command line, so the image has to be made by hand.)
fn image_with_bad_cmdline() -> std::path::PathBuf {
    let image = build("tests/images/guest-boot.toml");
    let mut bytes = std::fs::read(&image.path).expect("read image");
    let view = ImageView::parse(&bytes).expect("a fresh image parses");
    let cmdline = view
        .entries()
        .find(|entry| entry.kind == EntryKind::GuestCmdline && entry.name == "boot")
        .expect("guest `boot` has a command line entry");
    let space = cmdline
        .bytes
        .iter()
        .position(|&byte| byte == b' ')
        .expect("the command line has a space");
    // The entry's bytes borrow from `bytes`, so their distance from its start is their offset in
    // the file.
    let at = cmdline.bytes.as_ptr().addr() - bytes.as_ptr().addr() + space;
    let payload = view.header.payload_offset as usize
        ..(view.header.payload_offset + view.header.payload_size) as usize;
    bytes[at] = 0x01;
    let checksum = crc32(&bytes[payload]);
    // The header's field, little-endian as the whole image is.
    let field = CAPVISOR_HEADER_OFFSET + offset_of!(CapvisorHeader, payload_crc32);
    bytes[field..field + 4].copy_from_slice(&checksum.to_le_bytes());
    let view = ImageView::parse(&bytes).expect("the checksum is right again");
    let entry = view
        .entries()
        .find(|entry| entry.kind == EntryKind::GuestCmdline)
        .expect("the command line entry");
    assert!(capvisor_image::check_cmdline(entry.bytes).is_err());
    let path = root().join("target/images/bad-cmdline.img");
    std::fs::write(&path, &bytes).expect("write the image");
    path
}

#[test]
fn malformed_guest_cmdline_is_refused() {
    let outcome = boot(&image_with_bad_cmdline(), "cortex-a57", 1);
    assert_contains(
        &outcome,
        "capvisor: refusing to start: guest or device 'boot' cannot be set up: command line is \
         not UTF-8 text without control characters",
    );
    assert_eq!(
        outcome.ending,
        Ending::Exited(3),
        "console:\n{}",
        outcome.console
    );
}

#[test]
fn a_plan_init_cannot_carry_out_is_refused_by_name() {
    // 2 GiB of untyped for one service, on a board with 1 GiB: the build cannot know the
    // board's memory, init finds out when it carries out the plan.
    let image = build_text(
        "plan-out-of-memory",
        "name = \"plan-out-of-memory\"\n\
         [[service]]\nname = \"hello\"\ncrate = \"svc-hello\"\npriority = 100\nmemory = \"1M\"\n\
         [[service]]\nname = \"greedy\"\ncrate = \"svc-hello\"\npriority = 100\nmemory = \"1M\"\n\
         caps = [{ untyped = \"2G\" }]\n",
    );
    let outcome = boot(&image.path, "cortex-a57", 1);
    assert_contains(
        &outcome,
        "[init] init: cannot carry out the boot plan: service 'greedy' (manifest line 8): out of \
         memory for its untyped memory (step ",
    );
    assert_contains(&outcome, ": retype Untyped (31) into p");
    assert!(
        !outcome.console.contains("hello from EL0"),
        "nothing starts:\n{}",
        outcome.console
    );
    assert_eq!(
        outcome.ending,
        Ending::Exited(4),
        "console:\n{}",
        outcome.console
    );
}

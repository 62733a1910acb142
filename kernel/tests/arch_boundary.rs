//! `scripts/check-arch-boundary.sh`, which `./test.sh` runs: the kernel has no assembly or
//! system-register access outside `kernel/src/arch/`, and the check catches one that is.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The check, run from the repository on `dir` (or on `kernel/src` without one).
fn check(dir: Option<&Path>) -> Output {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut command = Command::new("bash");
    command.arg(root.join("scripts/check-arch-boundary.sh"));
    if let Some(dir) = dir {
        command.arg(dir);
    }
    command.output().expect("bash runs the check")
}

/// A source tree of its own under the test target directory, removed when dropped.
struct Tree(PathBuf);

impl Tree {
    fn new(name: &str, files: &[(&str, &str)]) -> Self {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
        let _ = fs::remove_dir_all(&dir);
        for (path, text) in files {
            let path = dir.join(path);
            fs::create_dir_all(path.parent().expect("a file in a directory")).expect("mkdir");
            fs::write(path, text).expect("write a source file");
        }
        Self(dir)
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn the_kernel_has_no_assembly_outside_its_arch_module() {
    let output = check(None);
    assert!(output.status.success(), "{}", stdout(&output));
}

#[test]
fn assembly_outside_the_arch_module_is_caught_and_named() {
    let tree = Tree::new(
        "arch-boundary-caught",
        &[
            (
                "arch/aarch64/cpu.rs",
                "pub fn wfi() { unsafe { core::arch::asm!(\"wfi\") } }\n",
            ),
            (
                "services/idle.rs",
                "//! Idling.\n\nfn idle() {\n    // Not here: asm!(\"wfi\") belongs in arch.\n    \
                 unsafe { core::arch::asm!(\"wfi\") };\n}\n",
            ),
            (
                "smp.rs",
                "use core::arch::global_asm;\n/* asm!(\"nop\") in a block comment */\n",
            ),
            (
                "exit.rs",
                "use aarch64_cpu::registers::{Readable, MPIDR_EL1};\nfn f() -> u64 { MPIDR_EL1.get() }\n",
            ),
            (
                "docs.rs",
                "/// Every `asm!` lives in `arch/`.\npub fn none() {}\n",
            ),
        ],
    );
    let output = check(Some(&tree.0));
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains("services/idle.rs:5:"), "{text}");
    assert!(text.contains("smp.rs:1:"), "{text}");
    assert!(text.contains("exit.rs:1:"), "{text}");
    // Comments, documentation and the arch module itself are not findings.
    assert!(!text.contains("idle.rs:4:"), "{text}");
    assert!(!text.contains("smp.rs:2:"), "{text}");
    assert!(!text.contains("docs.rs"), "{text}");
    assert!(!text.contains("arch/aarch64"), "{text}");
}

#[test]
fn a_tree_whose_assembly_is_all_in_arch_passes() {
    let tree = Tree::new(
        "arch-boundary-clean",
        &[
            (
                "arch/aarch64/cpu.rs",
                "use core::arch::asm;\npub fn wfi() { unsafe { asm!(\"wfi\") } }\n",
            ),
            (
                "services/idle.rs",
                "fn idle() { crate::arch::aarch64::cpu::wfi() }\n",
            ),
        ],
    );
    let output = check(Some(&tree.0));
    assert!(output.status.success(), "{}", stdout(&output));
}

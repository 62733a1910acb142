//! Adds the linker script and position-independent link flags when building the kernel for
//! bare-metal aarch64; the host build (a stub, for `cargo clippy`/`doc` on the workspace) gets none.

fn main() {
    println!("cargo::rerun-if-changed=link.ld");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os == "none" {
        let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
        println!("cargo::rustc-link-arg-bins=-T{dir}/link.ld");
        // A static PIE: only R_AARCH64_RELATIVE relocations, applied by the entry code.
        println!("cargo::rustc-link-arg-bins=-pie");
        println!("cargo::rustc-link-arg-bins=--no-dynamic-linker");
        println!("cargo::rustc-link-arg-bins=-znotext");
        println!("cargo::rustc-link-arg-bins=--gc-sections");
    }
}

//! Publishes the guest linker script's path to guest crates (`DEP_CAPVISOR_GUEST_RT_LINKER_SCRIPT`
//! in their build scripts), which pass it to the linker for the bare-metal target.

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo::rerun-if-changed=guest.ld");
    println!("cargo::metadata=linker_script={dir}/guest.ld");
}

//! Publishes the service linker script's path to service crates (`DEP_CAPVISOR_RT_LINKER_SCRIPT`
//! in their build scripts), which pass it to the linker for the bare-metal target.

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo::rerun-if-changed=service.ld");
    println!("cargo::metadata=linker_script={dir}/service.ld");
}

// The build script of every test guest, included by each guest's `build.rs`: links the guest
// with the guest runtime's linker script as a static position-independent executable when built
// for the bare-metal target (its entry code applies the relocations, like a Linux Image's).

fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        let script = std::env::var("DEP_CAPVISOR_GUEST_RT_LINKER_SCRIPT")
            .expect("capvisor-guest-rt publishes its linker script");
        println!("cargo::rustc-link-arg-bins=-T{script}");
        println!("cargo::rustc-link-arg-bins=-pie");
        println!("cargo::rustc-link-arg-bins=--no-dynamic-linker");
        println!("cargo::rustc-link-arg-bins=-znotext");
    }
}

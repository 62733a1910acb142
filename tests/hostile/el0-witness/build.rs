//! Links the service with capvisor's service linker script when built for the bare-metal target.

fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        let script = std::env::var("DEP_CAPVISOR_RT_LINKER_SCRIPT")
            .expect("capvisor-rt publishes its linker script");
        println!("cargo::rustc-link-arg-bins=-T{script}");
        println!("cargo::rustc-link-arg-bins=--no-pie");
    }
}

//! capvisor's EL2 kernel.
fn main() {}

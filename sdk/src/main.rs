//! The `capvisor` command-line tool.
fn main() {}

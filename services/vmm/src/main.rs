#![cfg_attr(target_os = "none", no_std, no_main)]
capvisor_rt::service!(run);
fn run() -> u64 { 0 }

//! Issue 13, finding 3 (`docs/hostile.md`): stage-2 table pages nobody pays for. The service
//! holds no untyped at all. It copies one of its own frames (read-only) and maps each copy 1 GiB
//! apart in its own space, so each mapping needs a level-2 and a level-3 table, until `Map`
//! fails; when its CNode runs out of slots it unmaps its last copy and maps it again further on
//! (the tables stay). A fixed kernel refuses with `NotEnoughMemory` once the space's own table
//! budget is spent, and the bystander still maps and creates spaces. On the kernel of 8f4ed9c
//! the pages come from one global pool of 1024, which this service empties for everyone.
#![cfg_attr(target_os = "none", no_std, no_main)]

capvisor_rt::service!(run);

#[cfg(target_os = "none")]
mod el0;

#[cfg(target_os = "none")]
fn run() -> u64 {
    el0::run()
}

/// Without the kernel there is nothing to attack: the host program does nothing.
#[cfg(not(target_os = "none"))]
fn run() -> u64 {
    0
}

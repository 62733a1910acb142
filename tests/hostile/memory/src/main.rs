//! Issue 13, finding 5 (`docs/hostile.md`): memory handed out twice. With its own untyped U the
//! service copies U to U′, retypes a child untyped C from U and a frame F from C, maps F and
//! writes a pattern; deletes C (F stays), revokes U′; retypes a frame G from U, maps it and
//! writes another pattern; then reads F again. A fixed kernel never lets G overlap F: F still
//! holds its pattern, or the retype of G is refused (`NotEnoughMemory`). On the kernel of
//! 8f4ed9c the revoke resets U's watermark (nothing it finds was paid from U), G is F's memory,
//! and F reads G's pattern.
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

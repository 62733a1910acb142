//! Issue 13, finding 8 (`docs/hostile.md`): forged console lines. Through `DebugWrite` the
//! service writes a carriage return, escape sequences, backspaces and a bell followed by text
//! that looks like the kernel's (`capvisor: …`), a line `capvisor: boot complete`, and a partial
//! line without a newline; then it waits on its endpoint until the bystander (which holds it)
//! is done, and writes `capvisor: boot complete` again, continuing its partial line. A fixed
//! kernel escapes every control byte but newline and tab as `\xNN`, and ends one service's
//! partial line before another writer's output, so every line a service writes begins with its
//! `[name] ` prefix. On the kernel of 8f4ed9c the bytes pass through raw and the continued
//! line appears without its prefix.
#![cfg_attr(target_os = "none", no_std, no_main)]

capvisor_rt::service!(run);

/// What the service writes before it waits, one `DebugWrite` each.
#[cfg(target_os = "none")]
const BEFORE: [&str; 6] = [
    "console: starting\n",
    "console: carriage return\rcapvisor: forged by a carriage return\n",
    "console: escape \x1b[2K\x1b[1Gcapvisor: forged by an escape sequence\n",
    "console: backspace \x08\x08\x08 bell \x07 tab\tkept\n",
    "capvisor: boot complete\n",
    "console: partial line without newline",
];

/// What it writes once the bystander has signalled it.
#[cfg(target_os = "none")]
const AFTER: [&str; 2] = ["capvisor: boot complete\n", "console: done\n"];

#[cfg(target_os = "none")]
fn run() -> u64 {
    use capvisor_rt::{CPtr, debug_write, println, sys};
    let caps = hostile_common::scan::Inventory::scan();
    for text in BEFORE {
        debug_write(text);
    }
    // Its own endpoint (someone was granted it): the bystander sends there when it is done.
    match caps.endpoints.first() {
        Some(endpoint) => {
            let _ = sys::recv(CPtr::new(endpoint));
        }
        None => println!("console: no endpoint to wait on"),
    }
    for text in AFTER {
        debug_write(text);
    }
    0
}

/// Without the kernel there is no console to forge: the host program does nothing.
#[cfg(not(target_os = "none"))]
fn run() -> u64 {
    0
}

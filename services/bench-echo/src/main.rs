//! The benchmark's peer (`images/bench.toml`): replies at once to every call on its endpoint,
//! and for a `NOTIFY` message runs the notification ping-pong the bench service times.
//!
//! Protocol with `services/bench` (labels): `SETUP` carries two notification capabilities (the
//! one to wait on, the one to signal); `ECHO` is answered with an empty reply; `NOTIFY` (a send,
//! word 0 = rounds) starts `rounds` times "wait on the first, signal the second".
#![cfg_attr(target_os = "none", no_std, no_main)]
#![forbid(unsafe_code)]

capvisor_rt::service!(run);

#[cfg(target_os = "none")]
#[path = "../../bench_protocol.rs"]
mod protocol;
#[cfg(target_os = "none")]
use protocol::{ECHO, NOTIFY, SETUP};

#[cfg(target_os = "none")]
fn run() -> u64 {
    if let Err(error) = serve() {
        capvisor_rt::println!("unexpected {error:?}");
    }
    1
}

/// Without the kernel there is nothing to answer: the host build does nothing.
#[cfg(not(target_os = "none"))]
fn run() -> u64 {
    0
}

#[cfg(target_os = "none")]
fn serve() -> Result<(), capvisor_rt::KernelError> {
    use capvisor_rt::{CPtr, KernelError, MessageInfo, sys};
    // Slot 4: its own endpoint (the boot plan's layout, sdk/src/plan/layout.rs); received capabilities from 100.
    let endpoint = CPtr::new(4);
    let (wake, answer) = (CPtr::new(100), CPtr::new(101));
    sys::with_ipc_buffer(|buffer| buffer.receive_slot = 100);
    let empty = MessageInfo::new(0, 0, 0).map_err(|_| KernelError::InvalidMessageInfo)?;
    let mut message = sys::recv(endpoint)?;
    loop {
        match message.info.label() {
            SETUP | ECHO => message = sys::reply_recv(endpoint, empty, [0; 4])?,
            NOTIFY => {
                for _ in 0..message.words[0] {
                    sys::wait(wake)?;
                    sys::signal(answer)?;
                }
                message = sys::recv(endpoint)?;
            }
            _ => return Err(KernelError::InvalidArgument),
        }
    }
}

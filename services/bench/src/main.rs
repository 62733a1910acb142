//! capvisor's benchmark service: times kernel paths from EL0 with the virtual counter.
//!
//! Under QEMU `-icount shift=0` (what `capvisor bench` uses) one instruction takes one virtual
//! nanosecond, so counter ticks scaled by 10^9 / CNTFRQ are instructions (QEMU's counter runs at
//! 1 GHz on Armv8.6+ models and 62.5 MHz on older ones; the scaling covers both). Each result is printed
//! beside the floor measured in the same run (the same loop with nothing in it) as one line:
//! `bench: name=<name> iterations=<n> instructions=<per iteration> floor=<per iteration>`.
#![cfg_attr(target_os = "none", no_std, no_main)]

capvisor_rt::service!(run);

#[cfg(target_os = "none")]
#[path = "../../bench_protocol.rs"]
mod protocol;

const ITERATIONS: u64 = 1000;
const WARM_UP: u64 = 16;

fn run() -> u64 {
    let floor = measure(|| {});
    report("null_syscall", measure(capvisor_rt::yield_now), floor);
    #[cfg(target_os = "none")]
    if let Err(error) = peer::measure_ipc(floor) {
        capvisor_rt::println!("bench: failed with {error:?}");
        capvisor_rt::debug_halt(1)
    }
    capvisor_rt::debug_write("bench: done\n");
    capvisor_rt::debug_halt(0)
}

/// The rows that need the peer service (`services/bench-echo`), reached through the endpoint
/// the manifest grants (the root's slot 993, `kernel/src/services/grants.rs`).
#[cfg(target_os = "none")]
mod peer {
    use super::{ITERATIONS, WARM_UP, measure, report};
    use capvisor_rt::{CPtr, KernelError, MessageInfo, Rights, sys};

    use super::protocol::{ECHO, NOTIFY, SETUP};

    /// `ipc_call_reply`: a call answered by the peer's ReplyRecv (two thread switches).
    /// `notification_signal_wake`: signal the peer's notification, then wait for its answer on
    /// another (two signal-to-wake handovers per iteration).
    pub fn measure_ipc(floor: u64) -> Result<(), KernelError> {
        let echo = CPtr::new(993);
        let cnode = CPtr::new(1);
        let info = |label, caps| {
            MessageInfo::new(label, 8, caps).map_err(|_| KernelError::InvalidMessageInfo)
        };
        for slot in [900, 901] {
            retype_notification(slot)?;
        }
        // Badged copies: a signal ORs the capability's badge into the word.
        sys::mint(cnode, 902, CPtr::new(900), Rights::ALL, 1)?;
        sys::mint(cnode, 903, CPtr::new(901), Rights::ALL, 1)?;
        sys::with_ipc_buffer(|buffer| buffer.caps[..2].copy_from_slice(&[902, 903]));
        sys::call(echo, info(SETUP, 2)?, [0; 4])?;
        let echo_info = info(ECHO, 0)?;
        let call = measure(|| {
            let _ = sys::call(echo, echo_info, [0; 4]);
        });
        report("ipc_call_reply", call, floor);
        sys::send(echo, info(NOTIFY, 0)?, [WARM_UP + ITERATIONS, 0, 0, 0])?;
        let (wake, answer) = (CPtr::new(902), CPtr::new(901));
        let notify = measure(|| {
            let _ = sys::signal(wake);
            let _ = sys::wait(answer);
        });
        report("notification_signal_wake", notify, floor);
        Ok(())
    }

    /// Retypes a notification into `slot` from the first of the root's untyped with room.
    fn retype_notification(slot: u64) -> Result<(), KernelError> {
        let mut last = KernelError::NotEnoughMemory;
        for untyped in 5..24 {
            match sys::retype(CPtr::new(untyped), 3, 0, CPtr::NULL, slot, 1) {
                Ok(()) => return Ok(()),
                Err(error) => last = error,
            }
        }
        Err(last)
    }
}

/// Instructions per iteration of `body`, after a warm-up.
fn measure(body: impl Fn()) -> u64 {
    for i in 0..WARM_UP {
        body();
        core::hint::black_box(i);
    }
    let start = capvisor_rt::counter();
    for i in 0..ITERATIONS {
        body();
        // Keeps the loop (and so the floor's loop overhead) from being optimised away.
        core::hint::black_box(i);
    }
    let ticks = u128::from(capvisor_rt::counter() - start);
    let per_second = u128::from(capvisor_rt::counter_frequency().max(1));
    (ticks * 1_000_000_000 / per_second / u128::from(ITERATIONS)) as u64
}

fn report(name: &str, per_iteration: u64, floor: u64) {
    let mut line = capvisor_rt::Line::new();
    line.push("bench: name=");
    line.push(name);
    line.push(" iterations=");
    line.push_u64(ITERATIONS);
    line.push(" instructions=");
    line.push_u64(per_iteration);
    line.push(" floor=");
    line.push_u64(floor);
    line.push("\n");
    capvisor_rt::debug_write(line.as_str());
}

//! capvisor's benchmark service: times kernel paths from EL0 with the virtual counter.
//!
//! Under QEMU `-icount shift=0` (what `capvisor bench` uses) one instruction takes one virtual
//! nanosecond, so counter ticks scaled by 10^9 / CNTFRQ are instructions (QEMU's counter runs at
//! 1 GHz on Armv8.6+ models and 62.5 MHz on older ones; the scaling covers both). Each result is printed
//! beside the floor measured in the same run (the same loop with nothing in it) as one line:
//! `bench: name=<name> iterations=<n> instructions=<per iteration> floor=<per iteration>`.
#![cfg_attr(target_os = "none", no_std, no_main)]
#![forbid(unsafe_code)]

capvisor_rt::service!(run);

#[cfg(target_os = "none")]
#[path = "../../bench_protocol.rs"]
mod protocol;

const ITERATIONS: u64 = 1000;
const WARM_UP: u64 = 16;

fn run() -> u64 {
    // From reset to this service's first instruction (the image's first service, bench.toml).
    report_runs(
        "boot_to_first_service",
        1,
        instructions(capvisor_rt::started_at()),
        0,
    );
    let floor = measure(|| {});
    report("null_syscall", measure(capvisor_rt::yield_now), floor);
    #[cfg(target_os = "none")]
    if let Err(error) = peer::measure_ipc(floor) {
        capvisor_rt::println!("bench: failed with {error:?}");
        capvisor_rt::debug_halt(1)
    }
    #[cfg(target_os = "none")]
    if let Err(error) = longest::measure() {
        capvisor_rt::println!("bench: failed with {error:?}");
        capvisor_rt::debug_halt(1)
    }
    capvisor_rt::debug_write("bench: done\n");
    capvisor_rt::debug_halt(0)
}

/// The rows that need the peer service (`services/bench-echo`), reached through the endpoint
/// the manifest grants (the root's slot 993, `sdk/src/plan/layout.rs`).
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

/// The longest kernel paths a service can trigger: each syscall whose kernel work grows with its
/// arguments, at the bound the kernel puts on them (`docs/benchmarks.md` lists the bounds and why
/// no other path is longer), measured one syscall at a time on fresh objects. The last row,
/// `longest_kernel_path`, is the largest of them.
#[cfg(target_os = "none")]
mod longest {
    use super::report_runs;
    use capvisor_rt::{CPtr, KernelError, Rights, sys};

    /// Object kinds (`ObjectKind` codes) and the `CacheMaintenance` invocation and operations.
    const ENDPOINT: u64 = 2;
    const CNODE: u64 = 5;
    const FRAME: u64 = 6;
    const VM: u64 = 8;
    const CACHE_MAINTENANCE: u64 = 19;
    const CLEAN_POC: u64 = 1;
    const TLB_IPA: u64 = 3;
    /// The largest range a Vm clean covers (`MAX_CLEAN`), and the largest object a retype clears
    /// (`MAX_CLEARED`), 2 MiB each.
    const TWO_MIB: u64 = 2 << 20;
    /// The largest range invalidated page by page (beyond it, one invalidation by VMID).
    const TLB_PAGES: u64 = 64;
    /// The most deletions one revoke makes before it restarts (`REVOKE_STEPS`).
    const REVOKE_STEPS: u64 = 64;
    /// Timed repetitions of each path.
    const RUNS: u64 = 4;
    /// Free slots of the root CNode used here (the IPC rows use 900–903).
    const FIRST: u64 = 200;
    /// Where the VM maps its frame.
    const IPA: u64 = 0x4000_0000;

    /// Instructions of one call of `body`.
    fn once(body: impl FnOnce() -> Result<(), KernelError>) -> Result<u64, KernelError> {
        let start = capvisor_rt::counter();
        body()?;
        let ticks = u128::from(capvisor_rt::counter() - start);
        let per_second = u128::from(capvisor_rt::counter_frequency().max(1));
        Ok((ticks * 1_000_000_000 / per_second) as u64)
    }

    /// The first of the root's untyped that retypes `kind` of `bits` into `slot` (untimed).
    fn first_untyped(kind: u64, bits: u64, slot: u64) -> Result<CPtr, KernelError> {
        let mut last = KernelError::NotEnoughMemory;
        for untyped in (5..24).map(CPtr::new) {
            match sys::retype(untyped, kind, bits, CPtr::NULL, slot, 1) {
                Ok(()) => return Ok(untyped),
                Err(error) => last = error,
            }
        }
        Err(last)
    }

    /// The average instructions of retyping [`RUNS`] objects of `kind` and `bits`, one at a time,
    /// into the slots after `slot` (which an untimed first retype fills).
    fn retypes(kind: u64, bits: u64, slot: u64) -> Result<u64, KernelError> {
        let untyped = first_untyped(kind, bits, slot)?;
        let mut total = 0;
        for i in 1..=RUNS {
            total += once(|| sys::retype(untyped, kind, bits, CPtr::NULL, slot + i, 1))?;
        }
        Ok(total / RUNS)
    }

    pub fn measure() -> Result<(), KernelError> {
        let cnode = CPtr::new(1);
        let floor = once(|| Ok(()))?;
        let mut longest = 0;
        let mut row = |name: &str, instructions: u64| {
            longest = longest.max(instructions);
            report_runs(name, RUNS, instructions, floor);
        };
        // A 2 MiB frame, which the kernel clears before handing it out.
        let frames = FIRST;
        row("retype_frame_2m", retypes(FRAME, 21, frames)?);
        // A CNode of 4096 slots: 512 KiB cleared, every slot initialised.
        row("retype_cnode_4096", retypes(CNODE, 12, FIRST + 10)?);
        // Cleaning a VM's fully mapped 2 MiB to the point of coherency, and invalidating the
        // largest range the kernel invalidates page by page.
        let vm = CPtr::new(FIRST + 20);
        first_untyped(VM, 0, vm.raw())?;
        sys::map(CPtr::new(frames), vm, IPA, 3, 0)?;
        let maintenance = |args: [u64; 3]| -> Result<u64, KernelError> {
            let mut total = 0;
            for _ in 0..RUNS {
                total += once(|| sys::invoke(vm, CACHE_MAINTENANCE, &args).map(|_| ()))?;
            }
            Ok(total / RUNS)
        };
        row("vm_clean_poc_2m", maintenance([CLEAN_POC, IPA, TWO_MIB])?);
        row(
            "vm_tlbi_64_pages",
            maintenance([TLB_IPA, IPA, TLB_PAGES * 4096])?,
        );
        // A revoke that deletes REVOKE_STEPS copies of an endpoint in one kernel entry.
        let endpoint = FIRST + 30;
        first_untyped(ENDPOINT, 0, endpoint)?;
        let copies = FIRST + 40;
        let mut revoke = 0;
        for _ in 0..RUNS {
            for c in 0..REVOKE_STEPS {
                sys::copy(cnode, copies + c, CPtr::new(endpoint), Rights::ALL)?;
            }
            revoke += once(|| sys::revoke(cnode, endpoint))?;
        }
        row("revoke_64_copies", revoke / RUNS);
        // A range beyond the bound is refused before any work.
        let refused =
            once(
                || match sys::invoke(vm, CACHE_MAINTENANCE, &[CLEAN_POC, 0, 1 << 39]) {
                    Err(KernelError::RangeError) => Ok(()),
                    Err(error) => Err(error),
                    Ok(_) => Err(KernelError::IllegalOperation),
                },
            )?;
        report_runs("vm_clean_2p39_refused", 1, refused, floor);
        report_runs("longest_kernel_path", RUNS, longest, floor);
        Ok(())
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
    instructions(capvisor_rt::counter() - start) / ITERATIONS
}

/// Counter ticks as instructions (virtual nanoseconds under `-icount shift=0`).
fn instructions(ticks: u64) -> u64 {
    let per_second = u128::from(capvisor_rt::counter_frequency().max(1));
    (u128::from(ticks) * 1_000_000_000 / per_second) as u64
}

fn report(name: &str, per_iteration: u64, floor: u64) {
    report_runs(name, ITERATIONS, per_iteration, floor);
}

fn report_runs(name: &str, iterations: u64, per_iteration: u64, floor: u64) {
    let mut line = capvisor_rt::Line::new();
    line.push("bench: name=");
    line.push(name);
    line.push(" iterations=");
    line.push_u64(iterations);
    line.push(" instructions=");
    line.push_u64(per_iteration);
    line.push(" floor=");
    line.push_u64(floor);
    line.push("\n");
    capvisor_rt::debug_write(line.as_str());
}

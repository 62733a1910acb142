//! The fuzzer at EL0: set-up, the steps, the tally, self-checks and the clean-up.

use crate::plan::{self, FUZZ_WINDOW, Step, World};
use crate::rng::Rng;
use capvisor_ipc::abi::KernelError;
use capvisor_rt::{CPtr, Rights, println, sys};
use core::fmt::Write;
use hostile_common::Text;
use hostile_common::abi::{PAGE_BITS, SCRATCH_IPA, kind};
use hostile_common::invoke::{self, raw};
use hostile_common::scan::{Held, Inventory, probe};

/// The fuzzer's priority in its image (`tests/images/hostile-fuzz.toml`): the root may make
/// threads up to 255, but the fuzzer makes none above itself.
const PRIORITY: u8 = 100;
/// Slots the fuzzer may name.
const REGION_SLOTS: usize = 160;
/// log2 of the untyped it works from (4 MiB).
const POOL_BITS: u64 = 22;
/// Steps between probes of the region (also after a revoke or a receive).
const RESCAN: u64 = 256;
/// Steps between progress lines and self-checks.
const PROGRESS: u64 = 5000;
/// Written into its scratch page and checked: its own memory must stay its own.
const CANARY: u64 = 0xc0de_cafe_f00d_0001;

/// Results by code: 0 is success, then the `KernelError` codes; the last counts any other.
struct Tally([u64; 33]);

impl Tally {
    fn count(&mut self, code: u64) {
        let index = usize::try_from(code).map_or(32, |i| i.min(32));
        self.0[index] += 1;
    }

    fn print(&self, steps: u64, seed: u64) {
        let mut text = Text::<1024>::new();
        let _ = write!(
            text,
            "fuzz: {steps} steps, seed {seed:#x}: ok {}; errors by code:",
            self.0[0]
        );
        for (code, &count) in self.0.iter().enumerate().skip(1) {
            if count == 0 {
                continue;
            }
            match u16::try_from(code).ok().and_then(KernelError::from_code) {
                Some(error) => {
                    let _ = write!(text, " {error:?} {count},");
                }
                None => {
                    let _ = write!(text, " other {count},");
                }
            }
        }
        let _ = writeln!(text);
        capvisor_rt::debug_write(text.as_str());
    }
}

/// Runs `steps` steps from `seed` (printing each first when `trace`; avoiding the known hangs
/// when `avoid`); 0 when the fuzzer itself stayed whole.
pub fn run(steps: u64, seed: u64, (trace, avoid): (bool, bool)) -> u64 {
    let mut caps = Inventory::scan();
    let (Some(keeper), Some(scratch)) = (caps.slot(), caps.slot()) else {
        println!("fuzz: no free slots");
        return 1;
    };
    // The keeper, outside the region, is the parent of everything the fuzzer makes: revoking
    // it at the end takes it all away, whatever the steps did to the copies in the region.
    let kept = caps.retype(kind::UNTYPED, POOL_BITS, keeper);
    let scratched = caps.retype(kind::FRAME, PAGE_BITS, scratch).and_then(|()| {
        sys::map(
            CPtr::new(scratch),
            CPtr::new(caps.space),
            SCRATCH_IPA,
            0b011,
            0,
        )
    });
    if kept.is_err() || scratched.is_err() {
        println!("fuzz: set-up failed: {kept:?} {scratched:?}");
        return 1;
    }
    write_canary();
    let region = caps.free.split(REGION_SLOTS);
    let mut world = World::new(region, (caps.cnode, caps.space), caps.irq_control, PRIORITY);
    world.avoid_known_hangs = avoid;
    replenish(&mut world, keeper);
    println!(
        "fuzz: seed {seed:#x}, {steps} steps on {} slots of its own, IrqControl {}",
        world.region.count(),
        if world.irq_control.is_some() {
            "held"
        } else {
            "not held"
        }
    );
    let mut rng = Rng::new(seed);
    let mut tally = Tally([0; 33]);
    let mut broken = false;
    for n in 0..steps {
        if n % RESCAN == 0 || world.rescan {
            rescan(&mut world);
            replenish(&mut world, keeper);
        }
        let step = plan::next(&mut rng, &world);
        if trace {
            let [w0, w1, w2, ..] = step.words;
            println!(
                "fuzz: step {n}: {} x7={:#x} x0={:#x} x1={:#x} words {w0:#x} {w1:#x} {w2:#x}",
                step.name, step.number, step.cptr, step.info
            );
        }
        let error = execute(&step);
        if trace && error != 0 {
            println!("fuzz: step {n}: {:?}", invoke::error(error));
        }
        tally.count(error);
        if error == 0 {
            world.apply(step.effect);
        }
        if (n + 1) % PROGRESS == 0 {
            println!("fuzz: step {} ({})", n + 1, step.name);
            broken |= !self_check(&caps, keeper, n + 1);
        }
    }
    tally.print(steps, seed);
    let cnode = CPtr::new(caps.cnode);
    let revoked = sys::revoke(cnode, keeper);
    let irqs = caps.irq_control.map(|control| sys::revoke(cnode, control));
    println!("fuzz: cleaned up: revoke its untyped {revoked:?}, its IRQ handlers {irqs:?}");
    broken |= !self_check(&caps, keeper, steps);
    u64::from(broken)
}

/// One step: its IPC buffer words, then the syscall; the error code (0: success).
fn execute(step: &Step) -> u64 {
    sys::with_ipc_buffer(|buffer| {
        buffer.msg[4..8].copy_from_slice(&step.words[4..8]);
        buffer.caps = step.caps;
        buffer.receive_slot = step.receive_slot;
    });
    let [w0, w1, w2, w3, ..] = step.words;
    raw(step.number, step.cptr, step.info, [w0, w1, w2, w3]).error
}

/// Probes every region slot and records what it holds.
fn rescan(world: &mut World) {
    world.rescan = false;
    let region = world.region.clone();
    for slot in region.iter() {
        let held = match probe(slot) {
            Some(Held::Object(identity)) => identity.kind,
            Some(Held::Endpoint) => kind::ENDPOINT,
            Some(Held::Notification) => kind::NOTIFICATION,
            Some(Held::Empty | Held::Unknown(_)) | None => 0,
        };
        world.set_kind(slot, held);
    }
}

/// Gives the region an untyped to work with when the steps left it none: a copy of the keeper
/// in an empty region slot.
fn replenish(world: &mut World, keeper: u64) {
    if world.holds(kind::UNTYPED) {
        return;
    }
    let empty = world
        .region
        .iter()
        .find(|&slot| world.kind(slot) == 0 && probe(slot) == Some(Held::Empty));
    if let Some(slot) = empty
        && sys::copy(CPtr::new(world.cnode), slot, CPtr::new(keeper), Rights::ALL).is_ok()
    {
        world.set_kind(slot, kind::UNTYPED);
    }
}

fn write_canary() {
    // SAFETY: SCRATCH_IPA is the fuzzer's scratch frame, mapped read/write at set-up; the
    // fuzzer never hands this frame's capability to any step (it is outside the region).
    unsafe { (SCRATCH_IPA as *mut u64).write_volatile(CANARY) }
}

/// Whether the fuzzer's own state survived: its memory, its CNode, space and keeper.
fn self_check(caps: &Inventory, keeper: u64, step: u64) -> bool {
    // SAFETY: as in `write_canary`.
    let canary = unsafe { (SCRATCH_IPA as *const u64).read_volatile() };
    let kind_of = |slot| invoke::identify(slot).map(|identity| identity.kind);
    let checks = [
        ("its scratch page", canary == CANARY),
        ("its CNode", kind_of(caps.cnode) == Ok(kind::CNODE)),
        ("its space", kind_of(caps.space) == Ok(kind::ADDRESS_SPACE)),
        ("its untyped", kind_of(keeper) == Ok(kind::UNTYPED)),
    ];
    let mut whole = true;
    for (what, ok) in checks {
        if !ok {
            println!("fuzz: self-check at step {step}: {what} changed");
            whole = false;
        }
    }
    whole
}

// The fuzzer's window and its scratch page do not overlap.
const _: () = assert!(FUZZ_WINDOW + (2 << 20) <= SCRATCH_IPA);

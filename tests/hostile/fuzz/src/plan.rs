//! What the fuzzer does next: one random syscall at a time, from what it believes its slots
//! hold ([`World`]), with valid arguments mixed with arbitrary ones. Pure, so its two safety
//! rules are tested on the host:
//! - **it never blocks**: no `Call` that could be IPC (an invocation by `Call` claims one
//!   capability to transfer, named by [`BAD_CPTR`], so an endpoint refuses it before queueing;
//!   otherwise invocations go by `NbSend`), no `Send`, `Recv`, `ReplyRecv` or `Wait`, and never
//!   the glue's debug calls (12, 13);
//! - **it names only its own region**: every argument the kernel reads as a slot of the
//!   fuzzer's CNode is a region slot, 0, or beyond any CNode (≥ 1024) — except its own CNode,
//!   space and IrqControl where an invocation needs them. So it cannot revoke what the root holds
//!   for others (the bystander's untyped and thread), and a thread it makes never gets the
//!   root's CSpace.

use crate::rng::{Rng, pick_of};
use crate::world::{CHILD_INDICES, no_slot};
use capvisor_ipc::abi::{Invocation, MessageInfo, Syscall, VcpuRegister};
use hostile_common::abi::{LEGACY_SPACE_SIZE_BITS, PAGE, SPACE_SIZE_BITS, kind};

pub use crate::world::{BAD_CPTR, Effect, World};

/// Where the fuzzer maps frames in its own space: the 2 MiB below the scratch pages.
pub const FUZZ_WINDOW: u64 = 0x3F_FFC0_0000;
/// Pages in [`FUZZ_WINDOW`].
const WINDOW_PAGES: u64 = 512;

/// One syscall: the registers, the IPC buffer words it needs and its effect.
#[derive(Clone, Copy, Debug)]
pub struct Step {
    /// What it is, for the console when something goes wrong.
    pub name: &'static str,
    /// x7.
    pub number: u64,
    /// x0.
    pub cptr: u64,
    /// x1.
    pub info: u64,
    /// Message words 0–7 (x2–x5, then the IPC buffer).
    pub words: [u64; 8],
    /// The IPC buffer's capabilities to transfer.
    pub caps: [u64; 3],
    /// The IPC buffer's receive slot.
    pub receive_slot: u64,
    /// What success changes.
    pub effect: Effect,
}

/// The next step.
///
/// An operation on a kind of object the fuzzer believes it has none of is, more often than not,
/// replaced by the retype of one, so the sequence reaches states several objects deep (a thread
/// in a Vm with a vCPU bound, a handler forwarded to it) instead of failing on empty slots.
pub fn next(rng: &mut Rng, world: &World) -> Step {
    let mut roll = rng.below(TOTAL);
    for &(weight, needs, op) in OPS {
        if roll < weight {
            if needs != 0 && !world.holds(needs) && rng.chance(60) {
                return make(rng, world, needs);
            }
            return op(rng, world);
        }
        roll -= weight;
    }
    yield_step()
}

type Op = fn(&mut Rng, &World) -> Step;

/// The operations: weight, the kind of object they work on (0: any), and how to make one.
const OPS: &[(u64, u64, Op)] = &[
    (14, 0, retype),
    (6, 0, |r, w| copy(r, w, false)),
    (4, 0, |r, w| copy(r, w, true)),
    (3, 0, move_cap),
    (5, 0, |r, w| delete(r, w, false)),
    (2, 0, |r, w| delete(r, w, true)),
    (8, kind::FRAME, map),
    (4, kind::FRAME, unmap),
    (5, kind::THREAD, configure),
    (4, kind::THREAD, |r, w| on_thread(r, w, Invocation::Resume)),
    (2, kind::THREAD, |r, w| on_thread(r, w, Invocation::Suspend)),
    (3, kind::VCPU, bind_vcpu),
    (2, kind::NOTIFICATION, bind_notification),
    (2, kind::VCPU, vcpu_read),
    (4, kind::VCPU, vcpu_write),
    (2, kind::VCPU, vcpu_inject),
    (2, kind::FRAME, cache_frame),
    (3, kind::VM, cache_vm),
    (2, 0, irq_issue),
    (1, kind::IRQ_HANDLER, irq_ack),
    (1, kind::IRQ_HANDLER, irq_set_notification),
    (2, kind::IRQ_HANDLER, irq_forward),
    (2, 0, identify),
    (4, kind::ENDPOINT, nb_send),
    (4, kind::ENDPOINT, nb_recv),
    (2, 0, reply),
    (2, kind::NOTIFICATION, |r, w| {
        on_notification(r, w, Syscall::Signal)
    }),
    (2, kind::NOTIFICATION, |r, w| {
        on_notification(r, w, Syscall::Poll)
    }),
    (1, 0, |_, _| yield_step()),
    (2, 0, raw),
    (2, 0, garbage_invocation),
];

const TOTAL: u64 = {
    let mut total = 0;
    let mut i = 0;
    while i < OPS.len() {
        total += OPS[i].0;
        i += 1;
    }
    total
};

fn message(label: u64, bytes: usize, caps: usize) -> u64 {
    MessageInfo::new(label, bytes, caps).map_or(0, MessageInfo::raw)
}

/// An invocation of `cptr`: by `Call` with an impossible capability to transfer (which an
/// endpoint refuses before anything is queued) or by `NbSend`.
fn invoke(
    rng: &mut Rng,
    name: &'static str,
    (label, cptr): (u64, u64),
    args: &[u64],
    effect: Effect,
) -> Step {
    let mut words = [0; 8];
    for (word, arg) in words.iter_mut().zip(args) {
        *word = *arg;
    }
    let by_call = rng.chance(50);
    let (number, caps) = if by_call {
        (Syscall::Call, 1)
    } else {
        (Syscall::NbSend, 0)
    };
    Step {
        name,
        number: number.code(),
        cptr,
        info: message(label, args.len().min(8) * 8, caps),
        words,
        caps: [BAD_CPTR; 3],
        receive_slot: 0,
        effect,
    }
}

fn syscall(name: &'static str, number: Syscall, cptr: u64) -> Step {
    Step {
        name,
        number: number.code(),
        cptr,
        info: 0,
        words: [0; 8],
        caps: [BAD_CPTR; 3],
        receive_slot: 0,
        effect: Effect::None,
    }
}

fn retype(rng: &mut Rng, w: &World) -> Step {
    let untyped = w.slot(rng, &[kind::UNTYPED]);
    let space_bits = [SPACE_SIZE_BITS, LEGACY_SPACE_SIZE_BITS, 13, 14];
    let (object, bits) = match rng.below(12) {
        0..=2 => (kind::FRAME, if rng.chance(95) { 12 } else { 21 }),
        3 => (kind::ENDPOINT, 0),
        4 => (kind::NOTIFICATION, 0),
        5 => (kind::CNODE, 2 + rng.below(5)),
        6 => (kind::THREAD, 0),
        7 => (kind::VCPU, 0),
        8 => (kind::VM, rng.pick(&space_bits)),
        9 => (kind::ADDRESS_SPACE, rng.pick(&space_bits)),
        10 => (kind::UNTYPED, 12 + rng.below(7)),
        _ => (
            rng.pick(&[0, 4, kind::DEVICE_FRAME, 11, 12, 14, 0xffff, u64::MAX]),
            rng.pick(&[0, 1, 13, 22, 40, 48, 63, 64, u64::MAX]),
        ),
    };
    let mut count = match rng.below(20) {
        0..=15 => 1,
        16..=18 => 2 + rng.below(3),
        _ => rng.pick(&[0, 65, u64::MAX]),
    };
    let (dest, first, effect) = if rng.chance(85) {
        let first = w.empty(rng);
        // Consecutive destinations must all be the fuzzer's own region slots.
        let end = first.saturating_add(count.min(4));
        if (first..end).any(|s| !w.region.contains(s)) && count <= 4 {
            count = 1;
        }
        let effect = Effect::Create {
            first,
            count,
            kind: object,
        };
        (0, first, effect)
    } else {
        (
            w.of(rng, &[kind::CNODE]),
            rng.below(CHILD_INDICES),
            Effect::None,
        )
    };
    let args = [object, bits, dest, first, count];
    invoke(
        rng,
        "retype",
        (Invocation::Retype.code(), untyped),
        &args,
        effect,
    )
}

/// One object of `kind` into a slot believed empty (an IRQ handler is issued, not retyped).
fn make(rng: &mut Rng, w: &World, object: u64) -> Step {
    let bits = match object {
        kind::FRAME => 12,
        kind::CNODE => 4,
        kind::VM | kind::ADDRESS_SPACE => rng.pick(&[SPACE_SIZE_BITS, LEGACY_SPACE_SIZE_BITS]),
        kind::IRQ_HANDLER => return irq_issue(rng, w),
        _ => 0,
    };
    let untyped = w.of(rng, &[kind::UNTYPED]);
    let first = w.empty(rng);
    let effect = Effect::Create {
        first,
        count: 1,
        kind: object,
    };
    let args = [object, bits, 0, first, 1];
    invoke(
        rng,
        "make",
        (Invocation::Retype.code(), untyped),
        &args,
        effect,
    )
}

fn rights(rng: &mut Rng) -> u64 {
    if rng.chance(90) {
        rng.below(32)
    } else {
        rng.pick(&[32, 255, 256, u64::MAX])
    }
}

fn copy(rng: &mut Rng, w: &World, mint: bool) -> Step {
    let source = w.any(rng);
    let (cnode, dest, own) = w.cnode_target(rng);
    let effect = if own {
        Effect::Copy { dest, source }
    } else {
        Effect::None
    };
    let rights = rights(rng);
    let (name, label) = if mint {
        ("mint", Invocation::Mint)
    } else {
        ("copy", Invocation::Copy)
    };
    let args = [dest, source, rights, rng.next()];
    invoke(
        rng,
        name,
        (label.code(), cnode),
        &args[..3 + usize::from(mint)],
        effect,
    )
}

fn move_cap(rng: &mut Rng, w: &World) -> Step {
    let source = w.any(rng);
    let (cnode, dest, own) = w.cnode_target(rng);
    let effect = Effect::Move {
        dest: own.then_some(dest),
        source,
    };
    invoke(
        rng,
        "move",
        (Invocation::Move.code(), cnode),
        &[dest, source],
        effect,
    )
}

fn delete(rng: &mut Rng, w: &World, revoke: bool) -> Step {
    let (cnode, index, own) = if rng.chance(80) {
        (w.cnode, w.occupied(rng), true)
    } else {
        (w.of(rng, &[kind::CNODE]), rng.below(CHILD_INDICES), false)
    };
    let (name, label, effect) = match (revoke, own) {
        (true, _) => ("revoke", Invocation::Revoke, Effect::Rescan),
        (false, true) => ("delete", Invocation::Delete, Effect::Clear(index)),
        (false, false) => ("delete", Invocation::Delete, Effect::Rescan),
    };
    invoke(rng, name, (label.code(), cnode), &[index], effect)
}

/// An IPA in a space the fuzzer made (aligned mostly; otherwise never below 1024, so it never
/// reads as one of its slots when the capability turns out to be a frame).
fn ipa(rng: &mut Rng) -> u64 {
    match rng.below(7) {
        0 => 0,
        1 => rng.below(WINDOW_PAGES) * PAGE,
        2 => rng.below(8) << 21,
        3 => rng.below(512) << 30,
        4 => (rng.below(1 << 20) + 1) * PAGE + 8,
        5 => 1 << 39,
        _ => !(PAGE - 1),
    }
}

fn map(rng: &mut Rng, w: &World) -> Step {
    let frame = w.slot(rng, &[kind::FRAME]);
    let (space, ipa) = match rng.below(10) {
        0..=2 => (w.space, FUZZ_WINDOW + rng.below(WINDOW_PAGES) * PAGE),
        3..=8 => (w.slot(rng, &[kind::ADDRESS_SPACE, kind::VM]), ipa(rng)),
        _ => (no_slot(rng), ipa(rng)),
    };
    let memtype = if rng.chance(90) {
        rng.below(3)
    } else {
        rng.pick(&[3, 255, u64::MAX])
    };
    let args = [space, ipa, rng.below(8), memtype];
    invoke(
        rng,
        "map",
        (Invocation::Map.code(), frame),
        &args,
        Effect::None,
    )
}

fn unmap(rng: &mut Rng, w: &World) -> Step {
    let frame = w.slot(rng, &[kind::FRAME]);
    invoke(
        rng,
        "unmap",
        (Invocation::Unmap.code(), frame),
        &[],
        Effect::None,
    )
}

fn configure(rng: &mut Rng, w: &World) -> Step {
    let thread = w.slot(rng, &[kind::THREAD]);
    // Never an address in the fuzzer's code, so a thread it makes cannot run it.
    let pc = pick_of([0, 4, PAGE, rng.next() | 1 << 40], rng);
    let sp = pick_of([0, FUZZ_WINDOW + PAGE, rng.next()], rng);
    let ipc_buffer = pick_of(
        [
            0,
            FUZZ_WINDOW + rng.below(WINDOW_PAGES) * PAGE,
            FUZZ_WINDOW + 4,
            1 << 40,
        ],
        rng,
    );
    let top = u64::from(w.priority);
    let priorities = if rng.chance(90) {
        // Mostly below the fuzzer: such a thread runs only when the fuzzer is done.
        let priority = if rng.chance(20) { top } else { rng.below(top) };
        priority | rng.below(top + 1) << 8
    } else {
        rng.next() | 1 << 16
    };
    let cspace = w.slot(rng, &[kind::CNODE]);
    let space = match rng.below(10) {
        0 | 1 => w.space,
        _ => w.slot(rng, &[kind::ADDRESS_SPACE, kind::VM]),
    };
    let fault = if rng.chance(40) {
        0
    } else {
        w.slot(rng, &[kind::ENDPOINT])
    };
    let args = [pc, sp, ipc_buffer, priorities, cspace, space, fault];
    let label = Invocation::ThreadConfigure.code();
    invoke(rng, "configure", (label, thread), &args, Effect::None)
}

fn on_thread(rng: &mut Rng, w: &World, invocation: Invocation) -> Step {
    let thread = w.slot(rng, &[kind::THREAD]);
    let name = if invocation == Invocation::Resume {
        "resume"
    } else {
        "suspend"
    };
    invoke(rng, name, (invocation.code(), thread), &[], Effect::None)
}

fn bind_vcpu(rng: &mut Rng, w: &World) -> Step {
    let thread = w.slot(rng, &[kind::THREAD]);
    let vcpu = w.slot(rng, &[kind::VCPU]);
    invoke(
        rng,
        "bind vcpu",
        (Invocation::ThreadBindVcpu.code(), thread),
        &[vcpu],
        Effect::None,
    )
}

fn bind_notification(rng: &mut Rng, w: &World) -> Step {
    let thread = w.slot(rng, &[kind::THREAD]);
    let notification = if rng.chance(30) {
        0
    } else {
        w.slot(rng, &[kind::NOTIFICATION])
    };
    let label = Invocation::ThreadBindNotification.code();
    invoke(
        rng,
        "bind notification",
        (label, thread),
        &[notification],
        Effect::None,
    )
}

fn register(rng: &mut Rng) -> u64 {
    match rng.below(10) {
        0..=3 => rng.below(31),
        4..=7 => 32 + rng.below(12),
        8 => VcpuRegister::Reset.code(),
        _ => rng.pick(&[31, 44, 62, 64, u64::MAX]),
    }
}

fn vcpu_read(rng: &mut Rng, w: &World) -> Step {
    let vcpu = w.slot(rng, &[kind::VCPU]);
    let register = register(rng);
    let label = Invocation::VcpuReadRegisters.code();
    invoke(rng, "vcpu read", (label, vcpu), &[register], Effect::None)
}

fn vcpu_write(rng: &mut Rng, w: &World) -> Step {
    let vcpu = w.slot(rng, &[kind::VCPU]);
    let register = register(rng);
    let value = if register == VcpuRegister::Pstate.code() {
        // EL1h, EL1t, EL0t with and without DAIF; EL2h and AArch32 (refused); anything.
        pick_of([0x3c5, 0x3c4, 0x5, 0x4, 0x0, 0x3c9, 0x10, rng.next()], rng)
    } else {
        rng.next()
    };
    let label = Invocation::VcpuWriteRegisters.code();
    invoke(
        rng,
        "vcpu write",
        (label, vcpu),
        &[register, value],
        Effect::None,
    )
}

fn vcpu_inject(rng: &mut Rng, w: &World) -> Step {
    let vcpu = w.slot(rng, &[kind::VCPU]);
    let intid = pick_of([rng.below(1024), 27, 26, 1020, 1100, u64::MAX], rng);
    let priority = if rng.chance(90) {
        rng.below(256)
    } else {
        rng.next()
    };
    let label = Invocation::VcpuInjectIrq.code();
    invoke(
        rng,
        "vcpu inject",
        (label, vcpu),
        &[intid, priority],
        Effect::None,
    )
}

fn cache_frame(rng: &mut Rng, w: &World) -> Step {
    let frame = w.slot(rng, &[kind::FRAME]);
    let vm = if rng.chance(50) {
        0
    } else {
        w.slot(rng, &[kind::VM])
    };
    let label = Invocation::CacheMaintenance.code();
    let args = [rng.below(6), vm];
    invoke(rng, "cache frame", (label, frame), &args, Effect::None)
}

fn cache_vm(rng: &mut Rng, w: &World) -> Step {
    let vm = w.slot(rng, &[kind::VM]);
    let size = match rng.below(100) {
        0..=19 => PAGE,
        20..=39 => 16 * PAGE,
        40..=59 => 2 << 20,
        60..=69 => 0,
        70..=79 => PAGE + 8,
        80..=89 => rng.below(1 << 10) * PAGE,
        90..=94 => u64::MAX,
        95..=97 => 1 << 30,
        _ => 1 << 39,
    };
    let size = if w.avoid_known_hangs {
        size.min(2 << 20)
    } else {
        size
    };
    // A range of a GiB or more mostly starts at 0, so it fits the IPA space.
    let ipa = if size >= 1 << 30 && rng.chance(80) {
        0
    } else {
        ipa(rng)
    };
    let label = Invocation::CacheMaintenance.code();
    let args = [rng.below(6), ipa, size];
    invoke(rng, "cache vm", (label, vm), &args, Effect::None)
}

fn irq_issue(rng: &mut Rng, w: &World) -> Step {
    let control = w.irq_control.unwrap_or(BAD_CPTR);
    let intid = pick_of(
        [rng.below(1020), 26, 27, 30, 33, 0, 1019, 1020, u64::MAX],
        rng,
    );
    let intid = if w.avoid_known_hangs && intid < 32 {
        intid + 32
    } else {
        intid
    };
    let dest = w.any(rng);
    let effect = Effect::Create {
        first: dest,
        count: 1,
        kind: kind::IRQ_HANDLER,
    };
    let label = Invocation::IrqIssueHandler.code();
    invoke(rng, "irq issue", (label, control), &[intid, dest], effect)
}

fn irq_ack(rng: &mut Rng, w: &World) -> Step {
    let handler = w.slot(rng, &[kind::IRQ_HANDLER]);
    invoke(
        rng,
        "irq ack",
        (Invocation::IrqAck.code(), handler),
        &[],
        Effect::None,
    )
}

fn irq_set_notification(rng: &mut Rng, w: &World) -> Step {
    let handler = w.slot(rng, &[kind::IRQ_HANDLER]);
    let notification = w.slot(rng, &[kind::NOTIFICATION]);
    let label = Invocation::IrqSetNotification.code();
    invoke(
        rng,
        "irq notification",
        (label, handler),
        &[notification],
        Effect::None,
    )
}

fn irq_forward(rng: &mut Rng, w: &World) -> Step {
    let handler = w.slot(rng, &[kind::IRQ_HANDLER]);
    let vcpu = if rng.chance(30) {
        0
    } else {
        w.slot(rng, &[kind::VCPU])
    };
    let vintid = pick_of([32 + rng.below(988), 27, 0, 1020, rng.next()], rng);
    let label = Invocation::IrqForwardToVcpu.code();
    invoke(
        rng,
        "irq forward",
        (label, handler),
        &[vcpu, vintid],
        Effect::None,
    )
}

fn identify(rng: &mut Rng, w: &World) -> Step {
    let slot = w.any(rng);
    invoke(
        rng,
        "identify",
        (Invocation::Identify.code(), slot),
        &[],
        Effect::None,
    )
}

fn nb_send(rng: &mut Rng, w: &World) -> Step {
    let mut step = syscall("nb send", Syscall::NbSend, w.slot(rng, &[kind::ENDPOINT]));
    let caps = rng.below(4) as usize;
    // Never an invocation's label: if the slot is not an endpoint after all, the words are not
    // read as an invocation's arguments.
    let label = 0x100
        + if rng.chance(90) {
            rng.below(0x1000)
        } else {
            rng.next() >> 17
        };
    step.info = message(label, rng.below(65) as usize * 8, caps);
    step.words = core::array::from_fn(|_| rng.next());
    step.caps = core::array::from_fn(|_| if rng.chance(80) { w.any(rng) } else { BAD_CPTR });
    step
}

fn nb_recv(rng: &mut Rng, w: &World) -> Step {
    let kinds = [kind::ENDPOINT, kind::NOTIFICATION];
    let mut step = syscall("nb recv", Syscall::NbRecv, w.slot(rng, &kinds));
    step.receive_slot = w.empty(rng);
    step.effect = Effect::Rescan;
    step
}

fn reply(rng: &mut Rng, _: &World) -> Step {
    let mut step = syscall("reply", Syscall::Reply, 0);
    step.info = message(rng.below(0x1000), rng.below(65) as usize * 8, 0);
    step.words = core::array::from_fn(|_| rng.next());
    step
}

fn on_notification(rng: &mut Rng, w: &World, number: Syscall) -> Step {
    let name = if number == Syscall::Signal {
        "signal"
    } else {
        "poll"
    };
    syscall(name, number, w.slot(rng, &[kind::NOTIFICATION]))
}

fn yield_step() -> Step {
    syscall("yield", Syscall::Yield, 0)
}

/// A syscall number the kernel does not define (never 1–13: those block, or are the glue's).
fn raw(rng: &mut Rng, _: &World) -> Step {
    let number = rng.pick(&[0, 14, 15, 16, 17, 63, 64, 0x100, 1 << 32, u64::MAX]);
    Step {
        name: "raw syscall",
        number,
        cptr: rng.next(),
        info: rng.next(),
        words: core::array::from_fn(|_| rng.next()),
        caps: [BAD_CPTR; 3],
        receive_slot: 0,
        effect: Effect::None,
    }
}

/// Any label on any region slot, with words that are 0 or name no slot (so no invocation can
/// read one as a slot, a count or a priority that matters).
fn garbage_invocation(rng: &mut Rng, w: &World) -> Step {
    let label = pick_of([0, rng.below(24), 24, 99, 1 << 47, (1 << 48) - 1], rng);
    let mut args = [0u64; 8];
    let count = rng.below(9) as usize;
    for arg in &mut args[..count] {
        *arg = if rng.chance(30) { 0 } else { no_slot(rng) };
    }
    let slot = w.any(rng);
    invoke(
        rng,
        "garbage invocation",
        (label, slot),
        &args[..count],
        Effect::Rescan,
    )
}

#[cfg(test)]
mod tests;

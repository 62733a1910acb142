//! Drives the kernel's syscall entry with arbitrary registers and IPC buffer contents from
//! several threads, interleaved with timer ticks, interrupts, faults, reaper steps, vCPUs going to
//! sleep in WFI and their deadlines passing, against the fake effects. The root also holds a VM,
//! four vCPUs bound to threads in it, and a child untyped, so vCPU/VM/thread/untyped/revoke and
//! sleeper orderings are reached. Nothing may panic, and the object
//! model's invariants (no overlap, exact counts, a vCPU thread only in its VM, ...) must hold
//! after every step. A call stopped at a preemption point is made again, as a thread would.
//!
//! Input: a sequence of 40-byte steps, compact so that short inputs already make several calls:
//!
//! | bytes | meaning |
//! |---|---|
//! | 0 | the thread (mod 3) |
//! | 1 | the event: tick, interrupt, fault, reaper, WFI, deadlines, or (mostly) a syscall; bit 7 keeps x0/x7 raw |
//! | 2 | x0, the capability pointer |
//! | 3 | x7, the syscall number |
//! | 4..12 | x1, the message-info word (bit 7 of byte 1 clear: rebuilt as a valid word) |
//! | 12..28 | x2–x5, four 32-bit words |
//! | 28..31 | IPC buffer: the three capability pointers to transfer |
//! | 31 | IPC buffer: the receive slot |
//! | 32..40 | IPC buffer: message words 4 and 5 (32 bits each) |
#![no_main]

use capvisor_ipc::abi::{Invocation, MessageInfo, Syscall};
use capvisor_ipc::cap::ObjectKind;
use capvisor_ipc::memory::CacheFeatures;
use capvisor_ipc::protocols::fault::{self, GuestFault, Resolution, ServiceFault};
use capvisor_ipc::types::{Esr, PhysAddr};
use capvisor_kernel::object::fake::FakeEffects;
use capvisor_kernel::object::thread::ThreadState;
use capvisor_kernel::object::{
    Capability, DeviceAttributes, FrameTable, Kernel, Object, PageInfo, PlatformFeatures, RootBoot,
    RootDevice, RootLayout, RootRam, Schedule, SyscallRegs, ThreadRef,
};
use libfuzzer_sys::fuzz_target;
use std::alloc::{Layout, alloc_zeroed, dealloc};

/// The machine's RAM: 3 MiB for the root's untyped, then 1 MiB for its own objects.
const RAM: u64 = 0x4000_0000;
const RAM_BYTES: u64 = 4 << 20;

/// Host memory standing in for RAM, with a frame table over it.
struct HostRam {
    layout: Layout,
    window: *mut u8,
    table: Vec<PageInfo>,
}

impl HostRam {
    fn new() -> Self {
        let layout = Layout::from_size_align(RAM_BYTES as usize, 4096).expect("layout");
        // SAFETY: the layout has a non-zero size.
        let window = unsafe { alloc_zeroed(layout) };
        assert!(!window.is_null());
        Self {
            layout,
            window,
            table: vec![PageInfo::FREE; (RAM_BYTES / 4096) as usize],
        }
    }

    fn frame_table(&mut self) -> FrameTable {
        // SAFETY: the table and window live as long as `self`, which outlives the kernel using
        // them (dropped after it); nothing else touches them; the window is page-aligned.
        unsafe {
            FrameTable::new(
                RAM,
                self.table.len() as u32,
                self.table.as_mut_ptr(),
                self.window,
            )
        }
    }
}

impl Drop for HostRam {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.window, self.layout) };
    }
}

/// The IPC buffer addresses of the three threads (root, then slots 15 and 16).
const BUFFERS: [u64; 3] = [0x10_0000, 0x11_0000, 0x12_0000];

/// The fake's IPC buffer of `thread` (a scratch one when its space is gone).
fn buffer<'a>(
    k: &mut Kernel,
    fx: &'a mut FakeEffects,
    thread: ThreadRef,
    index: usize,
) -> &'a mut capvisor_ipc::abi::IpcBuffer {
    let root = k
        .thread_space(thread)
        .ok()
        .flatten()
        .and_then(|space| k.space_glue(space).ok().map(|g| g.root))
        .unwrap_or(0);
    fx.buffer_at(root, BUFFERS[index % BUFFERS.len()])
}

const STEP: usize = 40;
const THREAD_CONFIGURE: u64 = 20;

fn word(bytes: &[u8], at: usize) -> u64 {
    let mut raw = [0; 8];
    raw.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(raw)
}

fn half(bytes: &[u8], at: usize) -> u64 {
    let mut raw = [0; 4];
    raw.copy_from_slice(&bytes[at..at + 4]);
    u64::from(u32::from_le_bytes(raw))
}

/// x0–x7 of a syscall step.
fn registers(step: &[u8]) -> SyscallRegs {
    let raw = step[1] & 0x80 != 0;
    let info = word(step, 4);
    let info = if raw {
        info
    } else {
        // label (16 bits), length (0..=520 bytes), capabilities (0..=3)
        let (label, length, caps) = (
            info & 0xffff,
            ((info >> 16) & 0x3ff) % 521,
            (info >> 26) & 3,
        );
        MessageInfo::new(label, length as usize, caps as usize).map_or(info, MessageInfo::raw)
    };
    let (cptr, number) = if raw {
        (word(step, 4), u64::from(step[3]))
    } else {
        (u64::from(step[2] % 40), u64::from(step[3] % 13))
    };
    SyscallRegs([
        cptr,
        info,
        half(step, 12),
        half(step, 16),
        half(step, 20),
        half(step, 24),
        0,
        number,
    ])
}

/// The root invokes `cptr` with `label` and `args` (setup only; it must succeed).
fn invoke(
    k: &mut Kernel,
    fx: &mut FakeEffects,
    root: ThreadRef,
    cptr: u64,
    label: u64,
    args: &[u64],
) {
    let mut regs = SyscallRegs([0; 8]);
    for (i, &a) in args.iter().enumerate() {
        if i < 4 {
            regs.0[2 + i] = a;
        } else {
            buffer(k, fx, root, 0).msg[i] = a;
        }
    }
    regs.0[0] = cptr;
    regs.0[1] = MessageInfo::new(label, args.len() * 8, 0)
        .map(MessageInfo::raw)
        .unwrap_or(0);
    regs.0[7] = Syscall::Call.code();
    // The saved x0–x7 are the syscall's registers, in and out.
    let context = &mut k.thread_glue(root).expect("the root").context;
    regs.write_to(context);
    k.handle_syscall(root, fx);
    let regs = SyscallRegs::of(&k.thread_glue(root).expect("the root").context);
    assert_eq!(regs.error_code(), None, "setup invocation {label} failed");
}

/// A root with RAM and device untyped (and nothing else yet).
fn boot_root(ram: &mut HostRam) -> (Box<Kernel>, Box<FakeEffects>, RootLayout) {
    let features = PlatformFeatures {
        cache: CacheFeatures {
            fwb: false,
            dic: true,
        },
        ipa_bits: 40,
    };
    let mut k = Box::new(Kernel::new(features));
    k.set_memory(ram.frame_table()).expect("memory");
    let mut fx = Box::new(FakeEffects::new());
    let ram = [RootRam {
        base: PhysAddr::new(RAM),
        size: 3 << 20,
    }];
    let devices = [RootDevice {
        base: PhysAddr::new(0x0900_0000),
        size: 0x10_0000,
        attributes: DeviceAttributes::Uncached { normal_nc: true },
    }];
    let boot = RootBoot {
        ram: &ram,
        devices: &devices,
        entry: 0x1000,
        stack: 0x8000,
        ipc_buffer: BUFFERS[0],
        priority: 255,
        kernel_memory: RootRam {
            base: PhysAddr::new(RAM + (3 << 20)),
            size: 1 << 20,
        },
        space_bytes: 64 << 10,
        image: RootRam::NONE,
    };
    let layout = k.create_root_thread(&boot, &mut *fx).expect("root");
    (k, fx, layout)
}

/// The root, plus two endpoints (slots 10, 11), a notification (12), two frames (13, 14), two
/// more threads (15, 16) sharing its CSpace and faulting to the first endpoint, a VM (17) with
/// vCPUs (18, 21–23) bound to threads (19, 24–26) in it that fault to the first endpoint, and a
/// 512 KiB child untyped (20). Returns the three service threads and the four vCPU threads.
fn boot(
    ram: &mut HostRam,
) -> (
    Box<Kernel>,
    Box<FakeEffects>,
    [ThreadRef; 3],
    [ThreadRef; 4],
) {
    let (mut k, mut fx, layout) = boot_root(ram);
    let root = layout.thread;
    let retype = Invocation::Retype.code();
    let kind = |k: ObjectKind| u64::from(k.code());
    for args in [
        [kind(ObjectKind::Endpoint), 0, 0, 10, 2],
        [kind(ObjectKind::Notification), 0, 0, 12, 1],
        [kind(ObjectKind::Frame), 12, 0, 13, 2],
        [kind(ObjectKind::Thread), 0, 0, 15, 2],
        [kind(ObjectKind::Vm), 0, 0, 17, 1],
        [kind(ObjectKind::Vcpu), 0, 0, 18, 1],
        [kind(ObjectKind::Thread), 0, 0, 19, 1],
        [kind(ObjectKind::Untyped), 19, 0, 20, 1],
        [kind(ObjectKind::Vcpu), 0, 0, 21, 3],
        [kind(ObjectKind::Thread), 0, 0, 24, 3],
    ] {
        invoke(
            &mut k,
            &mut fx,
            root,
            RootLayout::FIRST_UNTYPED,
            retype,
            &args,
        );
    }
    let vcpu_thread = [0x4000_0000, 0, 0, 90, RootLayout::CNODE, 17, 10];
    let bind = Invocation::ThreadBindVcpu.code();
    for (slot, vcpu) in VCPU_THREADS {
        invoke(&mut k, &mut fx, root, slot, THREAD_CONFIGURE, &vcpu_thread);
        invoke(&mut k, &mut fx, root, slot, bind, &[vcpu]);
        invoke(&mut k, &mut fx, root, slot, Invocation::Resume.code(), &[]);
    }
    for (slot, ipc) in [(15, BUFFERS[1]), (16, BUFFERS[2])] {
        let args = [
            0x2000,
            0x9000,
            ipc,
            100 | 200 << 8,
            RootLayout::CNODE,
            RootLayout::SPACE,
            10,
        ];
        invoke(&mut k, &mut fx, root, slot, THREAD_CONFIGURE, &args);
        invoke(&mut k, &mut fx, root, slot, Invocation::Resume.code(), &[]);
    }
    let thread = |k: &Kernel, index| match k
        .cnode_slot(layout.cnode, index)
        .ok()
        .and_then(|s| k.capability(s))
    {
        Some(Capability {
            object: Object::Thread(t),
            ..
        }) => *t,
        _ => panic!("no thread at {index}"),
    };
    let threads = [root, thread(&k, 15), thread(&k, 16)];
    let vcpu_threads = VCPU_THREADS.map(|(slot, _)| thread(&k, slot));
    (k, fx, threads, vcpu_threads)
}

/// The vCPU threads' slots and their vCPUs'.
const VCPU_THREADS: [(u64, u64); 4] = [(19, 18), (24, 21), (25, 22), (26, 23)];

/// `thread` makes the syscall `regs` (it does nothing unless the thread is ready).
fn syscall(k: &mut Kernel, fx: &mut FakeEffects, thread: ThreadRef, regs: SyscallRegs) {
    if let Ok(t) = k.thread_glue(thread) {
        regs.write_to(&mut t.context);
    }
    if k.handle_syscall(thread, fx) == Schedule::Switch {
        let _ = k.pick_next();
    }
}

/// A vCPU thread that may be running traps on WFI, and the root, as its VMM, receives on the
/// fault endpoint (slot 10) and replies `WaitForInterrupt` (to whichever fault it received);
/// the fake then finds an interrupt pending (it runs), nothing (it sleeps) or its timer armed
/// (it sleeps until the deadline), as `wait` says.
fn wait_for_interrupt(
    k: &mut Kernel,
    fx: &mut FakeEffects,
    (root, vcpu_thread): (ThreadRef, ThreadRef),
    wait: Option<Option<u64>>,
) {
    if k.thread_state(vcpu_thread) != Ok(ThreadState::Ready) {
        return;
    }
    fx.wait_finds = wait;
    let wfi = GuestFault::Wait { event: false };
    let _ = k.handle_guest_fault(vcpu_thread, 0x4000_0000, wfi, fx);
    let recv = SyscallRegs([10, 0, 0, 0, 0, 0, 0, Syscall::Recv.code()]);
    syscall(k, fx, root, recv);
    // The fixed-layout reply (fault protocol version 2): a label and words in registers.
    let (info, [w0, w1, w2, w3]) = fault::encode_guest_reply(&Ok(Resolution::WaitForInterrupt));
    let reply = SyscallRegs([0, info.raw(), w0, w1, w2, w3, 0, Syscall::Reply.code()]);
    syscall(k, fx, root, reply);
}

/// One step of the input.
fn step(
    k: &mut Kernel,
    fx: &mut FakeEffects,
    (threads, vcpu_threads): ([ThreadRef; 3], [ThreadRef; 4]),
    step: &[u8],
) {
    let index = usize::from(step[0]) % threads.len();
    let thread = threads[index];
    match step[1] % 16 {
        0 => {
            let _ = k.timer_tick();
        }
        1 => {
            let _ = k.handle_irq(u32::from(step[2]));
        }
        2 => {
            let fault = ServiceFault::Exception {
                esr: Esr::new(word(step, 4)),
            };
            let _ = k.handle_fault(thread, half(step, 12), fault, fx);
        }
        3 => {
            let _ = k.reap(usize::from(step[2]), fx);
        }
        4 => {
            let vcpu_thread = vcpu_threads[usize::from(step[2]) % vcpu_threads.len()];
            let wait = match step[3] % 4 {
                0 => None,
                1 => Some(None),
                // Deadlines close together, so that ties and expiries are common.
                _ => Some(Some(half(step, 12) % 64)),
            };
            wait_for_interrupt(k, fx, (threads[0], vcpu_thread), wait);
        }
        5 => {
            let _ = k.wake_expired(half(step, 12) % 64);
        }
        _ => {
            let buffer = buffer(k, fx, thread, index);
            buffer.caps = [
                u64::from(step[28]),
                u64::from(step[29]),
                u64::from(step[30]),
            ];
            buffer.receive_slot = u64::from(step[31]);
            buffer.msg[4] = half(step, 32);
            buffer.msg[5] = half(step, 36);
            let arguments = registers(step);
            // A call stopped at a preemption point is made again (it always makes progress).
            loop {
                let before = fx.restarts;
                if let Ok(t) = k.thread_glue(thread) {
                    arguments.write_to(&mut t.context);
                }
                let schedule = k.handle_syscall(thread, fx);
                if let Err(broken) = k.check_invariants() {
                    panic!("invariant broken: {broken}");
                }
                if fx.restarts == before {
                    if schedule == Schedule::Switch {
                        let _ = k.pick_next();
                    }
                    break;
                }
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut ram = HostRam::new();
    let (mut k, mut fx, threads, vcpu_threads) = boot(&mut ram);
    k.check_invariants().expect("boot state");
    for chunk in data.chunks_exact(STEP) {
        step(&mut k, &mut fx, (threads, vcpu_threads), chunk);
        for &t in &threads {
            let _ = k.take_syscall_result(t);
        }
        if let Err(broken) = k.check_invariants() {
            panic!("invariant broken: {broken}");
        }
    }
    drop(k);
    drop(ram);
});

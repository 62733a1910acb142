//! Drives the kernel's syscall entry with arbitrary registers and IPC buffer contents from
//! several threads, interleaved with timer ticks, interrupts and faults, against the fake effects.
//! Nothing may panic, and the object model's invariants must hold after every step.
//!
//! Input: a sequence of 40-byte steps, compact so that short inputs already make several calls:
//!
//! | bytes | meaning |
//! |---|---|
//! | 0 | the thread (mod 3) |
//! | 1 | the event: tick, interrupt, fault, or (mostly) a syscall; bit 7 keeps x0/x7 raw |
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
use capvisor_ipc::protocols::fault::ServiceFault;
use capvisor_ipc::types::{Esr, PhysAddr};
use capvisor_kernel::object::fake::FakeEffects;
use capvisor_kernel::object::{
    Capability, DeviceAttributes, Kernel, Object, PlatformFeatures, RootBoot, RootDevice,
    RootLayout, RootRam, Schedule, SyscallRegs, ThreadRef,
};
use libfuzzer_sys::fuzz_target;

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
            fx.buffer(root).msg[i] = a;
        }
    }
    regs.0[0] = cptr;
    regs.0[1] = MessageInfo::new(label, args.len() * 8, 0)
        .map(MessageInfo::raw)
        .unwrap_or(0);
    regs.0[7] = Syscall::Call.code();
    k.handle_syscall(root, &mut regs, fx);
    assert_eq!(regs.error_code(), None, "setup invocation {label} failed");
}

/// A root with RAM and device untyped (and nothing else yet).
fn boot_root() -> (Box<Kernel>, Box<FakeEffects>, RootLayout) {
    let features = PlatformFeatures {
        fwb: false,
        dic: true,
        ipa_bits: 40,
    };
    let mut k = Box::new(Kernel::new(features));
    let mut fx = Box::new(FakeEffects::new());
    let ram = [RootRam {
        base: PhysAddr::new(0x4000_0000),
        size: 8 << 20,
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
        ipc_buffer: 0x10_0000,
        priority: 255,
    };
    let layout = k.create_root_thread(&boot, &mut *fx).expect("root");
    (k, fx, layout)
}

/// The root, plus two endpoints (slots 10, 11), a notification (12), two frames (13, 14) and two
/// more threads (15, 16) sharing its CSpace, faulting to the first endpoint.
fn boot() -> (Box<Kernel>, Box<FakeEffects>, [ThreadRef; 3]) {
    let (mut k, mut fx, layout) = boot_root();
    let root = layout.thread;
    let retype = Invocation::Retype.code();
    let kind = |k: ObjectKind| u64::from(k.code());
    for args in [
        [kind(ObjectKind::Endpoint), 0, 0, 10, 2],
        [kind(ObjectKind::Notification), 0, 0, 12, 1],
        [kind(ObjectKind::Frame), 12, 0, 13, 2],
        [kind(ObjectKind::Thread), 0, 0, 15, 2],
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
    for (slot, ipc) in [(15, 0x11_0000), (16, 0x12_0000)] {
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
    (k, fx, threads)
}

/// One step of the input.
fn step(k: &mut Kernel, fx: &mut FakeEffects, thread: ThreadRef, step: &[u8]) {
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
        _ => {
            let buffer = fx.buffer(thread);
            buffer.caps = [
                u64::from(step[28]),
                u64::from(step[29]),
                u64::from(step[30]),
            ];
            buffer.receive_slot = u64::from(step[31]);
            buffer.msg[4] = half(step, 32);
            buffer.msg[5] = half(step, 36);
            let mut regs = registers(step);
            if k.handle_syscall(thread, &mut regs, fx) == Schedule::Switch {
                let _ = k.pick_next();
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (mut k, mut fx, threads) = boot();
    k.check_invariants().expect("boot state");
    for chunk in data.chunks_exact(STEP) {
        let thread = threads[usize::from(chunk[0]) % threads.len()];
        step(&mut k, &mut fx, thread, chunk);
        for &t in &threads {
            let _ = k.take_syscall_result(t);
        }
        if let Err(broken) = k.check_invariants() {
            panic!("invariant broken: {broken}");
        }
    }
});

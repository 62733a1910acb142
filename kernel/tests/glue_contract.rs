//! The object model used only through its public API, the way the EL2 glue uses it: a simulated
//! glue keeps each thread's saved x0–x7, runs whatever `pick_next` chooses, copies `regs` back
//! after every syscall and collects woken threads' results with `take_syscall_result`.
//!
//! The root service creates an endpoint and a client thread by invocations, then serves the
//! client's calls; the client suspends itself after five round trips and the CPU goes idle.

use std::collections::HashMap;

use capvisor_ipc::abi::{Invocation, MessageInfo, Syscall};
use capvisor_ipc::cap::ObjectKind;
use capvisor_ipc::memory::CacheFeatures;
use capvisor_ipc::types::PhysAddr;
use capvisor_kernel::object::fake::FakeEffects;
use capvisor_kernel::object::{
    FrameTable, Kernel, PageInfo, PlatformFeatures, RootBoot, RootLayout, RootRam, Schedule,
    SyscallRegs, THREAD_CONFIGURE, ThreadRef,
};
use std::alloc::{Layout, alloc_zeroed, dealloc};

/// The RAM the simulated machine has: the root's 1 MiB and 1 MiB for its own objects.
const RAM: u64 = 0x4000_0000;
const RAM_BYTES: u64 = 2 << 20;

/// Host memory standing in for RAM, with a frame table over it, as the glue sets up at boot.
struct HostRam {
    layout: Layout,
    window: *mut u8,
    table: Vec<PageInfo>,
}

impl HostRam {
    fn new() -> Self {
        let layout = Layout::from_size_align(RAM_BYTES as usize, 4096).unwrap();
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
        // SAFETY: the table and window live as long as `self`, which the test keeps until the
        // kernel is dropped; nothing else touches them; the window is page-aligned.
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

const EP: u64 = 16;
const CLIENT: u64 = 17;

fn regs(number: Syscall, cptr: u64, label: u64, words: &[u64]) -> [u64; 8] {
    let info = MessageInfo::new(label, words.len() * 8, 0).unwrap().raw();
    let mut regs = [cptr, info, 0, 0, 0, 0, 0, number.code()];
    for (i, w) in words.iter().take(4).enumerate() {
        regs[2 + i] = *w;
    }
    regs
}

struct Glue {
    k: Box<Kernel>,
    fx: Box<FakeEffects>,
    saved: HashMap<ThreadRef, [u64; 8]>,
    /// Each thread's IPC buffer address, as it was configured.
    buffers: HashMap<ThreadRef, u64>,
    running: Option<ThreadRef>,
}

impl Glue {
    /// The thread `running` makes a syscall with message `words`; the glue follows the contract
    /// of `syscall.rs`. Words beyond x2–x5 go in the thread's IPC buffer, as user code puts them.
    fn svc(&mut self, number: Syscall, cptr: u64, label: u64, words: &[u64]) {
        let thread = self.running.expect("a thread is running");
        if words.len() > 4 {
            let space = self.k.thread_space(thread).unwrap().unwrap();
            let root = self.k.space_glue(space).unwrap().root;
            let buffer = self.fx.buffer_at(root, self.buffers[&thread]);
            for (i, w) in words.iter().enumerate().skip(4) {
                buffer.msg[i] = *w;
            }
        }
        // The trap saves x0–x7 in the thread's context; the kernel reads its arguments there
        // and leaves its results there (its arguments, unchanged, when it blocked).
        let call = regs(number, cptr, label, words);
        SyscallRegs(call).write_to(&mut self.k.thread_glue(thread).unwrap().context);
        let schedule = self.k.handle_syscall(thread, &mut *self.fx);
        let registers = self.registers(thread);
        self.saved.insert(thread, registers);
        if schedule == Schedule::Switch {
            self.switch();
        }
    }

    fn switch(&mut self) {
        self.running = self.k.pick_next();
        // Results that arrived while it waited are in its saved context already.
        if let Some(next) = self.running {
            let registers = self.registers(next);
            self.saved.insert(next, registers);
        }
    }

    fn registers(&mut self, thread: ThreadRef) -> [u64; 8] {
        SyscallRegs::of(&self.k.thread_glue(thread).unwrap().context).0
    }
}

#[test]
fn a_simulated_glue_runs_a_server_and_a_client() {
    let mut host_ram = HostRam::new();
    let mut k = Box::new(Kernel::new(PlatformFeatures::UNKNOWN));
    k.set_memory(host_ram.frame_table()).unwrap();
    k.set_features(PlatformFeatures {
        cache: CacheFeatures {
            fwb: true,
            dic: true,
        },
        ipa_bits: 39,
    })
    .unwrap();
    let mut fx = Box::new(FakeEffects::new());
    let ram = [RootRam {
        base: PhysAddr::new(RAM),
        size: 1 << 20,
    }];
    let boot = RootBoot {
        ram: &ram,
        devices: &[],
        entry: 0x20_0000,
        stack: 0x40_0000,
        ipc_buffer: 0x10_0000,
        priority: 255,
        kernel_memory: RootRam {
            base: PhysAddr::new(RAM + (1 << 20)),
            size: 1 << 20,
        },
        space_bytes: 64 << 10,
        image: RootRam::NONE,
    };
    let layout = k.create_root_thread(&boot, &mut *fx).unwrap();
    let root = layout.thread;
    let mut glue = Glue {
        k,
        fx,
        saved: HashMap::new(),
        buffers: HashMap::from([(root, 0x10_0000)]),
        running: None,
    };
    glue.switch();
    assert_eq!(glue.running, Some(root));

    // The root creates an endpoint and a thread, configures the thread and resumes it.
    let untyped = RootLayout::FIRST_UNTYPED;
    let kind = |k: ObjectKind| u64::from(k.code());
    let retype = Invocation::Retype.code();
    glue.svc(
        Syscall::Call,
        untyped,
        retype,
        &[kind(ObjectKind::Endpoint), 0, 0, EP, 1],
    );
    glue.svc(
        Syscall::Call,
        untyped,
        retype,
        &[kind(ObjectKind::Thread), 0, 0, CLIENT, 1],
    );
    let configure = [
        0x20_0000,
        0x40_0000,
        0x11_0000,
        100,
        RootLayout::CNODE,
        RootLayout::SPACE,
        0,
    ];
    glue.svc(Syscall::Call, CLIENT, THREAD_CONFIGURE, &configure);
    glue.svc(Syscall::Call, CLIENT, Invocation::Resume.code(), &[]);
    assert_eq!(glue.saved[&root][7], 0, "every setup invocation succeeded");
    assert_eq!(glue.running, Some(root), "the client has a lower priority");

    // The root waits; the client runs and calls; the root answers with ten times the number.
    glue.svc(Syscall::Recv, EP, 0, &[]);
    let client = glue.running.expect("the client runs while the root waits");
    assert_ne!(client, root);
    let mut replies = Vec::new();
    for round in 0..5 {
        glue.svc(Syscall::Call, EP, 1, &[round]);
        assert_eq!(glue.running, Some(root));
        let request = glue.saved[&root];
        assert_eq!((request[7], request[2]), (0, round));
        glue.svc(Syscall::ReplyRecv, EP, 0, &[round * 10]);
        assert_eq!(glue.running, Some(client));
        replies.push(glue.saved[&client][2]);
    }
    assert_eq!(replies, [0, 10, 20, 30, 40]);

    // The client suspends itself; nothing is left to run.
    glue.svc(Syscall::Call, CLIENT, Invocation::Suspend.code(), &[]);
    assert_eq!(glue.running, None);
    assert_eq!(glue.k.timer_tick(), Schedule::Switch);
    assert_eq!(glue.k.pick_next(), None);
    drop(glue);
    drop(host_ram);
}

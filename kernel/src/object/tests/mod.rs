//! Host tests of the object model, driven through the same entry points the glue uses.
//!
//! [`World`] boots a kernel with a root thread over the fake effects and lets a test act as any
//! ready thread: make syscalls, invoke capabilities, create and configure threads.

mod caps;
mod fastpath;
mod frames;
mod ipc;
mod props;
mod sched;
mod sleepers;
mod syscalls;
mod vcpus;

use capvisor_ipc::abi::{Invocation, KernelError, MessageInfo, Syscall};
use capvisor_ipc::cap::{ObjectKind, Rights};
use capvisor_ipc::memory::CacheFeatures;
use capvisor_ipc::types::PhysAddr;

use super::boot::{RootBoot, RootDevice, RootLayout, RootRam};
use super::capability::{Capability, DeviceAttributes, Object};
use super::fake::FakeEffects;
use super::invoke::THREAD_CONFIGURE;
use super::memory::host::HostRam;
use super::regs::{Schedule, SyscallRegs};
use super::{Kernel, PlatformFeatures, ThreadRef};
use capvisor_ipc::abi::IpcBuffer;

/// RAM given to the root: 16 MiB.
pub const RAM_BASE: u64 = 0x4000_0000;
pub const RAM_SIZE: u64 = 16 << 20;
/// The root's own objects (its CNode, space, thread, untyped records), after its RAM.
pub const KERNEL_MEMORY: u64 = RAM_BASE + RAM_SIZE;
pub const KERNEL_MEMORY_SIZE: u64 = 1 << 20;
/// Root CNode slots the tests use for their own objects.
pub const FREE: u64 = 16;

/// Slots of the boot layout below.
pub const UNTYPED: u64 = RootLayout::FIRST_UNTYPED;
pub const MMIO_UNTYPED: u64 = UNTYPED + 1;
pub const NC_UNTYPED: u64 = UNTYPED + 2;
pub const PFNMAP_UNTYPED: u64 = UNTYPED + 3;

pub const IPC_BUFFER: u64 = 0x10_0000;

pub struct World {
    pub k: Box<Kernel>,
    pub fx: Box<FakeEffects>,
    pub root: ThreadRef,
    pub layout: RootLayout,
    /// The simulated RAM the kernel's objects live in (kept alive with the kernel).
    pub _ram: HostRam,
}

/// Simulated RAM covering the root's RAM and the kernel memory, and a kernel using it.
pub fn kernel_with_ram(features: PlatformFeatures) -> (Box<Kernel>, HostRam) {
    let mut ram = HostRam::new(RAM_BASE, RAM_SIZE + KERNEL_MEMORY_SIZE);
    let mut k = Box::new(Kernel::new(features));
    k.set_memory(ram.table()).unwrap();
    (k, ram)
}

/// The kernel memory for a root.
pub fn kernel_memory() -> RootRam {
    RootRam {
        base: PhysAddr::new(KERNEL_MEMORY),
        size: KERNEL_MEMORY_SIZE,
    }
}

pub fn features() -> PlatformFeatures {
    PlatformFeatures {
        cache: CacheFeatures {
            fwb: true,
            dic: true,
        },
        ipa_bits: 40,
    }
}

impl World {
    pub fn new() -> Self {
        Self::with_features(features())
    }

    pub fn with_features(features: PlatformFeatures) -> Self {
        Self::booted(features, RootRam::NONE, &[])
    }

    /// A root given `image` as read-only frames, in a kernel that names threads after `names`.
    pub fn booted(features: PlatformFeatures, image: RootRam, names: &[&'static str]) -> Self {
        let (mut k, host_ram) = kernel_with_ram(features);
        k.set_service_names(names).unwrap();
        let mut fx = Box::new(FakeEffects::new());
        let ram = [RootRam {
            base: PhysAddr::new(RAM_BASE),
            size: RAM_SIZE,
        }];
        let devices = [
            RootDevice {
                base: PhysAddr::new(0x0900_0000),
                size: 0x1000,
                attributes: DeviceAttributes::Uncached { normal_nc: false },
            },
            RootDevice {
                base: PhysAddr::new(0x1000_0000),
                size: 0x10_0000,
                attributes: DeviceAttributes::Uncached { normal_nc: true },
            },
            RootDevice {
                base: PhysAddr::new(0x8000_0000),
                size: 0x20_0000,
                attributes: DeviceAttributes::Cacheable,
            },
        ];
        let boot = RootBoot {
            ram: &ram,
            devices: &devices,
            entry: 0x1000,
            stack: 0x8000,
            ipc_buffer: IPC_BUFFER,
            priority: 255,
            kernel_memory: kernel_memory(),
            space_bytes: crate::object::boot::ROOT_SPACE_BYTES,
            image,
        };
        let layout = k.create_root_thread(&boot, &mut *fx).unwrap();
        assert_eq!(k.pick_next(), Some(layout.thread));
        Self {
            k,
            fx,
            root: layout.thread,
            layout,
            _ram: host_ram,
        }
    }

    /// Thread `t`'s IPC buffer (in the fake, by its space and address).
    pub fn buffer(&mut self, t: ThreadRef) -> &mut IpcBuffer {
        // A thread whose space is gone has no reachable buffer: a scratch one stands in.
        let (root, addr) = match self.k.threads.get(t) {
            Ok(thread) => (
                thread
                    .space
                    .and_then(|space| self.k.spaces.get(space).ok())
                    .map_or(0, |s| s.glue.root),
                thread.ipc_buffer.raw(),
            ),
            Err(_) => (0, 0),
        };
        self.fx.buffer_at(root, addr)
    }

    /// The root table address of `space` (how the fake names spaces).
    pub fn root_of(&self, space: super::SpaceRef) -> u64 {
        self.k.spaces.get(space).unwrap().glue.root
    }

    /// Thread `t`'s saved registers.
    pub fn context(&self, t: ThreadRef) -> crate::context::ThreadContext {
        self.k.threads.get(t).unwrap().glue.context
    }

    /// What the glue's trap entry does before a syscall: `t`'s saved x0–x7 hold its arguments.
    pub fn trap_registers(&mut self, t: ThreadRef, regs: &SyscallRegs) {
        if let Ok(thread) = self.k.threads.get_mut(t) {
            regs.write_to(&mut thread.glue.context);
        }
    }

    /// `t`'s saved x0–x7.
    pub fn registers(&self, t: ThreadRef) -> SyscallRegs {
        self.k
            .threads
            .get(t)
            .map_or(SyscallRegs::default(), |t| SyscallRegs::of(&t.glue.context))
    }

    /// One `svc` of `t` with `regs` in x0–x7 (as the glue saves them); `regs` becomes its saved
    /// x0–x7 afterwards: results, or the arguments unchanged if it blocked.
    pub fn raw_syscall(&mut self, t: ThreadRef, regs: &mut SyscallRegs) -> Schedule {
        self.trap_registers(t, regs);
        let schedule = self.k.handle_syscall(t, &mut *self.fx);
        *regs = self.registers(t);
        schedule
    }

    /// [`World::raw_syscall`] without the fast path.
    pub fn raw_syscall_slow(&mut self, t: ThreadRef, regs: &mut SyscallRegs) -> Schedule {
        self.trap_registers(t, regs);
        let schedule = self.k.handle_syscall_slow(t, &mut *self.fx);
        *regs = self.registers(t);
        schedule
    }

    /// Thread `t` makes syscall `number`; returns its registers afterwards and the decision.
    pub fn syscall(
        &mut self,
        t: ThreadRef,
        number: Syscall,
        cptr: u64,
        info: MessageInfo,
        words: [u64; 4],
    ) -> (SyscallRegs, Schedule) {
        let mut regs = SyscallRegs([
            cptr,
            info.raw(),
            words[0],
            words[1],
            words[2],
            words[3],
            0,
            number.code(),
        ]);
        // A call stopped at a preemption point is made again, as the thread would: the glue
        // rewound its PC to the `svc`, which it executes again with the same registers.
        let arguments = regs;
        let schedule = loop {
            let before = self.fx.restarts;
            regs = arguments;
            let schedule = self.raw_syscall(t, &mut regs);
            self.k.check_invariants().unwrap();
            if self.fx.restarts == before {
                break schedule;
            }
            if let Ok(thread) = self.k.threads.get_mut(t) {
                thread.glue.context.pc += 4;
            }
        };
        (regs, schedule)
    }

    /// Thread `t` invokes capability `cptr` with `label` and `args`; returns the result words.
    pub fn invoke_as(
        &mut self,
        t: ThreadRef,
        cptr: u64,
        label: u64,
        args: &[u64],
    ) -> Result<[u64; 4], KernelError> {
        let mut words = [0; 4];
        for (i, &a) in args.iter().enumerate() {
            if i < 4 {
                words[i] = a;
            } else {
                self.buffer(t).msg[i] = a;
            }
        }
        let info = MessageInfo::new(label, args.len() * 8, 0).unwrap();
        let (regs, _) = self.syscall(t, Syscall::Call, cptr, info, words);
        match regs.error_code() {
            Some(error) => Err(error),
            None => Ok([regs.0[2], regs.0[3], regs.0[4], regs.0[5]]),
        }
    }

    pub fn invoke(
        &mut self,
        cptr: u64,
        invocation: Invocation,
        args: &[u64],
    ) -> Result<[u64; 4], KernelError> {
        self.invoke_as(self.root, cptr, invocation.code(), args)
    }

    /// Retypes from the root's RAM untyped into its own CNode.
    pub fn retype(
        &mut self,
        kind: u64,
        size_bits: u64,
        dest: u64,
        count: u64,
    ) -> Result<(), KernelError> {
        self.invoke(
            UNTYPED,
            Invocation::Retype,
            &[kind, size_bits, 0, dest, count],
        )
        .map(|_| ())
    }

    pub fn kind(kind: ObjectKind) -> u64 {
        u64::from(kind.code())
    }

    /// The capability at `index` of the root's CNode.
    pub fn cap(&self, index: u64) -> Option<Capability> {
        let cnode = self.root_cnode();
        self.k
            .cnode_slot(cnode, index)
            .ok()
            .and_then(|s| self.k.slots.cap(s).copied())
    }

    pub fn root_cnode(&self) -> super::CNodeRef {
        self.k.threads.get(self.root).unwrap().cspace.unwrap()
    }

    /// Creates a thread at `dest` (root CNode index), sharing the root's CSpace and space, with
    /// `priority`, and resumes it.
    pub fn spawn(&mut self, dest: u64, priority: u8) -> ThreadRef {
        self.retype(Self::kind(ObjectKind::Thread), 0, dest, 1)
            .unwrap();
        let ipc = IPC_BUFFER + 0x1000 * dest;
        let args = [
            0x2000,
            0x9000,
            ipc,
            u64::from(priority) | 0xff00,
            RootLayout::CNODE,
            RootLayout::SPACE,
            0,
        ];
        self.invoke_as(self.root, dest, THREAD_CONFIGURE, &args)
            .unwrap();
        self.invoke(dest, Invocation::Resume, &[]).unwrap();
        let Some(Capability {
            object: Object::Thread(t),
            ..
        }) = self.cap(dest)
        else {
            panic!("no thread")
        };
        t
    }

    pub fn rights(bits: &[Rights]) -> u64 {
        u64::from(bits.iter().fold(Rights::NONE, |a, b| a.union(*b)).bits())
    }
}

pub fn info(label: u64, length: usize, caps: usize) -> MessageInfo {
    MessageInfo::new(label, length, caps).unwrap()
}

#[test]
fn the_root_runs_at_the_priority_the_glue_gives() {
    let (mut k, _ram) = kernel_with_ram(features());
    let mut fx = Box::new(FakeEffects::new());
    let boot = RootBoot {
        ram: &[],
        devices: &[],
        entry: 0x1000,
        stack: 0x8000,
        ipc_buffer: 0,
        priority: 100,
        kernel_memory: kernel_memory(),
        space_bytes: crate::object::boot::ROOT_SPACE_BYTES,
        image: RootRam::NONE,
    };
    let layout = k.create_root_thread(&boot, &mut *fx).unwrap();
    let root = k.threads.get(layout.thread).unwrap();
    assert_eq!((root.priority, root.max_priority), (100, 255));
}

#[test]
fn the_root_is_given_the_image_as_read_only_frames() {
    use crate::object::capability::FrameSize;
    let image = RootRam {
        base: PhysAddr::new(0x2_0000_0000),
        size: 4 << 20,
    };
    let mut w = World::booted(features(), image, &[]);
    let first = w.layout.first_image;
    assert_eq!(w.layout.first_free, first + 2);
    for block in 0..2 {
        let cap = w.cap(first + block).unwrap();
        let Object::Frame(frame) = cap.object else {
            panic!("not a frame: {cap:?}")
        };
        assert_eq!(frame.base.raw(), 0x2_0000_0000 + block * (2 << 20));
        assert_eq!(frame.size, FrameSize::Block2M);
        assert_eq!(cap.rights, Rights::READ);
    }
    // Read-only: mapping one writable is refused, read-only is allowed.
    let space = RootLayout::SPACE;
    assert_eq!(
        w.invoke(first, Invocation::Map, &[space, 0x4000_0000, 3, 0]),
        Err(KernelError::InsufficientRights)
    );
    w.invoke(first, Invocation::Map, &[space, 0x4000_0000, 1, 0])
        .unwrap();
    // An image that is not whole 2 MiB blocks is refused.
    let (mut k, _ram) = kernel_with_ram(features());
    let mut fx = Box::new(FakeEffects::new());
    let boot = RootBoot {
        ram: &[],
        devices: &[],
        entry: 0x1000,
        stack: 0x8000,
        ipc_buffer: 0,
        priority: 100,
        kernel_memory: kernel_memory(),
        space_bytes: crate::object::boot::ROOT_SPACE_BYTES,
        image: RootRam {
            base: PhysAddr::new(0x2_0000_0000),
            size: 3 << 20,
        },
    };
    assert_eq!(
        k.create_root_thread(&boot, &mut *fx),
        Err(KernelError::AlignmentError)
    );
}

#[test]
fn the_root_names_threads_after_the_image_services_only() {
    let mut w = World::booted(features(), RootRam::NONE, &["init", "hello"]);
    w.retype(World::kind(ObjectKind::Thread), 0, FREE, 1)
        .unwrap();
    let Some(Capability {
        object: Object::Thread(thread),
        ..
    }) = w.cap(FREE)
    else {
        panic!()
    };
    let irq = RootLayout::IRQ_CONTROL;
    let name = Invocation::IrqControlNameThread;
    w.invoke(irq, name, &[FREE, 1]).unwrap();
    assert_eq!(w.k.threads.get(thread).unwrap().glue.name, Some("hello"));
    assert_eq!(
        w.invoke(irq, name, &[FREE, 2]),
        Err(KernelError::InvalidArgument)
    );
    // Only a thread, only with WRITE, only through IrqControl.
    assert_eq!(
        w.invoke(irq, name, &[RootLayout::CNODE, 0]),
        Err(KernelError::WrongType)
    );
    w.invoke(RootLayout::CNODE, Invocation::Copy, &[FREE + 1, FREE, 1])
        .unwrap();
    assert_eq!(
        w.invoke(irq, name, &[FREE + 1, 0]),
        Err(KernelError::InsufficientRights)
    );
    assert_eq!(
        w.invoke(RootLayout::CNODE, name, &[FREE, 0]),
        Err(KernelError::IllegalOperation)
    );
    // Names are set at boot only.
    assert_eq!(
        w.k.set_service_names(&["x"]),
        Err(KernelError::IllegalOperation)
    );
}

#[test]
fn root_thread_gets_its_capabilities() {
    let w = World::new();
    assert_eq!(
        w.cap(RootLayout::CNODE).map(|c| c.object.kind_code()),
        Some(ObjectKind::CNode.code())
    );
    assert_eq!(
        w.cap(RootLayout::SPACE).map(|c| c.object.kind_code()),
        Some(13)
    );
    assert_eq!(
        w.cap(RootLayout::THREAD).map(|c| c.object),
        Some(Object::Thread(w.root))
    );
    assert_eq!(
        w.cap(RootLayout::IRQ_CONTROL).map(|c| c.object),
        Some(Object::IrqControl)
    );
    assert!(matches!(
        w.cap(UNTYPED).map(|c| c.object),
        Some(Object::Untyped(_))
    ));
    assert_eq!(w.layout.first_device, UNTYPED + 1);
    assert_eq!(w.layout.first_free, UNTYPED + 4);
    let context = w.context(w.root);
    assert_eq!((context.pc, context.sp), (0x1000, 0x8000));
    assert_eq!(context.x[0], IPC_BUFFER);
    assert_eq!(w.fx.live_spaces, 1);
    w.k.check_invariants().unwrap();
}

#[test]
fn a_second_root_or_a_bad_region_is_refused() {
    let mut w = World::new();
    let boot = RootBoot {
        ram: &[],
        devices: &[],
        entry: 0,
        stack: 0,
        ipc_buffer: 0,
        priority: 255,
        kernel_memory: kernel_memory(),
        space_bytes: crate::object::boot::ROOT_SPACE_BYTES,
        image: RootRam::NONE,
    };
    assert_eq!(
        w.k.create_root_thread(&boot, &mut *w.fx),
        Err(KernelError::IllegalOperation)
    );
    let (mut k, _ram) = kernel_with_ram(features());
    let mut fx = Box::new(FakeEffects::new());
    let bad = [RootRam {
        base: PhysAddr::new(0x1001),
        size: 0x1000,
    }];
    let boot = RootBoot {
        ram: &bad,
        devices: &[],
        entry: 0,
        stack: 0,
        ipc_buffer: 0,
        priority: 255,
        kernel_memory: kernel_memory(),
        space_bytes: crate::object::boot::ROOT_SPACE_BYTES,
        image: RootRam::NONE,
    };
    assert_eq!(
        k.create_root_thread(&boot, &mut *fx),
        Err(KernelError::AlignmentError)
    );
    let empty = [RootRam {
        base: PhysAddr::new(0x1000),
        size: 0,
    }];
    let boot = RootBoot {
        ram: &empty,
        devices: &[],
        entry: 0,
        stack: 0,
        ipc_buffer: 0,
        priority: 255,
        kernel_memory: kernel_memory(),
        space_bytes: crate::object::boot::ROOT_SPACE_BYTES,
        image: RootRam::NONE,
    };
    assert_eq!(
        k.create_root_thread(&boot, &mut *fx),
        Err(KernelError::RangeError)
    );
    let boot = RootBoot {
        ram: &[],
        devices: &[],
        entry: 0,
        stack: 0,
        ipc_buffer: 0x1004,
        priority: 255,
        kernel_memory: kernel_memory(),
        space_bytes: crate::object::boot::ROOT_SPACE_BYTES,
        image: RootRam::NONE,
    };
    assert_eq!(
        k.create_root_thread(&boot, &mut *fx),
        Err(KernelError::AlignmentError)
    );
}

/// The glue keeps the kernel in a static: `Kernel::new` must be usable in a constant.
const STATIC_KERNEL: Kernel = Kernel::new(PlatformFeatures::UNKNOWN);

#[test]
fn the_kernel_fits_a_static_and_takes_its_features_at_boot() {
    assert!(STATIC_KERNEL.current().is_none());
    // No object arenas: the kernel's own state is the IRQ table and the scheduler.
    let size = core::mem::size_of::<Kernel>();
    assert!(size < 64 * 1024, "{size} bytes");
    let mut w = World::new();
    assert_eq!(
        w.k.set_features(features()),
        Err(KernelError::IllegalOperation)
    );
    let mut k = Box::new(Kernel::new(PlatformFeatures::UNKNOWN));
    k.set_features(features()).unwrap();
    assert_eq!(k.features(), features());
}

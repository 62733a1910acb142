//! Creating the image's further services at boot, by acting for the root thread: every object
//! and mapping comes from the root's untyped memory through the same checked invocations a root
//! service would make (`Retype`, `Copy`, `Map`, `Move`, `ThreadConfigure`, `Resume`), so a boot
//! service holds nothing a running service could not have been given.
//!
//! Layout, for the `n`th further service (`n` from 0, in image order):
//! - the root's slots `first_free + 3n`, `+ 1`, `+ 2` hold its CNode, AddressSpace and Thread (so
//!   the root can later stop, inspect or revoke what it was given);
//! - its own CNode has [`CHILD_CNODE_BITS`] radix bits: slot 1 its CNode, 2 its AddressSpace, 3
//!   its Thread, [`FIRST_GRANT`]… the capabilities its manifest grants, [`FIRST_FRAME`]… the
//!   frames of its image, stack and IPC buffer, in that order;
//! - the root's slot [`SCRATCH`] (its CNode's last) is used while frames are made and is empty
//!   afterwards.

use super::glue::Glue;
use super::{LoadError, PAGE};
use capvisor_image::service::{
    ACCESS_READ, ACCESS_WRITE, IPC_BUFFER, STACK_TOP, ServiceImage, ServicePage,
};
use capvisor_ipc::abi::{Invocation, KernelError, MSG_REGS_IN_CPU, MessageInfo, Syscall};
use capvisor_ipc::cap::{ObjectKind, Rights};
use capvisor_ipc::types::Ipa;
use capvisor_kernel::object::boot::ROOT_CNODE_SLOTS;
use capvisor_kernel::object::{
    Effects, Kernel, Object, RootLayout, SyscallRegs, THREAD_CONFIGURE, ThreadRef,
};

/// Radix bits of a boot service's CNode (512 slots).
pub const CHILD_CNODE_BITS: u64 = 9;
/// The first slot of a boot service's granted capabilities.
pub const FIRST_GRANT: u64 = 4;
/// The first slot of a boot service's frames.
pub const FIRST_FRAME: u64 = 64;
/// The root's slot used while frames are made.
pub const SCRATCH: u64 = ROOT_CNODE_SLOTS as u64 - 1;
/// The kind code of a service AddressSpace.
const ADDRESS_SPACE_KIND: u64 = 13;
/// log2 of a boot service's AddressSpace object: its record, root table and 62 table pages
/// (room for 62 distinct 2 MiB regions mapped in pages, or 62 GiB in blocks), 256 KiB.
pub const SERVICE_SPACE_BITS: u64 = 18;

/// The root thread, invoked on by the glue at boot.
pub struct Root<'a> {
    /// The kernel.
    pub kernel: &'a mut Kernel,
    /// The glue's effects.
    pub glue: &'a mut Glue,
    /// The root's layout.
    pub layout: RootLayout,
    /// How many of the root's RAM untyped (the last ones) are RAM carve-outs of the manifest,
    /// which boot never retypes.
    pub carveouts: u64,
}

impl Root<'_> {
    /// Invokes the root's capability `cptr` with `label` and `args`, as if the root called it.
    ///
    /// # Errors
    /// The invocation's error.
    pub fn invoke(
        &mut self,
        cptr: u64,
        label: u64,
        args: &[u64],
    ) -> Result<[u64; MSG_REGS_IN_CPU], KernelError> {
        let mut words = [0; MSG_REGS_IN_CPU];
        for (word, arg) in words.iter_mut().zip(args) {
            *word = *arg;
        }
        if args.len() > MSG_REGS_IN_CPU {
            let space = *self.kernel.space_glue(self.layout.space)?;
            let buffer = Ipa::new(IPC_BUFFER);
            let mut data = self.glue.read_ipc_buffer(&space, buffer)?;
            for (word, arg) in data.msg.iter_mut().zip(args).skip(MSG_REGS_IN_CPU) {
                *word = *arg;
            }
            self.glue.write_ipc_buffer(&space, buffer, &data)?;
        }
        let info = MessageInfo::new(label, args.len() * 8, 0)
            .map_err(|_| KernelError::InvalidMessageInfo)?;
        let [w0, w1, w2, w3] = words;
        let regs = SyscallRegs([cptr, info.raw(), w0, w1, w2, w3, 0, Syscall::Call.code()]);
        // The call's arguments and results are the root's saved x0–x7: the root has not run
        // yet, and its start registers (x0, the IPC buffer) must survive these calls.
        let thread = self.layout.thread;
        let start = self.kernel.thread_glue(thread).map(|t| t.context)?;
        if let Ok(t) = self.kernel.thread_glue(thread) {
            regs.write_to(&mut t.context);
        }
        self.kernel.handle_syscall(thread, self.glue);
        let t = self.kernel.thread_glue(thread)?;
        let regs = SyscallRegs::of(&t.context);
        t.context = start;
        match regs.error_code() {
            Some(error) => Err(error),
            None => Ok([regs.0[2], regs.0[3], regs.0[4], regs.0[5]]),
        }
    }

    /// Retypes one object from the first RAM untyped with room for it.
    pub fn retype(
        &mut self,
        kind: u64,
        bits: u64,
        cnode: u64,
        index: u64,
    ) -> Result<(), KernelError> {
        let mut last = KernelError::NotEnoughMemory;
        // The last `carveouts` RAM untyped are manifest carve-outs, kept for their holders.
        let end = self.layout.first_device - self.carveouts;
        for untyped in self.layout.first_untyped..end {
            match self.invoke(
                untyped,
                Invocation::Retype.code(),
                &[kind, bits, cnode, index, 1],
            ) {
                Err(KernelError::NotEnoughMemory) => last = KernelError::NotEnoughMemory,
                other => return other.map(|_| ()),
            }
        }
        Err(last)
    }

    /// The object in the root's slot `index`.
    pub fn object(&self, index: u64) -> Option<Object> {
        let slot = self.kernel.cnode_slot(self.layout.cnode, index).ok()?;
        self.kernel.capability(slot).map(|c| c.object)
    }

    /// Creates a service from `image`, at `priority`, with its objects at the root's slots
    /// `base..base + 3`.
    ///
    /// # Errors
    /// The first invocation that failed, or a malformed image.
    pub fn spawn(
        &mut self,
        base: u64,
        image: &ServiceImage,
        (priority, idc): (u8, bool),
        supervisor: Option<u64>,
    ) -> Result<ThreadRef, LoadError> {
        let (cnode, space, thread) = (base, base + 1, base + 2);
        let all = u64::from(Rights::ALL.bits());
        self.retype(
            u64::from(ObjectKind::CNode.code()),
            CHILD_CNODE_BITS,
            0,
            cnode,
        )?;
        self.retype(ADDRESS_SPACE_KIND, SERVICE_SPACE_BITS, 0, space)?;
        self.retype(u64::from(ObjectKind::Thread.code()), 0, 0, thread)?;
        for (dest, source) in [(1, cnode), (2, space), (3, thread)] {
            self.invoke(cnode, Invocation::Copy.code(), &[dest, source, all])?;
        }
        self.memory(cnode, space, image, idc)?;
        // Its manifest priority, which is also its maximum: it cannot make a thread above itself.
        let priorities = u64::from(priority) | u64::from(priority) << 8;
        // Supervised (the root is `services/init`): its faults go to the supervisor's endpoint
        // (the root slot `supervisor` holds a badged copy), and the supervisor starts it.
        let configure = [
            image.header.entry,
            STACK_TOP,
            IPC_BUFFER,
            priorities,
            cnode,
            space,
            supervisor.unwrap_or(0),
        ];
        self.invoke(thread, THREAD_CONFIGURE, &configure)?;
        if supervisor.is_none() {
            self.invoke(thread, Invocation::Resume.code(), &[])?;
        }
        match self.object(thread) {
            Some(Object::Thread(created)) => Ok(created),
            _ => Err(LoadError::Kernel(KernelError::Revoked)),
        }
    }

    /// Gives the service at root slots `cnode`, `space` its image, stack and IPC buffer pages,
    /// from its CNode's slot [`FIRST_FRAME`] on.
    fn memory(
        &mut self,
        cnode: u64,
        space: u64,
        image: &ServiceImage,
        idc: bool,
    ) -> Result<(), LoadError> {
        for (frame, page) in (FIRST_FRAME..).zip(all_pages(image)) {
            self.frame(cnode, space, frame, page, idc)?;
        }
        Ok(())
    }

    /// Makes a frame holding `page`, maps it in the space at root slot `space`, and moves its
    /// capability to slot `dest` of the CNode at root slot `cnode`.
    fn frame(
        &mut self,
        cnode: u64,
        space: u64,
        dest: u64,
        page: ServicePage<'_>,
        idc: bool,
    ) -> Result<(), LoadError> {
        self.retype(u64::from(ObjectKind::Frame.code()), 12, 0, SCRATCH)?;
        let Some(Object::Frame(frame)) = self.object(SCRATCH) else {
            return Err(LoadError::Kernel(KernelError::WrongType));
        };
        write_page(self.glue, frame.base.raw(), page.data, idc)?;
        // `ACCESS_*` bits are `Map`'s access bits (R 1, W 2, X 4).
        let bits = u64::from(page.access);
        self.invoke(SCRATCH, Invocation::Map.code(), &[space, page.ipa, bits, 0])?;
        self.invoke(cnode, Invocation::Move.code(), &[dest, SCRATCH])?;
        Ok(())
    }
}

/// Every page a service is given, in order: its segments' pages, its stack (zeroed, ending at
/// [`STACK_TOP`]) and its IPC buffer (zeroed).
pub fn all_pages<'a>(image: &ServiceImage<'a>) -> impl Iterator<Item = ServicePage<'a>> + 'a {
    let stack = STACK_TOP - image.stack_pages() * PAGE;
    let zeroed = move |ipa| ServicePage {
        ipa,
        access: ACCESS_READ | ACCESS_WRITE,
        data: &[],
    };
    let stack_pages = (0..image.stack_pages()).map(move |n| zeroed(stack + n * PAGE));
    image.pages().chain(stack_pages).chain([zeroed(IPC_BUFFER)])
}

/// Writes `data` to the start of the RAM page at `pa`, zeroes the rest, and cleans it to the
/// point of unification, so the code in it is visible to instruction fetches (unless
/// CTR_EL0.IDC makes that unnecessary).
pub fn write_page(glue: &Glue, pa: u64, data: &[u8], idc: bool) -> Result<(), LoadError> {
    if !glue.ram.contains(pa, pa + PAGE) || data.len() > PAGE as usize {
        return Err(LoadError::Kernel(KernelError::BadAddress));
    }
    // SAFETY: `pa` is a page of kernel-mapped RAM (checked above) that a new frame capability
    // names and no thread maps yet, so nothing else accesses it.
    let page = unsafe { &mut *(pa as *mut [u8; PAGE as usize]) };
    let (head, tail) = page.split_at_mut(data.len());
    head.copy_from_slice(data);
    tail.fill(0);
    if !idc {
        crate::arch::aarch64::cache::clean_to_pou(pa, pa + PAGE);
    }
    Ok(())
}

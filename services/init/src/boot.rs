//! Carrying out the boot plan (`capvisor_image::plan`): the kernel created only init, with
//! every free RAM range as untyped, IrqControl, the image payload as read-only 2 MiB frames and a
//! read-only platform page (`capvisor_ipc::bootinfo::PlatformPage`, with the device tree);
//! init makes everything else, step by step, with the ordinary invocations any service could
//! make (Retype, Copy, Mint, Move, Map, ThreadConfigure, ThreadBindVcpu, Resume), so the system
//! it builds holds nothing a running service could not have been given.
//!
//! The plan is untrusted input: it is decoded and checked once (`Plan::decode`) before the
//! first step, and the kernel checks every invocation. A step that fails stops the boot with a
//! message naming the manifest item it was for and what it was for ("service 'x' (manifest line
//! 9): out of memory for its stack").
//!
//! Plan slot `n` is init's slot `first_free + n`; the plan's own references name init's CNode
//! (slot 1), AddressSpace (2) and IrqControl (4), the kernel's root layout.

use capvisor_ipc::abi::{CacheOp, Invocation, KernelError};
use capvisor_ipc::cap::ObjectKind;

use crate::devicetree;
use capvisor_image::plan::RetypeKind;
use capvisor_image::plan::{
    INIT_CNODE, INIT_SPACE, IRQ_CONTROL, NONE, Op, PAGES_CMDLINE, Plan, PlanName, Step,
};
use capvisor_image::service::{ACCESS_EXECUTE, PAGE};
use capvisor_ipc::bootinfo::{
    BOOT_INFO as BOOT_INFO_IPA, BootInfo, DeviceInfo, GuestInfo, Payload, PlatformPage,
};
use core::fmt;
use core::mem::offset_of;
use zerocopy::IntoBytes;

use capvisor_ipc::cap::root::{CNODE, CNODE_SLOTS, FIRST_UNTYPED, IRQ_CONTROL as IRQ, SPACE};
/// Where init maps the image's payload, read-only, in 2 MiB blocks.
pub const PAYLOAD_WINDOW: u64 = 0x10_0000_0000;
/// Where init maps a frame it fills.
pub const SCRATCH_PAGE: u64 = 0x0f_ff00_0000;
/// The most RAM untyped and image frames init keeps track of.
pub const MAX_HELD: usize = 64;
/// The most device regions init keeps track of (`capvisor-kernel`'s `MAX_DEVICE_REGIONS`).
pub const MAX_DEVICES: usize = 96;
/// The most RAM untyped init holds while it builds: the kernel's, and the pieces that carving a
/// carve-out out of one leaves.
const MAX_RAM: usize = 128;
/// Where guest entry `index` of a boot-info page is.
fn guest_at(index: u64) -> usize {
    offset_of!(BootInfo, guests) + index as usize * size_of::<GuestInfo>()
}

/// Rights bits (`Rights::ALL`, `Rights::READ`).
const ALL_RIGHTS: u64 = 0b1_1111;
/// Read, write (Map's access bits).
const READ_WRITE: u64 = 0b11;

/// What init does to the kernel: invocations, and writing a page it mapped at
/// [`SCRATCH_PAGE`]. The target's is system calls; the host tests' a recording fake.
pub trait Kernel {
    /// Invokes capability `cptr`.
    ///
    /// # Errors
    /// The kernel's answer.
    fn invoke(
        &mut self,
        cptr: u64,
        invocation: Invocation,
        args: &[u64],
    ) -> Result<[u64; 4], KernelError>;

    /// Writes `bytes` at `offset` into the page mapped at [`SCRATCH_PAGE`] (at most to its end).
    fn write_scratch(&mut self, offset: usize, bytes: &[u8]);
}

/// The capabilities the kernel gave init, found by `Identify` and `UntypedDescribe`: its RAM
/// untyped, the board's device regions and the image's frames, in slot order, and the first
/// empty slot.
#[derive(Clone, Debug, Default)]
pub struct Given {
    /// The RAM untyped's slots.
    pub ram: heapless::Vec<u64, MAX_HELD>,
    /// The device untyped: slot, physical base and size.
    pub devices: heapless::Vec<(u64, u64, u64), MAX_DEVICES>,
    /// The image's frames' slots, block by block.
    pub image: heapless::Vec<u64, MAX_HELD>,
    /// The first slot after them.
    pub first_free: u64,
}

impl Given {
    /// Asks the kernel what each slot from the first untyped holds, up to the first that is
    /// neither an untyped nor a frame (empty when init carries out the plan).
    ///
    /// # Errors
    /// More than [`MAX_HELD`] of a kind.
    pub fn find(kernel: &mut impl Kernel) -> Result<Self, KernelError> {
        let mut given = Self::default();
        let mut slot = FIRST_UNTYPED;
        while let Ok([kind, ..]) = kernel.invoke(slot, Invocation::Identify, &[]) {
            if kind == u64::from(ObjectKind::Untyped.code()) {
                let [base, size, memory, _] =
                    kernel.invoke(slot, Invocation::UntypedDescribe, &[])?;
                if memory == 0 {
                    given.ram.push(slot).map_err(|_| KernelError::RangeError)?;
                } else {
                    let device = (slot, base, size);
                    given
                        .devices
                        .push(device)
                        .map_err(|_| KernelError::RangeError)?;
                }
            } else if kind == u64::from(ObjectKind::Frame.code()) {
                given
                    .image
                    .push(slot)
                    .map_err(|_| KernelError::RangeError)?;
            } else {
                break;
            }
            slot += 1;
        }
        given.first_free = slot;
        Ok(given)
    }

    /// Maps the image's frames read-only from [`PAYLOAD_WINDOW`]; returns the bytes mapped.
    ///
    /// # Errors
    /// The kernel's refusal.
    pub fn map_image(&self, kernel: &mut impl Kernel) -> Result<u64, KernelError> {
        let block = capvisor_image::plan::IMAGE_BLOCK;
        for (index, &frame) in self.image.iter().enumerate() {
            let ipa = PAYLOAD_WINDOW + index as u64 * block;
            kernel.invoke(frame, Invocation::Map, &[SPACE, ipa, 1, 0])?;
        }
        Ok(self.image.len() as u64 * block)
    }
}

/// Why a step could not be carried out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The kernel refused an invocation.
    Kernel(KernelError),
    /// init's CNode has no room for the plan's slots.
    NoSlots,
    /// A guest's command line in the payload is not one (`capvisor_image::check_cmdline`).
    Cmdline,
    /// The device-tree node is not on this board, has no `reg`, or shares its pages with
    /// another region, or is the kernel's own (console, GIC).
    DeviceNotFound,
    /// The carve-out is not free RAM.
    NotRam,
    /// The kernel's platform page carries no device tree.
    NoDeviceTree,
}

/// A step that failed: which, and why.
#[derive(Clone, Copy, Debug)]
pub struct Refused<'a> {
    /// The manifest item it was done for.
    pub name: Option<&'a PlanName>,
    /// The step's index.
    pub index: usize,
    /// The step.
    pub step: Step<'a>,
    /// Why.
    pub failure: Failure,
}

impl fmt::Display for Refused<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name {
            Some(name) => write!(f, "{name}: ")?,
            None => f.write_str("the plan: ")?,
        }
        let purpose = self.step.purpose.text();
        match self.failure {
            Failure::Kernel(KernelError::NotEnoughMemory) => {
                write!(f, "out of memory for {purpose}")?;
            }
            Failure::Kernel(error) => write!(f, "the kernel refused {purpose}: {error:?}")?,
            Failure::NoSlots => write!(f, "init's CNode has no room for {purpose}")?,
            Failure::Cmdline => write!(f, "{purpose} is malformed")?,
            Failure::DeviceNotFound => write!(f, "{purpose}: no such device on this board")?,
            Failure::NotRam => write!(f, "{purpose} is not free RAM on this board")?,
            Failure::NoDeviceTree => write!(f, "{purpose}: the kernel gave no device tree")?,
        }
        write!(f, " (step {}: {})", self.index, self.step.op)
    }
}

/// What carrying out the plan made that init goes on using.
#[derive(Clone, Debug, Default)]
pub struct Made<'a> {
    /// Each service that has a thread, in manifest order: its badge (its index plus one), its
    /// thread's slot in init's CNode, and its name.
    pub services: heapless::Vec<(u64, u64, &'a str), MAX_HELD>,
    /// How many threads were started.
    pub started: usize,
    /// The supervisor's endpoint (init's slot), when the plan says init supervises.
    pub endpoint: Option<u64>,
}

/// Carries out `plan` (over the `payload` init mapped) with what the kernel `given`, on the
/// platform the kernel described in init's platform page.
///
/// # Errors
/// The first step that failed.
pub fn carry_out<'a>(
    kernel: &mut impl Kernel,
    (given, platform): (&Given, Platform<'_>),
    plan: Plan<'a>,
    payload: &[u8],
) -> Result<Made<'a>, Refused<'a>> {
    let mut made = Made::default();
    let slots = u64::from(plan.header.slot_count);
    let mut run = Run {
        kernel,
        given,
        payload,
        platform,
        ram: given.ram.iter().copied().collect(),
        next_extra: given.first_free + slots,
        carved: heapless::Vec::new(),
        located: heapless::Vec::new(),
        irqs: heapless::Vec::new(),
    };
    for (index, step) in plan.steps().enumerate() {
        let refused = |failure| Refused {
            name: plan.name(step.owner),
            index,
            step,
            failure,
        };
        if given.first_free + slots > CNODE_SLOTS {
            return Err(refused(Failure::NoSlots));
        }
        run.step(&step.op).map_err(refused)?;
        match step.op {
            Op::Configure { slot, .. } => {
                let name = plan.name(step.owner).map_or("?", |n| n.text());
                let service = (u64::from(step.owner) + 1, run.cptr(slot), name);
                let _ = made.services.push(service);
            }
            Op::Resume { .. } => made.started += 1,
            _ => {}
        }
    }
    if plan.supervised() {
        made.endpoint = Some(run.cptr(plan.header.supervisor));
    }
    Ok(made)
}

/// The platform as the kernel described it in init's platform page: its facts and its device
/// tree.
#[derive(Clone, Copy, Debug)]
pub struct Platform<'d> {
    /// The facts.
    pub page: PlatformPage,
    /// The device tree (empty: none).
    pub dtb: &'d [u8],
}

struct Run<'k, 'g, 'p, K> {
    kernel: &'k mut K,
    given: &'g Given,
    payload: &'p [u8],
    platform: Platform<'g>,
    /// The RAM untyped, the kernel's then what carving carve-outs left.
    ram: heapless::Vec<u64, MAX_RAM>,
    /// The next slot after the plan's, for what init keeps that the plan does not count.
    next_extra: u64,
    /// Per RAM untyped carve-outs were cut from: how far it is used.
    carved: heapless::Vec<(u64, u64), 8>,
    /// Each device's plan slot and locator, for its interrupts.
    located: heapless::Vec<(u32, heapless::String<128>, bool), 32>,
    /// Per boot-info frame and guest entry: how many interrupts init listed.
    irqs: heapless::Vec<(u32, u64, u32), 16>,
}

impl<K: Kernel> Run<'_, '_, '_, K> {
    /// init's CPtr of a plan reference.
    fn cptr(&self, reference: u32) -> u64 {
        match reference {
            INIT_CNODE => CNODE,
            INIT_SPACE => SPACE,
            IRQ_CONTROL => IRQ,
            NONE => 0,
            slot => self.given.first_free + u64::from(slot),
        }
    }

    fn invoke(&mut self, cptr: u64, invocation: Invocation, args: &[u64]) -> Result<(), Failure> {
        self.kernel
            .invoke(cptr, invocation, args)
            .map(|_| ())
            .map_err(Failure::Kernel)
    }

    /// A slot index in `cnode`: a plan slot in init's own CNode, else the number as it is.
    fn dest(&self, cnode: u32, dest: u64) -> u64 {
        if cnode == INIT_CNODE {
            self.given.first_free + dest
        } else {
            dest
        }
    }

    fn step(&mut self, op: &Op<'_>) -> Result<(), Failure> {
        match *op {
            Op::Retype { slot, kind, bits } => self.retype(kind as u64, bits, self.cptr(slot)),
            Op::Pages {
                slot,
                count,
                source,
                data_size,
                space,
                ipa,
                access,
                cnode,
                dest,
                flags,
            } => {
                if flags & PAGES_CMDLINE != 0 {
                    let bytes = self
                        .payload
                        .get(source as usize..(source + data_size) as usize)
                        .ok_or(Failure::Kernel(KernelError::RangeError))?;
                    capvisor_image::check_cmdline(bytes).map_err(|_| Failure::Cmdline)?;
                }
                for page in 0..count {
                    let frame = self.cptr(slot) + page;
                    let start = page * PAGE;
                    let bytes = if start < data_size {
                        let end = data_size.min(start + PAGE);
                        self.payload
                            .get((source + start) as usize..(source + end) as usize)
                            .ok_or(Failure::Kernel(KernelError::RangeError))?
                    } else {
                        &[]
                    };
                    self.page(frame, bytes, access)?;
                    if space != NONE {
                        let args = [self.cptr(space), ipa + start, access, 0];
                        self.invoke(frame, Invocation::Map, &args)?;
                    }
                    if cnode != NONE {
                        let args = [dest + page, frame];
                        self.invoke(self.cptr(cnode), Invocation::Move, &args)?;
                    }
                }
                Ok(())
            }
            Op::ImageFrame { slot, block } => {
                let frame = *self
                    .given
                    .image
                    .get(block as usize)
                    .ok_or(Failure::Kernel(KernelError::RangeError))?;
                self.invoke(CNODE, Invocation::Copy, &[self.cptr(slot), frame, 1])
            }
            Op::Copy {
                slot,
                cnode,
                dest,
                rights,
            } => {
                let args = [self.dest(cnode, dest), self.cptr(slot), rights];
                self.invoke(self.cptr(cnode), Invocation::Copy, &args)
            }
            Op::Mint {
                slot,
                cnode,
                dest,
                rights,
                badge,
            } => {
                let args = [self.dest(cnode, dest), self.cptr(slot), rights, badge];
                self.invoke(self.cptr(cnode), Invocation::Mint, &args)
            }
            Op::Move { slot, cnode, dest } => {
                let args = [self.dest(cnode, dest), self.cptr(slot)];
                self.invoke(self.cptr(cnode), Invocation::Move, &args)
            }
            Op::Map {
                slot,
                space,
                ipa,
                access,
                memtype,
            } => {
                let args = [self.cptr(space), ipa, access, memtype];
                self.invoke(self.cptr(slot), Invocation::Map, &args)
            }
            Op::Configure {
                slot,
                cspace,
                space,
                registers: [entry, sp, ipc],
                priorities,
                fault,
            } => {
                let words = [
                    entry,
                    sp,
                    ipc,
                    priorities,
                    self.cptr(cspace),
                    self.cptr(space),
                    self.cptr(fault),
                ];
                self.invoke(self.cptr(slot), Invocation::ThreadConfigure, &words)
            }
            Op::Name { slot, service } => {
                let args = [self.cptr(slot), service];
                self.invoke(IRQ, Invocation::IrqControlNameThread, &args)
            }
            Op::Resume { slot } => self.invoke(self.cptr(slot), Invocation::Resume, &[]),
            Op::BindVcpu { slot, vcpu } => {
                let args = [self.cptr(vcpu)];
                self.invoke(self.cptr(slot), Invocation::ThreadBindVcpu, &args)
            }
            Op::InfoPlatform { slot } => {
                let page = self.platform.page;
                let (flags, smccc) = (page.flags, page.smccc_workarounds);
                self.patch(slot, |kernel| {
                    kernel.write_scratch(offset_of!(BootInfo, flags), flags.as_bytes());
                    let at = offset_of!(BootInfo, smccc_workarounds);
                    kernel.write_scratch(at, smccc.as_bytes());
                })
            }
            Op::GiveRam { cnode, first, end } => {
                let ram = self.ram.clone();
                for (dest, &untyped) in (first..end).zip(&ram) {
                    let args = [dest, untyped, ALL_RIGHTS];
                    self.invoke(self.cptr(cnode), Invocation::Copy, &args)?;
                }
                Ok(())
            }
            Op::IdentityRam { slot, bits } => {
                self.retype(RetypeKind::Untyped as u64, bits, self.cptr(slot))
            }
            Op::Carveout {
                slot,
                base,
                size,
                cacheable,
            } => self.carveout(slot, base, size, cacheable),
            Op::Device {
                slot,
                locator,
                compatible,
                attributes,
            } => self.device(slot, (locator, compatible), attributes),
            Op::InfoDevice {
                slot,
                region,
                index,
            } => {
                let [base, size, ..] = self.describe(region)?;
                let at = offset_of!(BootInfo, devices) + index as usize * size_of::<DeviceInfo>();
                self.patch(slot, |kernel| {
                    kernel.write_scratch(at + offset_of!(DeviceInfo, base), base.as_bytes());
                    kernel.write_scratch(at + offset_of!(DeviceInfo, size), size.as_bytes());
                })
            }
            Op::InfoGuestRam {
                slot,
                region,
                index,
            } => {
                let [base, ..] = self.describe(region)?;
                let at = guest_at(index) + offset_of!(GuestInfo, ram_base);
                self.patch(slot, |kernel| kernel.write_scratch(at, base.as_bytes()))
            }
            Op::InfoDtb { slot, space, ipa } => self.dtb(slot, space, ipa),
            Op::Irqs {
                slot,
                cnode,
                info,
                dest,
                guest,
            } => self.irqs(slot, (cnode, dest), (info, guest)),
        }
    }

    /// Where plan slot `slot`'s untyped is: base, size, memory.
    fn describe(&mut self, slot: u32) -> Result<[u64; 4], Failure> {
        self.kernel
            .invoke(self.cptr(slot), Invocation::UntypedDescribe, &[])
            .map_err(Failure::Kernel)
    }

    /// A slot after the plan's.
    fn extra(&mut self) -> Result<u64, Failure> {
        if self.next_extra >= CNODE_SLOTS {
            return Err(Failure::NoSlots);
        }
        self.next_extra += 1;
        Ok(self.next_extra - 1)
    }

    /// The device untyped the kernel gave for the pages of the device `locator` names, with the
    /// memory types the manifest gives it, copied into plan slot `slot`.
    fn device(
        &mut self,
        slot: u32,
        (locator, compatible): (&str, bool),
        attributes: u64,
    ) -> Result<(), Failure> {
        if self.platform.dtb.is_empty() {
            return Err(Failure::NoDeviceTree);
        }
        let (base, size) = devicetree::find(self.platform.dtb, locator, compatible)
            .ok_or(Failure::DeviceNotFound)?;
        let &(untyped, _, _) = self
            .given
            .devices
            .iter()
            .find(|&&(_, b, s)| (b, s) == (base, size))
            .ok_or(Failure::DeviceNotFound)?;
        self.invoke(IRQ, Invocation::UntypedSetMemory, &[untyped, attributes])?;
        self.invoke(
            CNODE,
            Invocation::Copy,
            &[self.cptr(slot), untyped, ALL_RIGHTS],
        )?;
        let text = heapless::String::try_from(locator).map_err(|_| Failure::DeviceNotFound)?;
        let _ = self.located.push((slot, text, compatible));
        Ok(())
    }

    /// An untyped of exactly `[base, base + size)` in plan slot `slot`, cut from the RAM untyped
    /// that covers it: the pieces before it (largest aligned first) stay init's RAM. The plan
    /// makes carve-outs first, in address order, so nothing else was made from that untyped
    /// below them. A cacheable one becomes device memory mapped write-back (a cacheable PFNMAP).
    fn carveout(
        &mut self,
        slot: u32,
        base: u64,
        size: u64,
        cacheable: bool,
    ) -> Result<(), Failure> {
        let mut parent = None;
        for &untyped in &self.ram {
            let [start, bytes, ..] = self
                .kernel
                .invoke(untyped, Invocation::UntypedDescribe, &[])
                .map_err(Failure::Kernel)?;
            if start <= base && base + size <= start + bytes {
                parent = Some((untyped, start));
                break;
            }
        }
        let (parent, start) = parent.ok_or(Failure::NotRam)?;
        let index = self.carved.iter().position(|&(u, _)| u == parent);
        let mut at = index.map_or(start, |i| self.carved[i].1);
        let untyped = RetypeKind::Untyped as u64;
        while at < base {
            let bits = at.trailing_zeros().min(63 - (base - at).leading_zeros());
            let piece = self.extra()?;
            self.invoke(
                parent,
                Invocation::Retype,
                &[untyped, u64::from(bits), 0, piece, 1],
            )?;
            if bits >= 12 {
                let _ = self.ram.push(piece);
            }
            at += 1 << bits;
        }
        let bits = u64::from(size.trailing_zeros());
        let dest = self.cptr(slot);
        self.invoke(parent, Invocation::Retype, &[untyped, bits, 0, dest, 1])?;
        let [placed, ..] = self.describe(slot)?;
        if placed != base {
            return Err(Failure::NotRam);
        }
        match index {
            Some(i) => self.carved[i].1 = base + size,
            None => {
                let _ = self.carved.push((parent, base + size));
            }
        }
        if cacheable {
            self.invoke(IRQ, Invocation::UntypedSetMemory, &[dest, 3])?;
        }
        Ok(())
    }

    /// A copy of the platform device tree in new frames mapped read-only at `ipa` in `space`
    /// (init keeps the frames), and where it is in the boot-info frame `slot`.
    fn dtb(&mut self, slot: u32, space: u32, ipa: u64) -> Result<(), Failure> {
        let dtb = self.platform.dtb;
        if dtb.is_empty() {
            return Err(Failure::NoDeviceTree);
        }
        for (n, chunk) in dtb.chunks(PAGE as usize).enumerate() {
            let frame = self.extra()?;
            self.page(frame, chunk, 0)?;
            let args = [self.cptr(space), ipa + n as u64 * PAGE, 1, 0];
            self.invoke(frame, Invocation::Map, &args)?;
        }
        let payload = Payload {
            offset: ipa - BOOT_INFO_IPA,
            size: dtb.len() as u64,
        };
        let at = offset_of!(BootInfo, platform_dtb);
        self.patch(slot, |kernel| kernel.write_scratch(at, payload.as_bytes()))
    }

    /// An IrqHandler for each SPI of the device in plan slot `device`, moved to `cnode`'s slots
    /// from `dest`, listed in guest entry `guest` of the boot-info frame `info`.
    fn irqs(
        &mut self,
        device: u32,
        (cnode, dest): (u32, u64),
        (info, guest): (u32, u64),
    ) -> Result<(), Failure> {
        let (locator, compatible) = self
            .located
            .iter()
            .find(|(slot, ..)| *slot == device)
            .map(|(_, text, compatible)| (text.clone(), *compatible))
            .ok_or(Failure::DeviceNotFound)?;
        let spis = devicetree::spis(self.platform.dtb, &locator, compatible);
        let index = match self
            .irqs
            .iter()
            .position(|&(f, g, _)| (f, g) == (info, guest))
        {
            Some(index) => index,
            None => {
                let _ = self.irqs.push((info, guest, 0));
                self.irqs.len() - 1
            }
        };
        for (n, &spi) in spis.iter().enumerate() {
            let count = self.irqs.get(index).map_or(0, |e| e.2);
            if count as usize >= capvisor_ipc::bootinfo::MAX_GUEST_IRQS {
                return Err(Failure::Kernel(KernelError::RangeError));
            }
            let scratch = self.extra()?;
            self.invoke(IRQ, Invocation::IrqIssueHandler, &[u64::from(spi), scratch])?;
            let handler = dest + n as u64;
            self.invoke(self.cptr(cnode), Invocation::Move, &[handler, scratch])?;
            let at = guest_at(guest);
            let handler_at = at + offset_of!(GuestInfo, irq_handler) + count as usize * 8;
            let intid_at = at + offset_of!(GuestInfo, irq_intid) + count as usize * 4;
            let count_at = at + offset_of!(GuestInfo, irq_count);
            self.patch(info, |kernel| {
                kernel.write_scratch(handler_at, handler.as_bytes());
                kernel.write_scratch(intid_at, spi.as_bytes());
                kernel.write_scratch(count_at, (count + 1).as_bytes());
            })?;
            if let Some(entry) = self.irqs.get_mut(index) {
                entry.2 = count + 1;
            }
        }
        Ok(())
    }

    /// Retypes one object from the first RAM untyped with room for it.
    fn retype(&mut self, kind: u64, bits: u64, dest: u64) -> Result<(), Failure> {
        for &untyped in &self.ram.clone() {
            let args = [kind, bits, 0, dest, 1];
            match self.kernel.invoke(untyped, Invocation::Retype, &args) {
                Err(KernelError::NotEnoughMemory) => {}
                other => return other.map(|_| ()).map_err(Failure::Kernel),
            }
        }
        Err(Failure::Kernel(KernelError::NotEnoughMemory))
    }

    /// Writes into the frame in plan slot `slot` (a boot-info page init completes) through the
    /// scratch mapping.
    fn patch(&mut self, slot: u32, write: impl FnOnce(&mut K)) -> Result<(), Failure> {
        let frame = self.cptr(slot);
        self.invoke(
            frame,
            Invocation::Map,
            &[SPACE, SCRATCH_PAGE, READ_WRITE, 0],
        )?;
        write(self.kernel);
        self.invoke(frame, Invocation::Unmap, &[])
    }

    /// Makes the frame `frame` holding `bytes` (the rest zero, as the kernel retypes it):
    /// filled through init's scratch mapping, and for code, cleaned to the point of coherency
    /// and the instruction cache invalidated, so the service fetches what init wrote.
    fn page(&mut self, frame: u64, bytes: &[u8], access: u64) -> Result<(), Failure> {
        let frame_kind = u64::from(ObjectKind::Frame.code());
        self.retype(frame_kind, 12, frame)?;
        if bytes.is_empty() {
            return Ok(());
        }
        self.invoke(
            frame,
            Invocation::Map,
            &[SPACE, SCRATCH_PAGE, READ_WRITE, 0],
        )?;
        self.kernel.write_scratch(0, bytes);
        self.invoke(frame, Invocation::Unmap, &[])?;
        if access & u64::from(ACCESS_EXECUTE) != 0 {
            for op in [CacheOp::CleanInvalidatePoc, CacheOp::InvalidateIcache] {
                self.invoke(frame, Invocation::CacheMaintenance, &[op.code(), 0])?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;

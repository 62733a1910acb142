//! Carrying out the boot plan (`capvisor_image::plan`): the kernel created only init, with
//! every free RAM range as untyped, IrqControl and the image payload as read-only 2 MiB frames;
//! init makes everything else, step by step, with the ordinary invocations any service could
//! make (Retype, Copy, Mint, Move, Map, ThreadConfigure, Resume), so the system it builds holds
//! nothing a running service could not have been given.
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

use capvisor_image::plan::{INIT_CNODE, INIT_SPACE, IRQ_CONTROL, NONE, Op, Plan, PlanName, Step};
use capvisor_image::service::{ACCESS_EXECUTE, PAGE};
use core::fmt;

use capvisor_ipc::cap::root::{CNODE, CNODE_SLOTS, FIRST_UNTYPED, IRQ_CONTROL as IRQ, SPACE};
/// Where init maps the image's payload, read-only, in 2 MiB blocks.
pub const PAYLOAD_WINDOW: u64 = 0x10_0000_0000;
/// Where init maps a frame it fills.
pub const SCRATCH_PAGE: u64 = 0x0f_ff00_0000;
/// The most RAM untyped and image frames init keeps track of.
pub const MAX_HELD: usize = 64;
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

    /// Writes `bytes` at the start of the page mapped at [`SCRATCH_PAGE`].
    fn write_scratch(&mut self, bytes: &[u8]);
}

/// The capabilities the kernel gave init, found by `Identify`: its RAM untyped and the image's
/// frames, in slot order, and the first empty slot.
#[derive(Clone, Debug, Default)]
pub struct Given {
    /// The RAM untyped's slots.
    pub ram: heapless::Vec<u64, MAX_HELD>,
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
            let list = if kind == u64::from(ObjectKind::Untyped.code()) {
                &mut given.ram
            } else if kind == u64::from(ObjectKind::Frame.code()) {
                &mut given.image
            } else {
                // What a kernel that built the system itself put after them.
                break;
            };
            list.push(slot).map_err(|_| KernelError::RangeError)?;
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
    /// A step this init does not carry out (guests, devices and carve-outs are still the
    /// kernel's).
    Unsupported,
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
            Failure::Unsupported => write!(f, "init cannot make {purpose} yet")?,
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

/// Carries out `plan` (over the `payload` init mapped) with what the kernel `given`.
///
/// # Errors
/// The first step that failed.
pub fn carry_out<'a>(
    kernel: &mut impl Kernel,
    given: &Given,
    plan: Plan<'a>,
    payload: &[u8],
) -> Result<Made<'a>, Refused<'a>> {
    let mut made = Made::default();
    let mut run = Run {
        kernel,
        given,
        payload,
    };
    let slots = u64::from(plan.header.slot_count);
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

struct Run<'k, 'g, 'p, K> {
    kernel: &'k mut K,
    given: &'g Given,
    payload: &'p [u8],
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
                flags: 0,
            } => {
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
            Op::GiveRam { cnode, first, end } => {
                for (dest, &untyped) in (first..end).zip(&self.given.ram) {
                    let args = [dest, untyped, ALL_RIGHTS];
                    self.invoke(self.cptr(cnode), Invocation::Copy, &args)?;
                }
                Ok(())
            }
            _ => Err(Failure::Unsupported),
        }
    }

    /// Retypes one object from the first RAM untyped with room for it.
    fn retype(&mut self, kind: u64, bits: u64, dest: u64) -> Result<(), Failure> {
        for &untyped in &self.given.ram {
            let args = [kind, bits, 0, dest, 1];
            match self.kernel.invoke(untyped, Invocation::Retype, &args) {
                Err(KernelError::NotEnoughMemory) => {}
                other => return other.map(|_| ()).map_err(Failure::Kernel),
            }
        }
        Err(Failure::Kernel(KernelError::NotEnoughMemory))
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
        self.kernel.write_scratch(bytes);
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

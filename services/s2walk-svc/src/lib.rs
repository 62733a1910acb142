//! The nested stage-2 walker as a service: the `s2walk` protocol's [`Handler`] over the `s2walk`
//! library, reading a guest hypervisor's tables from the guest pages its owner lends.
//!
//! Principles:
//! - The tables are guest memory and untrusted; the walk is the library's (exact to the Arm ARM,
//!   `docs/s2walk.md`). This crate only keeps the book of who lent which page.
//! - A VM is named by its owner: the badge that `nest`ed it and the id it chose. Each client has
//!   its own ids, so one client can neither reach nor squat another's VM (an id another client
//!   uses is, to this one, simply unknown).
//! - No client can take what the others need: each badge may hold [`VMS_PER_CLIENT`] VMs and
//!   [`PAGES_PER_CLIENT`] lent pages (`Quota` beyond), and the VM table is large enough for every
//!   client an image can have.
//! - Memory is reached only through lent pages, each a frame capability mapped read-only at a
//!   fixed window of the service's address space ([`Platform`]); a descriptor read anywhere else is
//!   a synchronous external abort on the walk, as hardware reports one.
//! - A lender may revoke a lent frame at any time, and the kernel then removes the walker's
//!   mapping: the page is no longer lent. A walk that reads it reports the external abort on the
//!   walk (as for a page never lent), the page's book entry is dropped, and the page may be lent
//!   again. The walker thread cannot check first (it can be preempted between a check and its
//!   read), so the service survives the read itself: [`recovery`] handles the walker thread's
//!   fault and puts a placeholder page where the frame was.
//! - No heap: fixed tables of [`MAX_VMS`] VMs and [`MAX_PAGES`] pages.
//! - The same handler runs at EL0 over the `svc` transport (`main.rs`) and on the host under
//!   `capvisor_ipc::hosted` in the unit tests, with a host [`Platform`].
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

use core::cell::RefCell;

use capvisor_ipc::abi::KernelError;
use capvisor_ipc::cap::{Badge, Cap, Frame};
use capvisor_ipc::protocol::Context;
use capvisor_ipc::protocols::s2walk::{Handler, Translation, WalkError, WalkFault, WalkOutcome};
use capvisor_ipc::types::{Access, Ipa, VmId, Vtcr, Vttbr};
use s2walk::{GuestMemory, Machine, OutputAddr, PaBits, ReadError};

#[cfg(test)]
mod prop;
pub mod recovery;
pub mod sample;
#[cfg(test)]
mod tests;

/// VMs the walker serves at once: [`VMS_PER_CLIENT`] for each of the 16 services an image may
/// have (`capvisor_ipc::bootinfo::MAX_SERVICES`), so every client can nest its quota
/// whatever the others do.
pub const MAX_VMS: usize = 32;
/// VMs one client (badge) may nest.
pub const VMS_PER_CLIENT: usize = 2;
/// Guest pages lent to the walker, over all VMs.
pub const MAX_PAGES: usize = 256;
/// Pages one client (badge) may have lent at once: an eighth of the window, so eight clients at
/// their quota fill it and no single one can.
pub const PAGES_PER_CLIENT: usize = 32;
/// The size of a lent page.
pub const PAGE_SIZE: u64 = 4096;
/// Where the EL0 service maps lent page `n`: `WINDOW + n * PAGE_SIZE` (inside its 39-bit address
/// space, clear of its image, stack and IPC buffer; `docs/architecture.md`, "EL0 services").
pub const WINDOW: u64 = 0x10_0000_0000;
/// Descriptor reads one walk makes at most (one per level, levels -1 to 3).
const READS_PER_WALK: usize = 5;

/// What the walker asks of the kernel (or of a host stand-in).
pub trait Platform {
    /// Takes `frame` (the capability that came with a `lend`) as window page `index`'s, and maps
    /// it read-only there.
    ///
    /// # Errors
    /// The kernel's refusal (e.g. `WrongType`, `InsufficientRights`); the capability is then not
    /// kept.
    fn map(&mut self, frame: Cap<Frame>, index: usize) -> Result<(), KernelError>;
    /// Reads the word at byte `offset` (a multiple of 8, below [`PAGE_SIZE`]) of window page
    /// `index`, which [`Platform::map`] mapped; `None` when the page's frame is gone (its lender
    /// revoked it), whatever the read returned.
    fn read(&self, index: usize, offset: usize) -> Option<u64>;
    /// Whether window page `index`'s frame is gone (its lender revoked it). Once gone it stays
    /// gone until [`Platform::forget`]; a frame still there may go at any moment after.
    fn gone(&self, index: usize) -> bool;
    /// Forgets window page `index`, whose frame is gone: whatever is mapped there is removed and
    /// its slot emptied, so the page can be lent again.
    fn forget(&mut self, index: usize);
}

/// One nested VM: who owns it and the machine its walks emulate.
#[derive(Debug, Clone, Copy)]
struct Vm {
    id: VmId,
    owner: Badge,
    machine: Machine,
}

/// One lent page: whose, at which guest address, and in which window page.
#[derive(Debug, Clone, Copy)]
struct Page {
    owner: Badge,
    vm: VmId,
    base: u64,
}

/// The walker's state.
#[derive(Debug)]
pub struct Walker<P> {
    platform: P,
    vms: [Option<Vm>; MAX_VMS],
    /// Entry `n` is window page `n`; a free entry is reused.
    pages: [Option<Page>; MAX_PAGES],
}

impl<P: Platform> Walker<P> {
    /// A walker with no VMs.
    pub const fn new(platform: P) -> Self {
        Self {
            platform,
            vms: [None; MAX_VMS],
            pages: [None; MAX_PAGES],
        }
    }

    /// The platform (for tests).
    pub const fn platform(&self) -> &P {
        &self.platform
    }

    /// The caller's VM `vm`.
    fn owned(&self, ctx: &Context, vm: VmId) -> Result<Vm, WalkError> {
        self.vms
            .iter()
            .flatten()
            .find(|known| known.id == vm && known.owner == ctx.badge())
            .copied()
            .ok_or(WalkError::UnknownVm)
    }

    /// Window pages in use by `owner` (every client: `None`).
    fn pages_of(&self, owner: Option<Badge>) -> impl Iterator<Item = usize> + '_ {
        self.pages
            .iter()
            .enumerate()
            .filter_map(move |(index, page)| {
                page.filter(|p| owner.is_none_or(|o| p.owner == o))
                    .map(|_| index)
            })
    }

    /// Drops the book entry of window page `index`, whose frame is gone.
    fn drop_page(&mut self, index: usize) {
        self.platform.forget(index);
        self.pages[index] = None;
    }

    /// Drops every page of `owner` (or of everyone) whose frame is gone; returns how many.
    fn sweep(&mut self, owner: Option<Badge>) -> usize {
        let mut gone: heapless::Vec<usize, MAX_PAGES> = heapless::Vec::new();
        for index in self.pages_of(owner) {
            if self.platform.gone(index) {
                let _ = gone.push(index);
            }
        }
        for &index in &gone {
            self.drop_page(index);
        }
        gone.len()
    }
}

/// The guest memory of one VM: the pages lent for it, read through the platform. Pages found
/// gone are noted, for the walker to drop once the walk is over.
struct Lent<'a, P> {
    walker: &'a Walker<P>,
    owner: Badge,
    vm: VmId,
    gone: RefCell<heapless::Vec<usize, READS_PER_WALK>>,
}

impl<P: Platform> GuestMemory for Lent<'_, P> {
    fn read_u64(&self, addr: OutputAddr) -> Result<u64, ReadError> {
        let addr = addr.get();
        let base = addr & !(PAGE_SIZE - 1);
        let offset = (addr - base) as usize;
        if !offset.is_multiple_of(8) {
            return Err(ReadError::Unbacked);
        }
        let index = self
            .walker
            .pages
            .iter()
            .position(|page| {
                matches!(page, Some(p) if p.owner == self.owner && p.vm == self.vm && p.base == base)
            })
            .ok_or(ReadError::Unbacked)?;
        self.walker.platform.read(index, offset).ok_or_else(|| {
            let mut gone = self.gone.borrow_mut();
            if !gone.contains(&index) {
                // A walk reads at most READS_PER_WALK pages; should one not fit, a later sweep
                // drops it.
                let _ = gone.push(index);
            }
            ReadError::Unbacked
        })
    }
}

/// The library's access for a protocol access. The protocol names one instruction fetch; it is
/// the guest's EL1 fetch (the XN bits in a translation tell the caller about EL0).
#[must_use]
pub const fn access(access: Access) -> s2walk::Access {
    match access {
        Access::Read => s2walk::Access::Read,
        Access::Write => s2walk::Access::Write,
        Access::Execute => s2walk::Access::ExecEl1,
    }
}

/// The protocol's outcome for a library walk result: the translation with the leaf descriptor's
/// S2AP (bits \[7:6\]) and XN (bits \[54:53\]), or the fault with its ESR fault status code.
#[must_use]
pub fn outcome(result: Result<s2walk::Translation, s2walk::Fault>) -> WalkOutcome {
    match result {
        Ok(t) => WalkOutcome::Translated(Translation {
            output: Ipa::new(t.oa.get()),
            level: t.level as u8,
            size: t.size(),
            s2ap: ((t.descriptor >> 6) & 0b11) as u8,
            xn: ((t.descriptor >> 53) & 0b11) as u8,
            mem_attr: t.memattr,
        }),
        Err(fault) => WalkOutcome::Fault(WalkFault {
            status: fault.fsc(),
            level: fault.level,
            external: fault.kind == s2walk::FaultKind::ExternalAbortOnWalk,
        }),
    }
}

/// The library's registers for the protocol's.
#[must_use]
pub const fn registers(vtcr: Vtcr, vttbr: Vttbr) -> (s2walk::Vtcr, s2walk::Vttbr) {
    (
        s2walk::Vtcr::new(vtcr.raw()),
        s2walk::Vttbr::new(vttbr.raw()),
    )
}

impl<P: Platform> Handler for Walker<P> {
    async fn walk(
        &mut self,
        ctx: &mut Context,
        vm: VmId,
        vtcr: Vtcr,
        vttbr: Vttbr,
        ipa: Ipa,
        kind: Access,
    ) -> Result<WalkOutcome, WalkError> {
        let nested = self.owned(ctx, vm)?;
        let memory = Lent {
            walker: self,
            owner: ctx.badge(),
            vm,
            gone: RefCell::new(heapless::Vec::new()),
        };
        let (vtcr, vttbr) = registers(vtcr, vttbr);
        let result = s2walk::walk(
            &nested.machine,
            vtcr,
            vttbr,
            &memory,
            s2walk::Ipa::new(ipa.raw()),
            access(kind),
        );
        let gone = memory.gone.into_inner();
        for index in gone {
            self.drop_page(index);
        }
        Ok(outcome(result))
    }

    /// Every walk reads the lent pages afresh (there is no cache of translations yet), so after
    /// a guest TLBI there is nothing to drop; the request is still checked like any other.
    async fn invalidate(
        &mut self,
        ctx: &mut Context,
        vm: VmId,
        _vttbr: Vttbr,
        _ipa: Option<Ipa>,
    ) -> Result<(), WalkError> {
        self.owned(ctx, vm).map(|_| ())
    }

    async fn nest(&mut self, ctx: &mut Context, vm: VmId, pa_bits: u8) -> Result<(), WalkError> {
        let pa_bits = PaBits::from_bits(u32::from(pa_bits)).ok_or(WalkError::BadArgument)?;
        let machine = Machine::new(pa_bits);
        let owner = ctx.badge();
        let mut owned = self.vms.iter_mut().flatten().filter(|v| v.owner == owner);
        if let Some(known) = owned.find(|known| known.id == vm) {
            known.machine = machine;
            return Ok(());
        }
        let held = self.vms.iter().flatten().filter(|v| v.owner == owner);
        if held.count() >= VMS_PER_CLIENT {
            return Err(WalkError::Quota);
        }
        let free = self
            .vms
            .iter_mut()
            .find(|slot| slot.is_none())
            .ok_or(WalkError::Full)?;
        *free = Some(Vm {
            id: vm,
            owner,
            machine,
        });
        Ok(())
    }

    async fn lend(&mut self, ctx: &mut Context, vm: VmId, base: Ipa) -> Result<(), WalkError> {
        self.owned(ctx, vm)?;
        let owner = ctx.badge();
        let base = base.raw();
        if !base.is_multiple_of(PAGE_SIZE) {
            return Err(WalkError::BadArgument);
        }
        let lent = self.pages.iter().position(
            |page| matches!(page, Some(p) if p.owner == owner && p.vm == vm && p.base == base),
        );
        if let Some(index) = lent {
            // Lent again after its frame was revoked: the old entry is stale.
            if !self.platform.gone(index) {
                return Err(WalkError::BadArgument);
            }
            self.drop_page(index);
        }
        let frame: Cap<Frame> = ctx
            .received()
            .first()
            .copied()
            .flatten()
            .ok_or(WalkError::MissingFrame)?
            .downcast()
            .map_err(|_| WalkError::MissingFrame)?;
        if self.pages_of(Some(owner)).count() >= PAGES_PER_CLIENT
            && (self.sweep(Some(owner)) == 0
                || self.pages_of(Some(owner)).count() >= PAGES_PER_CLIENT)
        {
            return Err(WalkError::Quota);
        }
        let free = match self.pages.iter().position(Option::is_none) {
            Some(index) => index,
            None => {
                self.sweep(None);
                self.pages
                    .iter()
                    .position(Option::is_none)
                    .ok_or(WalkError::Full)?
            }
        };
        self.platform
            .map(frame, free)
            .map_err(|_| WalkError::MissingFrame)?;
        self.pages[free] = Some(Page { owner, vm, base });
        Ok(())
    }
}

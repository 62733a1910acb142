//! The nested stage-2 walker as a service: the `s2walk` protocol's [`Handler`] over the `s2walk`
//! library, reading a guest hypervisor's tables from the guest pages its owner lends.
//!
//! Principles:
//! - The tables are guest memory and untrusted; the walk is the library's (exact to the Arm ARM,
//!   `docs/s2walk.md`). This crate only keeps the book of who lent which page.
//! - A VM's owner is the badge that `nest`ed it; every other request for that VM is refused with
//!   `NotPermitted`, so one client cannot read or walk another's guest.
//! - Memory is reached only through lent pages, each a frame capability mapped read-only at a
//!   fixed window of the service's address space ([`Platform`]); a descriptor read anywhere else is
//!   a synchronous external abort on the walk, as hardware reports one.
//! - No heap: fixed tables of [`MAX_VMS`] VMs and [`MAX_PAGES`] pages.
//! - The same handler runs at EL0 over the `svc` transport (`main.rs`) and on the host under
//!   `capvisor_ipc::hosted` in the unit tests, with a host [`Platform`].
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

use capvisor_ipc::abi::KernelError;
use capvisor_ipc::cap::{Badge, Cap, Frame};
use capvisor_ipc::protocol::Context;
use capvisor_ipc::protocols::s2walk::{Handler, Translation, WalkError, WalkFault, WalkOutcome};
use capvisor_ipc::types::{Access, Ipa, VmId, Vtcr, Vttbr};
use s2walk::{GuestMemory, Machine, OutputAddr, PaBits, ReadError};

pub mod sample;
#[cfg(test)]
mod tests;

/// VMs the walker serves at once.
pub const MAX_VMS: usize = 8;
/// Guest pages lent to the walker, over all VMs.
pub const MAX_PAGES: usize = 256;
/// The size of a lent page.
pub const PAGE_SIZE: u64 = 4096;
/// Where the EL0 service maps lent page `n`: `WINDOW + n * PAGE_SIZE` (inside its 39-bit address
/// space, clear of its image, stack and IPC buffer; `docs/architecture.md`, "EL0 services").
pub const WINDOW: u64 = 0x10_0000_0000;

/// What the walker asks of the kernel (or of a host stand-in).
pub trait Platform {
    /// Maps `frame` read-only as window page `index`.
    ///
    /// # Errors
    /// The kernel's refusal (e.g. `WrongType`, `InsufficientRights`).
    fn map(&mut self, frame: Cap<Frame>, index: usize) -> Result<(), KernelError>;
    /// Reads the word at byte `offset` (a multiple of 8, below [`PAGE_SIZE`]) of window page
    /// `index`, which [`Platform::map`] mapped.
    fn read(&self, index: usize, offset: usize) -> u64;
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
    vm: VmId,
    base: u64,
}

/// The walker's state.
#[derive(Debug)]
pub struct Walker<P> {
    platform: P,
    vms: [Option<Vm>; MAX_VMS],
    /// Entry `n` is window page `n`; filled in order and never reused (a mapped page stays).
    pages: [Option<Page>; MAX_PAGES],
    used: usize,
}

impl<P: Platform> Walker<P> {
    /// A walker with no VMs.
    pub const fn new(platform: P) -> Self {
        Self {
            platform,
            vms: [None; MAX_VMS],
            pages: [None; MAX_PAGES],
            used: 0,
        }
    }

    /// The platform (for tests).
    pub const fn platform(&self) -> &P {
        &self.platform
    }

    /// `vm`, if the caller owns it.
    fn owned(&self, ctx: &Context, vm: VmId) -> Result<Vm, WalkError> {
        let known = self
            .vms
            .iter()
            .flatten()
            .find(|known| known.id == vm)
            .ok_or(WalkError::UnknownVm)?;
        if known.owner == ctx.badge() {
            Ok(*known)
        } else {
            Err(WalkError::NotPermitted)
        }
    }
}

/// The guest memory of one VM: the pages lent for it, read through the platform.
struct Lent<'a, P> {
    walker: &'a Walker<P>,
    vm: VmId,
}

impl<P: Platform> GuestMemory for Lent<'_, P> {
    fn read_u64(&self, addr: OutputAddr) -> Result<u64, ReadError> {
        let addr = addr.get();
        let base = addr & !(PAGE_SIZE - 1);
        let offset = (addr - base) as usize;
        if !offset.is_multiple_of(8) {
            return Err(ReadError::Unbacked);
        }
        let index = self.walker.pages[..self.walker.used]
            .iter()
            .position(|page| matches!(page, Some(p) if p.vm == self.vm && p.base == base))
            .ok_or(ReadError::Unbacked)?;
        Ok(self.walker.platform.read(index, offset))
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
        let memory = Lent { walker: self, vm };
        let (vtcr, vttbr) = registers(vtcr, vttbr);
        let result = s2walk::walk(
            &nested.machine,
            vtcr,
            vttbr,
            &memory,
            s2walk::Ipa::new(ipa.raw()),
            access(kind),
        );
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
        if let Some(known) = self.vms.iter_mut().flatten().find(|known| known.id == vm) {
            if known.owner != ctx.badge() {
                return Err(WalkError::NotPermitted);
            }
            known.machine = machine;
            return Ok(());
        }
        let free = self
            .vms
            .iter_mut()
            .find(|slot| slot.is_none())
            .ok_or(WalkError::Full)?;
        *free = Some(Vm {
            id: vm,
            owner: ctx.badge(),
            machine,
        });
        Ok(())
    }

    async fn lend(&mut self, ctx: &mut Context, vm: VmId, base: Ipa) -> Result<(), WalkError> {
        self.owned(ctx, vm)?;
        let base = base.raw();
        if !base.is_multiple_of(PAGE_SIZE) {
            return Err(WalkError::BadArgument);
        }
        let lent = self.pages[..self.used]
            .iter()
            .any(|page| matches!(page, Some(p) if p.vm == vm && p.base == base));
        if lent {
            return Err(WalkError::BadArgument);
        }
        let frame: Cap<Frame> = ctx
            .received()
            .first()
            .copied()
            .flatten()
            .ok_or(WalkError::MissingFrame)?
            .downcast()
            .map_err(|_| WalkError::MissingFrame)?;
        if self.used == MAX_PAGES {
            return Err(WalkError::Full);
        }
        self.platform
            .map(frame, self.used)
            .map_err(|_| WalkError::MissingFrame)?;
        self.pages[self.used] = Some(Page { vm, base });
        self.used += 1;
        Ok(())
    }
}

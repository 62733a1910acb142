//! The nested stage-2 walker's protocol: walk a guest hypervisor's stage-2 tables for one IPA.
//!
//! The walker trusts nothing: the tables are guest memory. A result carries what hardware would have
//! produced (DESIGN.md, seed 001): the output address and the level, size, permissions and attributes of
//! the descriptor, or the fault status code exactly as ESR_EL2 would report it.

use serde::{Deserialize, Serialize};

use crate::protocol::{ProtocolId, Version};
use crate::types::{Access, Ipa, VmId, Vtcr, Vttbr};

crate::stable_codes! {
    /// The walker's errors (a guest's translation fault is not one: it is a [`WalkOutcome::Fault`]).
    ///
    /// # Errors
    /// Each variant is one reason the walk could not be attempted.
    pub enum WalkError: u16 {
        /// The VM is not known to the walker.
        UnknownVm = 1,
        /// The VM is not running a guest hypervisor.
        NotNested = 2,
        /// The caller does not own this VM.
        NotPermitted = 3,
        /// An argument is out of range: a PA size the walker does not implement, or a base that
        /// is not page-aligned.
        BadArgument = 4,
        /// The request needs a frame capability and carries none, or the kernel refused to map
        /// it.
        MissingFrame = 5,
        /// The walker has no room left for another VM or page.
        Full = 6,
        /// The caller already holds as many VMs, or lent pages, as one client may (1.2).
        Quota = 7,
    }
}

/// A successful translation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Translation {
    /// The output address (an L1 guest-physical address).
    pub output: Ipa,
    /// The level of the leaf descriptor (0–3).
    pub level: u8,
    /// Bytes the leaf maps (page or block size).
    pub size: u64,
    /// The descriptor's S2AP bits.
    pub s2ap: u8,
    /// The descriptor's XN bits (two bits with FEAT_XNX).
    pub xn: u8,
    /// The descriptor's MemAttr bits.
    pub mem_attr: u8,
}

/// A fault, as hardware would report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalkFault {
    /// The ESR fault status code (type | level).
    pub status: u8,
    /// The level at which the fault was found (−1 with FEAT_LPA2).
    pub level: i8,
    /// The fault was on a descriptor read outside guest memory: a synchronous external abort on the
    /// walk, to be injected into the guest.
    pub external: bool,
}

/// The result of a walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WalkOutcome {
    /// The IPA translates.
    Translated(Translation),
    /// The walk faults.
    Fault(WalkFault),
}

crate::protocol! {
    /// The nested stage-2 walker's protocol.
    protocol S2Walk {
        id: ProtocolId::S2WALK,
        version: Version::new(1, 2),
        error: WalkError,
    }
    /// Walks `vm`'s guest-hypervisor stage-2 tables (`vtcr`, `vttbr`) for `ipa` and `access`.
    fn walk(vm: VmId, vtcr: Vtcr, vttbr: Vttbr, ipa: Ipa, access: Access) -> WalkOutcome as Walk;
    /// Drops shadow stage-2 entries after a guest TLBI: one IPA, or the whole VMID when `ipa` is `None`.
    fn invalidate(vm: VmId, vttbr: Vttbr, ipa: Option<Ipa>) -> () as Invalidate;
    /// Makes `vm` nested for the caller: VM ids are the caller's own (its badge's), so another
    /// client's `vm` is a different VM. Its walks emulate a machine whose implemented PA size
    /// (PAMax) is `pa_bits` (32, 36, 40, 42, 44, 48 or 52). Nesting it again changes the PA size
    /// and keeps the lent pages. A client holds a bounded number of VMs (`Quota` beyond).
    fn nest(vm: VmId, pa_bits: u8) -> () as Nest;
    /// Lends the walker the 4 KiB page of `vm`'s memory at `base`: the frame capability the
    /// request carries (attached, first), which the walker maps read-only. Descriptor reads
    /// outside the pages lent are synchronous external aborts on the walk, as hardware reports a
    /// walk into memory that is not there. Revoking the frame (or anything it was derived from)
    /// takes the page back: walks then read it as not lent, and it may be lent again. A client
    /// has a bounded number of pages lent at once (`Quota` beyond).
    fn lend(vm: VmId, base: Ipa) -> () as Lend;
}

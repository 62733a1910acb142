//! The per-VM counters and the trace: what the glue did to each VM (mappings, cache and TLB
//! maintenance, exits), counted inline on each operation (tests read the counters; the trace
//! printing is out of line), and reported by `capvisor.trace=1` and at the end of the system.

use crate::console;
use capvisor_kernel::object::{Kernel, SpaceGlue};
use core::sync::atomic::{AtomicBool, Ordering};

/// An operation the per-VM counters and trace record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// A stage-2 mapping (a 2 MiB block, or pages).
    Map,
    /// A mapping removed (TLB-invalidated before the call returned).
    Unmap,
    /// Clean+invalidate to PoC.
    CleanPoc,
    /// Instruction-cache invalidation.
    Icache,
    /// TLB invalidation by IPA range.
    TlbiIpa,
    /// TLB invalidation of the whole VMID.
    TlbiVmid,
}

impl Op {
    /// Its name in trace lines.
    const fn name(self) -> &'static str {
        match self {
            Self::Map => "map",
            Self::Unmap => "unmap",
            Self::CleanPoc => "clean-poc",
            Self::Icache => "icache",
            Self::TlbiIpa => "tlbi-ipa",
            Self::TlbiVmid => "tlbi-vmid",
        }
    }
}

/// Print each counted operation as it happens (`capvisor.trace=1`).
pub static TRACE: AtomicBool = AtomicBool::new(false);

/// Counts (and traces) an operation on `space` if it is a VM. Inlined into each operation: on
/// the hot path a counter is one test of `vm` and an increment in the space's own record, and
/// the trace one test of a flag; printing is out of line.
#[inline(always)]
pub fn count(space: &mut SpaceGlue, op: Op, ipa: u64, size: u64) {
    if !space.vm {
        return;
    }
    let stats = &mut space.stats;
    match op {
        Op::Map if size == 2 << 20 => stats.map_blocks += 1,
        Op::Map => stats.map_pages += size / 4096,
        Op::Unmap => stats.unmaps += 1,
        Op::CleanPoc => stats.clean_poc += 1,
        Op::Icache => stats.icache += 1,
        Op::TlbiIpa => stats.tlbi_ipa += 1,
        Op::TlbiVmid => stats.tlbi_vmid += 1,
    }
    if TRACE.load(Ordering::Relaxed) {
        trace(space, op, ipa, size);
    }
}

/// Prints one traced operation (`capvisor.trace=1`).
#[cold]
#[inline(never)]
fn trace(space: &SpaceGlue, op: Op, ipa: u64, size: u64) {
    console::print(format_args!(
        "capvisor: trace vm{} {} ipa={ipa:#x} size={size:#x}\n",
        space.root >> 12,
        op.name()
    ));
}

/// Prints every VM's counters (at the end of the system, for tests and users): a scan of all
/// objects, done once at shutdown.
pub fn report(kernel: &Kernel) {
    for (vm, stats) in kernel.vm_stats() {
        console::print(format_args!(
            "capvisor: vm{vm} stats: vmid={} map_pages={} map_blocks={} unmaps={} \
             clean_poc={} icache={} tlbi_ipa={} tlbi_vmid={} exits={}\n",
            stats.vmid,
            stats.map_pages,
            stats.map_blocks,
            stats.unmaps,
            stats.clean_poc,
            stats.icache,
            stats.tlbi_ipa,
            stats.tlbi_vmid,
            stats.exits,
        ));
    }
}

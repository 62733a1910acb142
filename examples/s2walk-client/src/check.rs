//! The example's logic, apart from the kernel: lend the table pages, walk every sample case
//! through the s2walk service, and compare each answer with the walker library's reference model
//! reading the same memory. It runs at EL0 over the `svc` transport and on the host under
//! `capvisor_ipc::hosted` (`tests.rs`).

use capvisor_ipc::cap::{Cap, Frame};
use capvisor_ipc::protocol::Error;
use capvisor_ipc::protocols::s2walk::{WalkError, WalkOutcome};
use capvisor_ipc::transport::Transport;
use capvisor_ipc::types::{Ipa, VmId, Vtcr, Vttbr};
use capvisor_rt::clients::S2WalkClient;
use s2walk::{GuestMemory, Machine, PaBits};
use svc_s2walk::sample::{self, CASES};

/// The guest whose tables we lend (any number the walker does not know yet).
pub const VM: VmId = VmId::new(1);

/// Where one answer is printed: `log(format_args!(…))`.
pub trait Log {
    /// Prints one line.
    fn line(&mut self, line: core::fmt::Arguments<'_>);
}

/// Lends `frames` (guest page base, frame holding it), walks every sample case, prints each
/// answer, and returns how many disagreed with the reference model reading `memory`.
///
/// # Errors
/// The walker's refusal of `nest` or `lend`, or a failed call.
pub async fn lend_and_walk<T: Transport>(
    walker: &mut S2WalkClient<T>,
    frames: &[(u64, Cap<Frame>)],
    memory: &impl GuestMemory,
    log: &mut impl Log,
) -> Result<usize, Error<WalkError>> {
    walker.nest(VM, sample::PA_BITS).await?;
    for &(base, frame) in frames {
        walker.lend_frame(VM, Ipa::new(base), frame).await?;
    }
    let machine =
        Machine::new(PaBits::from_bits(u32::from(sample::PA_BITS)).unwrap_or(PaBits::Bits40));
    let mut wrong = 0;
    for case in CASES {
        let (vtcr, vttbr) = (Vtcr::new(sample::VTCR), Vttbr::new(case.vttbr));
        let answer = walker
            .walk(VM, vtcr, vttbr, Ipa::new(case.ipa), case.access)
            .await?;
        let (s2_vtcr, s2_vttbr) = svc_s2walk::registers(vtcr, vttbr);
        let reference = svc_s2walk::outcome(s2walk::reference::s2_translate(
            &machine,
            s2_vtcr,
            s2_vttbr,
            memory,
            s2walk::Ipa::new(case.ipa),
            svc_s2walk::access(case.access),
        ));
        let verdict = if answer == reference {
            "as the reference"
        } else {
            wrong += 1;
            "DIFFERS from the reference"
        };
        match answer {
            WalkOutcome::Translated(t) => log.line(format_args!(
                "{}: pa {:#x} level {} size {:#x} s2ap {} xn {} memattr {:#x}, {verdict}",
                case.name,
                t.output.raw(),
                t.level,
                t.size,
                t.s2ap,
                t.xn,
                t.mem_attr
            )),
            WalkOutcome::Fault(f) => log.line(format_args!(
                "{}: fault fsc {:#04x} level {}{}, {verdict}",
                case.name,
                f.status,
                f.level,
                if f.external { " external" } else { "" }
            )),
        }
    }
    Ok(wrong)
}

//! The pending/active checks and the list-register attack.

use capvisor_guest_rt::{Outcome, counter, println, system_off};
use hostile_guest_common::encode::gic::{ICPENDR, ISACTIVER, ISPENDR};
use hostile_guest_common::timer::{self, ENABLE, IMASK, ISTATUS, VIRTUAL_PPI};
use hostile_guest_common::{cpu_interface, distributor, frequency, mask_irqs, redistributor, wfi};

/// The SPI made pending through the distributor (none of QEMU `virt`'s devices the VMM
/// emulates uses it).
const SPI: u64 = 40;
/// ICC_IAR1_EL1 when nothing is pending.
const SPURIOUS: u64 = 1023;
/// WFIs returned before the guest concludes it is spinning and powers off.
const SPIN_LIMIT: u64 = 100_000;

fn pending(intid: u64) -> bool {
    redistributor::read(ISPENDR) & (1 << intid) != 0
}

fn active(intid: u64) -> bool {
    redistributor::read(ISACTIVER) & (1 << intid) != 0
}

/// Busy-waits (IRQs masked) until the virtual timer's condition holds, at most 10 ms.
fn wait_for_timer() -> bool {
    let deadline = counter() + frequency() / 100;
    while timer::virtual_ctl() & ISTATUS == 0 && counter() < deadline {}
    timer::virtual_ctl() & ISTATUS != 0
}

fn sgi_pending_then_cleared() -> bool {
    cpu_interface::sgi_to_self(3);
    let set = pending(3);
    redistributor::write(ICPENDR, 1 << 3);
    let cleared = !pending(3);
    let next = cpu_interface::ack();
    if next != SPURIOUS {
        cpu_interface::eoi(next);
    }
    println!(
        "SGI 3 sent to itself: GICR_ISPENDR0 bit 3 {}; after GICR_ICPENDR0: {}, acknowledge \
         finds {next}",
        u8::from(set),
        u8::from(!cleared)
    );
    set && cleared && next == SPURIOUS
}

fn sgi_active_until_eoi() -> bool {
    cpu_interface::sgi_to_self(4);
    let intid = cpu_interface::ack();
    let during = active(4);
    cpu_interface::eoi(intid);
    let after = active(4);
    println!(
        "SGI 4 acknowledged as {intid}: GICR_ISACTIVER0 bit 4 {} while active, {} after its EOI",
        u8::from(during),
        u8::from(after)
    );
    intid == 4 && during && !after
}

fn timer_pending_then_cleared() -> bool {
    timer::arm_virtual(counter());
    let fired = wait_for_timer();
    let set = pending(VIRTUAL_PPI);
    timer::arm_virtual(u64::MAX);
    hostile_guest_common::write_sysreg!("cntv_ctl_el0", ENABLE | IMASK);
    redistributor::write(ICPENDR, 1 << VIRTUAL_PPI);
    let cleared = !pending(VIRTUAL_PPI);
    let next = cpu_interface::ack();
    if next != SPURIOUS {
        cpu_interface::eoi(next);
    }
    timer::stop_virtual();
    println!(
        "virtual timer fired (ISTATUS {}) while masked at PSTATE: GICR_ISPENDR0 bit 27 {}; \
         masked by IMASK, after GICR_ICPENDR0: {}, acknowledge finds {next}",
        u8::from(fired),
        u8::from(set),
        u8::from(!cleared)
    );
    fired && set && cleared && next == SPURIOUS
}

fn spi_pending_active_cleared() -> bool {
    distributor::enable_spi(SPI, 0x80);
    distributor::set_bit(ISPENDR, SPI);
    let set = distributor::bit(ISPENDR, SPI);
    let intid = cpu_interface::ack();
    let during = distributor::bit(ISACTIVER, SPI);
    if intid != SPURIOUS {
        cpu_interface::eoi(intid);
    }
    let after = distributor::bit(ISACTIVER, SPI);
    distributor::set_bit(ISPENDR, SPI);
    let again = distributor::bit(ISPENDR, SPI);
    distributor::set_bit(ICPENDR, SPI);
    let cleared = !distributor::bit(ISPENDR, SPI);
    let next = cpu_interface::ack();
    if next != SPURIOUS {
        cpu_interface::eoi(next);
    }
    println!(
        "SPI 40 by GICD_ISPENDR1: pending {}, acknowledged as {intid}, GICD_ISACTIVER1 {} while \
         active, {} after its EOI",
        u8::from(set),
        u8::from(during),
        u8::from(after)
    );
    println!(
        "SPI 40 pending again {}; after GICD_ICPENDR1: {}, acknowledge finds {next}",
        u8::from(again),
        u8::from(!cleared)
    );
    set && intid == SPI && during && !after && again && cleared && next == SPURIOUS
}

/// All 16 SGIs pending at once, each acknowledged and ended but never deactivated, and the
/// virtual timer too; then WFI forever, holding them.
fn hold_everything() -> ! {
    cpu_interface::split_eoi(true);
    for intid in 0..16 {
        cpu_interface::sgi_to_self(intid);
    }
    let pending_sgis = redistributor::read(ISPENDR) & 0xffff;
    println!("16 SGIs sent to itself: GICR_ISPENDR0 {pending_sgis:#06x}");
    let mut acknowledged = 0u32;
    for _ in 0..32 {
        let intid = cpu_interface::ack();
        if intid == SPURIOUS {
            break;
        }
        acknowledged |= 1 << intid;
        // Priority drop only (EOImode = 1): the interrupt stays active.
        cpu_interface::eoi(intid);
    }
    let active_sgis = redistributor::read(ISACTIVER) & 0xffff;
    println!(
        "acknowledged and ended, never deactivated: {} SGIs ({acknowledged:#06x}); \
         GICR_ISACTIVER0 {active_sgis:#06x}",
        acknowledged.count_ones()
    );
    timer::arm_virtual(counter());
    wait_for_timer();
    let intid = cpu_interface::ack();
    if intid != SPURIOUS {
        cpu_interface::eoi(intid);
    }
    println!(
        "virtual timer acknowledged as {intid} and held active: GICR_ISACTIVER0 bit 27 {}",
        u8::from(active(VIRTUAL_PPI))
    );
    println!("waiting in WFI forever, holding them");
    for _ in 0..SPIN_LIMIT {
        wfi();
    }
    println!("WFI returned {SPIN_LIMIT} times with nothing to wake it");
    system_off()
}

pub fn run() -> Outcome {
    mask_irqs();
    distributor::enable_group1();
    if !cpu_interface::enable(0xff) {
        return Outcome::Fail("ICC_SRE_EL1.SRE does not stick");
    }
    for intid in 0..16 {
        redistributor::enable(intid, 0x80);
    }
    redistributor::enable(VIRTUAL_PPI, 0xa0);
    let mut ok = sgi_pending_then_cleared();
    ok &= sgi_active_until_eoi();
    ok &= timer_pending_then_cleared();
    ok &= spi_pending_active_cleared();
    println!("pending and active state as the GIC specification says: {ok}");
    hold_everything()
}

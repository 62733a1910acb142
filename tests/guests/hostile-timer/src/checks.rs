//! The physical and virtual timer checks of both roles.

use capvisor_guest_rt::{ExceptionFrame, Outcome, counter, println, set_irq_hook};
use core::sync::atomic::{AtomicU64, Ordering};
use hostile_guest_common::timer::{self, ENABLE, IMASK, ISTATUS, PHYSICAL_PPI, VIRTUAL_PPI};
use hostile_guest_common::{
    cpu_interface, distributor, frequency, redistributor, unmask_irqs, wait_until,
};

/// Which guest this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Higher priority: sleeps while the other's timer runs.
    First,
    /// Lower priority.
    Second,
}

/// INTID 30s taken, those taken before their CVAL or without ISTATUS, INTID 27s, others.
static PHYSICAL: AtomicU64 = AtomicU64::new(0);
static EARLY: AtomicU64 = AtomicU64::new(0);
static VIRTUAL: AtomicU64 = AtomicU64::new(0);
static OTHER: AtomicU64 = AtomicU64::new(0);

fn on_irq(_frame: &mut ExceptionFrame) {
    let intid = cpu_interface::ack();
    match intid {
        PHYSICAL_PPI => {
            let ctl = timer::physical_ctl();
            let reached = timer::physical_count() >= timer::physical_cval();
            if ctl & ISTATUS == 0 || !reached {
                EARLY.fetch_add(1, Ordering::Relaxed);
            }
            // Masked: the level-sensitive interrupt stops before it is ended.
            timer::set_physical_ctl((ctl & ENABLE) | IMASK);
            PHYSICAL.fetch_add(1, Ordering::Relaxed);
        }
        VIRTUAL_PPI => {
            timer::stop_virtual();
            VIRTUAL.fetch_add(1, Ordering::Relaxed);
        }
        1020..=1023 => return,
        _ => {
            OTHER.fetch_add(1, Ordering::Relaxed);
        }
    }
    cpu_interface::eoi(intid);
}

fn ms(n: u64) -> u64 {
    frequency() / 1000 * n
}

/// Waits in WFI until `done()`, at most `limit` ms (the virtual timer is the watchdog).
fn wait_for(done: impl Fn() -> bool, limit: u64) -> bool {
    let watchdogs = VIRTUAL.load(Ordering::Relaxed);
    timer::arm_virtual(counter() + ms(limit));
    wait_until(
        || done() || VIRTUAL.load(Ordering::Relaxed) != watchdogs,
        u64::MAX,
    );
    timer::stop_virtual();
    done()
}

/// Sleeps `n` ms in WFI.
fn sleep(n: u64) {
    wait_for(|| false, n);
}

fn physical() -> u64 {
    PHYSICAL.load(Ordering::Relaxed)
}

/// Arms the physical timer `delay` ms ahead by TVAL and takes its interrupt.
fn own_interrupt(name: &str, delay: u64) -> bool {
    let before = physical();
    let early = EARLY.load(Ordering::Relaxed);
    timer::set_physical_tval(ms(delay) as u32);
    timer::set_physical_ctl(ENABLE);
    let taken = wait_for(|| physical() > before, 50);
    let on_time = EARLY.load(Ordering::Relaxed) == early;
    println!(
        "{name}: INTID 30 from CNTP_TVAL_EL0 = {delay} ms: taken {}, with ISTATUS set and CVAL \
         reached: {}",
        physical() - before,
        taken && on_time
    );
    timer::set_physical_ctl(0);
    taken && on_time
}

/// IMASK set with CVAL passed: ISTATUS reads 1, no interrupt comes.
fn masked(name: &str) -> bool {
    let before = physical();
    timer::set_physical_cval(timer::physical_count());
    timer::set_physical_ctl(ENABLE | IMASK);
    let istatus = timer::physical_ctl() & ISTATUS != 0;
    sleep(5);
    let came = physical() - before;
    timer::set_physical_ctl(0);
    println!(
        "{name}: IMASK with CVAL passed: ISTATUS {}, interrupts in 5 ms: {came}",
        u8::from(istatus)
    );
    istatus && came == 0
}

/// CVAL `ahead` ms ahead; after `asleep` ms asleep (the other guest runs meanwhile) it reads
/// back and no interrupt came before it; then the interrupt comes at CVAL (or has come: a
/// stalled host may let the sleep outlast CVAL).
fn own_deadline(name: &str, ahead: u64, asleep: u64) -> bool {
    let before = physical();
    let early = EARLY.load(Ordering::Relaxed);
    let cval = timer::physical_count() + ms(ahead);
    timer::set_physical_cval(cval);
    timer::set_physical_ctl(ENABLE);
    sleep(asleep);
    let kept = timer::physical_cval() == cval;
    let early_now = EARLY.load(Ordering::Relaxed) - early;
    println!(
        "{name}: CVAL {ahead} ms ahead, after {asleep} ms asleep: reads back {kept}, early \
         interrupts {early_now}"
    );
    let taken = wait_for(|| physical() > before, ahead + 50);
    let on_time = EARLY.load(Ordering::Relaxed) == early;
    println!(
        "{name}: INTID 30 at its own CVAL: taken {}, on time: {}",
        physical() - before,
        taken && on_time
    );
    timer::set_physical_ctl(0);
    kept && early_now == 0 && taken && on_time
}

/// The virtual timer 1 ms ahead, polled (not in WFI: it is the watchdog of the other waits).
fn virtual_timer(name: &str) -> bool {
    let before = VIRTUAL.load(Ordering::Relaxed);
    timer::arm_virtual(counter() + ms(1));
    let deadline = counter() + ms(50);
    while VIRTUAL.load(Ordering::Relaxed) == before && counter() < deadline {}
    let taken = VIRTUAL.load(Ordering::Relaxed) > before;
    timer::stop_virtual();
    println!("{name}: virtual timer: INTID 27 taken: {taken}");
    taken
}

pub fn run(role: Role) -> Outcome {
    let name = match role {
        Role::First => "first",
        Role::Second => "second",
    };
    set_irq_hook(on_irq);
    distributor::enable_group1();
    if !cpu_interface::enable(0xf0) {
        return Outcome::Fail("ICC_SRE_EL1.SRE does not stick");
    }
    redistributor::enable(VIRTUAL_PPI, 0xa0);
    redistributor::enable(PHYSICAL_PPI, 0x80);
    unmask_irqs();
    let mut ok = virtual_timer(name);
    match role {
        Role::First => {
            // First, so that the second guest (booted when this one first sleeps) runs all of
            // its checks, its own timer included, while this one's CVAL is armed.
            ok &= own_deadline(name, 300, 200);
            ok &= own_interrupt(name, 1);
            ok &= masked(name);
        }
        Role::Second => {
            ok &= own_interrupt(name, 2);
            ok &= own_deadline(name, 5, 0);
        }
    }
    let other = OTHER.load(Ordering::Relaxed);
    println!("{name}: other interrupts: {other}");
    if ok && other == 0 {
        Outcome::Pass
    } else {
        Outcome::Fail("the physical timer is not the guest's own")
    }
}

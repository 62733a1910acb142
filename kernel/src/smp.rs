//! Bringing the secondary CPUs up and parking them until the scheduler needs them.
//!
//! The primary starts each CPU the device tree lists with PSCI CPU_ON (PSCI 1.1, DEN0022D, 5.6),
//! passing a [`SecondaryBoot`] record that the entry code reads with the MMU still off (so the
//! primary cleans it to the point of coherency first). Each secondary turns on the same EL2
//! translation, says it is online, and waits in WFE for work.

use crate::arch::aarch64::el0::{self, PerCpu};
use crate::arch::aarch64::{boot, cache, cpu, firmware, mmu};
use crate::println;
use core::sync::atomic::{AtomicU32, Ordering};

/// What a secondary CPU's entry code needs; the field offsets are used by `boot.rs`.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug)]
pub struct SecondaryBoot {
    /// Top of its stack.
    pub stack_top: u64,
    /// MAIR_EL2.
    pub mair: u64,
    /// TCR_EL2.
    pub tcr: u64,
    /// TTBR0_EL2.
    pub ttbr: u64,
    /// SCTLR_EL2.
    pub sctlr: u64,
    /// Its index.
    pub cpu: u64,
    /// Its MPIDR affinity.
    pub mpidr: u64,
}

const _: () = assert!(core::mem::offset_of!(SecondaryBoot, stack_top) == 0);
const _: () = assert!(core::mem::offset_of!(SecondaryBoot, mair) == 8);
const _: () = assert!(core::mem::offset_of!(SecondaryBoot, tcr) == 16);
const _: () = assert!(core::mem::offset_of!(SecondaryBoot, ttbr) == 24);
const _: () = assert!(core::mem::offset_of!(SecondaryBoot, sctlr) == 32);

static mut RECORDS: [SecondaryBoot; boot::MAX_CPUS] = [SecondaryBoot {
    stack_top: 0,
    mair: 0,
    tcr: 0,
    ttbr: 0,
    sctlr: 0,
    cpu: 0,
    mpidr: 0,
}; boot::MAX_CPUS];

/// CPUs running, the primary included.
static ONLINE: AtomicU32 = AtomicU32::new(1);

static mut PER_CPU: [PerCpu; boot::MAX_CPUS] = [const {
    PerCpu {
        current: core::ptr::null_mut(),
        index: 0,
        stack_top: 0,
    }
}; boot::MAX_CPUS];

/// The index of the CPU this runs on; 0 before the per-CPU record is set up.
#[must_use]
pub fn this_cpu() -> u64 {
    let record = el0::per_cpu();
    if record.is_null() {
        return 0;
    }
    // SAFETY: a non-null TPIDR_EL2 always points at this CPU's PER_CPU element; `index` is
    // written once, before TPIDR_EL2 is set.
    unsafe { (*record).index }
}

fn set_this_cpu(index: u64) {
    // SAFETY: each CPU writes only its own element, before it publishes it in TPIDR_EL2.
    let record = unsafe { &raw mut PER_CPU[index as usize] };
    // SAFETY: as above; nothing else refers to this element yet.
    unsafe {
        (*record).index = index;
        (*record).stack_top = stack_top(index as usize);
    }
    // SAFETY: the element is this CPU's, initialised above, and a static: valid for ever.
    unsafe { el0::set_per_cpu(record) };
}

/// Sets up CPU 0's per-CPU record.
pub fn init_primary() {
    set_this_cpu(0);
}

/// How many CPUs are online.
#[must_use]
pub fn online() -> u32 {
    ONLINE.load(Ordering::Acquire)
}

fn stack_top(index: usize) -> u64 {
    // SAFETY: only the address is taken; each CPU uses its own stack.
    let base = unsafe { (&raw const boot::BOOT_STACKS.0[index]) as u64 };
    base + boot::STACK_SIZE as u64
}

/// Starts every CPU in `cpus` other than the running one; returns how many came online.
pub fn start_secondaries(cpus: &[u64], ttbr: u64, ps: u64) -> u32 {
    let me = cpu::mpidr();
    let mut index = 0;
    for &mpidr in cpus.iter().filter(|&&m| m != me) {
        index += 1;
        if index >= boot::MAX_CPUS {
            println!(
                "capvisor: more than {} CPUs; the rest stay off",
                boot::MAX_CPUS
            );
            break;
        }
        let record = SecondaryBoot {
            stack_top: stack_top(index),
            mair: mmu::MAIR,
            tcr: mmu::tcr(ps),
            ttbr,
            sctlr: mmu::SCTLR,
            cpu: index as u64,
            mpidr,
        };
        // SAFETY: record `index` is written only here, before its CPU starts, and read by that
        // CPU alone.
        let slot = unsafe { &raw mut RECORDS[index] };
        // SAFETY: `slot` points into RECORDS and nothing else refers to this element now.
        unsafe { slot.write(record) };
        let start = slot as usize;
        cache::clean_to_poc(start as u64, (start + size_of::<SecondaryBoot>()) as u64);
        let before = online();
        let entry = boot::secondary_entry_address();
        match firmware::psci_cpu_on(mpidr, entry, start as u64) {
            Ok(()) => wait_online(before + 1, mpidr),
            Err(e) => println!("capvisor: cpu mpidr={mpidr:#x} failed to start: {e:?}"),
        }
    }
    online()
}

/// Waits up to about a second (by the generic counter) for `count` CPUs to be online.
fn wait_online(count: u32, mpidr: u64) {
    let (start, freq) = counter();
    while online() < count {
        core::hint::spin_loop();
        if counter().0.wrapping_sub(start) > freq {
            println!("capvisor: cpu mpidr={mpidr:#x} did not come online within 1 s");
            return;
        }
    }
}

fn counter() -> (u64, u64) {
    (cpu::physical_counter(), cpu::counter_frequency())
}

/// A secondary CPU's first Rust code, with its MMU on.
#[unsafe(no_mangle)]
extern "C" fn secondary_main(record: &SecondaryBoot) -> ! {
    set_this_cpu(record.cpu);
    println!(
        "capvisor: cpu {} online (mpidr={:#x}), parked",
        record.cpu, record.mpidr
    );
    ONLINE.fetch_add(1, Ordering::AcqRel);
    loop {
        // Parked: nothing wakes it yet; the scheduler will (with an event or an interrupt).
        cpu::wait_for_event();
    }
}

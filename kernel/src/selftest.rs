//! Deliberate faults that test images select, to show (and test) how the kernel reports them.

use capvisor_image::SelfTest;

/// An address no mapping covers: inside the 48-bit input range, far above any RAM or device.
const UNMAPPED: usize = 0x0000_dead_0000_0000;

/// Runs `test`; returns only for [`SelfTest::None`].
pub fn run(test: SelfTest) {
    match test {
        SelfTest::None => {}
        SelfTest::DataAbort => {
            crate::println!("capvisor: selftest: reading unmapped address {UNMAPPED:#x}");
            // SAFETY: not safe, deliberately: the read faults and the exception handler reports
            // it and stops the machine; nothing is read.
            let value = unsafe { core::ptr::read_volatile(UNMAPPED as *const u64) };
            crate::println!("capvisor: selftest: read {value:#x}?!");
        }
        SelfTest::Undefined => {
            crate::println!("capvisor: selftest: executing an undefined instruction");
            crate::arch::aarch64::cpu::undefined_instruction();
        }
        SelfTest::Panic => panic!("deliberate panic (selftest)"),
    }
}

//! Test guest `dma`: a device passed through to a guest whose RAM is mapped at IPA = PA
//! (`ram_identity`) can DMA into guest memory, because the addresses the guest gives the device
//! are physical ones (there is no IOMMU). The device is QEMU's virtio-mmio entropy source
//! (`-device virtio-rng-device`), driven through the legacy MMIO interface QEMU `virt` provides
//! (Virtio 1.1, 4.2.4 "Legacy interface" and 2.6 "Split Virtqueues"), polled (no virtual
//! interrupts yet):
//! 1. find the transport whose `MagicValue` is "virt" and `DeviceID` 4 (entropy) in the
//!    passed-through page;
//! 2. reset it, set ACKNOWLEDGE and DRIVER, accept no features, give queue 0 eight descriptors in
//!    two guest pages (`QueuePFN` = their IPA, which is their PA), set DRIVER_OK;
//! 3. offer one device-writable 256-byte buffer, notify, and wait — with IRQs unmasked on its
//!    GIC CPU interface — for the device's interrupt (the transport's SPI, 48 + its number on
//!    QEMU `virt`, which the hypervisor forwards to vCPU 0 through a hardware-linked list
//!    register): acknowledge it at the device (InterruptStatus → InterruptACK) and end it; then
//!    check that the used ring returned the buffer and that the bytes written are mostly non-zero
//!    (they were zeroed first).
//!
//! It runs with the MMU off, so every access to the rings is a non-cacheable, naturally aligned
//! one, coherent with the device. Where guest RAM is not at IPA = PA the guest refuses to start a
//! DMA (it would land in someone else's memory) and fails.
#![cfg_attr(target_os = "none", no_std, no_main)]

capvisor_guest_rt::guest!("dma", run);

/// The legacy virtio-mmio registers used (Virtio 1.1, 4.2.4).
#[cfg(target_os = "none")]
mod mmio {
    pub const MAGIC_VALUE: u64 = 0x000;
    pub const VERSION: u64 = 0x004;
    pub const DEVICE_ID: u64 = 0x008;
    pub const GUEST_FEATURES: u64 = 0x020;
    pub const GUEST_FEATURES_SEL: u64 = 0x024;
    pub const GUEST_PAGE_SIZE: u64 = 0x028;
    pub const QUEUE_SEL: u64 = 0x030;
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    pub const QUEUE_NUM: u64 = 0x038;
    pub const QUEUE_ALIGN: u64 = 0x03c;
    pub const QUEUE_PFN: u64 = 0x040;
    pub const QUEUE_NOTIFY: u64 = 0x050;
    pub const INTERRUPT_STATUS: u64 = 0x060;
    pub const INTERRUPT_ACK: u64 = 0x064;
    /// QEMU `virt`'s first virtio-mmio transport (at 0x0a00_0000) interrupts as SPI 16: INTID 48.
    pub const FIRST_INTID: u64 = 48;
    pub const FIRST_TRANSPORT: u64 = 0x0a00_0000;
    pub const STATUS: u64 = 0x070;
    /// "virt", little-endian.
    pub const MAGIC: u32 = 0x7472_6976;
    /// The entropy device (Virtio 1.1, 5 "Device Types").
    pub const ENTROPY: u32 = 4;
    /// Device status bits (2.1).
    pub const ACKNOWLEDGE: u32 = 1;
    pub const DRIVER: u32 = 2;
    pub const DRIVER_OK: u32 = 4;
    /// The size of one transport's register window on QEMU `virt`.
    pub const TRANSPORT_SIZE: u64 = 0x200;
}

/// The passed-through page of QEMU `virt`'s virtio-mmio transports 24–31 (the highest one gets
/// the first `-device`).
#[cfg(target_os = "none")]
const TRANSPORTS: u64 = 0x0a00_3000;
/// Descriptors in queue 0.
#[cfg(any(target_os = "none", test))]
const QUEUE_SIZE: u64 = 8;
/// The queue's page size and used-ring alignment.
#[cfg(any(target_os = "none", test))]
const PAGE: u64 = 4096;
/// Bytes asked of the device.
#[cfg(target_os = "none")]
const BUFFER_SIZE: u64 = 256;

/// The split virtqueue's layout at `base` for the legacy interface (2.6 and 4.2.4: descriptors,
/// then the available ring, then the used ring on the next `PAGE` boundary), and the buffer after
/// it: `(descriptors, available ring, used ring, buffer)`.
#[cfg(any(target_os = "none", test))]
const fn layout(base: u64) -> (u64, u64, u64, u64) {
    let available = base + 16 * QUEUE_SIZE;
    let available_end = available + 6 + 2 * QUEUE_SIZE;
    let used = available_end.next_multiple_of(PAGE);
    let used_end = used + 6 + 8 * QUEUE_SIZE;
    (base, available, used, used_end.next_multiple_of(PAGE))
}

/// Whether `bytes` look written by an entropy source: at least half of them non-zero (a zeroed
/// buffer stays zero; 256 random bytes have about one zero).
#[cfg(any(target_os = "none", test))]
fn looks_random(bytes: &[u8]) -> bool {
    !bytes.is_empty() && bytes.iter().filter(|&&b| b != 0).count() * 2 >= bytes.len()
}

#[cfg(target_os = "none")]
mod run_on_target {
    use core::arch::asm;
    use core::ptr::{read_volatile, write_volatile};
    use core::sync::atomic::{AtomicU64, Ordering};

    use capvisor_guest_rt::contract::RAM_BASE;
    use capvisor_guest_rt::{ExceptionFrame, Outcome, counter, println, ram_base};

    /// The device whose interrupt the IRQ handler acknowledges, and its INTID.
    static DEVICE: AtomicU64 = AtomicU64::new(0);
    static INTID: AtomicU64 = AtomicU64::new(0);
    /// Interrupts taken from the device, and INTIDs taken that were not its.
    static TAKEN: AtomicU64 = AtomicU64::new(0);
    static OTHER: AtomicU64 = AtomicU64::new(0);

    fn on_irq(_frame: &mut ExceptionFrame) {
        let intid: u64;
        // SAFETY: acknowledging the highest-priority pending interrupt of the (virtual) CPU
        // interface.
        unsafe { asm!("mrs {}, icc_iar1_el1", out(reg) intid, options(nomem, nostack)) };
        if intid == 1023 {
            return;
        }
        if intid == INTID.load(Ordering::Relaxed) {
            let device = DEVICE.load(Ordering::Relaxed);
            let status = read32(device + INTERRUPT_STATUS);
            write32(device + INTERRUPT_ACK, status);
            TAKEN.fetch_add(1, Ordering::Relaxed);
        } else {
            OTHER.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: ending and deactivating the interrupt acknowledged above (EOImode 0).
        unsafe { asm!("msr icc_eoir1_el1, {}", "isb", in(reg) intid, options(nomem, nostack)) };
    }

    /// Waits for an interrupt unless `taken` already counts one: IRQs masked while it checks and
    /// while it waits (a pending interrupt still ends a WFI, Arm ARM D1.6.2), then unmasked so
    /// the interrupt is taken. Checking with IRQs unmasked and then waiting would sleep through
    /// an interrupt taken in between.
    fn wait_for_interrupt(taken: &AtomicU64) {
        // SAFETY: masking IRQs at EL1.
        unsafe { asm!("msr daifset, #2", options(nomem, nostack)) };
        if taken.load(Ordering::Relaxed) == 0 {
            // SAFETY: waiting for an interrupt has no effect on memory.
            unsafe { asm!("wfi", options(nomem, nostack)) };
        }
        // SAFETY: unmasking IRQs at EL1: a pending one is taken now.
        unsafe { asm!("msr daifclr, #2", "isb", options(nomem, nostack)) };
    }

    /// Enables the GIC CPU interface (system registers, priority mask, group 1) and IRQs.
    fn enable_interrupts() {
        capvisor_guest_rt::set_irq_hook(on_irq);
        // SAFETY: the (virtual) GIC CPU interface's own registers, then IRQs unmasked at EL1.
        unsafe {
            asm!(
                "mrs {t}, icc_sre_el1",
                "orr {t}, {t}, #1",
                "msr icc_sre_el1, {t}",
                "isb",
                "msr icc_pmr_el1, {pmr}",
                "msr icc_igrpen1_el1, {one}",
                "isb",
                "msr daifclr, #2",
                t = out(reg) _,
                pmr = in(reg) 0xf0u64,
                one = in(reg) 1u64,
                options(nomem, nostack)
            );
        }
    }

    use super::mmio::*;
    use super::{BUFFER_SIZE, PAGE, QUEUE_SIZE, TRANSPORTS, layout, looks_random};

    fn read32(address: u64) -> u32 {
        // SAFETY: a device register or guest RAM the guest owns; naturally aligned.
        unsafe { read_volatile(address as *const u32) }
    }

    fn write32(address: u64, value: u32) {
        // SAFETY: as `read32`.
        unsafe { write_volatile(address as *mut u32, value) }
    }

    fn write16(address: u64, value: u16) {
        // SAFETY: as `read32`.
        unsafe { write_volatile(address as *mut u16, value) }
    }

    fn read16(address: u64) -> u16 {
        // SAFETY: as `read32`.
        unsafe { read_volatile(address as *const u16) }
    }

    fn write64(address: u64, value: u64) {
        // SAFETY: as `read32`.
        unsafe { write_volatile(address as *mut u64, value) }
    }

    pub fn run() -> Outcome {
        match dma() {
            Ok(()) => Outcome::Pass,
            Err(reason) => Outcome::Fail(reason),
        }
    }

    fn find_entropy_device() -> Option<u64> {
        (0..PAGE / TRANSPORT_SIZE)
            .map(|n| TRANSPORTS + n * TRANSPORT_SIZE)
            .find(|&t| read32(t + MAGIC_VALUE) == MAGIC && read32(t + DEVICE_ID) == ENTROPY)
    }

    fn dma() -> Result<(), &'static str> {
        let ram = ram_base();
        if ram == RAM_BASE {
            return Err("guest RAM is not mapped at IPA = PA: a DMA would miss it");
        }
        let device = find_entropy_device().ok_or("no virtio entropy device in the page")?;
        let version = read32(device + VERSION);
        println!("virtio-mmio entropy device at {device:#x}, version {version}");
        if version != 1 {
            return Err("not the legacy virtio-mmio interface");
        }
        // The rings and the buffer: 8 MiB into RAM, past the image and its stack.
        let (descriptors, available, used, buffer) = layout(ram + (8 << 20));
        for address in (descriptors..buffer + BUFFER_SIZE).step_by(8) {
            write64(address, 0);
        }
        write32(device + STATUS, 0);
        write32(device + STATUS, ACKNOWLEDGE | DRIVER);
        write32(device + GUEST_FEATURES_SEL, 0);
        write32(device + GUEST_FEATURES, 0);
        write32(device + GUEST_PAGE_SIZE, PAGE as u32);
        write32(device + QUEUE_SEL, 0);
        if u64::from(read32(device + QUEUE_NUM_MAX)) < QUEUE_SIZE {
            return Err("queue 0 is smaller than 8 descriptors");
        }
        write32(device + QUEUE_NUM, QUEUE_SIZE as u32);
        write32(device + QUEUE_ALIGN, PAGE as u32);
        // The queue's guest-physical page number: its IPA, which is its PA here.
        write32(device + QUEUE_PFN, (descriptors / PAGE) as u32);
        write32(device + STATUS, ACKNOWLEDGE | DRIVER | DRIVER_OK);
        // Descriptor 0: the buffer, device-writable (VIRTQ_DESC_F_WRITE = 2).
        write64(descriptors, buffer);
        write32(descriptors + 8, BUFFER_SIZE as u32);
        write16(descriptors + 12, 2);
        write16(descriptors + 14, 0);
        write16(available + 4, 0);
        // The descriptor before the index that publishes it (2.6.13: a write memory barrier).
        // SAFETY: a barrier.
        unsafe { core::arch::asm!("dmb sy", options(nostack, preserves_flags)) };
        write16(available + 2, 1);
        // SAFETY: a barrier.
        unsafe { core::arch::asm!("dsb sy", options(nostack, preserves_flags)) };
        let intid = FIRST_INTID + (device - FIRST_TRANSPORT) / TRANSPORT_SIZE;
        DEVICE.store(device, Ordering::Relaxed);
        INTID.store(intid, Ordering::Relaxed);
        enable_interrupts();
        write32(device + QUEUE_NOTIFY, 0);
        let start = counter();
        while TAKEN.load(Ordering::Relaxed) == 0 {
            if counter() - start > 62_500_000 {
                write32(device + STATUS, 0);
                return Err("the device's interrupt did not come within a second");
            }
            wait_for_interrupt(&TAKEN);
        }
        // SAFETY: masking IRQs again.
        unsafe { asm!("msr daifset, #2", options(nomem, nostack)) };
        println!("interrupt {intid} from the device taken and acknowledged");
        if OTHER.load(Ordering::Relaxed) != 0 {
            return Err("an interrupt came that the device did not raise");
        }
        while read16(used + 2) == 0 {
            if counter() - start > 62_500_000 {
                write32(device + STATUS, 0);
                return Err("the device did not return the buffer within a second");
            }
            core::hint::spin_loop();
        }
        let (id, length) = (read32(used + 4), read32(used + 8));
        write32(device + STATUS, 0);
        if id != 0 || length == 0 || u64::from(length) > BUFFER_SIZE {
            return Err("the used ring does not return descriptor 0 with a sane length");
        }
        let mut bytes = [0u8; BUFFER_SIZE as usize];
        for (n, byte) in bytes.iter_mut().enumerate().take(length as usize) {
            // SAFETY: the buffer lies in guest RAM the guest owns; a byte access is aligned.
            *byte = unsafe { read_volatile((buffer + n as u64) as *const u8) };
        }
        let written = &bytes[..length as usize];
        println!(
            "{length} bytes of entropy by DMA into IPA = PA {buffer:#x}, the first: {:02x?}",
            &written[..8.min(written.len())]
        );
        if !looks_random(written) {
            return Err("the buffer the device returned was not written");
        }
        Ok(())
    }
}

#[cfg(target_os = "none")]
use run_on_target::run;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_legacy_queue_layout_puts_the_used_ring_on_the_next_page() {
        let (descriptors, available, used, buffer) = layout(0x4880_0000);
        assert_eq!(descriptors, 0x4880_0000);
        assert_eq!(available, 0x4880_0080);
        assert_eq!(used, 0x4880_1000);
        assert_eq!(buffer, 0x4880_2000);
    }

    #[test]
    fn random_bytes_are_mostly_non_zero() {
        assert!(!looks_random(&[0; 256]));
        assert!(!looks_random(&[]));
        assert!(looks_random(&[1, 0, 3, 4]));
        assert!(!looks_random(&[1, 0, 0, 0]));
    }
}

//! A test service: a deliberately wrong device broker (defence in depth, `DESIGN.md` rules 4, 5,
//! 7 and 8). It holds a cacheable PFNMAP carve-out and an uncached device region of at least
//! 2 MiB and, skipping every rule of `svc-devbroker`, asks the kernel directly for the mappings
//! those rules forbid, in its own address space: write-back (cacheable) on whatever platform it
//! runs, Device-nGnRE of cacheable memory, an executable mapping, and a 2 MiB block of the
//! uncached device. It prints each answer as `bad-broker: <request>: <result>` and ends the test
//! run. The kernel must refuse write-back with `CacheableDeviceUnsupported` unless the platform
//! has FEAT_S2FWB and CTR_EL0.DIC, and the others always; the device's 4 KiB page maps.
#![cfg_attr(target_os = "none", no_std, no_main)]

capvisor_rt::service!(run);

/// Where the frame would appear in this service's address space.
#[cfg(target_os = "none")]
const WINDOW: u64 = 0x40_0000_0000;

#[cfg(target_os = "none")]
fn run() -> u64 {
    use capvisor_ipc::bootinfo::{BOOT_INFO, BootInfo, DEVICE_CARVEOUT, DeviceInfo};
    use capvisor_ipc::cap::ObjectKind;
    use capvisor_ipc::memory::MemoryType;
    use capvisor_rt::{CPtr, println, sys};
    use zerocopy::FromBytes;

    /// This service's AddressSpace (`sdk/src/plan/layout.rs`).
    const SPACE: u64 = 2;
    // SAFETY: the kernel maps the boot-info page read-only at BOOT_INFO before the service
    // starts; it is 4 KiB and BootInfo is at most a page (const-asserted in bootinfo.rs).
    let bytes =
        unsafe { core::slice::from_raw_parts(BOOT_INFO as *const u8, size_of::<BootInfo>()) };
    let info = BootInfo::read_from_bytes(bytes).ok();
    let Some(info) = info.filter(|i| i.magic == BootInfo::MAGIC && i.version == BootInfo::VERSION)
    else {
        println!("bad-broker: no valid boot-info page");
        capvisor_rt::debug_halt(1)
    };
    let carveout = |device: &&DeviceInfo| device.flags & DEVICE_CARVEOUT != 0;
    let Some(region) = info.devices().iter().find(carveout) else {
        println!("bad-broker: no carve-out held");
        capvisor_rt::debug_halt(1)
    };
    println!(
        "bad-broker: holding '{}' {:#x}..{:#x}, fwb={} dic={}",
        BootInfo::device_name(region),
        region.base,
        region.base + region.size,
        info.fwb(),
        info.dic()
    );
    let frame = info.free_first;
    let kind = u64::from(ObjectKind::DeviceFrame.code());
    if let Err(error) = sys::retype(CPtr::new(region.untyped), kind, 12, CPtr::NULL, frame, 1) {
        println!("bad-broker: retype refused: {error:?}");
        capvisor_rt::debug_halt(1)
    }
    let requests = [
        ("write-back read/write", MemoryType::NormalWriteBack, 0b011),
        ("Device-nGnRE read/write", MemoryType::DeviceNgnre, 0b011),
        (
            "Normal non-cacheable read/write",
            MemoryType::NormalNonCacheable,
            0b011,
        ),
        (
            "write-back read/execute",
            MemoryType::NormalWriteBack,
            0b101,
        ),
    ];
    for (index, (request, memtype, access)) in requests.into_iter().enumerate() {
        let ipa = WINDOW + index as u64 * 0x1000;
        match sys::map(
            CPtr::new(frame),
            CPtr::new(SPACE),
            ipa,
            access,
            memtype.code(),
        ) {
            Ok(()) => {
                println!("bad-broker: {request}: mapped");
                // A frame maps once: unmap it for the next request.
                let _ = sys::unmap(CPtr::new(frame));
            }
            Err(error) => println!("bad-broker: {request}: refused with {error:?}"),
        }
    }
    if let Some(device) = info.devices().iter().find(|device| !carveout(device)) {
        uncached_block(device, info.free_first + 1);
    }
    capvisor_rt::debug_halt(0)
}

/// Rule 8: asks for a 2 MiB block of the uncached device `device` (a device frame of 2 MiB,
/// Device-nGnRE, at a 2 MiB aligned address), then for its next 4 KiB page, using the free slots
/// from `slot` on.
#[cfg(target_os = "none")]
fn uncached_block(device: &capvisor_ipc::bootinfo::DeviceInfo, slot: u64) {
    use capvisor_ipc::bootinfo::BootInfo;
    use capvisor_ipc::cap::ObjectKind;
    use capvisor_ipc::memory::MemoryType;
    use capvisor_rt::{CPtr, println, sys};

    /// This service's AddressSpace (`sdk/src/plan/layout.rs`).
    const SPACE: u64 = 2;
    let name = BootInfo::device_name(device);
    let kind = u64::from(ObjectKind::DeviceFrame.code());
    let requests: [(&str, u64, u64); 2] = [
        ("2 MiB block", 21, 0x20_0000),
        ("4 KiB page", 12, 0x40_0000),
    ];
    for (what, bits, offset) in requests {
        let frame = slot + u64::from(bits == 12);
        // The untyped hands out its memory in order: the block is its first 2 MiB (aligned,
        // as the region's base is), the page the 4 KiB after it.
        if let Err(error) = sys::retype(CPtr::new(device.untyped), kind, bits, CPtr::NULL, frame, 1)
        {
            println!("bad-broker: {what} of '{name}': retype refused with {error:?}");
            continue;
        }
        let memtype = MemoryType::DeviceNgnre.code();
        match sys::map(
            CPtr::new(frame),
            CPtr::new(SPACE),
            WINDOW + offset,
            0b011,
            memtype,
        ) {
            Ok(()) => println!("bad-broker: {what} of '{name}' Device-nGnRE read/write: mapped"),
            Err(error) => println!(
                "bad-broker: {what} of '{name}' Device-nGnRE read/write: refused with {error:?}"
            ),
        }
    }
}

#[cfg(not(target_os = "none"))]
fn run() -> u64 {
    0
}

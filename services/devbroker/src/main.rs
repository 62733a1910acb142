//! The device broker (`svc-devbroker`): holds the device regions and carve-outs the manifest gives
//! it, prints the platform's device inventory, maps each passthrough into its guest under the
//! stage-2 attribute rules (`DESIGN.md` rules 3–8; the cacheable-PFNMAP rule), and serves
//! `capvisor_ipc::protocols::devbroker` on its endpoint. The rules are in [`policy`] and the
//! inventory in [`inventory`], both tested on the host; this file is the EL0 glue: the boot-info
//! page. The kernel is `capvisor_rt::kernel`'s typed interface; the service has no `unsafe`.
#![cfg_attr(target_os = "none", no_std, no_main)]
#![forbid(unsafe_code)]

capvisor_rt::service_async!(run);

#[cfg_attr(
    not(any(target_os = "none", test)),
    allow(dead_code, reason = "the host program does not serve")
)]
mod inventory;
#[cfg_attr(
    not(any(target_os = "none", test)),
    allow(dead_code, reason = "the host program does not serve")
)]
mod policy;

#[cfg(test)]
mod tests;

/// The broker's server generation.
#[cfg(target_os = "none")]
const GENERATION: capvisor_ipc::protocol::Generation = capvisor_ipc::protocol::Generation::new(1);

/// The regions of a boot-info page, as the policy sees them; whether a passed-through device
/// may master the bus is read from the platform device tree `dtb`.
#[cfg_attr(
    not(target_os = "none"),
    allow(dead_code, reason = "used on the target and in tests")
)]
fn regions(
    info: &capvisor_ipc::bootinfo::BootInfo,
    dtb: &[u8],
) -> heapless::Vec<policy::Region, { policy::MAX_REGIONS }> {
    use capvisor_ipc::bootinfo::{
        BootInfo, DEVICE_CACHEABLE, DEVICE_CARVEOUT, DEVICE_OPTIONAL, DEVICE_UNPROTECTED_DMA,
    };
    use capvisor_ipc::cap::{CPtr, Cap};
    use capvisor_ipc::types::MemoryType;
    info.devices()
        .iter()
        .map(|device| {
            let carveout = device.flags & DEVICE_CARVEOUT != 0;
            let memtype = policy::memtype_from_boot_info(device.memtype);
            let guest_name = info
                .guests()
                .get(device.guest as usize)
                .and_then(|guest| heapless::String::try_from(BootInfo::name(guest)).ok());
            let passthrough = (device.vm != 0).then(|| policy::Passthrough {
                guest: device.guest,
                guest_name,
                vm: Cap::from_cptr(CPtr::new(device.vm)),
                memtype,
                optional: device.flags & DEVICE_OPTIONAL != 0,
                masters_bus: !carveout && inventory::masters_bus(dtb, device.base, device.size),
                unprotected_dma: device.flags & DEVICE_UNPROTECTED_DMA != 0,
            });
            policy::Region {
                name: heapless::String::try_from(BootInfo::device_name(device)).unwrap_or_default(),
                untyped: Cap::from_cptr(CPtr::new(device.untyped)),
                base: device.base,
                size: device.size,
                cacheable: device.flags & DEVICE_CACHEABLE != 0,
                carveout,
                allows_uncached: memtype == MemoryType::NormalNonCacheable,
                passthrough,
            }
        })
        .collect()
}

/// Prints the inventory of the platform device tree `dtb` — the devices the broker may hand
/// out, marking the ones it holds — then one line naming what the kernel keeps for itself.
#[cfg_attr(
    not(target_os = "none"),
    allow(dead_code, reason = "used on the target and in tests")
)]
fn print_inventory(
    dtb: &[u8],
    held: &[policy::Region],
    mut line: impl FnMut(core::fmt::Arguments<'_>),
) {
    let mut kept: heapless::String<160> = heapless::String::new();
    let result = inventory::scan(dtb, |device| {
        if let Some(what) = device.kept {
            let what = match what {
                inventory::Kept::Console => "console",
                inventory::Kept::Gic => "GIC",
                inventory::Kept::Timer => "timer",
            };
            let separator = if kept.is_empty() { "" } else { ", " };
            let _ = core::fmt::write(
                &mut kept,
                format_args!("{separator}{} ({what})", device.name),
            );
            return;
        }
        let granted = held
            .iter()
            .find(|region| !region.carveout && device.covers(region.base, region.size));
        match granted {
            Some(region) => line(format_args!(
                "devbroker: device {device} (held: '{}')",
                region.name
            )),
            None => line(format_args!("devbroker: device {device}")),
        }
    });
    if let Err(error) = result {
        line(format_args!(
            "devbroker: the platform device tree does not parse: {error:?}"
        ));
    }
    for region in held.iter().filter(|region| region.carveout) {
        line(format_args!(
            "devbroker: carve-out {:#x}..{:#x}{} (held: '{}')",
            region.base,
            region.base + region.size,
            if region.cacheable {
                " cacheable PFNMAP"
            } else {
                " RAM"
            },
            region.name
        ));
    }
    if !kept.is_empty() {
        line(format_args!(
            "devbroker: kept by the kernel, not brokered: {kept}"
        ));
    }
}

#[cfg(target_os = "none")]
async fn run() -> u64 {
    use capvisor_ipc::cap::Cap;
    use capvisor_ipc::protocols::devbroker;
    use capvisor_rt::ipc::{EndpointServer, ReceiveWindow};
    use capvisor_rt::println;

    let Some(info) = capvisor_rt::boot_info() else {
        println!("devbroker: no valid boot-info page");
        return 1;
    };
    let features = policy::CacheFeatures {
        fwb: info.fwb(),
        dic: info.dic(),
    };
    let dtb = capvisor_rt::boot_payload(info.platform_dtb);
    let held = regions(&info, dtb);
    println!(
        "devbroker: {} region(s) held, fwb={} dic={}, endpoint slot {}",
        held.len(),
        features.fwb,
        features.dic,
        info.endpoint
    );
    print_inventory(dtb, &held, |line| println!("{line}"));
    // A grant takes two slots and its release gives them back; each region is granted once at
    // a time, so this many emptied slots always fit.
    let kernel = capvisor_rt::kernel::Syscalls::<
        capvisor_rt::kernel::Slots<{ 2 * policy::MAX_REGIONS }>,
    >::with_reuse(info.free_first, info.free_end);
    let mut broker = policy::Broker::new(kernel, features, held);
    let complete = broker.grant_passthroughs(|outcome| {
        println!("{outcome}");
        if let Some(warning) = outcome.unprotected_dma() {
            println!("{warning}");
        }
    });
    if !complete {
        println!("devbroker: a required passthrough was refused");
    }
    if info.endpoint == 0 {
        // Nobody can call: the grants are made, and the mappings outlive this thread.
        return u64::from(!complete);
    }
    let mut server = EndpointServer::new(
        Cap::from_cptr(capvisor_rt::CPtr::new(info.endpoint)),
        ReceiveWindow::NONE,
    );
    let error = devbroker::serve(&mut server, &mut broker, GENERATION).await;
    println!("devbroker: unexpected {error:?}");
    1
}

/// Without the kernel there is nothing to broker: the host program does nothing (the policy is
/// tested in `tests.rs`).
#[cfg(not(target_os = "none"))]
async fn run() -> u64 {
    0
}

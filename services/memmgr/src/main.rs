//! The memory manager (`svc-memmgr`): serves `capvisor_ipc::protocols::memmgr` to the guests'
//! VMMs. It owns guest RAM (its manifest's untyped), demand-maps it into each VM on stage-2
//! faults and writes the guests' payloads; the rules it applies (`DESIGN.md` stage-2 rules 1–2,
//! vCPU reset) are in [`policy`], tested on the host. This file is the EL0 glue: the boot-info
//! page and capability discovery; the kernel is `capvisor_rt::kernel`'s typed interface, and guest
//! frames are written through `capvisor_rt::window`, so the service has no `unsafe`.
#![cfg_attr(target_os = "none", no_std, no_main)]
#![forbid(unsafe_code)]

capvisor_rt::service_async!(run);

#[cfg_attr(
    not(any(target_os = "none", test)),
    allow(dead_code, reason = "the host program does not serve")
)]
mod policy;
#[cfg_attr(
    not(any(target_os = "none", test)),
    allow(dead_code, reason = "the host program does not serve")
)]
mod quota;

#[cfg(test)]
mod tests;

/// The memory manager's server generation.
#[cfg(target_os = "none")]
const GENERATION: capvisor_ipc::protocol::Generation = capvisor_ipc::protocol::Generation::new(1);

#[cfg(target_os = "none")]
async fn run() -> u64 {
    use capvisor_ipc::cap::{CPtr, Cap, Untyped};
    use capvisor_ipc::protocols::memmgr;
    use capvisor_rt::ipc::{EndpointServer, ReceiveWindow};
    use capvisor_rt::kernel::Syscalls;
    use capvisor_rt::println;

    let Some(info) = capvisor_rt::boot_info() else {
        println!("no valid boot-info page");
        return 1;
    };
    // No slot is probed: `Identify` is made with `Call`, which on an endpoint would be an IPC
    // call. The boot-info page lists the endpoint, the untyped and the free slots.
    if info.endpoint == 0 || info.free_first >= info.free_end {
        println!("no endpoint or no free capability slots");
        return 1;
    }
    let kernel = Syscalls::new(info.free_first, info.free_end);
    let guests: heapless::Vec<policy::Guest, { policy::MAX_GUESTS }> =
        info.guests().iter().map(policy::Guest::from_info).collect();
    let features = policy::CacheFeatures {
        fwb: info.fwb(),
        dic: info.dic(),
    };
    let endpoint = info.endpoint;
    println!(
        "memmgr: {} guest(s), endpoint slot {endpoint}, {} untyped piece(s), fwb={} dic={}",
        guests.len(),
        info.untyped().len(),
        features.fwb,
        features.dic
    );
    for (guest, info) in guests.iter().zip(info.guests()) {
        if guest.identity_untyped.is_some() {
            println!(
                "memmgr: guest {}: RAM {:#x}..{:#x} at IPA = PA, from its own untyped",
                capvisor_ipc::bootinfo::BootInfo::name(info),
                guest.ram_base,
                guest.ram_base + guest.ram_size
            );
        }
    }
    let untyped: heapless::Vec<Cap<Untyped>, 32> = info
        .untyped()
        .iter()
        .map(|&slot| Cap::from_cptr(CPtr::new(slot)))
        .collect();
    let manager = policy::MemMgr::new(kernel, features, &guests, &untyped);
    let (blocks, pages) = manager.capacity();
    println!(
        "memmgr: pool of {} MiB: {blocks} x 2 MiB for blocks, {pages} x 4 KiB for pages",
        (blocks * policy::BLOCK + pages * policy::PAGE) >> 20
    );
    for (index, info) in info.guests().iter().enumerate() {
        let Some((quota, need)) = manager.quota(index) else {
            continue;
        };
        let name = capvisor_ipc::bootinfo::BootInfo::name(info);
        let fair = if quota.frames < need.frames()
            || (info.ram_untyped == 0 && (quota.blocks, quota.pages) != (need.blocks, need.pages))
        {
            " (a fair share: the memory manager holds less than its guests' RAM)"
        } else {
            ""
        };
        println!(
            "memmgr: guest {name}: quota {} x 2 MiB and {} x 4 KiB from the pool, {} frames{fair}",
            quota.blocks, quota.pages, quota.frames
        );
    }
    let mut manager = manager;
    let mut server = EndpointServer::new(Cap::from_cptr(CPtr::new(endpoint)), ReceiveWindow::NONE);
    let error = memmgr::serve(&mut server, &mut manager, GENERATION).await;
    println!("unexpected {error:?}");
    1
}

/// Without the kernel there is nothing to serve: the host program does nothing (the policy is
/// tested in `tests.rs`).
#[cfg(not(target_os = "none"))]
async fn run() -> u64 {
    0
}

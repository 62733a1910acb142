//! A device-broker client that cycles one region (issue 13, finding 7), run by
//! `tests/tests/hostile_services.rs` before a bystander (`tests/services/device-client`) that
//! must still be granted the region afterwards. It asks for QEMU `virt`'s PL031 RTC and releases
//! it, 300 times (before the fix the broker never reset the region's untyped, so a released region
//! could never be granted again, and each grant also used up two of its slots for good), reading
//! the RTC's PrimeCell ID through the first and the last grant; it keeps a copy of the last
//! grant's capability and checks that the release took it away too. Each step prints one
//! `cycler: …` line.
#![cfg_attr(target_os = "none", no_std, no_main)]

capvisor_rt::service_async!(run);

#[cfg(target_os = "none")]
async fn run() -> u64 {
    match cycle().await {
        Ok(()) => {
            capvisor_rt::println!("cycler: done");
            0
        }
        Err(failure) => {
            capvisor_rt::println!("cycler: FAIL: {failure}");
            1
        }
    }
}

/// Without the kernel there is no broker to call: the host program does nothing.
#[cfg(not(target_os = "none"))]
async fn run() -> u64 {
    0
}

#[cfg(target_os = "none")]
async fn cycle() -> Result<(), &'static str> {
    use capvisor_ipc::abi::Invocation;
    use capvisor_ipc::cap::{Cap, Slot};
    use capvisor_ipc::protocols::devbroker::Sharing;
    use capvisor_ipc::types::MemoryType;
    use capvisor_rt::clients::{DevBrokerClient, Service};
    use capvisor_rt::ipc::ReceiveWindow;
    use capvisor_rt::{CPtr, Rights, println, sys};

    // A further service's CNode: 1 itself, 2 its AddressSpace, 4 its own endpoint, 5 the
    // broker's (its first grant). Granted frames land in slot 32; slot 40 keeps a copy across a
    // release.
    const CNODE: CPtr = CPtr::new(1);
    const SPACE: CPtr = CPtr::new(2);
    const BROKER: u64 = 5;
    const LANDING: u64 = 32;
    const KEPT: u64 = 40;
    /// Where the RTC's frame appears in this service's address space.
    const WINDOW: u64 = 0x40_0000_0000;
    const ROUNDS: u32 = 300;
    const RTC: u64 = 0x0901_0000;

    // A client per grant, whose window is the one slot 32: each release empties it again (the
    // broker revokes the region, the granted capability with it).
    let connect = || {
        let broker = Service::granted(Cap::from_cptr(CPtr::new(BROKER)));
        DevBrokerClient::connect(broker, ReceiveWindow::new(Slot::new(LANDING), 1))
    };
    let page = connect()
        .list_regions(0)
        .await
        .map_err(|_| "list_regions")?;
    let rtc = page
        .regions
        .iter()
        .find(|region| region.base.raw() == RTC)
        .ok_or("the broker holds no region at the RTC's base")?
        .id;
    let read_id = |frame: CPtr| -> Result<u32, &'static str> {
        let device = MemoryType::DeviceNgnre.code();
        sys::map(frame, SPACE, WINDOW, 0b001, device).map_err(|_| "map")?;
        let id = (0..4).fold(0u32, |id, n| {
            // SAFETY: the frame is mapped read-only, Device-nGnRE, at WINDOW (4 KiB) just
            // above; 0xff0 + 4n are the PrimeCell ID registers, side-effect free to read.
            let byte = unsafe { core::ptr::read_volatile((WINDOW + 0xff0 + 4 * n) as *const u32) };
            id | (byte & 0xff) << (8 * n)
        });
        sys::unmap(frame).map_err(|_| "unmap")?;
        Ok(id)
    };
    let (mut granted, mut first_id, mut last_id) = (0, 0, 0);
    for round in 0..ROUNDS {
        let mut broker = connect();
        let frame = match broker
            .grant_region_frame(rtc, MemoryType::DeviceNgnre, Sharing::Shared)
            .await
        {
            Ok((frame, _)) => frame.cptr(),
            Err(error) => {
                println!("cycler: grant {round} refused: {error:?}");
                break;
            }
        };
        granted += 1;
        if round == 0 {
            first_id = read_id(frame)?;
        }
        if round == ROUNDS - 1 {
            last_id = read_id(frame)?;
            sys::copy(CNODE, KEPT, frame, Rights::READ).map_err(|_| "copy")?;
        }
        broker.release_region(rtc).await.map_err(|_| "release")?;
    }
    println!(
        "cycler: {granted} of {ROUNDS} grants of the RTC, each released; PrimeCell ID {first_id:#010x} \
         through the first, {last_id:#010x} through the last"
    );
    let kept = sys::invoke(CPtr::new(KEPT), Invocation::Identify.code(), &[]).map(|_| ());
    println!("cycler: the copy kept across the last release: {kept:?}");
    Ok(())
}

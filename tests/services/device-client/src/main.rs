//! A test service: a client of the device broker (`svc-devbroker`) over its protocol, as a VMM
//! would be, allowed by the manifest's `{ endpoint = "devbroker" }`. It finds the PL031 RTC in
//! the broker's region list and asks for it twice: first as a private (copy-on-write) grant,
//! which the broker must refuse with `PrivateDeviceMapping` (`DESIGN.md` stage-2 rule 6), then
//! shared, which it grants; it maps that frame read-only into its own address space, reads the
//! RTC's PrimeCell ID through it, releases the region and ends the test run. Each step prints
//! one `device-client: …` line (`tests/tests/devices.rs`).
#![cfg_attr(target_os = "none", no_std, no_main)]

capvisor_rt::service_async!(run);

/// The RTC's physical base on QEMU `virt`.
#[cfg(target_os = "none")]
const RTC: u64 = 0x0901_0000;

#[cfg(target_os = "none")]
async fn run() -> u64 {
    match steps().await {
        Ok(()) => capvisor_rt::debug_halt(0),
        Err(failure) => {
            capvisor_rt::println!("device-client: FAIL: {failure}");
            capvisor_rt::debug_halt(1)
        }
    }
}

/// Without the kernel there is no broker to call: the host program does nothing.
#[cfg(not(target_os = "none"))]
async fn run() -> u64 {
    0
}

#[cfg(target_os = "none")]
async fn steps() -> Result<(), &'static str> {
    use capvisor_ipc::cap::{Cap, Slot};
    use capvisor_ipc::protocol::Error;
    use capvisor_ipc::protocols::devbroker::{BrokerError, Sharing};
    use capvisor_ipc::types::MemoryType;
    use capvisor_rt::clients::{DevBrokerClient, Service};
    use capvisor_rt::ipc::ReceiveWindow;
    use capvisor_rt::{CPtr, println, sys};

    // A further service's CNode (docs/architecture.md, "EL0 services"): slot 2 its
    // AddressSpace, its grant window from slot 4 — slot 4 for its own endpoint, slot 5 the
    // first endpoint its manifest grants: the broker's. A granted frame lands in slot 32.
    const SPACE: u64 = 2;
    const BROKER: u64 = 5;
    const GRANTED: u64 = 32;
    /// Where the RTC's frame appears in this service's address space.
    const WINDOW: u64 = 0x40_0000_0000;

    let broker = Service::granted(Cap::from_cptr(CPtr::new(BROKER)));
    let mut broker = DevBrokerClient::connect(broker, ReceiveWindow::new(Slot::new(GRANTED), 1));
    let page = broker
        .list_regions(0)
        .await
        .map_err(|_| "list_regions failed")?;
    let rtc = page
        .regions
        .iter()
        .find(|region| region.base.raw() == RTC)
        .ok_or("the broker holds no region at the RTC's base")?;
    println!(
        "device-client: region {} at {:#x}, {:#x} bytes",
        rtc.id.raw(),
        rtc.base.raw(),
        rtc.size
    );
    let device = MemoryType::DeviceNgnre;
    match broker
        .grant_region_frame(rtc.id, device, Sharing::Private)
        .await
    {
        Err(Error::Service(error @ BrokerError::PrivateDeviceMapping)) => {
            println!("device-client: private grant of the RTC refused: {error:?}");
        }
        Err(_) => return Err("the private grant failed otherwise"),
        Ok(_) => return Err("the private grant was made"),
    }
    let (frame, size) = match broker
        .grant_region_frame(rtc.id, device, Sharing::Shared)
        .await
    {
        Ok(granted) => granted,
        Err(Error::Service(error)) => {
            println!("device-client: shared grant of the RTC refused: {error:?}");
            return Err("the shared grant was refused");
        }
        Err(_) => return Err("the shared grant failed"),
    };
    println!(
        "device-client: shared grant of the RTC: {size:#x} bytes, Device-nGnRE, slot {}",
        frame.cptr().raw()
    );
    let read_only = 0b001;
    sys::map(
        frame.cptr(),
        CPtr::new(SPACE),
        WINDOW,
        read_only,
        MemoryType::DeviceNgnre.code(),
    )
    .map_err(|_| "mapping the granted frame failed")?;
    let id = (0..4).fold(0u32, |id, n| {
        // SAFETY: the frame is mapped read-only, Device-nGnRE, at WINDOW (4 KiB) just above;
        // 0xff0 + 4n are the PrimeCell ID registers, 32-bit and side-effect free to read.
        let byte = unsafe { core::ptr::read_volatile((WINDOW + 0xff0 + 4 * n) as *const u32) };
        id | (byte & 0xff) << (8 * n)
    });
    println!("device-client: RTC PrimeCell ID {id:#010x} through the shared grant");
    broker
        .release_region(rtc.id)
        .await
        .map_err(|_| "release_region failed")?;
    println!("device-client: released the RTC; PASS");
    Ok(())
}

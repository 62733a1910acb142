//! init (`svc-init`): it carries out the image's boot plan ([`boot`]), then, when the manifest's
//! first service is init (the plan's `PLAN_SUPERVISED`), supervises.
//!
//! - Carrying out the plan: the kernel created only init, with all free RAM as untyped, the
//!   board's device regions as device untyped, the payload as read-only frames and a platform
//!   page with the device tree; init makes every service and guest from the plan.
//!   An image whose manifest has no init gets one from the SDK, which returns once the services
//!   are made.
//! - Supervising: each service's fault endpoint is init's endpoint, badged with the service's
//!   index + 1. Each fault is reported on the console by the service's name with its decoded
//!   fault ([`report`]), and the service is stopped while the rest of the system goes on.
#![cfg_attr(target_os = "none", no_std, no_main)]

capvisor_rt::service_async!(run);

#[cfg_attr(
    not(any(target_os = "none", test)),
    allow(dead_code, reason = "the host program does not serve")
)]
mod report;

#[cfg_attr(
    not(any(target_os = "none", test)),
    allow(dead_code, reason = "the host program does not serve")
)]
mod supervisor;

#[cfg_attr(
    not(any(target_os = "none", test)),
    allow(dead_code, reason = "the host program does not boot anything")
)]
mod boot;

#[cfg_attr(
    not(any(target_os = "none", test)),
    allow(dead_code, reason = "the host program does not boot anything")
)]
mod devicetree;

#[cfg(target_os = "none")]
async fn run() -> u64 {
    use capvisor_ipc::abi::Invocation;
    use capvisor_rt::println;

    let mut kernel = target::Syscalls;
    let given = match boot::Given::find(&mut kernel) {
        Ok(given) => given,
        Err(error) => {
            println!("init: too many capabilities from the kernel: {error:?}");
            return 1;
        }
    };
    let payload = match given.map_image(&mut kernel) {
        Ok(size) => target::payload(size),
        Err(error) => {
            println!("init: cannot map the image: {error:?}");
            capvisor_rt::debug_halt(1)
        }
    };
    let plan = match target::plan(payload) {
        Ok(plan) => plan,
        Err(error) => {
            println!("init: refusing the boot plan: {error}");
            capvisor_rt::debug_halt(1)
        }
    };
    let Some(platform) = target::platform() else {
        println!("init: the kernel's platform page is missing or malformed");
        capvisor_rt::debug_halt(1)
    };
    let made = match boot::carry_out(&mut kernel, (&given, platform), plan, payload) {
        Ok(made) => made,
        Err(refused) => {
            println!("init: cannot carry out the boot plan: {refused}");
            capvisor_rt::debug_halt(1)
        }
    };
    let Some(endpoint) = made.endpoint else {
        println!(
            "init: made {} service(s) from the boot plan ({} steps)",
            made.services.len(),
            plan.len()
        );
        // Nothing to supervise: init's thread stops here, quietly.
        let own_thread = capvisor_rt::CPtr::new(capvisor_ipc::cap::root::THREAD);
        let _ = capvisor_rt::sys::invoke(own_thread, Invocation::Suspend.code(), &[]);
        return 0;
    };
    println!("init: started {} service(s)", made.started);
    let services = made.services.iter().map(|&(badge, _, name)| (badge, name));
    let supervisor = supervisor::Supervisor::named(services, |line| println!("{line}"));
    target::serve(supervisor, endpoint).await
}

/// The target's side: system calls, the payload's mapping, serving faults.
#[cfg(target_os = "none")]
mod target {
    use crate::{boot, supervisor};
    use capvisor_image::plan::{Plan, PlanError};
    use capvisor_image::{EntryKind, Payload};
    use capvisor_ipc::abi::{Invocation, KernelError};
    use capvisor_ipc::cap::Cap;
    use capvisor_ipc::protocols::fault;
    use capvisor_rt::ipc::{EndpointServer, ReceiveWindow};
    use capvisor_rt::{CPtr, println, sys};

    /// The kernel, through system calls.
    pub struct Syscalls;

    impl boot::Kernel for Syscalls {
        fn invoke(
            &mut self,
            cptr: u64,
            invocation: Invocation,
            args: &[u64],
        ) -> Result<[u64; 4], KernelError> {
            sys::invoke(CPtr::new(cptr), invocation.code(), args)
        }

        fn write_scratch(&mut self, offset: usize, bytes: &[u8]) {
            let page = capvisor_image::service::PAGE as usize;
            let offset = offset.min(page);
            let count = bytes.len().min(page - offset);
            // SAFETY: init maps a frame read/write at SCRATCH_PAGE before each call and unmaps
            // it after; nothing else in init refers to that page, and nothing is written past
            // its end (`offset + count <= PAGE`).
            unsafe {
                let at = (boot::SCRATCH_PAGE as *mut u8).add(offset);
                core::ptr::copy_nonoverlapping(bytes.as_ptr(), at, count);
            }
        }
    }

    /// The platform page the kernel mapped at `PLATFORM_PAGE` and the device tree after it,
    /// if it is one.
    pub fn platform() -> Option<boot::Platform<'static>> {
        use capvisor_ipc::bootinfo::{PLATFORM_PAGE, PlatformPage};
        // SAFETY: the kernel maps the platform page read-only at PLATFORM_PAGE in init's space
        // before init runs, for init's lifetime; the read is of a plain-data struct within it.
        let bytes = unsafe {
            core::slice::from_raw_parts(PLATFORM_PAGE as *const u8, size_of::<PlatformPage>())
        };
        let page = PlatformPage::parse(bytes)?;
        // The kernel maps `dtb_size` bytes from the next page; more than 16 MiB is not a tree
        // it gave.
        let size = usize::try_from(page.dtb_size)
            .ok()
            .filter(|&s| s <= 16 << 20)?;
        // SAFETY: as above, the kernel mapped the copy of the device tree, `dtb_size` bytes,
        // read-only from the page after the platform page, for init's lifetime.
        let dtb = unsafe { core::slice::from_raw_parts((PLATFORM_PAGE + 4096) as *const u8, size) };
        Some(boot::Platform { page, dtb })
    }

    /// The payload init mapped (`size` bytes from `PAYLOAD_WINDOW`).
    pub fn payload(size: u64) -> &'static [u8] {
        // SAFETY: `Given::map_image` mapped the image's read-only frames, `size` bytes from
        // PAYLOAD_WINDOW, for init's lifetime; nothing can write them (the capabilities have
        // READ only).
        unsafe { core::slice::from_raw_parts(boot::PAYLOAD_WINDOW as *const u8, size as usize) }
    }

    /// The boot plan in `payload`, checked.
    pub fn plan(payload: &'static [u8]) -> Result<Plan<'static>, PlanError> {
        let entry = Payload::parse(payload)
            .ok()
            .and_then(|p| p.entries().find(|e| e.kind == EntryKind::BootPlan))
            .ok_or(PlanError::Truncated)?;
        Plan::decode(entry.bytes, payload.len() as u64)
    }

    /// Serves the services' faults on `endpoint`; returns only when that fails.
    pub async fn serve<F: FnMut(core::fmt::Arguments<'_>)>(
        mut supervisor: supervisor::Supervisor<F>,
        endpoint: u64,
    ) -> u64 {
        let mut server =
            EndpointServer::new(Cap::from_cptr(CPtr::new(endpoint)), ReceiveWindow::NONE);
        let error = fault::serve(&mut server, &mut supervisor).await;
        println!("init: stopped serving faults: {error:?}");
        1
    }
}

/// Without the kernel there is nothing to supervise (the logic is tested on the host).
#[cfg(not(target_os = "none"))]
async fn run() -> u64 {
    0
}

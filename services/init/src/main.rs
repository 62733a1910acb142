//! init (`svc-init`): it carries out the image's boot plan ([`boot`]), then, when the manifest's
//! first service is init (`BOOT_FLAG_SUPERVISED`), supervises.
//!
//! - Carrying out the plan: the kernel created only init (`BOOT_FLAG_INIT_PLAN`: every image
//!   without guests, devices or carve-outs), with all free RAM as untyped and the payload as
//!   read-only frames; init makes every service from the plan. An image whose manifest has no
//!   init gets one from the SDK, which returns once the services are made.
//! - For the other images the kernel still builds the system itself: it creates every other
//!   service suspended and lists them in init's boot-info page; init starts them.
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
    if given.image.is_empty() {
        // No image frames: the kernel built the system itself and lists it in the boot info.
        return target::supervise_listed().await;
    }
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
    let made = match boot::carry_out(&mut kernel, &given, plan, payload) {
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
    use capvisor_ipc::bootinfo::BootInfo;
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

        fn write_scratch(&mut self, bytes: &[u8]) {
            let page = bytes.len().min(capvisor_image::service::PAGE as usize);
            // SAFETY: init maps a zeroed frame read/write at SCRATCH_PAGE before each call and
            // unmaps it after; nothing else in init refers to that page, and at most a page is
            // written.
            unsafe {
                core::ptr::copy_nonoverlapping(bytes.as_ptr(), boot::SCRATCH_PAGE as *mut u8, page);
            }
        }
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

    /// A system the kernel built (an image with guests or devices): it lists the services in
    /// init's boot-info page, created suspended; init starts them and supervises.
    pub async fn supervise_listed() -> u64 {
        let Some(info) = capvisor_rt::boot_info() else {
            println!("init: no valid boot-info page (is this image supervised?)");
            return 1;
        };
        let supervisor = supervisor::Supervisor::new(&info, |line| println!("{line}"));
        let mut started = 0;
        for service in info.services() {
            let name = BootInfo::service_name(service);
            match sys::invoke(CPtr::new(service.thread), Invocation::Resume.code(), &[]) {
                Ok(_) => started += 1,
                Err(error) => println!("init: cannot start service '{name}': {error:?}"),
            }
        }
        println!("init: started {started} service(s)");
        serve(supervisor, info.endpoint).await
    }
}

/// Without the kernel there is nothing to supervise (the logic is tested on the host).
#[cfg(not(target_os = "none"))]
async fn run() -> u64 {
    0
}

//! The supervisor (`svc-init`): in an image whose first service it is (the root,
//! `BOOT_FLAG_SUPERVISED`), the kernel creates every other service suspended, with this
//! service's endpoint (badged with the service's index + 1) as its fault endpoint. The supervisor
//! starts them in image order, then answers their faults: each is reported on the console by the
//! service's name with its decoded fault ([`report`]), and the service is stopped while the rest
//! of the system goes on.
#![cfg_attr(target_os = "none", no_std, no_main)]
#![forbid(unsafe_code)]

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

#[cfg(target_os = "none")]
async fn run() -> u64 {
    use capvisor_ipc::abi::Invocation;
    use capvisor_ipc::bootinfo::BootInfo;
    use capvisor_ipc::cap::Cap;
    use capvisor_ipc::protocols::fault;
    use capvisor_rt::ipc::{EndpointServer, ReceiveWindow};
    use capvisor_rt::{CPtr, println, sys};

    let Some(info) = capvisor_rt::boot_info() else {
        println!("init: no valid boot-info page (is this image supervised?)");
        return 1;
    };
    let mut supervisor = supervisor::Supervisor::new(&info, |line| println!("{line}"));
    let mut started = 0;
    for service in info.services() {
        let name = BootInfo::service_name(service);
        match sys::invoke(CPtr::new(service.thread), Invocation::Resume.code(), &[]) {
            Ok(_) => started += 1,
            Err(error) => println!("init: cannot start service '{name}': {error:?}"),
        }
    }
    println!("init: started {started} service(s)");
    let mut server = EndpointServer::new(
        Cap::from_cptr(CPtr::new(info.endpoint)),
        ReceiveWindow::NONE,
    );
    let error = fault::serve(&mut server, &mut supervisor).await;
    println!("init: stopped serving faults: {error:?}");
    1
}

/// Without the kernel there is nothing to supervise (the logic is tested on the host).
#[cfg(not(target_os = "none"))]
async fn run() -> u64 {
    0
}

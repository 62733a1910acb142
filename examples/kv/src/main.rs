//! The key-value service: serves the `Kv` protocol (`lib.rs`) on the endpoint its manifest
//! gives it, with the protocol's generated `serve` loop over the EL0 transport.
#![cfg_attr(target_os = "none", no_std, no_main)]

capvisor_rt::service_async!(run);

#[cfg(target_os = "none")]
async fn run() -> u64 {
    use capvisor_ipc::cap::Cap;
    use capvisor_rt::ipc::{EndpointServer, ReceiveWindow};
    use capvisor_rt::{CPtr, println};
    // A boot service's own endpoint is slot 4 (docs/architecture.md, "EL0 services"). The
    // protocol carries no capabilities, so requests need no receive window.
    let endpoint = Cap::from_cptr(CPtr::new(4));
    let mut server = EndpointServer::new(endpoint, ReceiveWindow::NONE);
    let mut store = example_kv::Store::new();
    let error = example_kv::serve(&mut server, &mut store, example_kv::GENERATION).await;
    println!("serve loop ended: {error:?}");
    1
}

/// Without the kernel there is nothing to serve: the host program does nothing (the store is
/// tested under the hosted transport in `lib.rs`).
#[cfg(not(target_os = "none"))]
async fn run() -> u64 {
    0
}

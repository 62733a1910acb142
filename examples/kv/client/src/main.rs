//! Example: a client of the key-value service (`examples/kv`). It stores, reads, replaces and
//! removes values through the protocol's generated `Client` over the EL0 transport, prints each
//! answer, and stops the system with status 0 when every answer was the expected one.
#![cfg_attr(target_os = "none", no_std, no_main)]

use capvisor_ipc::protocol::Error;
use capvisor_ipc::transport::Transport;
use example_kv::{Client, KvError};

capvisor_rt::service_async!(run);

#[cfg(target_os = "none")]
async fn run() -> u64 {
    use capvisor_ipc::cap::Cap;
    use capvisor_ipc::protocol::Generation;
    use capvisor_rt::ipc::{EndpointClient, ReceiveWindow};
    use capvisor_rt::{CPtr, println};
    // The root's first granted endpoint (docs/architecture.md, "EL0 services"): the store.
    let kv = EndpointClient::new(Cap::from_cptr(CPtr::new(993)), ReceiveWindow::NONE);
    let mut kv = Client::new(kv, Generation::ANY);
    let status = match session(&mut kv, &mut |line| println!("{line}")).await {
        Ok(()) => 0,
        Err(error) => {
            println!("unexpected {error:?}");
            1
        }
    };
    capvisor_rt::debug_halt(status)
}

/// Without the kernel there is no store to call: the host program does nothing (the session is
/// tested under the hosted transport below).
#[cfg(not(target_os = "none"))]
async fn run() -> u64 {
    0
}

/// What the client does, apart from the kernel: each step prints one line through `log`.
///
/// # Errors
/// A call that failed, or an answer other than the expected one.
#[cfg_attr(
    not(any(target_os = "none", test)),
    allow(dead_code, reason = "the host program does not call the store")
)]
async fn session<T: Transport>(
    kv: &mut Client<T>,
    log: &mut dyn FnMut(core::fmt::Arguments<'_>),
) -> Result<(), Error<KvError>> {
    let unexpected = Error::Service(KvError::Full);
    for key in 1..=3 {
        kv.put(key, key * 100).await?;
    }
    log(format_args!(
        "stored 3 keys; the store counts {}",
        kv.count().await?
    ));
    let replaced = kv.put(2, 222).await?;
    log(format_args!(
        "key 2 replaced {replaced:?}; now {}",
        kv.get(2).await?
    ));
    let removed = kv.remove(1).await?;
    log(format_args!("removed key 1 holding {removed}"));
    let gone = kv.get(1).await;
    log(format_args!("key 1 after removal: {gone:?}"));
    if replaced != Some(200) || removed != 100 || gone != Err(Error::Service(KvError::NotFound)) {
        return Err(unexpected);
    }
    log(format_args!("done"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use capvisor_ipc::cap::Badge;
    use capvisor_ipc::hosted::{self, HostedKernel};
    use capvisor_ipc::protocol::Generation;
    use example_kv::{Client, GENERATION, Store, serve};

    #[test]
    fn the_session_against_the_real_store() {
        let kernel = HostedKernel::new();
        let endpoint = kernel.endpoint();
        let mut server = endpoint.server();
        let _served = hosted::spawn(move || async move {
            serve(&mut server, &mut Store::new(), GENERATION).await
        });
        let mut lines = Vec::new();
        let result = hosted::block_on(|_| async {
            let mut kv = Client::new(endpoint.client(Badge::new(1)), Generation::ANY);
            super::session(&mut kv, &mut |line| lines.push(line.to_string())).await
        });
        assert_eq!(result, Ok(()));
        assert_eq!(
            lines,
            [
                "stored 3 keys; the store counts 3",
                "key 2 replaced Some(200); now 222",
                "removed key 1 holding 100",
                "key 1 after removal: Err(Service(NotFound))",
                "done",
            ]
        );
    }
}

//! A test service: answers `ping` on the endpoint the manifest gives it, signals the
//! notification it is sent, maps and writes the frame it is sent, and finally touches that
//! frame after `ping` revoked it (which must fault).
#![cfg_attr(target_os = "none", no_std, no_main)]

capvisor_rt::service!(run);

#[cfg(target_os = "none")]
#[path = "../../pingpong_protocol.rs"]
mod protocol;
#[cfg(target_os = "none")]
use protocol::{FRAME, NOTIFY, PING, SHARED, TOUCH};

#[cfg(target_os = "none")]
fn run() -> u64 {
    if let Err(error) = serve() {
        capvisor_rt::println!("unexpected {error:?}");
    }
    1
}

/// Without the kernel there is nothing to serve: the host build does nothing.
#[cfg(not(target_os = "none"))]
fn run() -> u64 {
    0
}

#[cfg(target_os = "none")]
fn serve() -> Result<(), capvisor_rt::KernelError> {
    use capvisor_ipc::abi::Invocation;
    use capvisor_rt::{CPtr, KernelError, MessageInfo, println, sys};
    // A boot service's slots (kernel/src/services/spawn.rs, grants.rs): 2 its AddressSpace, 4
    // its own endpoint, 5 the 64 KiB untyped its manifest asks for. Received capabilities go
    // from slot 100 on.
    let (space, endpoint, untyped) = (CPtr::new(2), CPtr::new(4), CPtr::new(5));
    sys::retype(untyped, 3, 0, CPtr::NULL, 200, 1)?;
    let identify = sys::invoke(CPtr::new(200), Invocation::Identify.code(), &[])?;
    println!("retyped an object of kind {} from its untyped", identify[0]);
    let mut receive = 100;
    let mut notification = CPtr::NULL;
    sys::with_ipc_buffer(|buffer| buffer.receive_slot = receive);
    let mut message = sys::recv(endpoint)?;
    loop {
        let mut reply = [0; 4];
        let received = sys::with_ipc_buffer(|buffer| (buffer.caps[0], buffer.cap_kinds[0]));
        match message.info.label() {
            PING => {
                let n = message.words[0];
                println!("ping {n} from badge {}", message.badge);
                reply[0] = n * 10;
            }
            NOTIFY | FRAME if message.info.extra_caps() == 1 => {
                println!(
                    "received a capability of kind {} in slot {}",
                    received.1, received.0
                );
                receive += 1;
                sys::with_ipc_buffer(|buffer| buffer.receive_slot = receive);
                let cap = CPtr::new(received.0);
                if message.info.label() == NOTIFY {
                    notification = cap;
                    sys::signal(cap)?;
                } else {
                    sys::map(cap, space, SHARED, 3, 0)?;
                    // SAFETY: SHARED is the frame mapped read/write just above.
                    unsafe { (SHARED as *mut u64).write_volatile(0x1234_5678) };
                    println!("mapped the frame and wrote to it");
                }
            }
            TOUCH => {
                println!("signal after revoke: {:?}", sys::signal(notification).err());
                println!("touching the revoked frame");
                // SAFETY: reads the frame mapped above; `ping` revoked it, so this must fault.
                let value = unsafe { (SHARED as *const u64).read_volatile() };
                println!("still mapped: {value:#x}");
                return Ok(());
            }
            _ => return Err(KernelError::InvalidArgument),
        }
        let info = MessageInfo::new(0, 8, 0).map_err(|_| KernelError::InvalidMessageInfo)?;
        message = sys::reply_recv(endpoint, info, reply)?;
    }
}

//! A test service (the image's root): calls `pong` through the endpoint its manifest grants,
//! transfers a notification and a frame to it, checks misuse errors, and revokes what it gave.
#![cfg_attr(target_os = "none", no_std, no_main)]

capvisor_rt::service!(run);

#[cfg(target_os = "none")]
#[path = "../../pingpong_protocol.rs"]
mod protocol;
#[cfg(target_os = "none")]
use protocol::{FRAME, NOTIFY, PING, SHARED, TOUCH};

/// Address spaces created and deleted one after the other (the table pool has 1024 pages).
#[cfg(target_os = "none")]
const SPACES: u64 = 1100;

#[cfg(target_os = "none")]
fn run() -> u64 {
    match steps() {
        Ok(()) => capvisor_rt::debug_halt(0),
        Err(error) => {
            capvisor_rt::println!("unexpected {error:?}");
            capvisor_rt::debug_halt(1)
        }
    }
}

/// Without the kernel there is nothing to call: the host build does nothing.
#[cfg(not(target_os = "none"))]
fn run() -> u64 {
    0
}

#[cfg(target_os = "none")]
fn steps() -> Result<(), capvisor_rt::KernelError> {
    use capvisor_rt::sys;
    use capvisor_rt::{CPtr, KernelError, MessageInfo, Rights, println};
    // The root's slots: its CNode, its AddressSpace, the first untyped, and its grant window
    // (kernel/src/services/grants.rs): slot 993 is the first endpoint its manifest grants.
    let (cnode, space) = (CPtr::new(1), CPtr::new(2));
    let pong = CPtr::new(993);
    let info = |label, words: usize, caps| {
        MessageInfo::new(label, words * 8, caps).map_err(|_| KernelError::InvalidMessageInfo)
    };
    for n in 1..=3 {
        let answer = sys::call(pong, info(PING, 1, 0)?, [n, 0, 0, 0])?;
        println!("pong answered {} to ping {n}", answer.words[0]);
    }
    println!("bad slot: {:?}", sys::signal(CPtr::new(5000)).err());
    println!("wrong type: {:?}", sys::signal(cnode).err());
    retype(3, 0, 900)?;
    sys::mint(cnode, 901, CPtr::new(900), Rights::READ, 0x5)?;
    println!("read-only signal: {:?}", sys::signal(CPtr::new(901)).err());
    sys::mint(cnode, 902, CPtr::new(900), Rights::ALL, 0x5)?;
    sys::with_ipc_buffer(|buffer| buffer.caps[0] = 902);
    sys::call(pong, info(NOTIFY, 0, 1)?, [0; 4])?;
    println!(
        "notification word {:#x} after pong signalled",
        sys::wait(CPtr::new(900))?
    );
    retype(6, 12, 910)?;
    sys::copy(cnode, 911, CPtr::new(910), Rights::ALL)?;
    sys::with_ipc_buffer(|buffer| buffer.caps[0] = 911);
    sys::call(pong, info(FRAME, 0, 1)?, [0; 4])?;
    sys::map(CPtr::new(910), space, SHARED, 3, 0)?;
    // SAFETY: SHARED is the frame mapped read/write just above.
    let value = unsafe { (SHARED as *const u64).read_volatile() };
    println!("shared frame holds {value:#x}");
    sys::revoke(cnode, 900)?;
    println!(
        "signal after revoke: {:?}",
        sys::signal(CPtr::new(902)).err()
    );
    sys::revoke(cnode, 910)?;
    println!("revoked the frame pong maps");
    sys::send(pong, info(TOUCH, 0, 0)?, [0; 4])?;
    for _ in 0..3 {
        capvisor_rt::yield_now();
    }
    // More address spaces than the kernel's 4 MiB table pool has pages: each one's tables must
    // go back to the pool (and its VMID be reused) when it is deleted.
    for _ in 0..SPACES {
        retype(13, 0, 950)?;
        sys::delete(cnode, 950)?;
    }
    println!("created and deleted {SPACES} address spaces");
    println!("done");
    Ok(())
}

/// Retypes one object of `kind` into slot `dest` from the first untyped with room (the root's
/// untyped start at slot 5, one per free RAM range).
#[cfg(target_os = "none")]
fn retype(kind: u64, size_bits: u64, dest: u64) -> Result<(), capvisor_rt::KernelError> {
    use capvisor_rt::{CPtr, KernelError, sys};
    let mut last = KernelError::NotEnoughMemory;
    for untyped in 5..24 {
        match sys::retype(CPtr::new(untyped), kind, size_bits, CPtr::NULL, dest, 1) {
            Ok(()) => return Ok(()),
            Err(error) => last = error,
        }
    }
    Err(last)
}

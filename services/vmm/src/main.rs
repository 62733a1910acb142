//! A VMM (`svc-vmm`): boots the first guest of its boot-info page and serves its vCPUs' faults
//! (`capvisor_ipc::protocols::{fault, guest_call}`) on its own endpoint. The logic is in [`vmm`] (and the
//! device tree writer in [`fdt`]), tested on the host; this file is the EL0 glue: the boot-info
//! page and the memory manager's client behind [`vmm::Machine`]; the vCPUs and their threads are
//! invoked through `capvisor_rt::kernel`'s typed interface. The service has no `unsafe`.
#![cfg_attr(target_os = "none", no_std, no_main)]
#![forbid(unsafe_code)]

capvisor_rt::service_async!(run);

#[cfg_attr(
    not(any(target_os = "none", test)),
    allow(dead_code, reason = "the host program does not run a guest")
)]
mod calls;
#[cfg_attr(
    not(any(target_os = "none", test)),
    allow(dead_code, reason = "the host program does not run a guest")
)]
mod fdt;
#[cfg_attr(
    not(any(target_os = "none", test)),
    allow(dead_code, reason = "the host program does not run a guest")
)]
mod vcpus;
#[cfg_attr(
    not(any(target_os = "none", test)),
    allow(dead_code, reason = "the host program does not run a guest")
)]
mod vgic;
#[cfg_attr(
    not(any(target_os = "none", test)),
    allow(dead_code, reason = "the host program does not run a guest")
)]
mod vmm;

#[cfg(test)]
mod tests;

#[cfg(target_os = "none")]
async fn run() -> u64 {
    use capvisor_ipc::bootinfo::{BootInfo, VCPU_BADGE};
    use capvisor_ipc::cap::{Badge, Cap};
    use capvisor_ipc::protocol::Generation;
    use capvisor_ipc::protocols::memmgr;
    use capvisor_ipc::protocols::{fault, guest_call};
    use capvisor_ipc::transport::ServerTransport;
    use capvisor_rt::ipc::{EndpointClient, EndpointServer, ReceiveWindow};
    use capvisor_rt::{CPtr, println};

    let Some(info) = capvisor_rt::boot_info() else {
        println!("vmm: no valid boot-info page");
        return 1;
    };
    let Some(guest) = info.guests().first().copied() else {
        println!("vmm: no guest");
        return 1;
    };
    let name = BootInfo::name(&guest);
    let cmdline = match capvisor_image::check_cmdline(capvisor_rt::boot_payload(guest.cmdline)) {
        Ok(cmdline) => cmdline,
        Err(error) => {
            println!("vmm: guest {name}: {error}");
            return 1;
        }
    };
    let client = memmgr::Client::new(
        EndpointClient::new(Cap::from_cptr(CPtr::new(guest.memmgr)), ReceiveWindow::NONE),
        Generation::ANY,
    );
    let config = vmm::GuestConfig {
        name,
        ram_base: guest.ram_base,
        ram_size: guest.ram_size,
        text_offset: guest.text_offset,
        image_size: guest.image_size,
        vcpus: guest.vcpus,
        cmdline,
        workarounds: calls::Workarounds::from_kernel(info.smccc_workarounds),
    };
    println!(
        "vmm: starting guest {name}: {} vCPU(s), RAM {:#x}..{:#x}",
        config.vcpus,
        config.ram_base,
        config.ram_base + config.ram_size
    );
    // In a block, so that the machine (borrowed here before it moves into the VMM) does not
    // outlive it in this future's state: the future is moved on the 64 KiB stack, where every
    // byte of it counts several times.
    let mut vmm = {
        let mut machine = el0::Machine {
            memmgr: client,
            vm: capvisor_ipc::types::VmId::new(guest.index),
            // The VMM makes no capabilities: a kernel without free slots, of no size.
            kernel: capvisor_rt::kernel::Syscalls::invoke_only(),
            vcpus: vcpus::Vcpus::from_slots(&guest.vcpu, &guest.thread),
        };
        // The interrupts of the devices passed through to the guest go straight to its vCPU 0,
        // as the same INTIDs (a guest that routes them elsewhere is not followed yet).
        for (handler, intid) in guest.irqs() {
            let handler = Cap::from_cptr(CPtr::new(handler));
            match machine
                .vcpus
                .with(&mut machine.kernel)
                .forward_irq(handler, 0, intid)
            {
                Ok(_) => println!("vmm: guest {name}: interrupt {intid} forwarded to vCPU 0"),
                Err(error) => {
                    println!("vmm: guest {name}: interrupt {intid} not forwarded: {error:?}");
                }
            }
        }
        vmm::Vmm::new(machine, config)
    };
    if let Err(error) = vmm.boot().await {
        println!("vmm: guest {name} did not boot: {error:?}");
        return 1;
    }

    // The fault loop (fault::serve, except that the calls that change nothing are answered at
    // once, and a reply which cannot be delivered — to a vCPU that stopped itself with CPU_OFF —
    // does not end it). The vCPU is the one the badge names.
    let mut server = EndpointServer::new(
        Cap::from_cptr(CPtr::new(info.endpoint)),
        ReceiveWindow::NONE,
    );
    let mut buffer = capvisor_ipc::abi::IpcBuffer::default();
    // A call answered at once has one result word; its reply's message-info word depends only
    // on whether the PC advances (an `smc`), so both are made once, here.
    let one_word = |advance_pc| {
        let result = guest_call::CallResult {
            values: [0; 4],
            count: 1,
            advance_pc,
        };
        result.encode().0
    };
    let (hvc_reply, smc_reply) = (one_word(false), one_word(true));
    let mut message = server.recv(&mut buffer).await;
    loop {
        let info = match message {
            Ok(info) => info,
            Err(error) => {
                println!("vmm: receive failed: {error:?}");
                message = server.recv(&mut buffer).await;
                continue;
            }
        };
        let badge = buffer.badge;
        let words = [buffer.msg[0], buffer.msg[1], buffer.msg[2], buffer.msg[3]];
        // A trapped hvc/smc comes as a guest call, and a resolution that writes x0, x1, … goes
        // back the same way; anything else as a fault reply (all in the message registers).
        let call = guest_call::GuestCall::decode(info, words).filter(|_| badge >= VCPU_BADGE);
        if let Some(call) = call {
            // The calls that change nothing are answered here, synchronously and without a
            // `Resolution` (and whoever calls); the others by the VMM's logic.
            let reply = match vmm.quick_call(call.smc, call.args) {
                Some((x0, advance_pc)) => {
                    // The reply `CallResult { values: [x0, ..], count: 1, advance_pc }` encodes
                    // to: the kernel reads x0 only.
                    buffer.msg[0] = x0;
                    if advance_pc { smc_reply } else { hvc_reply }
                }
                None => {
                    // Any badge from VCPU_BADGE up: `handle` refuses one that names no vCPU of
                    // the guest.
                    let vcpu = u32::try_from(badge - VCPU_BADGE).unwrap_or(u32::MAX);
                    let result = vmm.handle(vcpu, call.fault()).await;
                    match result
                        .as_ref()
                        .ok()
                        .and_then(guest_call::CallResult::from_resolution)
                    {
                        Some(fixed) => fixed_reply(fixed.encode(), &mut buffer),
                        None => fixed_reply(fault::encode_guest_reply(&result), &mut buffer),
                    }
                }
            };
            message = match server.reply_recv(reply, &mut buffer).await {
                Ok(info) => Ok(info),
                Err(_) => server.recv(&mut buffer).await,
            };
            continue;
        }
        let reply = match fault::FaultMessage::decode(info, words) {
            Ok(fault::FaultMessage::Guest(fault)) if badge >= VCPU_BADGE => {
                let vcpu = u32::try_from(badge - VCPU_BADGE).unwrap_or(u32::MAX);
                let result = vmm.handle(vcpu, fault).await;
                fault::encode_guest_reply(&result)
            }
            _ => fault::handle(&mut Refuse, Badge::new(badge), info, words).await,
        };
        let reply = fixed_reply(reply, &mut buffer);
        message = match server.reply_recv(reply, &mut buffer).await {
            Ok(info) => Ok(info),
            Err(_) => server.recv(&mut buffer).await,
        };
    }
}

/// Puts a fixed-layout reply's words in `buffer`'s register words; returns its info word.
#[cfg(target_os = "none")]
fn fixed_reply(
    (info, [a, b, c, d]): (
        capvisor_ipc::abi::MessageInfo,
        capvisor_ipc::protocols::fault::Words,
    ),
    buffer: &mut capvisor_ipc::abi::IpcBuffer,
) -> capvisor_ipc::abi::MessageInfo {
    [buffer.msg[0], buffer.msg[1], buffer.msg[2], buffer.msg[3]] = [a, b, c, d];
    info
}

/// Faults that are not a guest's (or carry no vCPU badge) are refused.
#[cfg(target_os = "none")]
struct Refuse;

#[cfg(target_os = "none")]
impl capvisor_ipc::protocols::fault::Handler for Refuse {
    async fn guest(
        &mut self,
        _badge: capvisor_ipc::cap::Badge,
        _fault: capvisor_ipc::protocols::fault::GuestFault,
    ) -> Result<
        capvisor_ipc::protocols::fault::Resolution,
        capvisor_ipc::protocols::fault::FaultError,
    > {
        Err(capvisor_ipc::protocols::fault::FaultError::Unhandled)
    }

    async fn service(
        &mut self,
        _badge: capvisor_ipc::cap::Badge,
        _pc: u64,
        _fault: capvisor_ipc::protocols::fault::ServiceFault,
    ) -> Result<
        capvisor_ipc::protocols::fault::ServiceResolution,
        capvisor_ipc::protocols::fault::FaultError,
    > {
        Err(capvisor_ipc::protocols::fault::FaultError::Unhandled)
    }
}

/// Without the kernel there is no guest: the host program does nothing (the logic is tested in
/// `tests.rs`).
#[cfg(not(target_os = "none"))]
async fn run() -> u64 {
    0
}

/// The syscalls and memory manager calls behind [`vmm::Machine`].
#[cfg(target_os = "none")]
mod el0 {
    use capvisor_ipc::protocol::Error;
    use capvisor_ipc::protocols::memmgr::{
        Client, FaultOutcome, GuestPayload, MemError, ResetPolicy,
    };
    use capvisor_ipc::types::{Access, Ipa, VcpuId, VmId};
    use capvisor_rt::ipc::EndpointClient;
    use capvisor_rt::kernel::{NoFreeSlots, Syscalls};

    use crate::vcpus::{Invoker, Vcpus};

    /// The memory manager, the guest's VM index, the kernel and the guest's vCPUs.
    pub struct Machine {
        pub memmgr: Client<EndpointClient>,
        pub vm: VmId,
        pub kernel: Syscalls<NoFreeSlots>,
        pub vcpus: Vcpus,
    }

    impl crate::vmm::Machine for Machine {
        type Kernel = Syscalls<NoFreeSlots>;

        fn vcpus(&mut self) -> Invoker<'_, Syscalls<NoFreeSlots>> {
            self.vcpus.with(&mut self.kernel)
        }

        async fn load(&mut self, payload: GuestPayload, ipa: u64) -> Result<u64, Error<MemError>> {
            self.memmgr.load(self.vm, payload, Ipa::new(ipa)).await
        }

        async fn write_word(&mut self, ipa: u64, value: u64) -> Result<(), Error<MemError>> {
            self.memmgr.write_word(self.vm, Ipa::new(ipa), value).await
        }

        async fn stage2_fault(
            &mut self,
            vcpu: u32,
            ipa: u64,
            access: Access,
        ) -> Result<FaultOutcome, Error<MemError>> {
            self.memmgr
                .handle_stage2_fault(self.vm, VcpuId::new(vcpu), Ipa::new(ipa), access)
                .await
        }

        async fn reset_vcpu(&mut self, vcpu: u32) -> Result<ResetPolicy, Error<MemError>> {
            self.memmgr.reset_vcpu(self.vm, VcpuId::new(vcpu)).await
        }

        fn print(&mut self, line: &str) {
            let mut text = capvisor_rt::Line::new();
            text.push(line);
            text.push("\n");
            capvisor_rt::debug_write(text.as_str());
        }

        fn print_partial(&mut self, text: &str) {
            capvisor_rt::debug_write(text);
        }
    }
}

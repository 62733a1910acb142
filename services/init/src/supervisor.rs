//! The supervisor's fault handler: a service's fault is reported by name and the service stopped;
//! guest faults never come here (a vCPU's faults go to its VMM) and are refused.

use capvisor_ipc::bootinfo::{BootInfo, MAX_SERVICES};
use capvisor_ipc::cap::Badge;
use capvisor_ipc::protocols::fault::{
    FaultError, GuestFault, Handler, Resolution, ServiceFault, ServiceResolution,
};

use crate::report::Report;

/// The services it supervises, by badge, and where its reports go.
pub struct Supervisor<F> {
    names: heapless::Vec<(u64, heapless::String<32>), MAX_SERVICES>,
    /// Faults reported so far.
    pub faults: u64,
    print: F,
}

impl<F: FnMut(core::fmt::Arguments<'_>)> Supervisor<F> {
    /// A supervisor of the services `info` lists, printing with `print`.
    pub fn new(info: &BootInfo, print: F) -> Self {
        let services = info
            .services()
            .iter()
            .map(|service| (service.badge, BootInfo::service_name(service)));
        Self::named(services, print)
    }

    /// A supervisor of `services` (badge, name), printing with `print`.
    pub fn named<'a>(services: impl Iterator<Item = (u64, &'a str)>, print: F) -> Self {
        let mut names = heapless::Vec::new();
        for (badge, text) in services {
            let mut name = heapless::String::new();
            let _ = name.push_str(text);
            let _ = names.push((badge, name));
        }
        Self {
            names,
            faults: 0,
            print,
        }
    }

    fn name(&self, badge: u64) -> &str {
        self.names
            .iter()
            .find(|(b, _)| *b == badge)
            .map_or("(unknown service)", |(_, name)| name.as_str())
    }
}

impl<F: FnMut(core::fmt::Arguments<'_>)> Handler for Supervisor<F> {
    async fn guest(&mut self, _badge: Badge, _fault: GuestFault) -> Result<Resolution, FaultError> {
        Err(FaultError::Unhandled)
    }

    async fn service(
        &mut self,
        badge: Badge,
        pc: u64,
        fault: ServiceFault,
    ) -> Result<ServiceResolution, FaultError> {
        self.faults += 1;
        let name: heapless::String<32> = self.name(badge.raw()).try_into().unwrap_or_default();
        let report = Report {
            name: &name,
            pc,
            fault: &fault,
        };
        (self.print)(format_args!("init: {report}; stopped it, the others go on"));
        Ok(ServiceResolution::Stop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use capvisor_ipc::bootinfo::ServiceInfo;
    use capvisor_ipc::protocols::fault::{
        self, FaultMessage, decode_guest_reply, decode_service_reply,
    };
    use capvisor_ipc::types::{Access, Esr, Ipa};
    use zerocopy::FromZeros;

    fn info() -> BootInfo {
        let mut info = BootInfo::new_zeroed();
        let mut service = ServiceInfo::default();
        service.name[..7].copy_from_slice(b"faulter");
        service.badge = 3;
        service.thread = 40;
        info.services[0] = service;
        info.service_count = 1;
        info
    }

    /// The supervisor's reply to `message` from the sender `badge` names, as the kernel gets it.
    fn handle<F: FnMut(core::fmt::Arguments<'_>)>(
        supervisor: &mut Supervisor<F>,
        badge: u64,
        message: FaultMessage,
    ) -> (capvisor_ipc::abi::MessageInfo, fault::Words) {
        let (info, words) = message.encode();
        futures_lite::future::block_on(fault::handle(supervisor, Badge::new(badge), info, words))
    }

    #[test]
    fn a_service_fault_is_reported_by_name_and_the_service_stopped() {
        let mut lines = Vec::new();
        let info = info();
        let mut supervisor = Supervisor::new(&info, |line| lines.push(line.to_string()));
        let message = FaultMessage::Service {
            pc: 0x20_0010,
            fault: ServiceFault::Memory {
                address: Ipa::new(0x1_0000_0000),
                access: Access::Write,
                esr: Esr::new(0x9200_0047),
            },
        };
        let (reply, words) = handle(&mut supervisor, 3, message);
        assert_eq!(
            decode_service_reply(reply, words),
            Ok(Ok(ServiceResolution::Stop))
        );
        // A guest fault is not the supervisor's.
        let guest = FaultMessage::Guest(GuestFault::Wait { event: false });
        let (reply, words) = handle(&mut supervisor, 3, guest);
        assert_eq!(
            decode_guest_reply(reply, words),
            Ok(Err(FaultError::Unhandled))
        );
        assert_eq!(supervisor.faults, 1);
        drop(supervisor);
        assert_eq!(
            lines,
            [
                "init: service 'faulter' faulted at pc=0x200010: write to 0x100000000: translation \
              fault, level 3 (ESR 0x92000047); stopped it, the others go on"
            ]
        );
    }

    #[test]
    fn an_unknown_badge_is_still_reported() {
        let mut lines = Vec::new();
        let info = info();
        let mut supervisor = Supervisor::new(&info, |line| lines.push(line.to_string()));
        let message = FaultMessage::Service {
            pc: 0,
            fault: ServiceFault::UnknownSyscall { number: 77 },
        };
        handle(&mut supervisor, 9, message);
        drop(supervisor);
        assert!(lines[0].starts_with("init: service '(unknown service)'"));
    }
}

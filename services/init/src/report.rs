//! How the supervisor describes a service's fault: the kernel's service fault message,
//! decoded from its ESR with the same decoder the kernel's own reports use
//! (`capvisor_ipc::esr`: EC names, DFSC/IFSC kinds and levels) into one line a person can act
//! on.

use capvisor_ipc::esr;
use capvisor_ipc::protocols::fault::ServiceFault;
use capvisor_ipc::types::Access;
use core::fmt;

/// One fault, for `Display`.
pub struct Report<'a> {
    /// The service's manifest name.
    pub name: &'a str,
    /// Where it faulted.
    pub pc: u64,
    /// What happened.
    pub fault: &'a ServiceFault,
}

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "service '{}' faulted at pc={:#x}: ", self.name, self.pc)?;
        match self.fault {
            ServiceFault::Memory {
                address,
                access,
                esr,
            } => {
                let raw = esr.raw();
                let status = esr::fault_status((raw & 0x3f) as u8);
                let what = match access {
                    Access::Read => "read of",
                    Access::Write => "write to",
                    Access::Execute => "instruction fetch from",
                };
                write!(f, "{what} {:#x}: {}", address.raw(), status.kind)?;
                if let Some(level) = status.level {
                    write!(f, ", level {level}")?;
                }
                write!(f, " (ESR {raw:#x})")
            }
            ServiceFault::UnknownSyscall { number } => write!(f, "unknown syscall number {number}"),
            ServiceFault::Exception { esr: raw } => {
                let raw = raw.raw();
                write!(f, "{} (ESR {raw:#x})", esr::class_name(esr::class(raw)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use capvisor_ipc::types::{Esr, Ipa};

    fn line(fault: ServiceFault) -> String {
        Report {
            name: "faulter",
            pc: 0x20_1234,
            fault: &fault,
        }
        .to_string()
    }

    #[test]
    fn a_data_abort_names_the_access_address_and_status() {
        // EC 0x24, IL, DFSC 0b000111: translation fault, level 3, on a read.
        let fault = ServiceFault::Memory {
            address: Ipa::new(0x1_0000_0000),
            access: Access::Read,
            esr: Esr::new(0x9200_0007),
        };
        assert_eq!(
            line(fault),
            "service 'faulter' faulted at pc=0x201234: read of 0x100000000: translation fault, \
             level 3 (ESR 0x92000007)"
        );
    }

    #[test]
    fn other_exceptions_name_their_class() {
        let fault = ServiceFault::Exception {
            esr: Esr::new(0x0200_0000),
        };
        assert_eq!(
            line(fault),
            "service 'faulter' faulted at pc=0x201234: unknown reason (ESR 0x2000000)"
        );
        let fault = ServiceFault::UnknownSyscall { number: 99 };
        assert!(line(fault).ends_with("unknown syscall number 99"));
        let fault = ServiceFault::Memory {
            address: Ipa::new(0x10),
            access: Access::Write,
            esr: Esr::new(0x9200_0050),
        };
        assert!(line(fault).contains("write to 0x10: synchronous external abort (ESR"));
    }
}

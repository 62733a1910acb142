//! How the supervisor describes a service's fault: the kernel's `Fault::service` message,
//! decoded from its ESR (Arm ARM D24.2.40, ESR_EL2: EC, IL, ISS; data/instruction abort ISS:
//! WnR, DFSC/IFSC) into one line a person can act on.

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

/// The fault status code's meaning (DFSC/IFSC, ISS bits 5:0).
fn status(code: u64) -> &'static str {
    match code {
        0b00_0000..=0b00_0011 => "address size fault",
        0b00_0100..=0b00_0111 => "translation fault",
        0b00_1000..=0b00_1011 => "access flag fault",
        0b00_1100..=0b00_1111 => "permission fault",
        0b01_0000 => "synchronous external abort",
        0b10_0001 => "alignment fault",
        0b11_0000 => "TLB conflict abort",
        _ => "fault",
    }
}

/// The exception class's meaning (ESR.EC, bits 31:26).
fn class(ec: u64) -> &'static str {
    match ec {
        0x00 => "unknown reason (undefined instruction)",
        0x01 => "trapped WFI/WFE",
        0x0e => "illegal execution state",
        0x15 => "SVC",
        0x18 => "trapped system register access",
        0x20 => "instruction abort",
        0x22 => "PC alignment fault",
        0x24 => "data abort",
        0x26 => "SP alignment fault",
        0x3c => "BRK instruction",
        _ => "exception",
    }
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
                let esr = esr.raw();
                let code = esr & 0x3f;
                let what = match access {
                    Access::Read => "read of",
                    Access::Write => "write to",
                    Access::Execute => "instruction fetch from",
                };
                write!(f, "{what} {:#x}: {}", address.raw(), status(code))?;
                if code < 0b01_0000 {
                    write!(f, ", level {}", code & 3)?;
                }
                write!(f, " (ESR {esr:#x})")
            }
            ServiceFault::UnknownSyscall { number } => write!(f, "unknown syscall number {number}"),
            ServiceFault::Exception { esr } => {
                let esr = esr.raw();
                write!(f, "{} (ESR {esr:#x})", class((esr >> 26) & 0x3f))
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
            "service 'faulter' faulted at pc=0x201234: unknown reason (undefined instruction) \
             (ESR 0x2000000)"
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

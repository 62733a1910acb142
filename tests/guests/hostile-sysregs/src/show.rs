//! How an exception a check took is shown in its line: pure, tested on the host.

#![cfg_attr(not(target_os = "none"), allow(dead_code))]

use core::fmt;
use hostile_guest_common::encode::ESR_UNDEF;

/// An exception taken at EL1 by an instruction at `pc`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Taken {
    /// The vector entry (0–15): offset from VBAR_EL1 / 0x80.
    pub vector: u64,
    /// ESR_EL1.
    pub esr: u64,
    /// ELR_EL1.
    pub elr: u64,
    /// The instruction's address.
    pub pc: u64,
}

impl fmt::Display for Taken {
    /// `UNDEF at +0x200` for an Undefined Instruction exception returning to the instruction
    /// (ESR_EL1 = EC 0x00, IL = 1, ISS 0), else `ESR_EL1 <esr> at +<offset>, ELR <where>`, where
    /// `<where>` is `at the instruction` or `pc+<n>`/`pc-<n>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let offset = self.vector * 0x80;
        if self.esr == ESR_UNDEF && self.elr == self.pc {
            return write!(f, "UNDEF at +{offset:#x}");
        }
        write!(f, "ESR_EL1 {:#x} at +{offset:#x}, ELR ", self.esr)?;
        match self.elr.wrapping_sub(self.pc) as i64 {
            0 => f.write_str("at the instruction"),
            n if n > 0 => write!(f, "pc+{n}"),
            n => write!(f, "pc-{}", n.unsigned_abs()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        let undef = Taken {
            vector: 4,
            esr: 0x0200_0000,
            elr: 0x4020_1000,
            pc: 0x4020_1000,
        };
        assert_eq!(undef.to_string(), "UNDEF at +0x200");
        let svc = Taken {
            vector: 4,
            esr: 0x5600_4321,
            elr: 0x4020_1004,
            pc: 0x4020_1000,
        };
        assert_eq!(svc.to_string(), "ESR_EL1 0x56004321 at +0x200, ELR pc+4");
        let trap = Taken {
            vector: 8,
            esr: 0x6234_f801,
            elr: 0x4020_1000,
            pc: 0x4020_1000,
        };
        assert_eq!(
            trap.to_string(),
            "ESR_EL1 0x6234f801 at +0x400, ELR at the instruction"
        );
        let undef_wrong_il = Taken { esr: 0, ..undef };
        assert_eq!(
            undef_wrong_il.to_string(),
            "ESR_EL1 0x0 at +0x200, ELR at the instruction"
        );
    }
}

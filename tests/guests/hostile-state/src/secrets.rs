//! The values the attackers write and the victim must never see (each carries
//! `hostile_guest_common::encode::SECRET_TAG` in its top half where the register is 64 bits).

#![cfg_attr(not(target_os = "none"), allow(dead_code))]

use hostile_guest_common::encode::secret;

/// TPIDR_EL0, TPIDRRO_EL0, TPIDR_EL1.
pub const TPIDR_EL0: u64 = secret(0xe0);
/// TPIDRRO_EL0.
pub const TPIDRRO_EL0: u64 = secret(0xe1);
/// TPIDR_EL1.
pub const TPIDR_EL1: u64 = secret(0xe2);
/// FPCR: AHP (26), DN (25), FZ (24), RMode = round towards zero (23:22).
pub const FPCR: u64 = 0x07c0_0000;
/// FPSR: QC (27), IDC (7), IXC, UFC, OFC, DZC, IOC (4:0).
pub const FPSR: u64 = 0x0800_009f;
/// The address whose stage-1 translation (MMU off: the address itself) the attacker leaves in
/// PAR_EL1: PAR_EL1.PA [47:12] = 0x5ec27.
pub const PAR_ADDRESS: u64 = 0x5ec2_7000;
/// The virtual timer compare value of the WFI attacker: centuries away, so it never fires.
pub const CNTV_CVAL: u64 = secret(0xc0);
/// LORSA_EL1: start address 0x5ec2 << 16, Valid.
pub const LORSA: u64 = (0x5ec2 << 16) | 1;
/// DISR_EL1 (VDISR_EL2 for a guest under HCR_EL2.AMO): A (31) and a syndrome.
pub const DISR: u64 = (1 << 31) | 0x11;
/// CNTKCTL_EL1 giving EL0 both counters and both timers (EL0PCTEN, EL0VCTEN, EL0VTEN, EL0PTEN).
pub const CNTKCTL_OPEN: u64 = 0x303;

/// The two halves of Q`n`.
#[must_use]
pub const fn q(n: u32) -> [u64; 2] {
    [secret(0x100 + n), secret(0x200 + n)]
}

/// PAR_EL1.PA, bits [47:12] (without the attributes).
#[must_use]
pub const fn par_address(par: u64) -> u64 {
    par & 0x0000_ffff_ffff_f000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_distinct_and_tagged() {
        let all = [
            TPIDR_EL0,
            TPIDRRO_EL0,
            TPIDR_EL1,
            CNTV_CVAL,
            q(0)[0],
            q(31)[1],
        ];
        for (i, a) in all.iter().enumerate() {
            assert_eq!(a >> 32, hostile_guest_common::encode::SECRET_TAG);
            assert!(all[i + 1..].iter().all(|b| b != a));
        }
        assert_eq!(par_address(0xff00_0000_5ec2_7f81), PAR_ADDRESS);
    }
}

//! Stage-2 faults and the ESR fault status code hardware reports for them.
//!
//! Encodings: Arm DDI 0487 (L.a), D24.2 "ESR_EL2", ISS encoding for a Data/Instruction Abort,
//! DFSC/IFSC fields.

/// Why a stage-2 walk failed (the FaultRecord.statuscode values a stage-2 walk can produce).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// Fault_Translation: an invalid descriptor, or an invalid configuration or input address.
    Translation,
    /// Fault_AddressSize: a table base or output address above the output address size.
    AddressSize,
    /// Fault_AccessFlag: a leaf with AF = 0 while hardware AF management is off.
    AccessFlag,
    /// Fault_Permission: the leaf's S2AP/XN forbid the access.
    Permission,
    /// Fault_SyncExternalOnWalk: a descriptor read failed (outside the memory the walk may read).
    ExternalAbortOnWalk,
}

impl FaultKind {
    /// The name used by `capvisor s2walk`'s JSON output.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Translation => "translation",
            Self::AddressSize => "address_size",
            Self::AccessFlag => "access_flag",
            Self::Permission => "permission",
            Self::ExternalAbortOnWalk => "external_abort",
        }
    }
}

/// A stage-2 fault: its kind and the lookup level it is reported at (-1 to 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Fault {
    /// What went wrong.
    pub kind: FaultKind,
    /// The level reported in the fault status code.
    pub level: i8,
}

impl Fault {
    /// A fault of `kind` at `level`.
    #[must_use]
    pub const fn new(kind: FaultKind, level: i8) -> Self {
        Self { kind, level }
    }

    /// The 6-bit fault status code (ESR_ELx.ISS.DFSC/IFSC) hardware reports for this fault.
    ///
    /// Levels 0..=3 are encoded in bits \[1:0\] of the kind's base code. Level -1 (FEAT_LPA2) has
    /// its own codes: 0b101001 address size, 0b101011 translation, 0b010011 external abort on
    /// walk. Access flag and permission faults only happen at a leaf, which is never at level -1;
    /// should one be asked for anyway the level-0 code is returned rather than an invalid one.
    #[must_use]
    pub const fn fsc(&self) -> u8 {
        let low = if self.level < 0 {
            0
        } else {
            (self.level as u8) & 0b11
        };
        match (self.kind, self.level < 0) {
            (FaultKind::AddressSize, true) => 0b10_1001,
            (FaultKind::Translation, true) => 0b10_1011,
            (FaultKind::ExternalAbortOnWalk, true) => 0b01_0011,
            (FaultKind::AddressSize, false) => low,
            (FaultKind::Translation, false) => 0b00_0100 | low,
            (FaultKind::AccessFlag, _) => 0b00_1000 | low,
            (FaultKind::Permission, _) => 0b00_1100 | low,
            (FaultKind::ExternalAbortOnWalk, false) => 0b01_0100 | low,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_status_codes_match_esr_encoding() {
        use FaultKind::*;
        let cases = [
            (AddressSize, 0, 0x00),
            (AddressSize, 3, 0x03),
            (AddressSize, -1, 0x29),
            (Translation, 0, 0x04),
            (Translation, 1, 0x05),
            (Translation, 3, 0x07),
            (Translation, -1, 0x2b),
            (AccessFlag, 1, 0x09),
            (AccessFlag, 3, 0x0b),
            (Permission, 2, 0x0e),
            (Permission, 3, 0x0f),
            (ExternalAbortOnWalk, -1, 0x13),
            (ExternalAbortOnWalk, 0, 0x14),
            (ExternalAbortOnWalk, 3, 0x17),
        ];
        for (kind, level, fsc) in cases {
            assert_eq!(
                Fault::new(kind, level).fsc(),
                fsc,
                "{kind:?} at level {level}"
            );
        }
    }
}

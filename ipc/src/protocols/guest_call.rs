//! Fixed-layout guest calls (fault message kind "guest call", version 1): a vCPU's trapped `hvc` or
//! `smc` and its resolution, as a label and four message words, without postcard.
//!
//! This is how the kernel sends `GuestFault::Hvc` and `GuestFault::Smc` (the other guest faults go
//! in the layout of [`fault`](crate::protocols::fault), whose decoder `FaultMessage::decode` takes
//! this kind too); the handler may answer with [`CallResult`] (this kind) or with a guest reply of
//! that layout (any other resolution). Both fit the message registers (x2–x5), so neither side
//! touches an IPC buffer, and both are total decoders of hostile words: a label or length that is
//! not exactly what [`GuestCall::encode`] or [`CallResult::encode`] makes is refused (`None`).
//!
//! | message | label (48 bits) | words |
//! |---|---|---|
//! | request | `0xCA11_0000_0000` \| version 1 << 24 \| smc << 16 \| imm | x0–x3 of the vCPU (32 bytes) |
//! | reply | `0xCA11_8000_0000` \| version 1 << 24 \| advance_pc << 8 \| count | the values of x0..x(count−1), count ≤ 4 (8 × count bytes) |
//!
//! x4–x7 are not sent (PSCI and the SMCCC calls a VMM answers take at most x0–x3); a handler that
//! needs them reads them with `VcpuReadRegisters`. SMCCC v1.1 results are x0–x3, which is why a
//! reply writes at most those. The kernel checks a reply as it checks any `Resolution::Emulate`.

use crate::abi::{MSG_REGS_IN_CPU, MessageInfo};
use crate::protocols::fault::{
    GpRegister, GuestFault, MAX_REGISTER_WRITES, RegisterWrite, Resolution,
};

/// The version of this message kind.
pub const VERSION: u64 = 1;
/// The request's label without its fields.
pub const REQUEST_LABEL: u64 = 0xCA11_0000_0000 | VERSION << 24;
/// The reply's label without its fields.
pub const REPLY_LABEL: u64 = 0xCA11_8000_0000 | VERSION << 24;

const BYTES: usize = MSG_REGS_IN_CPU * 8;
const SMC: u64 = 1 << 16;
const ADVANCE_PC: u64 = 1 << 8;

const _: () = assert!(MAX_REGISTER_WRITES == MSG_REGS_IN_CPU);
const _: () = assert!(REQUEST_LABEL < 1 << 48 && REPLY_LABEL < 1 << 48);

/// A trapped `hvc #imm` or `smc #imm` with the caller's x0–x3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestCall {
    /// `smc` (trapped by HCR_EL2.TSC, ELR at it) rather than `hvc` (ELR past it).
    pub smc: bool,
    /// The instruction's immediate.
    pub imm: u16,
    /// x0–x3.
    pub args: [u64; MSG_REGS_IN_CPU],
}

impl GuestCall {
    /// The call a fault is, if it is an `hvc` or `smc`.
    #[must_use]
    pub const fn from_fault(fault: &GuestFault) -> Option<Self> {
        let (smc, imm, args) = match *fault {
            GuestFault::Hvc { imm, args } => (false, imm, args),
            GuestFault::Smc { imm, args } => (true, imm, args),
            _ => return None,
        };
        Some(Self { smc, imm, args })
    }

    /// The fault it reports.
    #[must_use]
    pub const fn fault(&self) -> GuestFault {
        let args = self.args;
        if self.smc {
            GuestFault::Smc {
                imm: self.imm,
                args,
            }
        } else {
            GuestFault::Hvc {
                imm: self.imm,
                args,
            }
        }
    }

    /// The message-info word and the words of the request.
    #[must_use]
    pub fn encode(&self) -> (MessageInfo, [u64; MSG_REGS_IN_CPU]) {
        let label = REQUEST_LABEL | if self.smc { SMC } else { 0 } | u64::from(self.imm);
        (info(label, BYTES), self.args)
    }

    /// A request as received; `None` unless it is exactly what [`GuestCall::encode`] makes.
    #[must_use]
    pub fn decode(info: MessageInfo, words: [u64; MSG_REGS_IN_CPU]) -> Option<Self> {
        let label = info.label();
        let fields = label & !REQUEST_LABEL;
        let exact = label & REQUEST_LABEL == REQUEST_LABEL && fields & !(SMC | 0xffff) == 0;
        (exact && info.length() == BYTES && info.extra_caps() == 0).then_some(Self {
            smc: fields & SMC != 0,
            imm: fields as u16,
            args: words,
        })
    }
}

/// The reply to a [`GuestCall`]: write x0..x(count−1), then skip the instruction or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallResult {
    /// The values of x0, x1, … (the first `count`).
    pub values: [u64; MSG_REGS_IN_CPU],
    /// How many of `values` are written, at most 4.
    pub count: u8,
    /// Skip the instruction (ESR_EL2.IL): an `smc`'s reply does, an `hvc`'s ELR is already past it.
    pub advance_pc: bool,
}

impl CallResult {
    /// The resolution as this kind, if it is one: an emulation that writes x0, x1, … in order.
    #[must_use]
    pub fn from_resolution(resolution: &Resolution) -> Option<Self> {
        let Resolution::Emulate { writes, advance_pc } = resolution else {
            return None;
        };
        let mut values = [0; MSG_REGS_IN_CPU];
        for (i, write) in writes.iter().enumerate() {
            if usize::from(write.register.index()) != i || i >= MSG_REGS_IN_CPU {
                return None;
            }
            values[i] = write.value;
        }
        Some(Self {
            values,
            count: writes.len() as u8,
            advance_pc: *advance_pc,
        })
    }

    /// The `Resolution::Emulate` it stands for.
    #[must_use]
    pub fn resolution(&self) -> Resolution {
        let mut writes = heapless::Vec::new();
        for (i, &value) in self.values.iter().enumerate().take(usize::from(self.count)) {
            if let Ok(register) = GpRegister::new(i as u8) {
                let _ = writes.push(RegisterWrite { register, value });
            }
        }
        Resolution::Emulate {
            writes,
            advance_pc: self.advance_pc,
        }
    }

    /// The message-info word and the words of the reply.
    #[must_use]
    pub fn encode(&self) -> (MessageInfo, [u64; MSG_REGS_IN_CPU]) {
        let count = self.count.min(MSG_REGS_IN_CPU as u8);
        let label = REPLY_LABEL | if self.advance_pc { ADVANCE_PC } else { 0 } | u64::from(count);
        (info(label, usize::from(count) * 8), self.values)
    }

    /// A reply as received; `None` unless it is exactly what [`CallResult::encode`] makes (the
    /// words past `count` are ignored, as a receiver's registers beyond the length are).
    #[must_use]
    pub fn decode(info: MessageInfo, words: [u64; MSG_REGS_IN_CPU]) -> Option<Self> {
        let label = info.label();
        let fields = label & !REPLY_LABEL;
        let count = fields & 0xff;
        let exact = label & REPLY_LABEL == REPLY_LABEL
            && fields & !(ADVANCE_PC | 0xff) == 0
            && count <= MSG_REGS_IN_CPU as u64;
        if !exact || info.length() != count as usize * 8 || info.extra_caps() != 0 {
            return None;
        }
        // Word by word: a slice copy is a `memcpy` call on the kernel's target.
        let mut values = [0; MSG_REGS_IN_CPU];
        for (i, (value, word)) in values.iter_mut().zip(words).enumerate() {
            if (i as u64) < count {
                *value = word;
            }
        }
        Some(Self {
            values,
            count: count as u8,
            advance_pc: fields & ADVANCE_PC != 0,
        })
    }
}

fn info(label: u64, length: usize) -> MessageInfo {
    // Both labels are below 2^48 and the length at most 32 bytes (const-asserted above).
    MessageInfo::new(label, length, 0).unwrap_or(EMPTY)
}

const EMPTY: MessageInfo = match MessageInfo::new(0, 0, 0) {
    Ok(info) => info,
    Err(_) => panic!("an empty message-info word is valid"),
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_and_its_result_round_trip() {
        let call = GuestCall {
            smc: true,
            imm: 0x1234,
            args: [0x8400_0000, 1, 2, 3],
        };
        let (info, words) = call.encode();
        assert_eq!(GuestCall::decode(info, words), Some(call));
        assert_eq!(CallResult::decode(info, words), None);
        let result = CallResult {
            values: [7, 8, 0, 0],
            count: 2,
            advance_pc: true,
        };
        let (info, words) = result.encode();
        assert_eq!(CallResult::decode(info, words), Some(result));
        assert_eq!(GuestCall::decode(info, words), None);
        assert_eq!(
            CallResult::from_resolution(&result.resolution()),
            Some(result)
        );
    }

    #[test]
    fn anything_else_is_refused() {
        let (info, words) = CallResult::default_reply().encode();
        let wrong = MessageInfo::new(info.label() | 1 << 20, 0, 0).unwrap();
        assert_eq!(CallResult::decode(wrong, words), None);
        let long = MessageInfo::new(info.label(), 8, 0).unwrap();
        assert_eq!(CallResult::decode(long, words), None);
        let five = MessageInfo::new(REPLY_LABEL | 5, 40, 0).unwrap();
        assert_eq!(CallResult::decode(five, words), None);
        let short = MessageInfo::new(REQUEST_LABEL, 24, 0).unwrap();
        assert_eq!(GuestCall::decode(short, words), None);
        let x1_first = Resolution::Emulate {
            writes: heapless::Vec::from_slice(&[RegisterWrite {
                register: GpRegister::new(1).unwrap(),
                value: 0,
            }])
            .unwrap(),
            advance_pc: false,
        };
        assert_eq!(CallResult::from_resolution(&x1_first), None);
        assert_eq!(CallResult::from_resolution(&Resolution::Resume), None);
    }

    impl CallResult {
        fn default_reply() -> Self {
            Self {
                values: [0; MSG_REGS_IN_CPU],
                count: 0,
                advance_pc: false,
            }
        }
    }
}

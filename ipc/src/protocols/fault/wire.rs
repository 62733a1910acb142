//! The fault messages' fixed layout (version 2): one encoder and one exact decoder per direction.
//!
//! A label (48 bits) is `kind << 32 | reply << 31 | VERSION << 24 | fields`, as a guest call's is;
//! the length counts the words in bytes. Messages (kernel → handler, `reply` = 0):
//!
//! | kind | message | fields (23:0) | words |
//! |---|---|---|---|
//! | `0xFA01` | `GuestFault::DataAbort` | 0 | IPA, FAR, ESR; and for a write with ISV = 1, the value of x\[SRT\] (0 for XZR) |
//! | `0xFA02` | `GuestFault::InstructionAbort` | 0 | IPA, FAR, ESR |
//! | `0xFA03` | `GuestFault::Wait` | bit 0: WFE | — |
//! | `0xFA04` | `GuestFault::SysReg` | the ISS's bits 21:0 (Op0, Op2, Op1, CRn, Rt, CRm, Direction) | — |
//! | `0xFA05` | `GuestFault::ListRegistersDrained` | 0 | — |
//! | `0xFA06` | `GuestFault::Other` | 0 | ESR |
//! | `0xFA11` | `ServiceFault::Memory` | access: 0 read, 1 write, 2 execute | PC, address, ESR |
//! | `0xFA12` | `ServiceFault::UnknownSyscall` | 0 | PC, the number |
//! | `0xFA13` | `ServiceFault::Exception` | 0 | PC, ESR |
//!
//! Replies (handler → kernel, `reply` = 1):
//!
//! | kind | reply | fields (23:0) | words |
//! |---|---|---|---|
//! | `0xFA80` | `Err(FaultError)`, to either kind | the error's code | — |
//! | `0xFA81` | `Resolution::Resume` | 0 | — |
//! | `0xFA82` | `Resolution::Emulate` | bit 23: advance_pc; 22:20: count (≤ 4); register of write i at bits 5i+4:5i, unused ones 0 | the count values |
//! | `0xFA83` | `Resolution::InjectAbort` | 0 | ESR, FAR |
//! | `0xFA84` | `Resolution::WaitForInterrupt` | 0 | — |
//! | `0xFA91` | `ServiceResolution::Resume` | 0 | — |
//! | `0xFA92` | `ServiceResolution::Stop` | 0 | — |
//!
//! Every decoder is total and exact: a kind of the other direction or of none, another version,
//! a field the kind does not define, a length that is not the kind's, or a capability, is refused
//! ([`DecodeError`]), so what decodes is exactly what the matching encoder makes (one message, one
//! meaning). Words past the length are not part of the message (a receiver's registers beyond it
//! hold whatever they held) and are ignored.

use crate::abi::{MSG_REGS_IN_CPU, MessageInfo};
use crate::protocols::guest_call::{self, GuestCall};
use crate::types::{Access, Esr, Far, Ipa};

use super::{
    DataAccess, FaultError, FaultMessage, GpRegister, GuestFault, MAX_REGISTER_WRITES,
    RegisterWrite, Resolution, SYSREG_ISS, ServiceFault, ServiceResolution, SysRegAccess,
    carries_value,
};

/// The fault messages' layout version (version 1 was their postcard form).
pub const VERSION: u64 = 2;

/// The message-register words of a fault message or reply; those past its length are not part of it.
pub type Words = [u64; MSG_REGS_IN_CPU];

const KIND_SHIFT: u32 = 32;
const REPLY: u64 = 1 << 31;
const VERSION_SHIFT: u32 = 24;
const VERSION_MASK: u64 = 0x7f;
const FIELDS: u64 = (1 << VERSION_SHIFT) - 1;

crate::stable_codes! {
    @fixed
    /// What a fault message (kernel → handler) is: bits 47:32 of its label.
    pub enum MessageKind: u16 {
        /// [`GuestFault::DataAbort`].
        GuestDataAbort = 0xFA01,
        /// [`GuestFault::InstructionAbort`].
        GuestInstructionAbort = 0xFA02,
        /// [`GuestFault::Wait`].
        GuestWait = 0xFA03,
        /// [`GuestFault::SysReg`].
        GuestSysReg = 0xFA04,
        /// [`GuestFault::ListRegistersDrained`].
        GuestListRegistersDrained = 0xFA05,
        /// [`GuestFault::Other`].
        GuestOther = 0xFA06,
        /// [`ServiceFault::Memory`].
        ServiceMemory = 0xFA11,
        /// [`ServiceFault::UnknownSyscall`].
        ServiceUnknownSyscall = 0xFA12,
        /// [`ServiceFault::Exception`].
        ServiceException = 0xFA13,
    }
}

crate::stable_codes! {
    @fixed
    /// What a fault reply (handler → kernel) is: bits 47:32 of its label.
    pub enum ReplyKind: u16 {
        /// `Err(FaultError)`, the answer to either kind of fault.
        Error = 0xFA80,
        /// [`Resolution::Resume`].
        Resume = 0xFA81,
        /// [`Resolution::Emulate`].
        Emulate = 0xFA82,
        /// [`Resolution::InjectAbort`].
        InjectAbort = 0xFA83,
        /// [`Resolution::WaitForInterrupt`].
        WaitForInterrupt = 0xFA84,
        /// [`ServiceResolution::Resume`].
        ServiceResume = 0xFA91,
        /// [`ServiceResolution::Stop`].
        ServiceStop = 0xFA92,
    }
}

// No kind is another direction's or a guest call's, so a label names one message whatever bit
// 31 says, and every label fits the message-info word's 48 bits.
const _: () = {
    let mut i = 0;
    while i < MessageKind::ALL.len() {
        let message = MessageKind::ALL[i].code();
        assert!(message as u64 != guest_call::REQUEST_LABEL >> KIND_SHIFT);
        let mut j = 0;
        while j < ReplyKind::ALL.len() {
            let reply = ReplyKind::ALL[j].code();
            assert!(message != reply && reply as u64 != guest_call::REPLY_LABEL >> KIND_SHIFT);
            j += 1;
        }
        i += 1;
    }
    assert!(label(u16::MAX, true, FIELDS) <= MessageInfo::MAX_LABEL);
    assert!(MAX_REGISTER_WRITES <= MSG_REGS_IN_CPU);
};

/// Why a fault message or reply was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// Bits 47:32 name no kind of this direction, or bit 31 is the other direction's.
    UnknownKind,
    /// Bits 30:24 are not [`VERSION`].
    UnsupportedVersion,
    /// A field the kind does not define is set, or a field's value is out of its range.
    BadFields,
    /// The length is not the kind's (8 bytes per word).
    BadLength,
    /// Capabilities came with it; fault messages carry none.
    Capabilities,
}

impl GuestFault {
    /// The message the kernel sends for this fault: a trapped `hvc` or `smc` as a guest call,
    /// anything else in this layout. A data abort is encoded from its ESR, IPA, FAR and
    /// `write_value` (its `access` is what the ESR says, and it carries the value exactly when
    /// the ESR is a write with ISV = 1), as [`GuestFault::data_abort`] makes it.
    #[must_use]
    pub fn encode(&self) -> (MessageInfo, Words) {
        let (kind, fields, words, count) = match *self {
            Self::DataAbort {
                ipa,
                far,
                esr,
                write_value,
                ..
            } => {
                let value = write_value.unwrap_or(0);
                let count = if carries_value(esr.raw()) { 4 } else { 3 };
                let words = [ipa.raw(), far.raw(), esr.raw(), value];
                (MessageKind::GuestDataAbort, 0, words, count)
            }
            Self::InstructionAbort { ipa, far, esr } => {
                let words = [ipa.raw(), far.raw(), esr.raw(), 0];
                (MessageKind::GuestInstructionAbort, 0, words, 3)
            }
            Self::Hvc { imm, args } => {
                return GuestCall {
                    smc: false,
                    imm,
                    args,
                }
                .encode();
            }
            Self::Smc { imm, args } => {
                return GuestCall {
                    smc: true,
                    imm,
                    args,
                }
                .encode();
            }
            Self::Wait { event } => (MessageKind::GuestWait, u64::from(event), [0; 4], 0),
            Self::SysReg(access) => {
                let fields = u64::from(access.iss());
                (MessageKind::GuestSysReg, fields, [0; 4], 0)
            }
            Self::ListRegistersDrained => (MessageKind::GuestListRegistersDrained, 0, [0; 4], 0),
            Self::Other { esr } => (MessageKind::GuestOther, 0, [esr.raw(), 0, 0, 0], 1),
        };
        message(label(kind.code(), false, fields), words, count)
    }
}

impl ServiceFault {
    /// The message the kernel sends for this fault of a thread at `pc`.
    #[must_use]
    pub fn encode(&self, pc: u64) -> (MessageInfo, Words) {
        let (kind, fields, words, count) = match *self {
            Self::Memory {
                address,
                access,
                esr,
            } => {
                let words = [pc, address.raw(), esr.raw(), 0];
                (MessageKind::ServiceMemory, access_code(access), words, 3)
            }
            Self::UnknownSyscall { number } => {
                (MessageKind::ServiceUnknownSyscall, 0, [pc, number, 0, 0], 2)
            }
            Self::Exception { esr } => (MessageKind::ServiceException, 0, [pc, esr.raw(), 0, 0], 2),
        };
        message(label(kind.code(), false, fields), words, count)
    }
}

/// A service fault's access as its message's fields.
const fn access_code(access: Access) -> u64 {
    match access {
        Access::Read => 0,
        Access::Write => 1,
        Access::Execute => 2,
    }
}

impl FaultMessage {
    /// The message-info word and words the kernel sends.
    #[must_use]
    pub fn encode(&self) -> (MessageInfo, Words) {
        match self {
            Self::Guest(fault) => fault.encode(),
            Self::Service { pc, fault } => fault.encode(*pc),
        }
    }

    /// A message as received (a guest call included).
    ///
    /// # Errors
    /// [`DecodeError`] unless it is exactly what [`FaultMessage::encode`] makes.
    pub fn decode(info: MessageInfo, words: Words) -> Result<Self, DecodeError> {
        if let Some(call) = GuestCall::decode(info, words) {
            return Ok(Self::Guest(call.fault()));
        }
        let kind = MessageKind::from_code(kind_of(info, false)?).ok_or(DecodeError::UnknownKind)?;
        let fields = fields_of(info)?;
        let [a, b, c, d] = words;
        let guest = Self::Guest;
        let service = |fault| Self::Service { pc: a, fault };
        // The message, its word count, and the fields its kind defines.
        let (message, count, defined) = match kind {
            MessageKind::GuestDataAbort => {
                let fault = GuestFault::DataAbort {
                    ipa: Ipa::new(a),
                    far: Far::new(b),
                    access: DataAccess::from_iss(c as u32 & 0x1ff_ffff),
                    esr: Esr::new(c),
                    write_value: carries_value(c).then_some(d),
                };
                (guest(fault), if carries_value(c) { 4 } else { 3 }, 0)
            }
            MessageKind::GuestInstructionAbort => {
                let (ipa, far, esr) = (Ipa::new(a), Far::new(b), Esr::new(c));
                (guest(GuestFault::InstructionAbort { ipa, far, esr }), 3, 0)
            }
            MessageKind::GuestWait => (
                guest(GuestFault::Wait {
                    event: fields & 1 != 0,
                }),
                0,
                1,
            ),
            MessageKind::GuestSysReg => {
                let access = SysRegAccess::from_iss(fields as u32 & SYSREG_ISS);
                (guest(GuestFault::SysReg(access)), 0, u64::from(SYSREG_ISS))
            }
            MessageKind::GuestListRegistersDrained => {
                (guest(GuestFault::ListRegistersDrained), 0, 0)
            }
            MessageKind::GuestOther => (guest(GuestFault::Other { esr: Esr::new(a) }), 1, 0),
            MessageKind::ServiceMemory => {
                let access = match fields {
                    0 => Access::Read,
                    1 => Access::Write,
                    2 => Access::Execute,
                    _ => return Err(DecodeError::BadFields),
                };
                let (address, esr) = (Ipa::new(b), Esr::new(c));
                let fault = ServiceFault::Memory {
                    address,
                    access,
                    esr,
                };
                (service(fault), 3, 0b11)
            }
            MessageKind::ServiceUnknownSyscall => {
                (service(ServiceFault::UnknownSyscall { number: b }), 2, 0)
            }
            MessageKind::ServiceException => {
                (service(ServiceFault::Exception { esr: Esr::new(b) }), 2, 0)
            }
        };
        exact(info, fields, defined, count)?;
        Ok(message)
    }
}

/// The reply to a guest fault: the handler's resolution, or its error.
#[must_use]
pub fn encode_guest_reply(reply: &Result<Resolution, FaultError>) -> (MessageInfo, Words) {
    let (kind, fields, words, count) = match reply {
        Err(error) => return encode_error(*error),
        Ok(Resolution::Resume) => (ReplyKind::Resume, 0, [0; 4], 0),
        Ok(Resolution::Emulate { writes, advance_pc }) => {
            let mut fields = (writes.len() as u64) << EMULATE_COUNT_SHIFT;
            if *advance_pc {
                fields |= EMULATE_ADVANCE_PC;
            }
            let mut words = [0; 4];
            for (i, (write, word)) in writes.iter().zip(&mut words).enumerate() {
                fields |= u64::from(write.register.0) << (REGISTER_BITS * i as u32);
                *word = write.value;
            }
            (ReplyKind::Emulate, fields, words, writes.len())
        }
        Ok(Resolution::InjectAbort { esr, far }) => {
            (ReplyKind::InjectAbort, 0, [esr.raw(), far.raw(), 0, 0], 2)
        }
        Ok(Resolution::WaitForInterrupt) => (ReplyKind::WaitForInterrupt, 0, [0; 4], 0),
    };
    message(label(kind.code(), true, fields), words, count)
}

/// A reply to a guest fault as received (not a guest call's result: that is
/// [`CallResult::decode`](crate::protocols::guest_call::CallResult::decode)'s).
///
/// # Errors
/// [`DecodeError`] unless it is exactly what [`encode_guest_reply`] makes.
pub fn decode_guest_reply(
    info: MessageInfo,
    words: Words,
) -> Result<Result<Resolution, FaultError>, DecodeError> {
    let kind = ReplyKind::from_code(kind_of(info, true)?).ok_or(DecodeError::UnknownKind)?;
    let fields = fields_of(info)?;
    let (reply, count, defined) = match kind {
        ReplyKind::Error => return decode_error(info, fields).map(Err),
        ReplyKind::Resume => (Resolution::Resume, 0, 0),
        ReplyKind::Emulate => {
            let count = ((fields >> EMULATE_COUNT_SHIFT) & 0b111) as usize;
            if count > MAX_REGISTER_WRITES {
                return Err(DecodeError::BadFields);
            }
            let mut writes = heapless::Vec::new();
            for (i, &value) in words.iter().enumerate().take(count) {
                let register = GpRegister((fields >> (REGISTER_BITS * i as u32)) as u8 & 0x1f);
                // At most MAX_REGISTER_WRITES, checked above.
                let _ = writes.push(RegisterWrite { register, value });
            }
            let advance_pc = fields & EMULATE_ADVANCE_PC != 0;
            let registers = (1 << (REGISTER_BITS * count as u32)) - 1;
            let defined = EMULATE_ADVANCE_PC | EMULATE_COUNT | registers;
            (Resolution::Emulate { writes, advance_pc }, count, defined)
        }
        ReplyKind::InjectAbort => {
            let [esr, far, ..] = words;
            let (esr, far) = (Esr::new(esr), Far::new(far));
            (Resolution::InjectAbort { esr, far }, 2, 0)
        }
        ReplyKind::WaitForInterrupt => (Resolution::WaitForInterrupt, 0, 0),
        ReplyKind::ServiceResume | ReplyKind::ServiceStop => return Err(DecodeError::UnknownKind),
    };
    exact(info, fields, defined, count)?;
    Ok(Ok(reply))
}

/// The reply to a service fault: the supervisor's resolution, or its error.
#[must_use]
pub fn encode_service_reply(reply: Result<ServiceResolution, FaultError>) -> (MessageInfo, Words) {
    let kind = match reply {
        Err(error) => return encode_error(error),
        Ok(ServiceResolution::Resume) => ReplyKind::ServiceResume,
        Ok(ServiceResolution::Stop) => ReplyKind::ServiceStop,
    };
    message(label(kind.code(), true, 0), [0; 4], 0)
}

/// A reply to a service fault as received.
///
/// # Errors
/// [`DecodeError`] unless it is exactly what [`encode_service_reply`] makes.
pub fn decode_service_reply(
    info: MessageInfo,
    _words: Words,
) -> Result<Result<ServiceResolution, FaultError>, DecodeError> {
    let kind = ReplyKind::from_code(kind_of(info, true)?).ok_or(DecodeError::UnknownKind)?;
    let fields = fields_of(info)?;
    let resolution = match kind {
        ReplyKind::Error => return decode_error(info, fields).map(Err),
        ReplyKind::ServiceResume => ServiceResolution::Resume,
        ReplyKind::ServiceStop => ServiceResolution::Stop,
        _ => return Err(DecodeError::UnknownKind),
    };
    exact(info, fields, 0, 0)?;
    Ok(Ok(resolution))
}

/// `Emulate`'s fields: bit 23 advance_pc, bits 22:20 the count, 5 bits per register below.
const EMULATE_ADVANCE_PC: u64 = 1 << 23;
const EMULATE_COUNT_SHIFT: u32 = 20;
const EMULATE_COUNT: u64 = 0b111 << EMULATE_COUNT_SHIFT;
const REGISTER_BITS: u32 = 5;
const _: () = assert!(REGISTER_BITS * MAX_REGISTER_WRITES as u32 <= EMULATE_COUNT_SHIFT);
const _: () = assert!((EMULATE_ADVANCE_PC | EMULATE_COUNT) & !FIELDS == 0);

pub(super) fn encode_error(error: FaultError) -> (MessageInfo, Words) {
    let fields = u64::from(error.code());
    message(label(ReplyKind::Error.code(), true, fields), [0; 4], 0)
}

fn decode_error(info: MessageInfo, fields: u64) -> Result<FaultError, DecodeError> {
    let error = u16::try_from(fields)
        .ok()
        .and_then(FaultError::from_code)
        .ok_or(DecodeError::BadFields)?;
    exact(info, 0, 0, 0)?;
    Ok(error)
}

/// A label of this layout.
const fn label(kind: u16, reply: bool, fields: u64) -> u64 {
    let direction = if reply { REPLY } else { 0 };
    (kind as u64) << KIND_SHIFT | direction | VERSION << VERSION_SHIFT | fields
}

/// A message of `count` words (the others zero).
fn message(label: u64, mut words: Words, count: usize) -> (MessageInfo, Words) {
    for word in words.iter_mut().skip(count) {
        *word = 0;
    }
    // Labels fit in 48 bits and at most four words are sent (const-asserted above).
    let info = MessageInfo::new(label, count * 8, 0).unwrap_or(EMPTY);
    (info, words)
}

const EMPTY: MessageInfo = match MessageInfo::new(0, 0, 0) {
    Ok(info) => info,
    Err(_) => panic!("an empty message-info word is valid"),
};

/// The kind a label names, if its bit 31 is this direction's.
fn kind_of(info: MessageInfo, reply: bool) -> Result<u16, DecodeError> {
    let label = info.label();
    if (label & REPLY != 0) == reply {
        // Below 2^48: the kind is bits 47:32.
        Ok((label >> KIND_SHIFT) as u16)
    } else {
        Err(DecodeError::UnknownKind)
    }
}

/// The fields of a label of this version, in a message without capabilities.
fn fields_of(info: MessageInfo) -> Result<u64, DecodeError> {
    let label = info.label();
    if (label >> VERSION_SHIFT) & VERSION_MASK != VERSION {
        Err(DecodeError::UnsupportedVersion)
    } else if info.extra_caps() != 0 {
        Err(DecodeError::Capabilities)
    } else {
        Ok(label & FIELDS)
    }
}

/// The checks every kind ends with: only the fields it defines, exactly its words.
fn exact(info: MessageInfo, fields: u64, defined: u64, count: usize) -> Result<(), DecodeError> {
    if fields & !defined != 0 {
        Err(DecodeError::BadFields)
    } else if info.length() != count * 8 {
        Err(DecodeError::BadLength)
    } else {
        Ok(())
    }
}

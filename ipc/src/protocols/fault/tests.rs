//! The fault messages' layouts bit by bit, what their decoders refuse, and the handler dispatch.

use super::*;
use crate::abi::MessageInfo;
use crate::cap::Badge;
use crate::protocols::guest_call::{CallResult, REQUEST_LABEL};

#[test]
fn data_abort_iss_decodes_each_field() {
    // ISV, SAS = word, SSE, SRT = 7, SF, WnR.
    let iss = (1 << 24) | (0b10 << 22) | (1 << 21) | (7 << 16) | (1 << 15) | (1 << 6);
    let access = DataAccess::from_iss(iss).unwrap();
    assert!(access.write && access.sign_extend && access.sixty_four && !access.acquire_release);
    assert_eq!(
        (access.size, access.register.index()),
        (AccessSize::Word, 7)
    );
    assert_eq!(DataAccess::from_iss(iss & !(1 << 24)), None);
    assert_eq!(
        DataAccess::from_iss((1 << 24) | (31 << 16))
            .unwrap()
            .register,
        GpRegister::XZR
    );
}

#[test]
fn sysreg_iss_decodes_cntvct_read_and_encodes_back() {
    // MRS x3, CNTVCT_EL0: op0 3, op1 3, CRn 14, CRm 0, op2 2, direction read.
    let iss = (3 << 20) | (2 << 17) | (3 << 14) | (14 << 10) | (3 << 5) | 1;
    let access = SysRegAccess::from_iss(iss);
    assert_eq!(
        (access.op0, access.op1, access.crn, access.crm, access.op2),
        (3, 3, 14, 0, 2)
    );
    assert_eq!(access.register.index(), 3);
    assert!(!access.write);
    assert_eq!(access.iss(), iss);
}

#[test]
fn register_numbers_above_31_are_refused() {
    assert_eq!(GpRegister::new(32), Err(BadRegister(32)));
    assert_eq!(GpRegister::new(31), Ok(GpRegister::XZR));
    let x: [u64; 31] = core::array::from_fn(|n| n as u64 + 100);
    assert_eq!(GpRegister::new(30).unwrap().value_in(&x), 130);
    assert_eq!(GpRegister::XZR.value_in(&x), 0);
}

fn info(label: u64, length: usize) -> MessageInfo {
    MessageInfo::new(label, length, 0).unwrap()
}

/// A stage-2 data abort's ESR: EC 0x24, IL, ISV, SAS = doubleword, SRT = `srt`, WnR = `write`.
fn abort_esr(srt: u64, write: bool) -> Esr {
    Esr::new(0x24 << 26 | 1 << 25 | 1 << 24 | 0b11 << 22 | srt << 16 | u64::from(write) << 6)
}

#[test]
fn a_data_abort_is_ipa_far_esr_and_a_writes_value() {
    let x: [u64; 31] = core::array::from_fn(|n| 0x1000 + n as u64);
    let (ipa, far) = (Ipa::new(0x0800_0420), Far::new(0x0800_0420));
    let write = GuestFault::data_abort(ipa, far, abort_esr(5, true), &x);
    let GuestFault::DataAbort {
        access,
        write_value,
        ..
    } = write
    else {
        unreachable!()
    };
    assert_eq!(
        (access.unwrap().register.index(), write_value),
        (5, Some(0x1005))
    );
    let (message, words) = write.encode();
    assert_eq!(message, info(0xFA01_0200_0000, 32));
    let esr = abort_esr(5, true).raw();
    assert_eq!(words, [0x0800_0420, 0x0800_0420, esr, 0x1005]);
    assert_eq!(
        FaultMessage::decode(message, words),
        Ok(FaultMessage::Guest(write))
    );
    // A read, a write of XZR, and an abort without a syndrome.
    let read = GuestFault::data_abort(ipa, far, abort_esr(5, false), &x);
    let (message, words) = read.encode();
    assert_eq!((message, words[3]), (info(0xFA01_0200_0000, 24), 0));
    assert_eq!(
        FaultMessage::decode(message, words),
        Ok(FaultMessage::Guest(read))
    );
    let zero = GuestFault::data_abort(ipa, far, abort_esr(31, true), &x);
    assert_eq!(zero.encode().1[3], 0);
    let no_syndrome = Esr::new(abort_esr(5, true).raw() & !(1 << 24));
    let unknown = GuestFault::data_abort(ipa, far, no_syndrome, &x);
    assert!(matches!(
        unknown,
        GuestFault::DataAbort {
            access: None,
            write_value: None,
            ..
        }
    ));
    assert_eq!(unknown.encode().0.length(), 24);
    // A write's length without its value, or a read's with one, is refused.
    let (message, words) = write.encode();
    let short = info(message.label(), 24);
    assert_eq!(
        FaultMessage::decode(short, words),
        Err(DecodeError::BadLength)
    );
    let (message, words) = read.encode();
    let long = info(message.label(), 32);
    assert_eq!(
        FaultMessage::decode(long, words),
        Err(DecodeError::BadLength)
    );
}

#[test]
fn each_guest_and_service_message_has_its_label_and_words() {
    let sysreg = SysRegAccess::from_iss((3 << 20) | (2 << 17) | (3 << 14) | (14 << 10) | (3 << 5));
    let cases = [
        (
            FaultMessage::Guest(GuestFault::InstructionAbort {
                ipa: Ipa::new(1),
                far: Far::new(2),
                esr: Esr::new(3),
            }),
            0xFA02_0200_0000,
            &[1, 2, 3][..],
        ),
        (
            FaultMessage::Guest(GuestFault::Wait { event: true }),
            0xFA03_0200_0001,
            &[],
        ),
        (
            FaultMessage::Guest(GuestFault::SysReg(sysreg)),
            0xFA04_0200_0000 | u64::from(sysreg.iss()),
            &[],
        ),
        (
            FaultMessage::Guest(GuestFault::ListRegistersDrained),
            0xFA05_0200_0000,
            &[],
        ),
        (
            FaultMessage::Guest(GuestFault::Other { esr: Esr::new(9) }),
            0xFA06_0200_0000,
            &[9],
        ),
        (
            FaultMessage::Service {
                pc: 0x2040,
                fault: ServiceFault::Memory {
                    address: Ipa::new(0x10),
                    access: Access::Execute,
                    esr: Esr::new(0x8200_0007),
                },
            },
            0xFA11_0200_0002,
            &[0x2040, 0x10, 0x8200_0007],
        ),
        (
            FaultMessage::Service {
                pc: 4,
                fault: ServiceFault::UnknownSyscall { number: 99 },
            },
            0xFA12_0200_0000,
            &[4, 99],
        ),
        (
            FaultMessage::Service {
                pc: 4,
                fault: ServiceFault::Exception {
                    esr: Esr::new(0x0200_0000),
                },
            },
            0xFA13_0200_0000,
            &[4, 0x0200_0000],
        ),
    ];
    for (fault, label, used) in cases {
        let (message, words) = fault.encode();
        assert_eq!(message, info(label, used.len() * 8), "{fault:?}");
        assert_eq!(&words[..used.len()], used);
        assert!(words[used.len()..].iter().all(|&w| w == 0));
        assert_eq!(FaultMessage::decode(message, words), Ok(fault));
        // Words beyond the length are not the message's.
        let mut other = words;
        other[used.len()..].fill(7);
        assert_eq!(FaultMessage::decode(message, other), Ok(fault));
    }
}

#[test]
fn an_hvc_or_smc_goes_as_a_guest_call() {
    let smc = GuestFault::Smc {
        imm: 3,
        args: [0x8400_0000, 1, 2, 3],
    };
    let (message, words) = smc.encode();
    assert_eq!(message.label(), REQUEST_LABEL | 1 << 16 | 3);
    assert_eq!(
        FaultMessage::decode(message, words),
        Ok(FaultMessage::Guest(smc))
    );
}

#[test]
fn messages_of_another_version_direction_or_shape_are_refused() {
    let (message, words) = GuestFault::Wait { event: false }.encode();
    let label = message.label();
    let decode = |label, length, caps| {
        FaultMessage::decode(MessageInfo::new(label, length, caps).unwrap(), words)
    };
    assert_eq!(
        decode(label, 0, 0),
        Ok(FaultMessage::Guest(GuestFault::Wait { event: false }))
    );
    assert_eq!(
        decode(label ^ 3 << 24, 0, 0),
        Err(DecodeError::UnsupportedVersion)
    );
    assert_eq!(decode(label | 1 << 31, 0, 0), Err(DecodeError::UnknownKind));
    assert_eq!(decode(label | 0b10, 0, 0), Err(DecodeError::BadFields));
    assert_eq!(decode(label, 8, 0), Err(DecodeError::BadLength));
    assert_eq!(decode(label, 0, 1), Err(DecodeError::Capabilities));
    assert_eq!(
        decode(0xFA07_0200_0000, 0, 0),
        Err(DecodeError::UnknownKind)
    );
    assert_eq!(
        decode(0xFA81_0200_0000, 0, 0),
        Err(DecodeError::UnknownKind)
    );
    assert_eq!(decode(0, 0, 0), Err(DecodeError::UnknownKind));
    // A sysreg message's fields above bit 21, a service access above 2.
    assert_eq!(decode(0xFA04_0240_0000, 0, 0), Err(DecodeError::BadFields));
    assert_eq!(decode(0xFA11_0200_0003, 24, 0), Err(DecodeError::BadFields));
}

fn emulate(writes: &[(u8, u64)], advance_pc: bool) -> Resolution {
    let writes = writes
        .iter()
        .map(|&(n, value)| RegisterWrite {
            register: GpRegister::new(n).unwrap(),
            value,
        })
        .collect();
    Resolution::Emulate { writes, advance_pc }
}

#[test]
fn each_guest_reply_has_its_label_and_words() {
    let cases = [
        (Ok(Resolution::Resume), 0xFA81_8200_0000, &[][..]),
        (
            Ok(emulate(&[(3, 7), (31, 8)], true)),
            0xFA82_8200_0000 | 1 << 23 | 2 << 20 | 31 << 5 | 3,
            &[7, 8],
        ),
        (
            Ok(emulate(&[(0, 1), (1, 2), (2, 3), (30, 4)], false)),
            0xFA82_8200_0000 | 4 << 20 | 30 << 15 | 2 << 10 | 1 << 5,
            &[1, 2, 3, 4],
        ),
        (Ok(emulate(&[], true)), 0xFA82_8280_0000, &[]),
        (
            Ok(Resolution::InjectAbort {
                esr: Esr::new(0x9600_0010),
                far: Far::new(0x1234),
            }),
            0xFA83_8200_0000,
            &[0x9600_0010, 0x1234],
        ),
        (Ok(Resolution::WaitForInterrupt), 0xFA84_8200_0000, &[]),
        (Err(FaultError::Unhandled), 0xFA80_8200_0001, &[]),
        (Err(FaultError::Malformed), 0xFA80_8200_0002, &[]),
    ];
    for (reply, label, used) in cases {
        let (message, words) = encode_guest_reply(&reply);
        assert_eq!(message, info(label, used.len() * 8), "{reply:?}");
        assert_eq!(&words[..used.len()], used);
        assert_eq!(decode_guest_reply(message, words), Ok(reply));
    }
}

#[test]
fn guest_replies_that_are_not_exact_are_refused() {
    let decode = |label, length| decode_guest_reply(info(label, length), [1, 2, 3, 4]);
    // Five writes; a register named beyond the count; the count's length wrong.
    assert_eq!(decode(0xFA82_8250_0000, 40), Err(DecodeError::BadFields));
    assert_eq!(decode(0xFA82_8210_0020, 8), Err(DecodeError::BadFields));
    assert_eq!(decode(0xFA82_8210_0000, 16), Err(DecodeError::BadLength));
    // An unknown error code, or an error with words.
    assert_eq!(decode(0xFA80_8200_0003, 0), Err(DecodeError::BadFields));
    assert_eq!(decode(0xFA80_8201_0001, 0), Err(DecodeError::BadFields));
    assert_eq!(decode(0xFA80_8200_0001, 8), Err(DecodeError::BadLength));
    // A service's resolution, a message, a guest call's result, the old postcard reply (label 0).
    assert_eq!(decode(0xFA91_8200_0000, 0), Err(DecodeError::UnknownKind));
    assert_eq!(decode(0xFA01_0200_0000, 24), Err(DecodeError::UnknownKind));
    let (call, words) = CallResult {
        values: [1, 0, 0, 0],
        count: 1,
        advance_pc: false,
    }
    .encode();
    assert_eq!(
        decode_guest_reply(call, words),
        Err(DecodeError::UnknownKind)
    );
    assert_eq!(decode(0, 16), Err(DecodeError::UnknownKind));
    assert_eq!(
        decode_guest_reply(MessageInfo::new(0xFA81_8200_0000, 0, 1).unwrap(), [0; 4]),
        Err(DecodeError::Capabilities)
    );
}

#[test]
fn service_replies_are_resume_stop_or_an_error_and_nothing_else() {
    for (reply, label) in [
        (Ok(ServiceResolution::Resume), 0xFA91_8200_0000),
        (Ok(ServiceResolution::Stop), 0xFA92_8200_0000),
        (Err(FaultError::Unhandled), 0xFA80_8200_0001),
    ] {
        let (message, words) = encode_service_reply(reply);
        assert_eq!(message, info(label, 0));
        assert_eq!(decode_service_reply(message, words), Ok(reply));
    }
    let decode = |label, length| decode_service_reply(info(label, length), [0; 4]);
    assert_eq!(decode(0xFA81_8200_0000, 0), Err(DecodeError::UnknownKind));
    assert_eq!(decode(0xFA91_8200_0001, 0), Err(DecodeError::BadFields));
    assert_eq!(decode(0xFA92_8200_0000, 8), Err(DecodeError::BadLength));
    assert_eq!(decode(0xFA92_0200_0000, 0), Err(DecodeError::UnknownKind));
    assert_eq!(
        decode(0xFA92_8100_0000, 0),
        Err(DecodeError::UnsupportedVersion)
    );
}

/// Records what it was asked and answers with fixed resolutions.
#[derive(Default)]
struct Recorder {
    seen: Vec<(u64, Option<u64>, FaultMessage)>,
}

impl Handler for Recorder {
    async fn guest(&mut self, badge: Badge, fault: GuestFault) -> Result<Resolution, FaultError> {
        self.seen
            .push((badge.raw(), None, FaultMessage::Guest(fault)));
        Ok(Resolution::WaitForInterrupt)
    }

    async fn service(
        &mut self,
        badge: Badge,
        pc: u64,
        fault: ServiceFault,
    ) -> Result<ServiceResolution, FaultError> {
        self.seen
            .push((badge.raw(), Some(pc), FaultMessage::Service { pc, fault }));
        Err(FaultError::Unhandled)
    }
}

fn block_on<F: core::future::Future>(future: F) -> F::Output {
    let mut future = core::pin::pin!(future);
    let waker = core::task::Waker::noop();
    match future
        .as_mut()
        .poll(&mut core::task::Context::from_waker(waker))
    {
        core::task::Poll::Ready(output) => output,
        core::task::Poll::Pending => panic!("the recorder never waits"),
    }
}

#[test]
fn handle_dispatches_by_kind_and_refuses_what_is_not_a_fault() {
    let mut recorder = Recorder::default();
    let wait = FaultMessage::Guest(GuestFault::Wait { event: false });
    let (message, words) = wait.encode();
    let (reply, reply_words) = block_on(handle(&mut recorder, Badge::new(5), message, words));
    assert_eq!(
        decode_guest_reply(reply, reply_words),
        Ok(Ok(Resolution::WaitForInterrupt))
    );
    let exception = FaultMessage::Service {
        pc: 0x40,
        fault: ServiceFault::UnknownSyscall { number: 77 },
    };
    let (message, words) = exception.encode();
    let (reply, reply_words) = block_on(handle(&mut recorder, Badge::new(6), message, words));
    assert_eq!(
        decode_service_reply(reply, reply_words),
        Ok(Err(FaultError::Unhandled))
    );
    let (reply, reply_words) = block_on(handle(&mut recorder, Badge::new(7), info(5, 0), [0; 4]));
    assert_eq!(
        decode_service_reply(reply, reply_words),
        Ok(Err(FaultError::Malformed))
    );
    assert_eq!(recorder.seen, [(5, None, wait), (6, Some(0x40), exception)]);
}

//! Property tests: every decoder of untrusted bytes rejects or round-trips, and typed values round-trip.
#![forbid(unsafe_code)]

use capvisor_ipc::abi::{IpcBuffer, MAX_CAPS, MSG_MAX_BYTES, MessageInfo};
use capvisor_ipc::checks;
use capvisor_ipc::protocol::{self, Generation, Protocol};
use capvisor_ipc::protocols::fault::{
    self, FaultError, FaultMessage, GpRegister, GuestFault, RegisterWrite, Resolution,
    ServiceFault, ServiceResolution,
};
use capvisor_ipc::protocols::{devbroker, memmgr, s2walk, vmm};
use capvisor_ipc::types::{Access, Esr, Far, Ipa, VcpuId, VmId, Vtcr, Vttbr};
use proptest::prelude::*;

fn access() -> impl Strategy<Value = Access> {
    prop_oneof![
        Just(Access::Read),
        Just(Access::Write),
        Just(Access::Execute)
    ]
}

fn memmgr_request() -> impl Strategy<Value = memmgr::Request> {
    let vm = any::<u32>().prop_map(VmId::new);
    prop_oneof![
        (vm.clone(), any::<u64>(), any::<u64>()).prop_map(|(vm, base, size)| {
            memmgr::Request::AddRam {
                vm,
                base: Ipa::new(base),
                size,
            }
        }),
        (vm.clone(), any::<u32>(), any::<u64>(), access()).prop_map(|(vm, vcpu, ipa, access)| {
            memmgr::Request::HandleStage2Fault {
                vm,
                vcpu: VcpuId::new(vcpu),
                ipa: Ipa::new(ipa),
                access,
            }
        }),
        (vm.clone(), any::<u32>()).prop_map(|(vm, vcpu)| memmgr::Request::ResetVcpu {
            vm,
            vcpu: VcpuId::new(vcpu)
        }),
        vm.prop_map(|vm| memmgr::Request::ReleaseVm { vm }),
    ]
}

fn s2walk_request() -> impl Strategy<Value = s2walk::Request> {
    (
        any::<u32>(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        access(),
    )
        .prop_map(|(vm, vtcr, vttbr, ipa, access)| s2walk::Request::Walk {
            vm: VmId::new(vm),
            vtcr: Vtcr::new(vtcr),
            vttbr: Vttbr::new(vttbr),
            ipa: Ipa::new(ipa),
            access,
        })
}

/// Guest faults as the kernel makes them: every variant, a data abort from its ESR and registers.
fn guest_fault() -> impl Strategy<Value = GuestFault> {
    let abort = (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>());
    prop_oneof![
        (abort, 0u64..32, any::<bool>()).prop_map(|((ipa, far, esr, x), srt, isv_write)| {
            // Half of them writes with ISV = 1 (SRT of the strategy's choosing, XZR included).
            let esr = if isv_write {
                esr | 1 << 24 | 1 << 6
            } else {
                esr
            };
            let esr = (esr & !(0x1f << 16)) | srt << 16;
            let registers: [u64; 31] = core::array::from_fn(|n| x.rotate_left(n as u32));
            GuestFault::data_abort(Ipa::new(ipa), Far::new(far), Esr::new(esr), &registers)
        }),
        abort.prop_map(|(ipa, far, esr, _)| GuestFault::InstructionAbort {
            ipa: Ipa::new(ipa),
            far: Far::new(far),
            esr: Esr::new(esr),
        }),
        (any::<u16>(), any::<[u64; 4]>()).prop_map(|(imm, args)| GuestFault::Hvc { imm, args }),
        (any::<u16>(), any::<[u64; 4]>()).prop_map(|(imm, args)| GuestFault::Smc { imm, args }),
        any::<bool>().prop_map(|event| GuestFault::Wait { event }),
        any::<u32>().prop_map(|iss| GuestFault::SysReg(fault::SysRegAccess::from_iss(iss))),
        Just(GuestFault::ListRegistersDrained),
        any::<u64>().prop_map(|esr| GuestFault::Other { esr: Esr::new(esr) }),
    ]
}

fn service_fault() -> impl Strategy<Value = ServiceFault> {
    prop_oneof![
        (any::<u64>(), access(), any::<u64>()).prop_map(|(address, access, esr)| {
            ServiceFault::Memory {
                address: Ipa::new(address),
                access,
                esr: Esr::new(esr),
            }
        }),
        any::<u64>().prop_map(|number| ServiceFault::UnknownSyscall { number }),
        any::<u64>().prop_map(|esr| ServiceFault::Exception { esr: Esr::new(esr) }),
    ]
}

fn fault_error() -> impl Strategy<Value = FaultError> {
    proptest::sample::select(FaultError::ALL)
}

fn resolution() -> impl Strategy<Value = Resolution> {
    let write = (0u8..=31, any::<u64>()).prop_map(|(n, value)| RegisterWrite {
        register: GpRegister::new(n).unwrap(),
        value,
    });
    prop_oneof![
        Just(Resolution::Resume),
        (proptest::collection::vec(write, 0..=4), any::<bool>()).prop_map(
            |(writes, advance_pc)| {
                Resolution::Emulate {
                    writes: writes.into_iter().collect(),
                    advance_pc,
                }
            }
        ),
        (any::<u64>(), any::<u64>()).prop_map(|(esr, far)| Resolution::InjectAbort {
            esr: Esr::new(esr),
            far: Far::new(far)
        }),
        Just(Resolution::WaitForInterrupt),
    ]
}

/// Encodes `request` as a client would and decodes it as a server would.
fn request_round_trip<P: Protocol>(request: &P::Request) -> P::Request {
    let mut buffer = IpcBuffer::default();
    let info = protocol::encode_request::<P>(request, Generation::ANY, &[], &mut buffer).unwrap();
    protocol::decode_request::<P>(info, &buffer, Generation::new(9))
        .unwrap()
        .0
}

/// Encodes `reply` as a server would and decodes it as a client would.
fn reply_round_trip<P: Protocol>(reply: &P::Reply) -> P::Reply {
    let mut buffer = IpcBuffer::default();
    let info = protocol::encode_reply::<P>(Ok(reply), &[], Generation::new(9), &mut buffer);
    let mut generation = Generation::ANY;
    protocol::decode_reply::<P>(info, &buffer, &mut generation)
        .unwrap()
        .0
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn message_info_round_trips(label in 0..=MessageInfo::MAX_LABEL, length in 0..=MSG_MAX_BYTES, caps in 0..=MAX_CAPS) {
        let info = MessageInfo::new(label, length, caps).unwrap();
        prop_assert_eq!((info.label(), info.length(), info.extra_caps()), (label, length, caps));
        prop_assert_eq!(MessageInfo::decode(info.raw()), Ok(info));
    }

    #[test]
    fn any_message_info_word_is_rejected_or_round_trips(raw in any::<u64>()) {
        checks::message_info(raw);
    }

    #[test]
    fn memmgr_requests_round_trip(request in memmgr_request()) {
        prop_assert_eq!(request_round_trip::<memmgr::MemMgr>(&request), request);
    }

    #[test]
    fn s2walk_requests_round_trip(request in s2walk_request()) {
        prop_assert_eq!(request_round_trip::<s2walk::S2Walk>(&request), request);
    }

    #[test]
    fn fault_messages_round_trip_in_the_registers(
        pc in any::<u64>(), guest in guest_fault(), service in service_fault()
    ) {
        for message in [FaultMessage::Guest(guest), FaultMessage::Service { pc, fault: service }] {
            let (info, words) = message.encode();
            prop_assert!(info.length() <= 32 && info.extra_caps() == 0);
            prop_assert_eq!(FaultMessage::decode(info, words), Ok(message));
        }
    }

    #[test]
    fn fault_replies_round_trip_in_the_registers(
        resolution in resolution(), error in fault_error(), stop in any::<bool>()
    ) {
        for reply in [Ok(resolution), Err(error)] {
            let (info, words) = fault::encode_guest_reply(&reply);
            prop_assert_eq!(fault::decode_guest_reply(info, words), Ok(reply));
        }
        let resolution = if stop { ServiceResolution::Stop } else { ServiceResolution::Resume };
        for reply in [Ok(resolution), Err(error)] {
            let (info, words) = fault::encode_service_reply(reply);
            prop_assert_eq!(fault::decode_service_reply(info, words), Ok(reply));
        }
    }

    #[test]
    fn hostile_fault_messages_and_replies_are_refused_unless_exact(
        data in proptest::collection::vec(any::<u8>(), 0..48)
    ) {
        checks::fault_message(&data);
        checks::fault_reply(&data);
    }

    #[test]
    fn labels_near_the_fault_layout_reach_each_decoders_last_checks(
        seed in any::<u64>(), control in any::<u8>()
    ) {
        // Steered (control bit 0), version 2 (bit 2), word-multiple lengths: what decodes must be
        // exact.
        let mut data = vec![control | 0b101, seed as u8 % 5];
        for n in 0..5u64 {
            data.extend_from_slice(&seed.rotate_left(n as u32 * 13).to_le_bytes());
        }
        checks::fault_message(&data);
        checks::fault_reply(&data);
    }

    #[test]
    fn rights_and_object_kinds_decode_only_defined_values(bits in any::<u8>(), code in any::<u16>()) {
        use capvisor_ipc::cap::{ObjectKind, Rights};
        let rights = postcard::from_bytes::<Rights>(&[bits]);
        prop_assert_eq!(rights.is_ok(), bits & !Rights::ALL.bits() == 0);
        if let Ok(rights) = rights {
            prop_assert_eq!(rights.bits(), bits);
            prop_assert!(Rights::ALL.contains(rights));
        }
        match ObjectKind::from_code(code) {
            Some(kind) => prop_assert_eq!(kind.code(), code),
            None => prop_assert!(ObjectKind::ALL.iter().all(|kind| kind.code() != code)),
        }
    }

    #[test]
    fn service_errors_round_trip(index in 0..devbroker::BrokerError::ALL.len()) {
        // Codes need not be contiguous (4 is retired), so pick a variant, not a number.
        let error = devbroker::BrokerError::ALL[index];
        let reply = devbroker::Reply::GrantIrq(Err(error));
        prop_assert_eq!(reply_round_trip::<devbroker::DevBroker>(&reply), reply);
    }

    #[test]
    fn hostile_guest_calls_are_refused_or_round_trip(
        reply in any::<bool>(),
        fields in 0u64..1 << 26,
        length in 0u64..48,
        caps in 0u64..2,
        words in any::<[u64; 4]>(),
    ) {
        use capvisor_ipc::protocols::guest_call::{REPLY_LABEL, REQUEST_LABEL};
        // Labels near the two kinds' (their fields and the version bits), so decoding is reached.
        let base = if reply { REPLY_LABEL } else { REQUEST_LABEL } & !(0xff << 24);
        let raw = (base | fields) << 16 | caps << 10 | length;
        let mut data = raw.to_le_bytes().to_vec();
        for word in words {
            data.extend_from_slice(&word.to_le_bytes());
        }
        checks::guest_call(&data);
    }

    #[test]
    fn hostile_requests_are_rejected_or_round_trip(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        checks::request::<memmgr::MemMgr>(&data);
        checks::request::<s2walk::S2Walk>(&data);
        checks::request::<devbroker::DevBroker>(&data);
        checks::request::<vmm::Vmm>(&data);
        checks::guest_call(&data);
        checks::fault_message(&data);
    }

    #[test]
    fn hostile_replies_are_rejected_or_round_trip(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        checks::reply::<memmgr::MemMgr>(&data);
        checks::reply::<s2walk::S2Walk>(&data);
        checks::reply::<devbroker::DevBroker>(&data);
        checks::reply::<vmm::Vmm>(&data);
        checks::fault_reply(&data);
    }

    #[test]
    fn hostile_ring_producers_never_fool_the_consumer(data in proptest::collection::vec(any::<u8>(), 0..400)) {
        checks::ring(&data);
    }

    #[test]
    fn honest_ring_traffic_is_a_fifo(ops in proptest::collection::vec((prop_oneof![Just(0u8), Just(5u8)], any::<u8>()), 0..200)) {
        // Only pushes (0) and pops (5), with generous pop buffers: the model comparison always runs.
        let mut data = Vec::new();
        for (op, arg) in ops {
            data.extend_from_slice(&[op, arg | 0x10, 0, 0, 0, 0]);
        }
        checks::ring(&data);
    }
}

#[test]
fn the_hostile_message_builder_reaches_the_decoders() {
    // Guards the hostile-bytes properties against vacuity: real messages, wrapped as the builder in
    // `checks` expects (control byte, three capability kinds, payload), decode and round-trip.
    let mut buffer = IpcBuffer::default();
    let request = memmgr::Request::ReleaseVm { vm: VmId::new(3) };
    let info =
        protocol::encode_request::<memmgr::MemMgr>(&request, Generation::ANY, &[], &mut buffer)
            .unwrap();
    let mut data = vec![0u8; 4];
    data.extend_from_slice(buffer.payload(info));
    assert!(checks::request::<memmgr::MemMgr>(&data));
    assert!(
        !checks::request::<s2walk::S2Walk>(&data),
        "another protocol's label"
    );

    let reply = vmm::Reply::State(Ok(vmm::GuestState::Running { online_vcpus: 2 }));
    let info = protocol::encode_reply::<vmm::Vmm>(Ok(&reply), &[], Generation::new(1), &mut buffer);
    // Status 0, expected generation 1, control byte, kinds, payload.
    let mut data = vec![0u8, 0, 1, 0, 0, 0, 0];
    data.extend_from_slice(buffer.payload(info));
    assert!(checks::reply::<vmm::Vmm>(&data));
    data[0] = 5; // a Malformed rejection status
    assert!(!checks::reply::<vmm::Vmm>(&data));
}

/// The hostile fixed-layout messages the fault checks build reach acceptance for every kind of
/// both directions, so those properties test the decoders' last checks, not only their refusals.
#[test]
fn steered_fault_messages_decode_for_every_kind() {
    use std::collections::BTreeSet;
    let (mut messages, mut replies) = (BTreeSet::new(), BTreeSet::new());
    // Steered labels (control bit 0, version 2: bit 2) of each kind (bits 7:3) and direction
    // (bit 1), word-multiple lengths and few field bits: the shapes the encoders make.
    for control in (0..=0xffu8).filter(|c| c & 0b101 == 0b101) {
        for shape in 0..5u8 {
            for fields in [0u64, 1, 2, 0x20_0000, 0x80_0000 | 0x40_0000 | 0x7fff] {
                let mut data = vec![control, shape];
                data.extend_from_slice(&fields.to_le_bytes());
                for word in [0x9200_0047u64, 0x24 << 26 | 1 << 24 | 1 << 6, 3, 4] {
                    data.extend_from_slice(&word.to_le_bytes());
                }
                if checks::fault_message(&data) {
                    messages.insert((control >> 3) % 17);
                }
                if checks::fault_reply(&data) {
                    replies.insert((control >> 3) % 17);
                }
            }
        }
    }
    // Nine message kinds and the guest call; seven reply kinds.
    assert_eq!(
        (messages.len(), replies.len()),
        (10, 7),
        "{messages:?} {replies:?}"
    );
}

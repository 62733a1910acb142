//! The VMM's logic on the host: the shared fake kernel (`capvisor_rt::fake`) records every
//! register write, injection and thread operation, in order with the fake memory manager's calls
//! and the console, and each test checks what the guest contract (`docs/guests.md`) requires.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use capvisor_ipc::abi::VcpuRegister;
use capvisor_ipc::cap::{Thread, Vcpu};
use capvisor_ipc::protocol::Error;
use capvisor_ipc::protocols::fault::{
    AccessSize, DataAccess, FaultError, GpRegister, GuestFault, RegisterWrite, Resolution,
};
use capvisor_ipc::protocols::memmgr::{FaultOutcome, GuestPayload, MemError, ResetPolicy};
use capvisor_ipc::types::{Access, Esr, Far, Ipa};
use capvisor_rt::fake::{self, FakeKernel};

use crate::calls::{Workarounds, psci, smccc};
use crate::vcpus::{Invoker, Vcpus};
use crate::vgic::{GICD_BASE, GICR_BASE};
use crate::vmm::{GuestConfig, MAX_VCPUS, Machine, Vmm};

/// A redistributor's SGI/PPI frame, after its RD frame.
const SGI_FRAME: u64 = 0x1_0000;

const RAM: u64 = 0x4000_0000;
const PC: u64 = RAM + 0x20_0000;
/// Where the device tree goes: the last 2 MiB of the tests' 16 MiB of RAM.
const TREE: u64 = RAM + 0xe0_0000;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Load(GuestPayload, u64),
    Fault(u32, u64, Access),
    Reset(u32),
    Write(u32, u64, u64),
    Resume(u32),
    Suspend(u32),
    Inject(u32, u32, u8),
    Print(String),
    Partial(String),
}

/// What the VMM did besides invoking the kernel: memory manager calls and console output.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Service {
    Load(GuestPayload, u64),
    Fault(u32, u64, Access),
    Reset(u32),
    Print(String),
    Partial(String),
}

/// vCPU `n`'s capability is in slot `VCPU + n`, its thread's in `THREAD + n`.
const VCPU: u64 = 20;
const THREAD: u64 = 30;

fn caps() -> Vcpus {
    let slots = |first: u64| core::array::from_fn(|n| first + n as u64);
    Vcpus::from_slots(&slots(VCPU), &slots(THREAD))
}

fn vcpu(index: u32) -> capvisor_ipc::cap::Cap<Vcpu> {
    capvisor_ipc::cap::Cap::from_cptr(capvisor_ipc::cap::CPtr::new(VCPU + u64::from(index)))
}

impl Op {
    fn of(op: fake::Op<Service>) -> Self {
        let index = |slot: u64, first: u64| u32::try_from(slot - first).unwrap();
        match op {
            fake::Op::WriteRegister {
                vcpu,
                register,
                value,
            } => Self::Write(index(vcpu, VCPU), register, value),
            fake::Op::InjectIrq {
                vcpu,
                intid,
                priority,
            } => Self::Inject(index(vcpu, VCPU), intid, priority),
            fake::Op::Resume(thread) => Self::Resume(index(thread, THREAD)),
            fake::Op::Suspend(thread) => Self::Suspend(index(thread, THREAD)),
            fake::Op::Service(Service::Load(payload, ipa)) => Self::Load(payload, ipa),
            fake::Op::Service(Service::Fault(vcpu, ipa, access)) => Self::Fault(vcpu, ipa, access),
            fake::Op::Service(Service::Reset(vcpu)) => Self::Reset(vcpu),
            fake::Op::Service(Service::Print(line)) => Self::Print(line),
            fake::Op::Service(Service::Partial(text)) => Self::Partial(text),
            other => panic!("the VMM does not {other:?}"),
        }
    }
}

/// The machine: the shared fake kernel, holding the guest's vCPUs and threads, and a fake
/// memory manager.
#[derive(Debug)]
struct Fake {
    kernel: FakeKernel<Service>,
    vcpus: Vcpus,
    memory: BTreeMap<u64, u64>,
    dtb: bool,
    /// The initrd's size, if the guest has one.
    initrd: Option<u64>,
}

impl Default for Fake {
    fn default() -> Self {
        let mut kernel = FakeKernel::new(0, 0);
        for n in 0..MAX_VCPUS as u64 {
            kernel = kernel.with::<Vcpu>(VCPU + n).with::<Thread>(THREAD + n);
        }
        Self {
            kernel,
            vcpus: caps(),
            memory: BTreeMap::new(),
            dtb: false,
            initrd: None,
        }
    }
}

impl Fake {
    /// Register `register` of vCPU `index`, as its guest left it.
    fn set_register(&mut self, index: u32, register: u64, value: u64) {
        self.kernel.set_register(vcpu(index), register, value);
    }

    /// Every vCPU's PSTATE.
    fn set_pstate(&mut self, value: u64) {
        for index in 0..MAX_VCPUS as u32 {
            self.set_register(index, VcpuRegister::Pstate.code(), value);
        }
    }

    /// vCPU `index`'s list registers are full.
    fn fill_list_registers(&mut self, index: u32) {
        self.kernel.fill_list_registers(vcpu(index));
    }

    /// Every vCPU's list registers have room.
    fn drain_list_registers(&mut self) {
        for index in 0..MAX_VCPUS as u32 {
            self.kernel.drain_list_registers(vcpu(index));
        }
    }
}

impl Machine for Fake {
    type Kernel = FakeKernel<Service>;

    fn vcpus(&mut self) -> Invoker<'_, FakeKernel<Service>> {
        self.vcpus.with(&mut self.kernel)
    }
    async fn load(&mut self, payload: GuestPayload, ipa: u64) -> Result<u64, Error<MemError>> {
        self.kernel.record(Service::Load(payload, ipa));
        match payload {
            GuestPayload::DeviceTree if !self.dtb => Err(Error::Service(MemError::NoPayload)),
            GuestPayload::Initrd => self.initrd.ok_or(Error::Service(MemError::NoPayload)),
            _ => Ok(0x1000),
        }
    }
    async fn write_word(&mut self, ipa: u64, value: u64) -> Result<(), Error<MemError>> {
        self.memory.insert(ipa, value);
        Ok(())
    }
    async fn stage2_fault(
        &mut self,
        vcpu: u32,
        ipa: u64,
        access: Access,
    ) -> Result<FaultOutcome, Error<MemError>> {
        self.kernel.record(Service::Fault(vcpu, ipa, access));
        Ok(FaultOutcome::AlreadyMapped)
    }
    async fn reset_vcpu(&mut self, vcpu: u32) -> Result<ResetPolicy, Error<MemError>> {
        self.kernel.record(Service::Reset(vcpu));
        Ok(ResetPolicy::DropAllMappings)
    }
    fn print(&mut self, line: &str) {
        self.kernel.record(Service::Print(line.to_string()));
    }
    fn print_partial(&mut self, text: &str) {
        self.kernel.record(Service::Partial(text.to_string()));
    }
}

fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the fake never waits"),
    }
}

fn config(vcpus: u32) -> GuestConfig<'static> {
    GuestConfig {
        name: "t",
        ram_base: RAM,
        ram_size: 16 << 20,
        text_offset: 0x20_0000,
        image_size: 0x1000,
        vcpus,
        cmdline: "",
        workarounds: Workarounds::UNKNOWN,
    }
}

fn booted(vcpus: u32) -> Vmm<'static, Fake> {
    let mut vmm = Vmm::new(Fake::default(), config(vcpus));
    block_on(vmm.boot()).unwrap();
    vmm
}

/// The device tree the VMM wrote at RAM base, word by word.
fn written_tree(vmm: &mut Vmm<'_, Fake>) -> Vec<u8> {
    let mut tree = Vec::new();
    for (ipa, word) in vmm.machine().memory.range(TREE..TREE + 0x10_0000) {
        assert_eq!(*ipa, TREE + tree.len() as u64);
        tree.extend_from_slice(&word.to_le_bytes());
    }
    tree
}

fn take(vmm: &mut Vmm<'_, Fake>) -> Vec<Op> {
    vmm.machine()
        .kernel
        .take_log()
        .into_iter()
        .map(Op::of)
        .collect()
}

fn start_ops(vcpu: u32, entry: u64, x0: u64) -> Vec<Op> {
    vec![
        Op::Write(vcpu, VcpuRegister::Reset.code(), 0),
        Op::Write(vcpu, VcpuRegister::Mpidr.code(), u64::from(vcpu)),
        Op::Write(vcpu, VcpuRegister::Pc.code(), entry),
        Op::Write(vcpu, 0, x0),
        Op::Write(vcpu, 1, 0),
        Op::Write(vcpu, 2, 0),
        Op::Write(vcpu, 3, 0),
        Op::Resume(vcpu),
    ]
}

fn x0(value: u64, advance_pc: bool) -> Resolution {
    let mut writes = heapless::Vec::new();
    writes
        .push(RegisterWrite {
            register: GpRegister::new(0).unwrap(),
            value,
        })
        .unwrap();
    Resolution::Emulate { writes, advance_pc }
}

fn nothing(advance_pc: bool) -> Resolution {
    Resolution::Emulate {
        writes: heapless::Vec::new(),
        advance_pc,
    }
}

fn hvc(vmm: &mut Vmm<'_, Fake>, vcpu: u32, args: &[u64]) -> Result<Resolution, FaultError> {
    let mut words = [0; 4];
    words[..args.len()].copy_from_slice(args);
    block_on(vmm.handle(
        vcpu,
        GuestFault::Hvc {
            imm: 0,
            args: words,
        },
    ))
}

#[test]
fn boot_loads_the_kernel_writes_a_device_tree_and_the_boot_count_and_starts_vcpu_0() {
    let mut vmm = booted(2);
    let mut expected = vec![
        Op::Load(GuestPayload::Kernel, PC),
        Op::Load(GuestPayload::DeviceTree, TREE),
    ];
    expected.extend(start_ops(0, PC, TREE));
    // The initrd is asked for (on the first 2 MiB boundary after the kernel); there is none.
    expected.insert(1, Op::Load(GuestPayload::Initrd, RAM + 0x40_0000));
    assert_eq!(take(&mut vmm), expected);
    assert_eq!(vmm.machine().memory[&(RAM + 0x10_0000)], 1);
    let tree = written_tree(&mut vmm);
    let tree = fdt::Fdt::new(&tree).unwrap();
    let region = tree.memory().regions().next().unwrap();
    assert_eq!(
        (region.starting_address as u64, region.size),
        (RAM, Some(16 << 20))
    );
    assert_eq!(tree.cpus().count(), 2);
    let psci = tree.find_node("/psci").unwrap();
    assert_eq!(psci.property("method").unwrap().as_str(), Some("hvc"));
    assert!(
        psci.compatible()
            .unwrap()
            .all()
            .any(|c| c == "arm,psci-1.0")
    );
    let uart = tree.find_node("/pl011@9000000").unwrap();
    let reg = uart.reg().unwrap().next().unwrap();
    assert_eq!(reg.starting_address as u64, 0x0900_0000);
    assert_eq!(tree.chosen().bootargs(), Some(""));
    let chosen = tree.find_node("/chosen").unwrap();
    assert!(chosen.property("linux,initrd-start").is_none());
    // The GICv3: distributor and two redistributors (128 KiB each), the interrupt parent.
    let gic = tree.find_node("/intc@8000000").unwrap();
    assert!(gic.compatible().unwrap().all().any(|c| c == "arm,gic-v3"));
    assert!(gic.property("interrupt-controller").is_some());
    let regs: Vec<_> = gic
        .reg()
        .unwrap()
        .map(|r| (r.starting_address as u64, r.size))
        .collect();
    assert_eq!(
        regs,
        [(0x0800_0000, Some(0x1_0000)), (0x080a_0000, Some(0x4_0000))]
    );
    let cells = |node: &fdt::node::FdtNode<'_, '_>, name: &str| -> Vec<u32> {
        node.property(name)
            .unwrap()
            .value
            .chunks(4)
            .map(|c| u32::from_be_bytes(c.try_into().unwrap()))
            .collect()
    };
    let root = tree.find_node("/").unwrap();
    assert_eq!(cells(&root, "interrupt-parent"), cells(&gic, "phandle"));
    // The timer's PPIs: secure, non-secure physical, virtual (27 = PPI 11), hypervisor.
    let timer = tree.find_node("/timer").unwrap();
    assert_eq!(
        cells(&timer, "interrupts"),
        [1, 13, 4, 1, 14, 4, 1, 11, 4, 1, 10, 4]
    );
    // The console: SPI 1 (INTID 33) and its clock.
    assert_eq!(cells(&uart, "interrupts"), [0, 1, 4]);
    let clock = tree.find_node("/apb-pclk").unwrap();
    assert_eq!(cells(&uart, "clocks")[0], cells(&clock, "phandle")[0]);
}

#[test]
fn the_command_line_and_the_initrd_go_into_chosen() {
    let cmdline = "console=ttyAMA0 root=/dev/ram0 capvisor.test=\"a b\"";
    // A kernel whose image_size (with its BSS) ends past the first 2 MiB boundary after it.
    let config = GuestConfig {
        cmdline,
        image_size: 0x20_0001,
        ..config(1)
    };
    let fake = Fake {
        initrd: Some(0x1234),
        ..Fake::default()
    };
    let mut vmm = Vmm::new(fake, config);
    block_on(vmm.boot()).unwrap();
    let initrd = RAM + 0x60_0000;
    let ops = take(&mut vmm);
    assert_eq!(
        ops[..2],
        [
            Op::Load(GuestPayload::Kernel, PC),
            Op::Load(GuestPayload::Initrd, initrd),
        ]
    );
    let tree = written_tree(&mut vmm);
    let tree = fdt::Fdt::new(&tree).unwrap();
    assert_eq!(tree.chosen().bootargs(), Some(cmdline));
    let chosen = tree.find_node("/chosen").unwrap();
    let cell = |name| {
        let value = chosen.property(name).unwrap().value;
        u64::from_be_bytes(value.try_into().unwrap())
    };
    assert_eq!(cell("linux,initrd-start"), initrd);
    assert_eq!(cell("linux,initrd-end"), initrd + 0x1234);
}

#[test]
fn the_longest_command_line_fits_the_tree() {
    let cmdline = "x".repeat(capvisor_image::MAX_CMDLINE);
    let config = GuestConfig {
        cmdline: &cmdline,
        vcpus: 8,
        ..config(8)
    };
    let fake = Fake {
        initrd: Some(1),
        ..Fake::default()
    };
    let mut vmm = Vmm::new(fake, config);
    block_on(vmm.boot()).unwrap();
    let tree = written_tree(&mut vmm);
    let tree = fdt::Fdt::new(&tree).unwrap();
    assert_eq!(tree.chosen().bootargs(), Some(cmdline.as_str()));
    assert_eq!(tree.cpus().count(), 8);
}

#[test]
fn a_guest_device_tree_is_loaded_instead() {
    let mut vmm = Vmm::new(
        Fake {
            dtb: true,
            ..Fake::default()
        },
        config(1),
    );
    block_on(vmm.boot()).unwrap();
    assert_eq!(vmm.machine().memory.len(), 1);
}

/// A data abort at `ipa` with syndrome `access`, without a stored value (reads, and writes the
/// kernel could not decode).
fn data_abort(ipa: u64, access: Option<DataAccess>) -> GuestFault {
    let iss_write = access.is_some_and(|a| a.write);
    GuestFault::DataAbort {
        ipa: Ipa::new(ipa),
        far: Far::new(ipa),
        access,
        esr: Esr::new(0x9200_0000 | if iss_write { 1 << 6 } else { 0 }),
        write_value: None,
    }
}

/// A write of `value` at `ipa` with syndrome `access`, as the kernel reports it: the value
/// comes with the fault, so the VMM reads no register.
fn data_write(ipa: u64, access: Option<DataAccess>, value: u64) -> GuestFault {
    match data_abort(ipa, access) {
        GuestFault::DataAbort {
            ipa,
            far,
            access,
            esr,
            ..
        } => GuestFault::DataAbort {
            ipa,
            far,
            access,
            esr,
            write_value: Some(value),
        },
        _ => unreachable!(),
    }
}

fn byte_access(write: bool, register: u8) -> Option<DataAccess> {
    Some(DataAccess {
        write,
        size: AccessSize::Byte,
        register: GpRegister::new(register).unwrap(),
        sign_extend: false,
        sixty_four: false,
        acquire_release: false,
    })
}

#[test]
fn ram_faults_go_to_the_memory_manager() {
    let mut vmm = booted(1);
    take(&mut vmm);
    let fault = data_write(RAM + 0x1234, byte_access(true, 1), 0);
    assert_eq!(block_on(vmm.handle(0, fault)), Ok(Resolution::Resume));
    let fault = GuestFault::InstructionAbort {
        ipa: Ipa::new(PC),
        far: Far::new(PC),
        esr: Esr::new(0x8200_0007),
    };
    assert_eq!(block_on(vmm.handle(0, fault)), Ok(Resolution::Resume));
    assert_eq!(
        take(&mut vmm),
        [
            Op::Fault(0, RAM + 0x1234, Access::Write),
            Op::Fault(0, PC, Access::Execute)
        ]
    );
}

#[test]
fn the_console_prints_lines_and_reads_idle_with_its_primecell_id() {
    let mut vmm = booted(1);
    take(&mut vmm);
    for byte in b"ok\n" {
        let fault = data_write(0x0900_0000, byte_access(true, 5), u64::from(*byte) | 0x100);
        assert_eq!(block_on(vmm.handle(0, fault)), Ok(nothing(true)));
    }
    assert_eq!(take(&mut vmm), [Op::Print("ok".into())]);
    // UARTFR: transmit and receive FIFOs empty; other registers read zero.
    let fault = data_abort(0x0900_0018, byte_access(false, 0));
    assert_eq!(block_on(vmm.handle(0, fault)), Ok(x0(0x90, true)));
    let fault = data_abort(0x0900_0030, byte_access(false, 0));
    assert_eq!(block_on(vmm.handle(0, fault)), Ok(x0(0, true)));
    // The PL011's peripheral ID (0x00141011) and PrimeCell ID (0xb105f00d), a byte a word.
    let id: Vec<u64> = (0..8)
        .map(|n| {
            let fault = data_abort(0x0900_0fe0 + 4 * n, byte_access(false, 0));
            match block_on(vmm.handle(0, fault)) {
                Ok(Resolution::Emulate { writes, .. }) => writes[0].value,
                other => panic!("{other:?}"),
            }
        })
        .collect();
    assert_eq!(id, [0x11, 0x10, 0x14, 0x00, 0x0d, 0xf0, 0x05, 0xb1]);
}

#[test]
fn other_addresses_get_the_contract_external_abort() {
    let mut vmm = booted(1);
    vmm.machine().set_pstate(0x3c5);
    let fault = data_abort(0x10_0000_0000, None);
    let expected = Resolution::InjectAbort {
        esr: Esr::new(0x9600_0010),
        far: Far::new(0x10_0000_0000),
    };
    assert_eq!(block_on(vmm.handle(0, fault)), Ok(expected));
    vmm.machine().set_pstate(0);
    let fault = GuestFault::InstructionAbort {
        ipa: Ipa::new(0x10_0000_0000),
        far: Far::new(0x10_0000_0000),
        esr: Esr::new(0x8200_0010),
    };
    let expected = Resolution::InjectAbort {
        esr: Esr::new(0x8200_0010),
        far: Far::new(0x10_0000_0000),
    };
    assert_eq!(block_on(vmm.handle(0, fault)), Ok(expected));
}

/// An unaligned access to an emulated device is the guest's alignment fault (Device memory
/// faults for alignment at stage 1, before stage 2: Arm ARM R_XCHFJ), with its WnR; an aligned
/// one is emulated.
#[test]
fn an_unaligned_device_access_gets_the_alignment_fault() {
    let mut vmm = booted(1);
    vmm.machine().set_pstate(0x3c5);
    let word = |write| {
        byte_access(write, 1).map(|a| DataAccess {
            size: AccessSize::Word,
            ..a
        })
    };
    let fault = data_write(0x0900_0002, word(true), 0);
    let expected = Resolution::InjectAbort {
        esr: Esr::new(0x9600_0061),
        far: Far::new(0x0900_0002),
    };
    assert_eq!(block_on(vmm.handle(0, fault)), Ok(expected));
    vmm.machine().set_pstate(0);
    let fault = data_abort(0x0900_0fe1, word(false));
    let expected = Resolution::InjectAbort {
        esr: Esr::new(0x9200_0021),
        far: Far::new(0x0900_0fe1),
    };
    assert_eq!(block_on(vmm.handle(0, fault)), Ok(expected));
    assert!(matches!(
        block_on(vmm.handle(0, data_abort(0x0900_0fe0, word(false)))),
        Ok(Resolution::Emulate { .. })
    ));
}

#[test]
fn psci_version_features_and_unknown_functions() {
    let mut vmm = booted(1);
    assert_eq!(hvc(&mut vmm, 0, &[0x8400_0000]), Ok(x0(0x1_0001, false)));
    let features = u64::from(psci::FEATURES);
    assert_eq!(hvc(&mut vmm, 0, &[features, 0xC400_0003]), Ok(x0(0, false)));
    assert_eq!(
        hvc(&mut vmm, 0, &[features, 0x8400_0001]),
        Ok(x0(psci::NOT_SUPPORTED, false))
    );
    assert_eq!(hvc(&mut vmm, 0, &[0x8400_0055]), Ok(x0(u64::MAX, false)));
    let smc = GuestFault::Smc {
        imm: 0,
        args: [0x8400_0000, 0, 0, 0],
    };
    assert_eq!(block_on(vmm.handle(0, smc)), Ok(x0(0x1_0001, true)));
    // A WFI sleeps until an interrupt (the kernel decides when); a WFE is stepped over.
    let wfi = GuestFault::Wait { event: false };
    assert_eq!(
        block_on(vmm.handle(0, wfi)),
        Ok(Resolution::WaitForInterrupt)
    );
    let wfe = GuestFault::Wait { event: true };
    assert_eq!(block_on(vmm.handle(0, wfe)), Ok(nothing(true)));
}

#[test]
fn cpu_on_starts_a_secondary_once_and_checks_its_target() {
    let mut vmm = booted(2);
    take(&mut vmm);
    let on = u64::from(psci::CPU_ON_64);
    assert_eq!(
        hvc(&mut vmm, 0, &[on, 1, RAM + 0x30_0000, 7]),
        Ok(x0(0, false))
    );
    assert_eq!(take(&mut vmm), start_ops(1, RAM + 0x30_0000, 7));
    assert_eq!(
        hvc(&mut vmm, 0, &[on, 1, RAM, 0]),
        Ok(x0(psci::ALREADY_ON, false))
    );
    assert_eq!(
        hvc(&mut vmm, 0, &[on, 0, RAM, 0]),
        Ok(x0(psci::ALREADY_ON, false))
    );
    assert_eq!(
        hvc(&mut vmm, 0, &[on, 2, RAM, 0]),
        Ok(x0(psci::INVALID_PARAMETERS, false))
    );
    hvc(&mut vmm, 1, &[u64::from(psci::CPU_OFF)]).unwrap();
    assert_eq!(take(&mut vmm), [Op::Suspend(1)]);
    assert_eq!(hvc(&mut vmm, 0, &[on, 1, RAM, 0]), Ok(x0(0, false)));
}

#[test]
fn system_reset_stops_the_vcpus_resets_reloads_and_counts_the_boot() {
    let mut vmm = booted(2);
    let on = u64::from(psci::CPU_ON_64);
    hvc(&mut vmm, 0, &[on, 1, RAM, 0]).unwrap();
    take(&mut vmm);
    assert_eq!(
        hvc(&mut vmm, 0, &[u64::from(psci::SYSTEM_RESET)]),
        Ok(nothing(false))
    );
    let ops = take(&mut vmm);
    assert_eq!(
        ops[..3],
        [
            Op::Suspend(1),
            Op::Reset(0),
            Op::Print("vmm: guest t reset (policy DropAllMappings)".into())
        ]
    );
    assert_eq!(ops[3], Op::Load(GuestPayload::Kernel, PC));
    assert_eq!(ops[ops.len() - 8..], start_ops(0, PC, TREE));
    assert_eq!(vmm.machine().memory[&(RAM + 0x10_0000)], 2);
    assert_eq!(vmm.boots(), 2);
}

#[test]
fn system_off_stops_every_vcpu_and_prints() {
    let mut vmm = booted(2);
    hvc(&mut vmm, 0, &[u64::from(psci::CPU_ON_64), 1, RAM, 0]).unwrap();
    take(&mut vmm);
    hvc(&mut vmm, 1, &[u64::from(psci::SYSTEM_OFF)]).unwrap();
    assert_eq!(
        take(&mut vmm),
        [
            Op::Suspend(0),
            Op::Suspend(1),
            Op::Print("vmm: guest t powered off".into())
        ]
    );
}

#[test]
fn system_registers_read_as_zero_and_other_exits_stop_the_vcpu() {
    let mut vmm = booted(1);
    let read = capvisor_ipc::protocols::fault::SysRegAccess::from_iss((3 << 20) | (4 << 5) | 1);
    assert_eq!(
        block_on(vmm.handle(0, GuestFault::SysReg(read))),
        Ok(Resolution::Emulate {
            writes: heapless::Vec::from_slice(&[RegisterWrite {
                register: GpRegister::new(4).unwrap(),
                value: 0
            }])
            .unwrap(),
            advance_pc: true
        })
    );
    let other = GuestFault::Other {
        esr: Esr::new(0x0200_0000),
    };
    take(&mut vmm);
    vmm.machine()
        .set_register(0, VcpuRegister::Pc.code(), 0x4020_1234);
    assert_eq!(block_on(vmm.handle(0, other)), Err(FaultError::Unhandled));
    // The message has no PC: the report reads it from the vCPU.
    assert_eq!(
        take(&mut vmm),
        [Op::Print(
            "vmm: guest t vcpu 0: unhandled exit ESR 0x2000000 at pc 0x40201234".into()
        )]
    );
}

/// An MMIO write whose value did not come with the fault (no kernel sends one) is not guessed:
/// the vCPU stops.
#[test]
fn a_device_write_without_its_value_is_unhandled() {
    let mut vmm = booted(1);
    take(&mut vmm);
    vmm.machine().set_register(0, 5, u64::from(b'x'));
    let fault = data_abort(0x0900_0000, byte_access(true, 5));
    assert_eq!(block_on(vmm.handle(0, fault)), Err(FaultError::Unhandled));
    let fault = data_abort(GICD_BASE + 0x0420, byte_access(true, 5));
    assert_eq!(block_on(vmm.handle(0, fault)), Err(FaultError::Unhandled));
    assert!(take(&mut vmm).is_empty());
}

#[test]
fn quick_calls_answer_only_the_calls_that_change_nothing() {
    let vmm = booted(1);
    let call = |function: u32, x1: u64| [u64::from(function), x1, 0, 0];
    assert_eq!(
        vmm.quick_call(false, call(psci::VERSION, 0)),
        Some((psci::PSCI_1_1, false))
    );
    assert_eq!(
        vmm.quick_call(true, call(psci::FEATURES, u64::from(psci::CPU_ON_64))),
        Some((psci::SUCCESS, true))
    );
    assert_eq!(
        vmm.quick_call(false, call(psci::AFFINITY_INFO_64, 0)),
        Some((psci::ON, false))
    );
    assert_eq!(
        vmm.quick_call(false, call(0x8400_1234, 0)),
        Some((psci::NOT_SUPPORTED, false))
    );
    for function in [
        psci::CPU_ON_32,
        psci::CPU_ON_64,
        psci::CPU_OFF,
        psci::SYSTEM_OFF,
        psci::SYSTEM_RESET,
    ] {
        assert_eq!(vmm.quick_call(false, call(function, 0)), None);
    }
}

/// The answer to `x0..x3` by HVC from vCPU 0, as x0.
fn answer(vmm: &mut Vmm<'_, Fake>, args: &[u64]) -> u64 {
    match hvc(vmm, 0, args) {
        Ok(Resolution::Emulate { writes, .. }) if writes.len() == 1 => writes[0].value,
        other => panic!("{args:x?}: {other:?}"),
    }
}

#[test]
fn function_ids_are_w0_and_smc32_arguments_are_w_registers() {
    let mut vmm = booted(2);
    // W0 is the function ID, whatever the upper half of X0 holds.
    assert_eq!(answer(&mut vmm, &[0xdead_beef_8400_0000]), psci::PSCI_1_1);
    // PSCI_FEATURES is SMC32: its argument is W1.
    let features = u64::from(psci::FEATURES);
    let junk = 0xffff_ffff_0000_0000;
    for function in [
        psci::AFFINITY_INFO_32,
        psci::AFFINITY_INFO_64,
        psci::CPU_ON_64,
    ] {
        assert_eq!(answer(&mut vmm, &[features, u64::from(function)]), 0);
        assert_eq!(answer(&mut vmm, &[features, junk | u64::from(function)]), 0);
    }
    assert_eq!(
        answer(&mut vmm, &[features, u64::from(smccc::ARCH_FEATURES)]),
        psci::NOT_SUPPORTED
    );
    // CPU_ON (SMC32): target, entry and context are W1–W3; the SMC64 form takes all 64 bits,
    // and no vCPU has that affinity.
    take(&mut vmm);
    let on_32 = u64::from(psci::CPU_ON_32);
    let call = [on_32, junk | 1, junk | (RAM + 0x30_0000), junk | 7];
    assert_eq!(answer(&mut vmm, &call), psci::SUCCESS);
    assert_eq!(take(&mut vmm), start_ops(1, RAM + 0x30_0000, 7));
    hvc(&mut vmm, 1, &[u64::from(psci::CPU_OFF)]).unwrap();
    let on_64 = u64::from(psci::CPU_ON_64);
    assert_eq!(
        answer(&mut vmm, &[on_64, junk | 1, RAM, 0]),
        psci::INVALID_PARAMETERS
    );
}

#[test]
fn affinity_info_says_which_vcpus_are_on_and_checks_its_arguments() {
    let mut vmm = booted(2);
    let (info_32, info_64) = (
        u64::from(psci::AFFINITY_INFO_32),
        u64::from(psci::AFFINITY_INFO_64),
    );
    // vCPU 0 runs; vCPU 1 was never started.
    assert_eq!(answer(&mut vmm, &[info_64, 0, 0]), psci::ON);
    assert_eq!(answer(&mut vmm, &[info_64, 1, 0]), psci::OFF);
    assert_eq!(answer(&mut vmm, &[info_32, 1, 0]), psci::OFF);
    // No such vCPU, no such level, bits outside the affinity fields.
    for (target, level) in [(2, 0), (0x100, 0), (0, 4), (1 << 24, 0), (1 << 63, 0)] {
        assert_eq!(
            answer(&mut vmm, &[info_64, target, level]),
            psci::INVALID_PARAMETERS,
            "target {target:#x} level {level}"
        );
    }
    // Levels 1–3 name a group: the lower fields are ignored; vCPU 0 is on in it.
    assert_eq!(answer(&mut vmm, &[info_64, 0x1, 1]), psci::ON);
    assert_eq!(answer(&mut vmm, &[info_64, 0xff, 1]), psci::ON);
    assert_eq!(
        answer(&mut vmm, &[info_64, 0x1_0000, 1]),
        psci::INVALID_PARAMETERS
    );
    assert_eq!(answer(&mut vmm, &[info_64, 0x12_3456, 3]), psci::ON);
    assert_eq!(
        answer(&mut vmm, &[info_64, 1 << 32, 3]),
        psci::INVALID_PARAMETERS
    );
    // SMC32: W1 and W2 only; SMC64: all of X1 and X2.
    let junk = 0xffff_ffff_0000_0000;
    assert_eq!(answer(&mut vmm, &[info_32, junk | 1, junk]), psci::OFF);
    assert_eq!(
        answer(&mut vmm, &[info_64, junk | 1, 0]),
        psci::INVALID_PARAMETERS
    );
    assert_eq!(
        answer(&mut vmm, &[info_64, 1, junk]),
        psci::INVALID_PARAMETERS
    );
    // ON from CPU_ON until CPU_OFF.
    hvc(&mut vmm, 0, &[u64::from(psci::CPU_ON_64), 1, RAM, 0]).unwrap();
    assert_eq!(answer(&mut vmm, &[info_64, 1, 0]), psci::ON);
    hvc(&mut vmm, 1, &[u64::from(psci::CPU_OFF)]).unwrap();
    assert_eq!(answer(&mut vmm, &[info_64, 1, 0]), psci::OFF);
    // A group is on while any vCPU in it is.
    assert_eq!(answer(&mut vmm, &[info_64, 0, 1]), psci::ON);
    hvc(&mut vmm, 0, &[u64::from(psci::CPU_OFF)]).unwrap();
    assert_eq!(answer(&mut vmm, &[info_64, 0, 1]), psci::OFF);
}

#[test]
fn smccc_arch_features_answers_the_workarounds_from_the_kernel() {
    let features = u64::from(smccc::ARCH_FEATURES);
    let workarounds = [
        smccc::ARCH_WORKAROUND_1,
        smccc::ARCH_WORKAROUND_2,
        smccc::ARCH_WORKAROUND_3,
    ];
    let minus = |n: i64| n as u64;
    // (the kernel's answers, what ARCH_FEATURES says, what a call of each returns)
    let cases = [
        // cortex-a57 (and unknown parts): nothing to offer.
        ([-1, -1, -1], [minus(-1); 3], [smccc::NOT_SUPPORTED; 3]),
        // neoverse-n1, cortex-a710, neoverse-v1: WA1 not needed, WA3 done on every exit.
        ([1, -1, 0], [1, minus(-1), 0], [0, smccc::NOT_SUPPORTED, 0]),
        // max (CSV2_3): not affected.
        ([1, -1, 1], [1, minus(-1), 1], [0, smccc::NOT_SUPPORTED, 0]),
        // WA2 not required: its call is a no-op; Linux's "1" is said as -2.
        (
            [0, -2, -1],
            [0, minus(-2), minus(-1)],
            [0, 0, smccc::NOT_SUPPORTED],
        ),
        (
            [0, 1, -1],
            [0, minus(-2), minus(-1)],
            [0, 0, smccc::NOT_SUPPORTED],
        ),
        // Values the VMM cannot honour (WA2 0 would need a switchable mitigation) are -1.
        ([7, 0, -9], [minus(-1); 3], [smccc::NOT_SUPPORTED; 3]),
    ];
    for (kernel, queried, called) in cases {
        let mut vmm = Vmm::new(
            Fake::default(),
            GuestConfig {
                workarounds: Workarounds::from_kernel(kernel),
                ..config(1)
            },
        );
        block_on(vmm.boot()).unwrap();
        for ((function, query), call) in workarounds.iter().zip(queried).zip(called) {
            let function = u64::from(*function);
            assert_eq!(answer(&mut vmm, &[features, function]), query, "{kernel:?}");
            // SMCCC_ARCH_FEATURES is SMC32: W1 only.
            let junk = 0xffff_ffff_0000_0000 | function;
            assert_eq!(answer(&mut vmm, &[features, junk]), query, "{kernel:?}");
            assert_eq!(answer(&mut vmm, &[function, 1]), call, "{kernel:?}");
        }
        // SMCCC 1.1: SMCCC_VERSION and SMCCC_ARCH_FEATURES exist; nothing else in the range.
        assert_eq!(answer(&mut vmm, &[u64::from(smccc::VERSION)]), 0x1_0001);
        for function in [smccc::VERSION, smccc::ARCH_FEATURES] {
            assert_eq!(answer(&mut vmm, &[features, u64::from(function)]), 0);
        }
        for function in [0x8000_0002, 0x8000_00ff, u64::from(psci::VERSION)] {
            assert_eq!(
                answer(&mut vmm, &[features, function]),
                smccc::NOT_SUPPORTED
            );
        }
    }
}

#[test]
fn a_fault_from_a_badge_that_names_no_vcpu_is_refused_not_a_panic() {
    let mut vmm = booted(2);
    take(&mut vmm);
    for vcpu in [2, 7, 8, 100, u32::MAX] {
        assert_eq!(
            hvc(&mut vmm, vcpu, &[u64::from(psci::CPU_OFF)]),
            Err(FaultError::Unhandled),
            "vCPU {vcpu}"
        );
        let fault = GuestFault::Wait { event: false };
        assert_eq!(
            block_on(vmm.handle(vcpu, fault)),
            Err(FaultError::Unhandled)
        );
    }
    assert!(take(&mut vmm).is_empty());
    // vCPU 0 is still on.
    assert_eq!(
        answer(&mut vmm, &[u64::from(psci::AFFINITY_INFO_64), 0, 0]),
        psci::ON
    );
}

#[test]
fn sgi_register_values_decode_to_their_targets() {
    use crate::vmm::gic_sgi::{Sgi, decode};
    // SGI 3 to Aff0 0 and 2 of a 4-vCPU guest.
    assert_eq!(
        decode(0x0300_0005, 1, 4),
        Sgi {
            intid: 3,
            targets: 0b101
        }
    );
    // IRM: everyone but the sender.
    assert_eq!(
        decode((1 << 40) | (7 << 24), 1, 4),
        Sgi {
            intid: 7,
            targets: 0b1101
        }
    );
    // Targets beyond the guest's vCPUs, or in another affinity or range, are dropped.
    assert_eq!(decode(0xfff0, 0, 4).targets, 0);
    assert_eq!(decode((1 << 16) | 1, 0, 4).targets, 0);
    assert_eq!(decode((1 << 32) | 1, 0, 4).targets, 0);
    assert_eq!(decode((1 << 48) | 1, 0, 4).targets, 0);
    assert_eq!(decode((1 << 44) | 1, 0, 4).targets, 0);
}

#[test]
fn a_guest_sgi_write_is_delivered_to_each_target_and_emulated() {
    use capvisor_ipc::protocols::fault::SysRegAccess;
    let mut vmm = booted(2);
    // vCPU 0's guest gives SGI 1 priority 0x90 (GICR_IPRIORITYR0 byte 1); vCPU 1's keeps the
    // reset value, 0.
    let priority = data_write(GICR_BASE + SGI_FRAME + 0x0401, byte_access(true, 6), 0x90);
    assert_eq!(block_on(vmm.handle(0, priority)), Ok(nothing(true)));
    take(&mut vmm);
    // x5 holds SGI 1 to vCPUs 0 and 1.
    let resolution = icc_write(&mut vmm, ICC_SGI1R, 0x0100_0003).unwrap();
    assert_eq!(resolution, nothing(true));
    assert_eq!(
        take(&mut vmm),
        [Op::Inject(0, 1, 0x90), Op::Inject(1, 1, 0)]
    );
    // Another system register write (CRm 12, not 11) is still ignored.
    let other = SysRegAccess {
        op0: 3,
        op1: 0,
        crn: 12,
        crm: 12,
        op2: ICC_SGI1R,
        register: GpRegister::new(5).unwrap(),
        write: true,
    };
    assert_eq!(
        block_on(vmm.handle(0, GuestFault::SysReg(other))),
        Ok(nothing(true))
    );
    assert!(take(&mut vmm).is_empty());
}

#[test]
fn a_waiting_guest_shows_the_line_it_began() {
    let mut vmm = booted(1);
    take(&mut vmm);
    for byte in b"/ # " {
        let fault = data_write(0x0900_0000, byte_access(true, 5), u64::from(*byte));
        assert_eq!(block_on(vmm.handle(0, fault)), Ok(nothing(true)));
    }
    assert!(take(&mut vmm).is_empty());
    let wait = GuestFault::Wait { event: false };
    let sleep = Ok(Resolution::WaitForInterrupt);
    assert_eq!(block_on(vmm.handle(0, wait)), sleep);
    assert_eq!(take(&mut vmm), [Op::Partial("/ # ".into())]);
    // Nothing more to show on the next wait.
    assert_eq!(block_on(vmm.handle(0, wait)), sleep);
    assert!(take(&mut vmm).is_empty());
}

#[test]
fn an_sgi_to_a_vcpu_with_full_list_registers_is_retried_not_lost() {
    let mut vmm = booted(2);
    take(&mut vmm);
    vmm.machine().fill_list_registers(1);
    // SGI 2 to vCPUs 0 and 1: vCPU 1 is full.
    assert_eq!(
        icc_write(&mut vmm, ICC_SGI1R, 0x0200_0003),
        Ok(nothing(true))
    );
    assert_eq!(take(&mut vmm), [Op::Inject(0, 2, 0)]);
    // Still full at the next exit: nothing yet, nothing printed.
    let wait = GuestFault::Wait { event: false };
    block_on(vmm.handle(0, wait)).unwrap();
    assert!(take(&mut vmm).is_empty());
    // Room again: the next exit (of any vCPU) delivers it, once.
    vmm.machine().drain_list_registers();
    block_on(vmm.handle(0, wait)).unwrap();
    assert_eq!(take(&mut vmm), [Op::Inject(1, 2, 0)]);
    block_on(vmm.handle(0, wait)).unwrap();
    assert!(take(&mut vmm).is_empty());
}

/// A write of ICC_SGI1R_EL1 from x5 sending SGI `intid` to vCPU 0.
fn sgi_to_vcpu0(vmm: &mut Vmm<'_, Fake>, intid: u64) -> Result<Resolution, FaultError> {
    icc_write(vmm, ICC_SGI1R, (intid << 24) | 1)
}

/// ICC_SGI1R_EL1 and ICC_DIR_EL1: op0 3, op1 0, CRn 12, CRm 11, and this op2.
const ICC_SGI1R: u8 = 5;
const ICC_DIR: u8 = 1;

/// vCPU 0's guest writes `value` to the ICC register `op2` names (through x5), which traps.
fn icc_write(vmm: &mut Vmm<'_, Fake>, op2: u8, value: u64) -> Result<Resolution, FaultError> {
    use capvisor_ipc::protocols::fault::SysRegAccess;
    vmm.machine().set_register(0, 5, value);
    let access = SysRegAccess {
        op0: 3,
        op1: 0,
        crn: 12,
        crm: 11,
        op2,
        register: GpRegister::new(5).unwrap(),
        write: true,
    };
    block_on(vmm.handle(0, GuestFault::SysReg(access)))
}

/// A 32-bit access to the GIC at `ipa` through x7; a read's value.
fn gic_word(vmm: &mut Vmm<'_, Fake>, ipa: u64, write: Option<u32>) -> u64 {
    let access = Some(DataAccess {
        write: write.is_some(),
        size: AccessSize::Word,
        register: GpRegister::new(7).unwrap(),
        sign_extend: false,
        sixty_four: false,
        acquire_release: false,
    });
    let fault = match write {
        Some(value) => data_write(ipa, access, u64::from(value)),
        None => data_abort(ipa, access),
    };
    match block_on(vmm.handle(0, fault)).unwrap() {
        Resolution::Emulate { writes, .. } => writes.first().map_or(0, |w| w.value),
        other => panic!("{other:?}"),
    }
}

#[test]
fn active_interrupts_a_guest_deactivates_itself_make_room_and_stay_active() {
    let mut vmm = booted(1);
    take(&mut vmm);
    let lr = |n: u64| VcpuRegister::ListRegister0.code() + n;
    // Four list registers, all holding SGIs 0-3 active (acknowledged, priority dropped, not
    // deactivated: EOImode 1, ICH_VMCR_EL2.VEOIM), and the guest's DIR writes trap.
    let registers = vmm.machine();
    registers.set_register(0, VcpuRegister::ListRegisters.code(), 4);
    registers.set_register(0, VcpuRegister::GicVmcr.code(), 1 << 9);
    registers.set_register(0, VcpuRegister::GicDeactivationTrapped.code(), 1);
    for n in 0..4 {
        registers.set_register(0, lr(n), (0b10 << 62) | (1 << 60) | n);
    }
    vmm.machine().fill_list_registers(0);
    // SGI 5: they are taken out of the list registers, and SGI 5 goes in.
    assert_eq!(sgi_to_vcpu0(&mut vmm, 5), Ok(nothing(true)));
    let mut expected: Vec<Op> = (0..4).map(|n| Op::Write(0, lr(n), 0)).collect();
    expected.push(Op::Inject(0, 5, 0));
    assert_eq!(take(&mut vmm), expected);
    // They are still active: GICR_ISACTIVER0 says so; SGI 5 is pending in no list register of
    // the fake, so ISPENDR0 reads 0.
    assert_eq!(
        gic_word(&mut vmm, GICR_BASE + SGI_FRAME + 0x0300, None),
        0xf
    );
    // SGI 2 again while it is active: it waits until the guest deactivates it.
    assert_eq!(sgi_to_vcpu0(&mut vmm, 2), Ok(nothing(true)));
    assert!(take(&mut vmm).is_empty());
    assert_eq!(
        gic_word(&mut vmm, GICR_BASE + SGI_FRAME + 0x0200, None),
        1 << 2
    );
    assert_eq!(icc_write(&mut vmm, ICC_DIR, 2), Ok(nothing(true)));
    assert_eq!(take(&mut vmm), [Op::Inject(0, 2, 0)]);
    assert_eq!(
        gic_word(&mut vmm, GICR_BASE + SGI_FRAME + 0x0300, None),
        0b1011
    );
    // GICR_ICACTIVER0 ends SGI 0's active state too.
    gic_word(&mut vmm, GICR_BASE + SGI_FRAME + 0x0380, Some(1));
    assert_eq!(
        gic_word(&mut vmm, GICR_BASE + SGI_FRAME + 0x0300, None),
        0b1010
    );
    // The VMM's answer to the kernel's "list registers drained": resume.
    assert_eq!(
        block_on(vmm.handle(0, GuestFault::ListRegistersDrained)),
        Ok(Resolution::Resume)
    );
}

#[test]
fn active_interrupts_of_a_guest_that_does_not_deactivate_them_itself_stay() {
    let mut vmm = booted(1);
    take(&mut vmm);
    let lr0 = VcpuRegister::ListRegister0.code();
    let registers = vmm.machine();
    registers.set_register(0, VcpuRegister::ListRegisters.code(), 1);
    registers.set_register(0, VcpuRegister::GicDeactivationTrapped.code(), 1);
    registers.set_register(0, lr0, (0b10 << 62) | 3);
    vmm.machine().fill_list_registers(0);
    // EOImode 0: its EOI deactivates, so SGI 3 must stay in its list register; SGI 4 waits.
    assert_eq!(sgi_to_vcpu0(&mut vmm, 4), Ok(nothing(true)));
    assert!(take(&mut vmm).is_empty());
    // EOImode 1 without trapped deactivation: the same.
    let registers = vmm.machine();
    registers.set_register(0, VcpuRegister::GicVmcr.code(), 1 << 9);
    registers.set_register(0, VcpuRegister::GicDeactivationTrapped.code(), 0);
    assert_eq!(
        block_on(vmm.handle(0, GuestFault::ListRegistersDrained)),
        Ok(Resolution::Resume)
    );
    assert!(take(&mut vmm).is_empty());
    assert_eq!(
        gic_word(&mut vmm, GICR_BASE + SGI_FRAME + 0x0200, None),
        1 << 4
    );
}

#[test]
fn vcpus_are_invoked_by_their_own_capabilities_and_a_missing_or_wrong_one_is_refused() {
    use capvisor_ipc::abi::KernelError;
    use capvisor_ipc::cap::{CPtr, Cap, IrqHandler};
    use capvisor_rt::kernel::Kernel;
    const HANDLER: u64 = 50;
    let mut kernel = Fake::default().kernel.with::<IrqHandler>(HANDLER);
    let mut only_first = [0; MAX_VCPUS];
    only_first[0] = VCPU;
    let mut thread = [0; MAX_VCPUS];
    thread[0] = THREAD;
    let caps = Vcpus::from_slots(&only_first, &thread);
    let handler = Cap::from_cptr(CPtr::new(HANDLER));
    assert_eq!(caps.with(&mut kernel).forward_irq(handler, 0, 33), Ok(()));
    assert_eq!(
        kernel.take_log(),
        [fake::Op::ForwardIrq {
            handler: HANDLER,
            vcpu: VCPU,
            intid: 33
        }]
    );
    // vCPU 1 has no capability: refused before the kernel is asked.
    assert_eq!(
        caps.with(&mut kernel).forward_irq(handler, 1, 33),
        Err(KernelError::InvalidSlot)
    );
    assert_eq!(
        caps.with(&mut kernel).resume(1),
        Err(KernelError::InvalidSlot)
    );
    assert!(kernel.log().is_empty());
    // A thread's slot named as a vCPU: the kernel refuses the wrong type.
    let swapped = Vcpus::from_slots(&thread, &only_first);
    assert_eq!(
        swapped.with(&mut kernel).read_register(0, 0),
        Err(KernelError::WrongType)
    );
    assert_eq!(
        swapped.with(&mut kernel).resume(0),
        Err(KernelError::WrongType)
    );
    assert_eq!(kernel.free_slots(), 0);
}

//! The VMM's logic, apart from the kernel: booting the guest as the guest contract says
//! (`docs/guests.md`), PSCI 1.1 and the SMCCC 1.1 architecture calls over HVC/SMC (answered in
//! [`crate::calls`]; this file starts and stops the vCPUs they ask for), the console, and routing
//! every other fault (RAM to the memory manager, the rest an injected
//! external abort). A [`Machine`] performs the effects (memory manager calls, the console, and
//! the vCPUs' registers and threads through the runtime's typed `Kernel`), so the rules are
//! tested on the host, against the shared fake kernel.

use capvisor_ipc::abi::{KernelError, VcpuRegister};
use capvisor_ipc::protocol::Error;
use capvisor_ipc::protocols::fault::{
    DataAccess, FaultError, GpRegister, GuestFault, RegisterWrite, Resolution,
};
use capvisor_ipc::protocols::memmgr::{FaultOutcome, GuestPayload, MemError, ResetPolicy};
use capvisor_ipc::types::{Access, Esr, Far};
use capvisor_rt::kernel::Kernel;

use crate::calls::{self, Call, Online, Workarounds, psci};
use crate::fdt;
use crate::vcpus::Invoker;
use crate::vgic::Vgic;

/// The most vCPUs of a guest.
pub const MAX_VCPUS: usize = capvisor_ipc::bootinfo::MAX_GUEST_VCPUS;
/// Where the boot count goes, as an offset from RAM base (IPA `0x4010_0000` in the contract),
/// for a kernel loaded above it (`text_offset` past it, like the test guests'; a Linux `Image`
/// with `text_offset` 0 gets none).
pub const BOOT_COUNT_OFFSET: u64 = 0x10_0000;

/// Exception classes of an injected abort (Arm ARM DDI 0487, ESR_EL1.EC).
const EC_DATA_SAME_EL: u64 = 0x25;
const EC_DATA_LOWER_EL: u64 = 0x24;
const EC_INSTRUCTION_SAME_EL: u64 = 0x21;
const EC_INSTRUCTION_LOWER_EL: u64 = 0x20;
/// ESR.IL: a 32-bit instruction.
const IL: u64 = 1 << 25;
/// DFSC/IFSC `0b010000`: synchronous external abort, not on a translation table walk.
const EXTERNAL_ABORT: u64 = 0x10;
/// DFSC `0b100001`: alignment fault.
const ALIGNMENT_FAULT: u64 = 0x21;
/// ISS.WnR of a data abort.
const WNR: u64 = 1 << 6;
/// The PL011 data register (UARTDR) offset.
const UARTDR: u64 = 0;
/// The PL011 flag register (UARTFR) offset, and what it reads: transmit FIFO empty (TXFE, bit 7)
/// and receive FIFO empty (RXFE, bit 4) — output is taken at once and there is never input.
const UARTFR: u64 = 0x18;
const UARTFR_IDLE: u64 = (1 << 7) | (1 << 4);
/// The PL011's peripheral and PrimeCell ID registers at 0xFE0–0xFFC, as QEMU's (PL011 TRM,
/// DDI 0183, 3.3.14–3.3.17): an AMBA bus driver identifies the UART by them.
const UART_ID: [u8; 8] = [0x11, 0x10, 0x14, 0x00, 0x0d, 0xf0, 0x05, 0xb1];

/// Why a VMM step failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmmError {
    /// The memory manager refused, or the call failed.
    Memory(Error<MemError>),
    /// The kernel refused.
    Kernel(KernelError),
}

impl From<Error<MemError>> for VmmError {
    fn from(error: Error<MemError>) -> Self {
        Self::Memory(error)
    }
}

impl From<KernelError> for VmmError {
    fn from(error: KernelError) -> Self {
        Self::Kernel(error)
    }
}

/// What the VMM asks of the memory manager and the kernel.
#[allow(
    async_fn_in_trait,
    reason = "single-threaded executor; no Send bound wanted"
)]
pub trait Machine {
    /// `memmgr.load` for this guest.
    ///
    /// # Errors
    /// The memory manager's.
    async fn load(&mut self, payload: GuestPayload, ipa: u64) -> Result<u64, Error<MemError>>;
    /// `memmgr.write_word` for this guest.
    ///
    /// # Errors
    /// The memory manager's.
    async fn write_word(&mut self, ipa: u64, value: u64) -> Result<(), Error<MemError>>;
    /// `memmgr.handle_stage2_fault` for this guest.
    ///
    /// # Errors
    /// The memory manager's.
    async fn stage2_fault(
        &mut self,
        vcpu: u32,
        ipa: u64,
        access: Access,
    ) -> Result<FaultOutcome, Error<MemError>>;
    /// `memmgr.reset_vcpu` for this guest.
    ///
    /// # Errors
    /// The memory manager's.
    async fn reset_vcpu(&mut self, vcpu: u32) -> Result<ResetPolicy, Error<MemError>>;
    /// The kernel, through which the vCPUs are invoked.
    type Kernel: Kernel;
    /// The guest's vCPUs and their threads ([`Vcpus`]), with the kernel to invoke them through.
    fn vcpus(&mut self) -> Invoker<'_, Self::Kernel>;
    /// Prints one line (without its `\n`).
    fn print(&mut self, line: &str);
    /// Prints the start of a line (a prompt the guest waits behind).
    fn print_partial(&mut self, text: &str);
}

/// The guest this VMM runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestConfig<'a> {
    /// Its name.
    pub name: &'a str,
    /// First IPA of RAM.
    pub ram_base: u64,
    /// Bytes of RAM.
    pub ram_size: u64,
    /// The kernel's `text_offset`.
    pub text_offset: u64,
    /// Bytes the kernel occupies from its load address (file size or `image_size`, the larger).
    pub image_size: u64,
    /// vCPUs (1 to 8).
    pub vcpus: u32,
    /// The kernel command line (`/chosen/bootargs`), checked text.
    pub cmdline: &'a str,
    /// What `SMCCC_ARCH_FEATURES` says of the Spectre workarounds (the kernel's answers).
    pub workarounds: Workarounds,
}

/// The VMM of one guest.
#[derive(Debug)]
pub struct Vmm<'a, M> {
    machine: M,
    guest: GuestConfig<'a>,
    gic: Vgic,
    on: Online,
    /// Per target vCPU, the interrupts (a bit per INTID below [`QUEUED`]) made pending but not
    /// yet in its list registers, which were full (or which it still holds active, below):
    /// retried at every exit of any vCPU. None is lost.
    queued: [u128; MAX_VCPUS],
    /// Per vCPU, the active interrupts taken out of its list registers to make room for pending
    /// ones (its guest deactivates them itself: EOImode 1, its ICC_DIR_EL1 writes trap). The
    /// guest's deactivation reaches the VMM and ends them.
    held_active: [u128; MAX_VCPUS],
    boots: u64,
    line: heapless::Vec<u8, 200>,
}

impl<'a, M: Machine> Vmm<'a, M> {
    /// A VMM for `guest`; nothing runs until [`Vmm::boot`].
    pub fn new(machine: M, guest: GuestConfig<'a>) -> Self {
        let vcpus = (guest.vcpus as usize).clamp(1, MAX_VCPUS) as u32;
        Self {
            machine,
            gic: Vgic::new(vcpus),
            guest: GuestConfig { vcpus, ..guest },
            on: Online::default(),
            queued: [0; MAX_VCPUS],
            held_active: [0; MAX_VCPUS],
            boots: 0,
            line: heapless::Vec::new(),
        }
    }

    /// The machine (for the tests' fake).
    #[cfg(test)]
    pub fn machine(&mut self) -> &mut M {
        &mut self.machine
    }

    /// Boot count written so far.
    #[cfg(test)]
    #[must_use]
    pub const fn boots(&self) -> u64 {
        self.boots
    }

    fn in_ram(&self, ipa: u64) -> bool {
        ipa >= self.guest.ram_base && ipa - self.guest.ram_base < self.guest.ram_size
    }

    /// Loads the kernel, the initrd (if any) on the first 2 MiB boundary after the kernel, and a
    /// device tree in the last 2 MiB of RAM, writes the boot count (below a kernel loaded above
    /// it) and starts vCPU 0 at the kernel's entry with `x0` = the device tree (the guest
    /// contract).
    ///
    /// # Errors
    /// The first memory manager or kernel refusal.
    pub async fn boot(&mut self) -> Result<(), VmmError> {
        let base = self.guest.ram_base;
        let entry = base + self.guest.text_offset;
        let tree = capvisor_image::device_tree_ipa(base, self.guest.ram_size)
            .ok_or(VmmError::Memory(Error::Service(MemError::NotGuestRam)))?;
        let kernel = self.machine.load(GuestPayload::Kernel, entry).await?;
        let initrd = match capvisor_image::initrd_ipa(entry, kernel.max(self.guest.image_size)) {
            Some(ipa) => match self.machine.load(GuestPayload::Initrd, ipa).await {
                Ok(size) => Some((ipa, ipa + size)),
                Err(Error::Service(MemError::NoPayload)) => None,
                Err(error) => return Err(error.into()),
            },
            None => return Err(Error::Service(MemError::NotGuestRam).into()),
        };
        match self.machine.load(GuestPayload::DeviceTree, tree).await {
            Ok(_) => {}
            // The manifest gave no device tree: write the contract's own.
            Err(Error::Service(MemError::NoPayload)) => {
                self.write_device_tree(tree, initrd).await?;
            }
            Err(error) => return Err(error.into()),
        }
        self.boots += 1;
        if self.guest.text_offset > BOOT_COUNT_OFFSET {
            self.machine
                .write_word(base + BOOT_COUNT_OFFSET, self.boots)
                .await?;
        }
        self.start(0, entry, tree)?;
        Ok(())
    }

    /// Writes the contract's device tree at `at`, with the command line and the initrd's range
    /// (`[start, end)`) in `/chosen`.
    async fn write_device_tree(
        &mut self,
        at: u64,
        initrd: Option<(u64, u64)>,
    ) -> Result<(), VmmError> {
        let mut tree = [0u8; fdt::MAX_FDT];
        let guest = self.guest;
        let chosen = fdt::Chosen {
            bootargs: guest.cmdline,
            initrd,
        };
        let size = fdt::write(
            &mut tree,
            (guest.ram_base, guest.ram_size),
            guest.vcpus,
            &chosen,
        )
        .ok_or(VmmError::Memory(Error::Service(MemError::BadRange)))?;
        for (n, chunk) in tree[..size].chunks(8).enumerate() {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            let ipa = at + n as u64 * 8;
            self.machine
                .write_word(ipa, u64::from_le_bytes(word))
                .await?;
        }
        Ok(())
    }

    /// Resets `vcpu` (EL1h, DAIF masked, MMU off) and starts it at `entry` with `x0` = `context`;
    /// its MPIDR_EL1 says it is CPU `vcpu` (Aff0), as the device tree's `cpu@n` and PSCI
    /// `CPU_ON` name it.
    fn start(&mut self, vcpu: u32, entry: u64, context: u64) -> Result<(), KernelError> {
        // Its virtual CPU interface starts empty: nothing it held or was waiting for stays.
        self.queued[vcpu as usize] = 0;
        self.held_active[vcpu as usize] = 0;
        let machine = &mut self.machine;
        let mpidr = calls::mpidr(vcpu);
        machine
            .vcpus()
            .write_register(vcpu, VcpuRegister::Reset.code(), 0)?;
        machine
            .vcpus()
            .write_register(vcpu, VcpuRegister::Mpidr.code(), mpidr)?;
        machine
            .vcpus()
            .write_register(vcpu, VcpuRegister::Pc.code(), entry)?;
        machine.vcpus().write_register(vcpu, 0, context)?;
        for register in 1..=3 {
            machine.vcpus().write_register(vcpu, register, 0)?;
        }
        machine.vcpus().resume(vcpu)?;
        self.on.set(vcpu, true);
        Ok(())
    }

    /// Handles a fault of vCPU `vcpu` (its badge's index).
    ///
    /// # Errors
    /// [`FaultError::Unhandled`]: the kernel stops the vCPU. Also the answer to a fault that
    /// names no vCPU of the guest (a badge the kernel never gave a vCPU: a buggy or hostile
    /// sender), which changes nothing.
    pub async fn handle(&mut self, vcpu: u32, fault: GuestFault) -> Result<Resolution, FaultError> {
        if vcpu >= self.guest.vcpus {
            return Err(FaultError::Unhandled);
        }
        self.retry_queued();
        match fault {
            GuestFault::DataAbort {
                ipa,
                far,
                access,
                esr,
                write_value,
            } => {
                let write = access.map_or(esr.raw() & WNR != 0, |a| a.write);
                if self.in_ram(ipa.raw()) {
                    let kind = if write { Access::Write } else { Access::Read };
                    return self.map_ram(vcpu, ipa.raw(), kind).await;
                }
                let offset = ipa.raw().wrapping_sub(fdt::UART_BASE);
                match access {
                    // An unaligned access to a device region: Device memory (and the MMU off
                    // makes every data access Device) faults for alignment at stage 1, before
                    // any stage-2 fault (Arm ARM R_XCHFJ); a CPU that checked stage 2 first
                    // brings it here, and the guest gets the fault it would have taken.
                    Some(access) if far.raw() % u64::from(access.size.bytes()) != 0 => {
                        self.inject(vcpu, false, far, esr.raw() & WNR, ALIGNMENT_FAULT)
                    }
                    Some(access) if offset < fdt::UART_SIZE => {
                        self.uart(offset, access, write_value)
                    }
                    Some(access) if self.gic.contains(ipa.raw()) => {
                        self.gic_access(ipa.raw(), access, write_value)
                    }
                    _ => self.inject(vcpu, false, far, esr.raw() & WNR, EXTERNAL_ABORT),
                }
            }
            GuestFault::InstructionAbort { ipa, far, .. } => {
                if self.in_ram(ipa.raw()) {
                    return self.map_ram(vcpu, ipa.raw(), Access::Execute).await;
                }
                self.inject(vcpu, true, far, 0, EXTERNAL_ABORT)
            }
            GuestFault::Hvc { args, .. } => self.psci(vcpu, args, false).await,
            GuestFault::Smc { args, .. } => self.psci(vcpu, args, true).await,
            GuestFault::Wait { event } => {
                // A guest that waits has said all it will for now: what it wrote of a line (a
                // shell's prompt) is shown.
                self.flush_console();
                if event {
                    // WFE: a spin-wait; stepping past it lets others run first.
                    Ok(emulate(&[], true))
                } else {
                    // WFI: the vCPU sleeps until an interrupt can wake it (the kernel checks).
                    Ok(Resolution::WaitForInterrupt)
                }
            }
            GuestFault::SysReg(access) if access.write && gic_sgi::is_sgi_register(&access) => {
                self.send_sgi(vcpu, access.register)
            }
            GuestFault::SysReg(access) if access.write && is_deactivation(&access) => {
                self.deactivate(vcpu, access.register)
            }
            // The queued interrupts were retried above, with room made where the guest allows.
            GuestFault::ListRegistersDrained => Ok(Resolution::Resume),
            GuestFault::SysReg(access) => {
                let writes = if access.write {
                    &[][..]
                } else {
                    &[(access.register, 0)][..]
                };
                Ok(emulate(writes, true))
            }
            GuestFault::Other { esr } => {
                // The fault message has no PC; its registers have.
                let pc = self
                    .machine
                    .vcpus()
                    .read_register(vcpu, VcpuRegister::Pc.code());
                say(
                    &mut self.machine,
                    format_args!(
                        "vmm: guest {} vcpu {vcpu}: unhandled exit ESR {:#x} at pc {:#x}",
                        self.guest.name,
                        esr.raw(),
                        pc.unwrap_or(0)
                    ),
                );
                Err(FaultError::Unhandled)
            }
        }
    }

    /// A write to ICC_SGI1R_EL1 or ICC_ASGI1R_EL1 (trapped while HCR_EL2.IMO is set): the SGI
    /// becomes pending for each target vCPU, through its list registers.
    fn send_sgi(&mut self, vcpu: u32, register: GpRegister) -> Result<Resolution, FaultError> {
        let value = self.register(vcpu, register)?;
        let sgi = gic_sgi::decode(value, vcpu, self.guest.vcpus);
        for target in (0..self.guest.vcpus).filter(|t| sgi.targets & (1 << t) != 0) {
            self.queued[target as usize] |= 1 << sgi.intid;
        }
        self.retry_queued();
        Ok(emulate(&[], true))
    }

    /// Delivers the queued interrupts: one whose target's list registers are full, or that the
    /// target still holds active, stays queued (Linux waits for its IPIs: none may be lost);
    /// another refusal drops it, once reported.
    fn retry_queued(&mut self) {
        for target in 0..self.guest.vcpus {
            let mut queued = self.queued[target as usize] & !self.held_active[target as usize];
            while queued != 0 {
                let intid = queued.trailing_zeros();
                queued &= queued - 1;
                match self.deliver(target, intid) {
                    Err(KernelError::ListRegistersFull) => continue,
                    Err(error) => say(
                        &mut self.machine,
                        format_args!(
                            "vmm: guest {}: interrupt {intid} to vCPU {target} dropped: {error:?}",
                            self.guest.name
                        ),
                    ),
                    Ok(()) => {}
                }
                self.queued[target as usize] &= !(1 << intid);
            }
        }
    }

    /// Makes `intid` pending in `target`'s list registers at the priority its guest gave it;
    /// when they are full, first makes room by taking out the active interrupts the guest
    /// deactivates itself (`held_active`). Out of line: [`Vmm::retry_queued`] runs at every exit
    /// and almost never has an interrupt to deliver, so its loop should not pay for this one.
    #[inline(never)]
    fn deliver(&mut self, target: u32, intid: u32) -> Result<(), KernelError> {
        let priority = self.gic.priority(target, intid);
        match self.machine.vcpus().inject_irq(target, intid, priority) {
            Err(KernelError::ListRegistersFull) if self.make_room(target) => {
                self.machine.vcpus().inject_irq(target, intid, priority)
            }
            other => other,
        }
    }

    /// Takes `target`'s active-only software interrupts out of its list registers, if its
    /// guest deactivates interrupts itself (ICH_VMCR_EL2.VEOIM: its priority drop already
    /// happened at its EOI, IHI 0069H 4.4) and its deactivations trap to this VMM. Whether any
    /// register was freed.
    fn make_room(&mut self, target: u32) -> bool {
        const VEOIM: u64 = 1 << 9;
        let trapped = self
            .machine
            .vcpus()
            .read_register(target, VcpuRegister::GicDeactivationTrapped.code())
            .unwrap_or(0);
        let vmcr = self
            .machine
            .vcpus()
            .read_register(target, VcpuRegister::GicVmcr.code())
            .unwrap_or(0);
        if trapped == 0 || vmcr & VEOIM == 0 {
            return false;
        }
        let Ok(held) = self.list_registers(target) else {
            return false;
        };
        let mut freed = false;
        for (n, lr) in held {
            let intid = lr as u32;
            // Active and not pending, software (not HW-linked), and one the VMM can track.
            if lr >> 61 == 0b100 && intid < QUEUED {
                let register = VcpuRegister::ListRegister0.code() + n as u64;
                if self
                    .machine
                    .vcpus()
                    .write_register(target, register, 0)
                    .is_ok()
                {
                    self.held_active[target as usize] |= 1 << intid;
                    freed = true;
                }
            }
        }
        freed
    }

    /// The guest's ICC_DIR_EL1 write for an interrupt no list register holds (the kernel
    /// deactivates those itself): one the VMM took out of them is deactivated, and may be
    /// delivered again; any other is ignored, as the GIC does (IHI 0069H 12.2.10).
    fn deactivate(&mut self, vcpu: u32, register: GpRegister) -> Result<Resolution, FaultError> {
        let intid = (self.register(vcpu, register)? & 0xff_ffff) as u32;
        if intid < QUEUED {
            self.held_active[vcpu as usize] &= !(1 << intid);
            self.retry_queued();
        }
        Ok(emulate(&[], true))
    }

    async fn map_ram(
        &mut self,
        vcpu: u32,
        ipa: u64,
        access: Access,
    ) -> Result<Resolution, FaultError> {
        match self.machine.stage2_fault(vcpu, ipa, access).await {
            Ok(_) => Ok(Resolution::Resume),
            Err(error) => {
                say(
                    &mut self.machine,
                    format_args!(
                        "vmm: guest {}: RAM at {ipa:#x} not mapped: {error:?}",
                        self.guest.name
                    ),
                );
                Err(FaultError::Unhandled)
            }
        }
    }

    /// An access to the emulated distributor or a redistributor (`vgic.rs`); a write's value
    /// came with the fault.
    fn gic_access(
        &mut self,
        ipa: u64,
        access: DataAccess,
        write_value: Option<u64>,
    ) -> Result<Resolution, FaultError> {
        let size = u64::from(access.size.bytes());
        if let Some(word) = self.gic.state_word(ipa).filter(|_| size == 4) {
            return self.gic_state(word, access, write_value);
        }
        if access.write {
            self.gic.write(ipa, size, written(write_value)?);
            return Ok(emulate(&[], true));
        }
        let value = self.gic.read(ipa, size).unwrap_or(0);
        Ok(emulate(&[(access.register, value)], true))
    }

    /// A pending/active register (`vgic::StateWord`): the state is in the vCPUs' list registers
    /// (the kernel's `ListRegister<n>`), the interrupts this VMM still queues or holds active
    /// for them, and the timers' levels.
    fn gic_state(
        &mut self,
        word: crate::vgic::StateWord,
        access: DataAccess,
        write_value: Option<u64>,
    ) -> Result<Resolution, FaultError> {
        use crate::vgic::StateRegister::{ClearActive, ClearPending, SetActive, SetPending};
        let first = word.first;
        let active = matches!(word.register, SetActive | ClearActive);
        if !access.write {
            let mut bits = 0u32;
            for target in self.holders(word) {
                let mine = self.word_bits(word, target);
                for (_, lr) in self.list_registers(target)? {
                    let state = lr >> 62;
                    let hit = if active { state & 0b10 } else { state & 0b01 } != 0;
                    if hit && let Some(bit) = bit_of(first, lr as u32) {
                        bits |= bit & mine;
                    }
                }
                let software = if active {
                    self.held_active[target as usize]
                } else {
                    self.queued[target as usize]
                };
                bits |= (software >> first) as u32 & mine;
                if !active && first == 0 {
                    // A timer's level-sensitive output is pending while it is high (IHI 0069H
                    // 4.1.2), whether or not it is in a list register yet.
                    for (intid, register) in [
                        (27, VcpuRegister::VirtualTimerCtl),
                        (30, VcpuRegister::PhysicalTimerCtl),
                    ] {
                        let ctl = self
                            .machine
                            .vcpus()
                            .read_register(target, register.code())
                            .unwrap_or(0);
                        if ctl & 0b111 == 0b101 {
                            bits |= 1 << intid;
                        }
                    }
                }
            }
            return Ok(emulate(&[(access.register, u64::from(bits))], true));
        }
        let value = written(write_value)? as u32;
        for target in self.holders(word) {
            let mine = value & self.word_bits(word, target);
            if mine == 0 {
                continue;
            }
            let wide = u128::from(mine) << first;
            match word.register {
                SetPending => self.queued[target as usize] |= wide,
                ClearPending => self.queued[target as usize] &= !wide,
                ClearActive => self.held_active[target as usize] &= !wide,
                SetActive => {}
            }
            if word.register == SetPending {
                continue;
            }
            for (n, lr) in self.list_registers(target)? {
                if bit_of(first, lr as u32).is_none_or(|bit| mine & bit == 0) {
                    continue;
                }
                let state = lr >> 62;
                let new = match word.register {
                    ClearPending => state & !0b01,
                    SetActive => state | 0b10,
                    _ => state & !0b10,
                };
                if new != state {
                    let register = VcpuRegister::ListRegister0.code() + n as u64;
                    let _ = self
                        .machine
                        .vcpus()
                        .write_register(target, register, new << 62);
                }
            }
        }
        self.retry_queued();
        Ok(emulate(&[], true))
    }

    /// The bits of a state word whose interrupts `target` holds: all of a redistributor's; of
    /// the distributor's SPIs, those routed to it.
    fn word_bits(&self, word: crate::vgic::StateWord, target: u32) -> u32 {
        if word.vcpu.is_some() {
            return u32::MAX;
        }
        (0..32)
            .filter(|i| self.gic.spi_target(word.first + i) == target)
            .fold(0, |bits, i| bits | 1 << i)
    }

    /// The vCPUs whose list registers a state word's interrupts can be in.
    fn holders(&self, word: crate::vgic::StateWord) -> core::ops::Range<u32> {
        match word.vcpu {
            Some(vcpu) => vcpu..vcpu + 1,
            None => 0..self.guest.vcpus,
        }
    }

    /// The list registers of `vcpu` that hold an interrupt, by number, as the kernel reads them.
    fn list_registers(&mut self, vcpu: u32) -> Result<heapless::Vec<(usize, u64), 16>, FaultError> {
        let count = self
            .machine
            .vcpus()
            .read_register(vcpu, VcpuRegister::ListRegisters.code())
            .map_err(|_| FaultError::Unhandled)?
            .min(16);
        let mut held = heapless::Vec::new();
        for n in 0..count {
            let lr = self
                .machine
                .vcpus()
                .read_register(vcpu, VcpuRegister::ListRegister0.code() + n)
                .map_err(|_| FaultError::Unhandled)?;
            if lr >> 62 != 0 {
                let _ = held.push((n as usize, lr));
            }
        }
        Ok(held)
    }

    /// The value of general register `register` of `vcpu` (XZR reads as zero).
    fn register(&mut self, vcpu: u32, register: GpRegister) -> Result<u64, FaultError> {
        match register.index() {
            31 => Ok(0),
            n => self
                .machine
                .vcpus()
                .read_register(vcpu, u64::from(n))
                .map_err(|_| FaultError::Unhandled),
        }
    }

    /// The console: a byte written to UARTDR (its value came with the fault) goes into the
    /// line, printed at `\n`; UARTFR reads idle (TX FIFO never full), the ID registers read the
    /// PL011's, every other read is 0.
    fn uart(
        &mut self,
        offset: u64,
        access: DataAccess,
        write_value: Option<u64>,
    ) -> Result<Resolution, FaultError> {
        if !access.write {
            let value = match offset {
                UARTFR => UARTFR_IDLE,
                0xfe0..0x1000 if offset.is_multiple_of(4) => {
                    u64::from(UART_ID[(offset as usize - 0xfe0) / 4])
                }
                _ => 0,
            };
            return Ok(emulate(&[(access.register, value)], true));
        }
        if offset == UARTDR {
            self.console(written(write_value)? as u8);
        }
        Ok(emulate(&[], true))
    }

    fn flush_console(&mut self) {
        if !self.line.is_empty() {
            let text = core::str::from_utf8(&self.line).unwrap_or("(not UTF-8)");
            self.machine.print_partial(text);
            self.line.clear();
        }
    }

    fn console(&mut self, byte: u8) {
        if byte != b'\n' && self.line.push(byte).is_ok() {
            return;
        }
        let text = core::str::from_utf8(&self.line).unwrap_or("(not UTF-8)");
        self.machine.print(text);
        self.line.clear();
        if byte != b'\n' {
            let _ = self.line.push(byte);
        }
    }

    /// A synchronous abort for the guest (`status`: its DFSC/IFSC), with the syndrome of the
    /// guest contract.
    fn inject(
        &mut self,
        vcpu: u32,
        instruction: bool,
        far: Far,
        wnr: u64,
        status: u64,
    ) -> Result<Resolution, FaultError> {
        let pstate = self
            .machine
            .vcpus()
            .read_register(vcpu, VcpuRegister::Pstate.code())
            .map_err(|_| FaultError::Unhandled)?;
        // PSTATE.M[3:2] is the exception level the vCPU was at.
        let from_el0 = (pstate >> 2) & 0b11 == 0;
        let class = match (instruction, from_el0) {
            (false, false) => EC_DATA_SAME_EL,
            (false, true) => EC_DATA_LOWER_EL,
            (true, false) => EC_INSTRUCTION_SAME_EL,
            (true, true) => EC_INSTRUCTION_LOWER_EL,
        };
        let esr = (class << 26) | IL | wnr | status;
        Ok(Resolution::InjectAbort {
            esr: Esr::new(esr),
            far,
        })
    }

    /// PSCI and SMCCC calls (`smc`: the PC is advanced past the SMC). Those that change nothing
    /// are [`Vmm::quick_call`]'s; here the ones that start and stop vCPUs.
    async fn psci(
        &mut self,
        vcpu: u32,
        args: [u64; 4],
        smc: bool,
    ) -> Result<Resolution, FaultError> {
        let call = Call::new(args);
        let result = match calls::answer(args, || self.state()) {
            Some(result) => result,
            None => match call.function {
                psci::CPU_ON_32 | psci::CPU_ON_64 => {
                    let [target, entry, context] = call.args;
                    self.cpu_on(target, entry, context)
                }
                psci::CPU_OFF => {
                    // The vCPU stops here; the reply to its call goes nowhere. (`handle` checked
                    // that `vcpu` is one of the guest's.)
                    let _ = self.machine.vcpus().suspend(vcpu);
                    self.on.set(vcpu, false);
                    return Ok(emulate(&[], smc));
                }
                psci::SYSTEM_OFF => {
                    // Every vCPU stops (the caller's reply goes nowhere). The VMM serves on:
                    // when no guest is left running, nothing can run and the kernel ends the
                    // system with status 0 (an image may run several guests; see
                    // docs/services.md).
                    self.stop_all();
                    say(
                        &mut self.machine,
                        format_args!("vmm: guest {} powered off", self.guest.name),
                    );
                    return Ok(emulate(&[], smc));
                }
                psci::SYSTEM_RESET => return self.system_reset(vcpu).await,
                // `calls::answer` answered every other function.
                _ => psci::NOT_SUPPORTED,
            },
        };
        Ok(emulate(
            &[(GpRegister::new(0).unwrap_or(GpRegister::XZR), result)],
            smc,
        ))
    }

    /// The guest call answered without changing anything (every PSCI/SMCCC function but
    /// `CPU_ON`, `CPU_OFF`, `SYSTEM_OFF` and `SYSTEM_RESET`, [`calls::answer`]), from the vCPU's
    /// x0–x3, as the result for x0 and whether the PC advances (an `smc`'s); `None`:
    /// [`Vmm::handle`] it. The VMM's fault loop answers these synchronously, without building a
    /// `Resolution`.
    #[must_use]
    #[inline(always)]
    pub fn quick_call(&self, smc: bool, args: [u64; 4]) -> Option<(u64, bool)> {
        calls::answer(args, || self.state()).map(|result| (result, smc))
    }

    /// What the calls are answered from: which vCPUs are on, and the workaround answers.
    fn state(&self) -> calls::State {
        calls::State {
            online: self.on,
            vcpus: self.guest.vcpus,
            workarounds: self.guest.workarounds,
        }
    }

    /// Suspends every running vCPU.
    fn stop_all(&mut self) {
        for vcpu in 0..self.guest.vcpus {
            if self.on.contains(vcpu) {
                let _ = self.machine.vcpus().suspend(vcpu);
                self.on.set(vcpu, false);
            }
        }
    }

    /// `CPU_ON(target, entry, context)`: `target` is the MPIDR affinity of a vCPU of the guest.
    fn cpu_on(&mut self, target: u64, entry: u64, context: u64) -> u64 {
        let Some(index) = (0..self.guest.vcpus).find(|&vcpu| calls::mpidr(vcpu) == target) else {
            return psci::INVALID_PARAMETERS;
        };
        if self.on.contains(index) {
            return psci::ALREADY_ON;
        }
        match self.start(index, entry, context) {
            Ok(()) => psci::SUCCESS,
            Err(_) => psci::INVALID_PARAMETERS,
        }
    }

    /// `SYSTEM_RESET`: every vCPU stops, the memory manager applies its reset policy, the
    /// kernel image is reloaded and vCPU 0 boots again with the next boot count. The caller's
    /// reply carries no register writes and no PC advance: vCPU 0's new state stands.
    async fn system_reset(&mut self, caller: u32) -> Result<Resolution, FaultError> {
        for vcpu in 0..self.guest.vcpus {
            // vCPU 0, when it is the caller, is blocked on this reply: it is restarted by it.
            if self.on.contains(vcpu) && !(vcpu == 0 && caller == 0) {
                let _ = self.machine.vcpus().suspend(vcpu);
            }
            self.on.set(vcpu, false);
        }
        let policy = match self.machine.reset_vcpu(0).await {
            Ok(policy) => policy,
            Err(error) => {
                say(
                    &mut self.machine,
                    format_args!("vmm: reset refused: {error:?}"),
                );
                return Err(FaultError::Unhandled);
            }
        };
        say(
            &mut self.machine,
            format_args!("vmm: guest {} reset (policy {policy:?})", self.guest.name),
        );
        // The distributor and redistributors reset with the machine.
        self.gic.reset();
        if let Err(error) = self.boot().await {
            say(
                &mut self.machine,
                format_args!("vmm: reboot failed: {error:?}"),
            );
            return Err(FaultError::Unhandled);
        }
        Ok(emulate(&[], false))
    }
}

/// Prints one formatted line through `machine`.
fn say<M: Machine>(machine: &mut M, line: core::fmt::Arguments<'_>) {
    let mut text: heapless::String<160> = heapless::String::new();
    let _ = core::fmt::write(&mut text, line);
    machine.print(&text);
}

/// INTIDs below this (SGIs, PPIs and the emulated SPIs) can be queued or held by the VMM.
const QUEUED: u32 = 32 + crate::vgic::SPIS as u32;
const _: () = assert!(QUEUED <= u128::BITS);

/// The bit of `intid` in the 32-interrupt word starting at `first`, if it is in it.
fn bit_of(first: u32, intid: u32) -> Option<u32> {
    intid.checked_sub(first).filter(|i| *i < 32).map(|i| 1 << i)
}

/// Whether a trapped system-register write is ICC_DIR_EL1 (op0 3, op1 0, CRn 12, CRm 11,
/// op2 1; IHI 0069H 12.2.10).
fn is_deactivation(access: &capvisor_ipc::protocols::fault::SysRegAccess) -> bool {
    (access.op0, access.op1, access.crn, access.crm, access.op2) == (3, 0, 12, 11, 1)
}

/// An MMIO write's value: the kernel sends it with every write whose syndrome it decoded (ISV = 1),
/// so none is a fault the VMM cannot answer.
fn written(write_value: Option<u64>) -> Result<u64, FaultError> {
    write_value.ok_or(FaultError::Unhandled)
}

/// An emulation reply writing `writes`.
fn emulate(writes: &[(GpRegister, u64)], advance_pc: bool) -> Resolution {
    let mut list = heapless::Vec::new();
    for &(register, value) in writes {
        let _ = list.push(RegisterWrite { register, value });
    }
    Resolution::Emulate {
        writes: list,
        advance_pc,
    }
}

/// Software-generated interrupts a guest sends through its virtual CPU interface (GIC
/// Architecture Specification IHI 0069H, 12.2.21 ICC_SGI1R_EL1): the writes trap to EL2 while
/// HCR_EL2.IMO is set, and the VMM delivers them.
pub mod gic_sgi {
    use capvisor_ipc::protocols::fault::SysRegAccess;

    /// An SGI to deliver.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Sgi {
        /// Its INTID, 0–15.
        pub intid: u32,
        /// The target vCPUs, a bit per vCPU number.
        pub targets: u32,
    }

    /// Whether `access` is ICC_SGI1R_EL1 (op0 3, op1 0, CRn 12, CRm 11, op2 5) or
    /// ICC_ASGI1R_EL1 (op2 6).
    #[must_use]
    pub const fn is_sgi_register(access: &SysRegAccess) -> bool {
        access.op0 == 3
            && access.op1 == 0
            && access.crn == 12
            && access.crm == 11
            && (access.op2 == 5 || access.op2 == 6)
    }

    /// Decodes an ICC_SGI1R_EL1 value sent by vCPU `sender` of a guest with `vcpus` vCPUs whose
    /// MPIDRs have Aff0 = the vCPU's number and the other affinity fields 0: INTID [27:24];
    /// IRM [40] = 1 is every vCPU but the sender; otherwise TargetList [15:0] names Aff0 values
    /// within affinity Aff3.Aff2.Aff1 [55:48].[39:32].[23:16], with RS [47:44] selecting the
    /// range of 16. Targets that do not exist are dropped.
    #[must_use]
    pub const fn decode(value: u64, sender: u32, vcpus: u32) -> Sgi {
        let intid = ((value >> 24) & 0xf) as u32;
        let all: u32 = if vcpus >= 32 {
            u32::MAX
        } else {
            (1 << vcpus) - 1
        };
        let targets = if value & (1 << 40) != 0 {
            all & !(1 << (sender % 32))
        } else {
            let affinity =
                (value >> 16) & 0xff | (value >> 24) & 0xff00 | (value >> 32) & 0xff_0000;
            let range = (value >> 44) & 0xf;
            if affinity != 0 || range != 0 {
                0
            } else {
                (value & 0xffff) as u32 & all
            }
        };
        Sgi { intid, targets }
    }
}

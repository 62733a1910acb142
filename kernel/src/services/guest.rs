//! The glue's half of guests: vCPU state (registers, world switch), guest exits turned into
//! `Fault::guest` messages, applying a VMM's resolution (emulation, abort injection), and the
//! cache/TLB maintenance a memory manager asks for, counted per VM (and traced with
//! `capvisor.trace=1`).

use super::glue::Glue;
use crate::arch::aarch64::vcpu::{self, El1State, PSTATE_RESET, sys};
use crate::arch::aarch64::{gic, vgic};
use crate::console;
use capvisor_ipc::abi::{CacheOp, KernelError, VcpuRegister};
use capvisor_ipc::esr::{self, ec};
use capvisor_ipc::protocols::fault::{DataAccess, GuestFault, Resolution, SysRegAccess};
use capvisor_ipc::types::{Esr, Far, Ipa};
use capvisor_kernel::object::{
    MAX_SPACES, MAX_VCPUS, MaintenanceTarget, RegisterAccess, SpaceRef, ThreadRef, VcpuRef,
};
use capvisor_kernel::vgic::{NoFreeListRegister, VgicState};
use core::arch::asm;

/// What each VM's memory manager had the kernel do: the per-VM counters that tests and
/// `capvisor run --trace` read (DESIGN.md stage-2 rules 1–2, vCPU reset).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmStats {
    /// 4 KiB pages mapped.
    pub map_pages: u64,
    /// 2 MiB blocks mapped.
    pub map_blocks: u64,
    /// Mappings removed (pages or blocks; each TLB-invalidated before the call returned).
    pub unmaps: u64,
    /// Clean+invalidate to PoC operations (frames or ranges).
    pub clean_poc: u64,
    /// Instruction-cache invalidations.
    pub icache: u64,
    /// TLB invalidations by IPA range asked for.
    pub tlbi_ipa: u64,
    /// TLB invalidations of the whole VMID asked for.
    pub tlbi_vmid: u64,
    /// Guest exits delivered to the VMM.
    pub exits: u64,
    /// The VM's VMID.
    pub vmid: u64,
}

/// An operation the per-VM counters and trace record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// A stage-2 mapping (a 2 MiB block, or pages).
    Map,
    /// A mapping removed (TLB-invalidated before the call returned).
    Unmap,
    /// Clean+invalidate to PoC.
    CleanPoc,
    /// Instruction-cache invalidation.
    Icache,
    /// TLB invalidation by IPA range.
    TlbiIpa,
    /// TLB invalidation of the whole VMID.
    TlbiVmid,
}

impl Op {
    /// Its name in trace lines.
    const fn name(self) -> &'static str {
        match self {
            Self::Map => "map",
            Self::Unmap => "unmap",
            Self::CleanPoc => "clean-poc",
            Self::Icache => "icache",
            Self::TlbiIpa => "tlbi-ipa",
            Self::TlbiVmid => "tlbi-vmid",
        }
    }
}

/// The priority of the virtual timer interrupt in a vCPU's list register: Linux's default
/// interrupt priority (`GICD_INT_DEF_PRI`), above the priority masks guests use.
const VTIMER_PRIORITY: u8 = 0xa0;
/// The priority of a forwarded device interrupt: the same default.
const FORWARD_PRIORITY: u8 = 0xa0;

/// The glue's per-guest state.
pub struct Guests {
    /// EL1 state of each vCPU (by arena index) while it is not loaded.
    pub state: [El1State; MAX_VCPUS],
    /// Virtual CPU interface state of each vCPU while it is not loaded.
    pub vgic: [VgicState; MAX_VCPUS],
    /// Forwarded interrupts masked because their vCPU's list registers were full: (vCPU index,
    /// INTID), unmasked when that vCPU is next entered (a level-sensitive one then comes again).
    held_back: heapless::Vec<(usize, u32), 16>,
    /// The vCPU whose state is in the CPU's EL1 registers.
    pub loaded: Option<usize>,
    /// Whether each space (by index) is a VM.
    pub is_vm: [bool; MAX_SPACES],
    /// Per space (by index): its counters while it is a VM.
    pub stats: [VmStats; MAX_SPACES],
    /// Print each operation as it happens.
    pub trace: bool,
}

impl Guests {
    /// No vCPUs, no VMs.
    pub const fn new() -> Self {
        Self {
            state: [El1State::RESET; MAX_VCPUS],
            vgic: [VgicState::RESET; MAX_VCPUS],
            held_back: heapless::Vec::new(),
            loaded: None,
            is_vm: [false; MAX_SPACES],
            stats: [VmStats {
                map_pages: 0,
                map_blocks: 0,
                unmaps: 0,
                clean_poc: 0,
                icache: 0,
                tlbi_ipa: 0,
                tlbi_vmid: 0,
                exits: 0,
                vmid: 0,
            }; MAX_SPACES],
            trace: false,
        }
    }

    /// Writes the loaded vCPU's state (EL1 registers, virtual CPU interface, the physical
    /// virtual-timer PPI's active state) back to memory; no vCPU is loaded afterwards.
    fn save_loaded(&mut self) {
        if let Some(index) = self.loaded.take() {
            vcpu::save(&mut self.state[index]);
            vgic::save(&mut self.vgic[index]);
            self.vgic[index].vtimer_active = gic::take_vtimer_active();
        }
    }

    /// The saved state of `vcpu`, with the CPU's copy written back first if it is loaded.
    pub fn state_mut(&mut self, vcpu: VcpuRef) -> &mut El1State {
        let index = vcpu.index() % MAX_VCPUS;
        if self.loaded == Some(index) {
            self.save_loaded();
        }
        &mut self.state[index]
    }

    /// The saved virtual CPU interface of `vcpu`, written back first if it is loaded.
    pub fn vgic_mut(&mut self, vcpu: VcpuRef) -> &mut VgicState {
        let index = vcpu.index() % MAX_VCPUS;
        if self.loaded == Some(index) {
            self.save_loaded();
        }
        &mut self.vgic[index]
    }

    /// Resets `vcpu`'s EL1 state and virtual CPU interface (nothing pending or active; a
    /// physical timer interrupt it held was made inactive when its state was saved).
    pub fn reset(&mut self, vcpu: VcpuRef) {
        let state = self.state_mut(vcpu);
        // A reset keeps the vCPU's identity, which its VMM chose.
        let mpidr = state.sys[sys::VMPIDR];
        *state = El1State::RESET;
        state.sys[sys::VMPIDR] = mpidr;
        let vgic = self.vgic_mut(vcpu);
        // Forwarded interrupts its list registers held will never be deactivated by the guest
        // now: deactivate them here (the timer's was made inactive when the state was saved).
        for intid in vgic.linked().filter(|i| *i != gic::vtimer()) {
            gic::deactivate(intid);
        }
        *vgic = VgicState::RESET;
        self.release_held_back(vcpu.index() % MAX_VCPUS);
    }

    /// A forwarded device interrupt fired for `vcpu`: it becomes virtual interrupt `vintid`,
    /// hardware-linked to `pintid`, in a software list register (live if the vCPU is loaded).
    /// With none free the interrupt is deactivated and masked until the vCPU is next entered —
    /// never left to fire again and again.
    pub fn forward_irq(&mut self, vcpu: VcpuRef, vintid: u32, pintid: u32) {
        let index = vcpu.index() % MAX_VCPUS;
        let implemented = vgic::list_registers();
        let usable = capvisor_kernel::vgic::software_list_registers(implemented);
        let injected = if self.loaded == Some(index) {
            vgic::inject_loaded(usable, vintid, FORWARD_PRIORITY, Some(pintid)).is_ok()
        } else {
            self.vgic[index]
                .inject_linked(implemented, vintid, FORWARD_PRIORITY, pintid)
                .is_ok()
        };
        if !injected {
            gic::deactivate(pintid);
            gic::set_enabled(pintid, false);
            // More than 16 held back at once: this one stays masked until the vCPU is reset.
            let _ = self.held_back.push((index, pintid));
        }
    }

    /// Unmasks the forwarded interrupts held back for vCPU `index`.
    fn release_held_back(&mut self, index: usize) {
        if self.held_back.iter().any(|(v, _)| *v == index) {
            for (_, intid) in self.held_back.iter().filter(|(v, _)| *v == index) {
                gic::set_enabled(*intid, true);
            }
            self.held_back.retain(|(v, _)| *v != index);
        }
    }

    /// Makes `vcpu`'s state the CPU's (saving the state loaded before, if another's).
    pub fn load(&mut self, vcpu: VcpuRef) {
        let index = vcpu.index() % MAX_VCPUS;
        self.release_held_back(index);
        if self.loaded == Some(index) {
            return;
        }
        self.save_loaded();
        // The timer's physical interrupt is made active again before its timer is re-enabled
        // (`vcpu::restore`), so it cannot be taken a second time meanwhile.
        if core::mem::take(&mut self.vgic[index].vtimer_active) {
            gic::set_vtimer_active();
        }
        vcpu::restore(&self.state[index]);
        vgic::restore(&self.vgic[index]);
        self.loaded = Some(index);
    }

    /// The virtual timer's PPI fired: it belongs to the loaded vCPU (a vCPU's timer is disabled
    /// while its state is out), which gets it as the same virtual PPI through a hardware list
    /// register, so its deactivation deactivates the physical interrupt. Without a loaded vCPU,
    /// or without a free list register, it is deactivated here and the guest's level-sensitive
    /// timer raises it again.
    pub fn vtimer_fired(&mut self, intid: u32) {
        let injected = self.loaded.is_some()
            && vgic::inject_loaded(vgic::list_registers(), intid, VTIMER_PRIORITY, Some(intid))
                .is_ok();
        if !injected {
            gic::deactivate(intid);
        }
    }

    /// Makes virtual interrupt `intid` pending for `vcpu` at `priority` (`VcpuInjectIrq`).
    ///
    /// # Errors
    /// [`NoFreeListRegister`] when its list registers all hold other interrupts.
    pub fn inject(
        &mut self,
        vcpu: VcpuRef,
        intid: u32,
        priority: u8,
    ) -> Result<(), NoFreeListRegister> {
        let implemented = vgic::list_registers();
        self.vgic_mut(vcpu).inject(implemented, intid, priority)
    }

    /// Counts (and traces) an operation on VM `space`.
    pub fn count(&mut self, space: SpaceRef, op: Op, ipa: u64, size: u64) {
        let index = space.index() % MAX_SPACES;
        if !self.is_vm[index] {
            return;
        }
        let stats = &mut self.stats[index];
        match op {
            Op::Map if size == 2 << 20 => stats.map_blocks += 1,
            Op::Map => stats.map_pages += size / 4096,
            Op::Unmap => stats.unmaps += 1,
            Op::CleanPoc => stats.clean_poc += 1,
            Op::Icache => stats.icache += 1,
            Op::TlbiIpa => stats.tlbi_ipa += 1,
            Op::TlbiVmid => stats.tlbi_vmid += 1,
        }
        if self.trace {
            console::print(format_args!(
                "capvisor: trace vm{index} {} ipa={ipa:#x} size={size:#x}\n",
                op.name()
            ));
        }
    }

    /// Prints every VM's counters (at the end of the system, for tests and users).
    pub fn report(&self) {
        for (index, stats) in self.stats.iter().enumerate() {
            if self.is_vm[index] {
                console::print(format_args!(
                    "capvisor: vm{index} stats: vmid={} map_pages={} map_blocks={} unmaps={} \
                     clean_poc={} icache={} tlbi_ipa={} tlbi_vmid={} exits={}\n",
                    stats.vmid,
                    stats.map_pages,
                    stats.map_blocks,
                    stats.unmaps,
                    stats.clean_poc,
                    stats.icache,
                    stats.tlbi_ipa,
                    stats.tlbi_vmid,
                    stats.exits,
                ));
            }
        }
    }
}

/// The guest exit with syndrome `esr` (and FAR, HPFAR) as the `Fault` protocol reports it
/// (ESR_EL2 ISS encodings, Arm ARM D24.2.39); `x` are the guest's x0–x7.
pub fn exit_fault(esr: u64, far: u64, hpfar: u64, x: &[u64; 8]) -> GuestFault {
    let (class, iss) = (esr::class(esr), esr::iss(esr));
    // Word by word: a 64-byte array copy is a `memcpy` call on this target.
    let [a, b, c, d, e, f, g, h] = *x;
    let args = [a, b, c, d, e, f, g, h];
    match class {
        ec::HVC64 => GuestFault::Hvc {
            imm: iss as u16,
            args,
        },
        ec::SMC64 => GuestFault::Smc {
            imm: iss as u16,
            args,
        },
        ec::WFX => GuestFault::Wait {
            event: iss & 1 == 1,
        },
        ec::SYSREG => GuestFault::SysReg(SysRegAccess::from_iss(iss)),
        ec::DABT_LOWER => GuestFault::DataAbort {
            ipa: Ipa::new(vcpu::fault_ipa(hpfar, far)),
            far: Far::new(far),
            access: DataAccess::from_iss(iss),
            esr: Esr::new(esr),
        },
        ec::IABT_LOWER => GuestFault::InstructionAbort {
            ipa: Ipa::new(vcpu::fault_ipa(hpfar, far)),
            far: Far::new(far),
            esr: Esr::new(esr),
        },
        _ => GuestFault::Other { esr: Esr::new(esr) },
    }
}

/// SPSR after the kernel steps a guest past a trapped instruction, as completing it would leave
/// PSTATE: BTYPE [11:10] cleared (the next instruction is not a branch target) and SS [21]
/// cleared (a software step has completed; Arm ARM D2.12.5). KVM's `kvm_skip_instr` does the
/// same.
pub fn skipped(spsr: u64) -> u64 {
    spsr & !((0b11 << 10) | (1 << 21))
}

/// PSTATE.M values a vCPU may be in (AArch64 only): EL0t, EL1t, EL1h.
fn valid_mode(pstate: u64) -> bool {
    matches!(pstate & 0x1f, 0b00000 | 0b00100 | 0b00101)
}

/// PSTATE bits a VMM may set: NZCV, DAIF and M[4:0].
const PSTATE_WRITABLE: u64 = (0xf << 28) | (0xf << 6) | 0x1f;

impl Glue {
    /// `vcpu_register`.
    pub fn guest_register(
        &mut self,
        thread: ThreadRef,
        vcpu: VcpuRef,
        access: RegisterAccess,
    ) -> Result<u64, KernelError> {
        match access {
            RegisterAccess::ReadGp(n) => Ok(self.context(thread).x[usize::from(n) % 31]),
            RegisterAccess::WriteGp(n, value) => {
                self.context(thread).x[usize::from(n) % 31] = value;
                Ok(0)
            }
            RegisterAccess::Read(register) => self.read_named(thread, vcpu, register),
            RegisterAccess::Write(register, value) => {
                self.write_named(thread, vcpu, register, value)?;
                Ok(0)
            }
        }
    }

    fn read_named(
        &mut self,
        thread: ThreadRef,
        vcpu: VcpuRef,
        register: VcpuRegister,
    ) -> Result<u64, KernelError> {
        let context = *self.context(thread);
        let state = self.guests.state_mut(vcpu);
        Ok(match register {
            VcpuRegister::Pc => context.pc,
            VcpuRegister::Pstate => context.spsr,
            VcpuRegister::SpEl0 => context.sp,
            VcpuRegister::Reset => return Err(KernelError::InvalidArgument),
            other => state.sys[sys_index(other)],
        })
    }

    fn write_named(
        &mut self,
        thread: ThreadRef,
        vcpu: VcpuRef,
        register: VcpuRegister,
        value: u64,
    ) -> Result<(), KernelError> {
        match register {
            VcpuRegister::Pc => self.context(thread).pc = value,
            VcpuRegister::Pstate => {
                if value & !PSTATE_WRITABLE != 0 || !valid_mode(value) {
                    return Err(KernelError::InvalidArgument);
                }
                self.context(thread).spsr = value;
            }
            VcpuRegister::SpEl0 => self.context(thread).sp = value,
            VcpuRegister::Reset => {
                self.guests.reset(vcpu);
                let context = self.context(thread);
                *context = crate::arch::aarch64::el0::ThreadContext::ZERO;
                context.spsr = PSTATE_RESET;
            }
            VcpuRegister::Mpidr => {
                let mpidr = vcpu::MPIDR_RESET | (value & vcpu::MPIDR_WRITABLE);
                self.guests.state_mut(vcpu).sys[sys::VMPIDR] = mpidr;
            }
            other => self.guests.state_mut(vcpu).sys[sys_index(other)] = value,
        }
        Ok(())
    }

    /// `resolve_guest_fault`.
    pub fn guest_resolve(
        &mut self,
        thread: ThreadRef,
        vcpu: VcpuRef,
        fault: &GuestFault,
        resolution: &Resolution,
    ) -> Result<(), KernelError> {
        match resolution {
            Resolution::Resume => Ok(()),
            Resolution::Emulate { writes, advance_pc } => {
                let context = self.context(thread);
                for write in writes {
                    let n = usize::from(write.register.index());
                    // x31 is XZR here: writes to it are discarded.
                    if n < 31 {
                        context.x[n] = write.value;
                    }
                }
                if *advance_pc && !matches!(fault, GuestFault::Hvc { .. }) {
                    context.pc = context.pc.wrapping_add(instruction_length(fault));
                    context.spsr = skipped(context.spsr);
                }
                Ok(())
            }
            Resolution::InjectAbort { esr, far } => self.inject_abort(thread, vcpu, *esr, *far),
        }
    }

    /// Takes a synchronous exception to the guest's EL1 with `esr` and `far`, as hardware would
    /// (Arm ARM D1.10.2 "Exception entry"): ELR_EL1 = the faulting PC, SPSR_EL1 = its PSTATE,
    /// PSTATE = EL1h with DAIF masked, PC = VBAR_EL1 + the vector offset for where it came from
    /// (0x000 from EL1t, 0x200 from EL1h, 0x400 from EL0 in AArch64, D1.10.2 Table D1-7).
    ///
    /// The syndrome must be an abort of the class the guest's EL produces: from EL1 the same-EL
    /// classes (0x21, 0x25), from EL0 the lower-EL ones (0x20, 0x24), with IL = 1 (a 32-bit
    /// instruction); anything else is refused and the vCPU stays stopped.
    fn inject_abort(
        &mut self,
        thread: ThreadRef,
        vcpu: VcpuRef,
        esr: Esr,
        far: Far,
    ) -> Result<(), KernelError> {
        let context = *self.context(thread);
        let (esr, far) = (esr.raw(), far.raw());
        let class = esr::class(esr);
        let mode = context.spsr & 0x1f;
        let (allowed, offset) = match mode {
            0b00101 => ([ec::IABT_SAME, ec::DABT_SAME], 0x200),
            0b00100 => ([ec::IABT_SAME, ec::DABT_SAME], 0x000),
            0b00000 => ([ec::IABT_LOWER, ec::DABT_LOWER], 0x400),
            _ => return Err(KernelError::InvalidArgument),
        };
        if !allowed.contains(&class) || esr & (1 << 25) == 0 || esr >> 32 != 0 {
            return Err(KernelError::InvalidArgument);
        }
        let state = self.guests.state_mut(vcpu);
        state.sys[sys::ESR] = esr;
        state.sys[sys::FAR] = far;
        state.sys[sys::ELR] = context.pc;
        state.sys[sys::SPSR] = context.spsr;
        let vbar = state.sys[sys::VBAR];
        let context = self.context(thread);
        context.spsr = PSTATE_RESET;
        context.pc = vbar.wrapping_add(offset);
        Ok(())
    }

    /// `maintenance`.
    pub fn guest_maintenance(&mut self, op: CacheOp, target: MaintenanceTarget) {
        match (op, target) {
            (CacheOp::CleanInvalidatePoc, MaintenanceTarget::Frame { pa, size, vm }) => {
                if self.ram.contains(pa.raw(), pa.raw().saturating_add(size)) {
                    clean_invalidate_poc(pa.raw(), size);
                }
                if let Some(vm) = vm {
                    self.guests.count(vm, Op::CleanPoc, pa.raw(), size);
                }
            }
            (CacheOp::InvalidateIcache, MaintenanceTarget::Frame { pa, size, vm }) => {
                invalidate_icache();
                if let Some(vm) = vm {
                    self.guests.count(vm, Op::Icache, pa.raw(), size);
                }
            }
            (CacheOp::CleanInvalidatePoc, MaintenanceTarget::Vm { vm, ipa, size }) => {
                let ram = self.ram.clone();
                if let Some(table) = self.space(vm) {
                    for page in (0..size / 4096).map(|n| ipa.raw() + n * 4096) {
                        if let Some(pa) = table.translate(page)
                            && ram.contains(pa, pa + 4096)
                        {
                            clean_invalidate_poc(pa, 4096);
                        }
                    }
                }
                self.guests.count(vm, Op::CleanPoc, ipa.raw(), size);
            }
            (CacheOp::InvalidateIcache, MaintenanceTarget::Vm { vm, ipa, size }) => {
                invalidate_icache();
                self.guests.count(vm, Op::Icache, ipa.raw(), size);
            }
            (CacheOp::TlbInvalidateIpa, MaintenanceTarget::Vm { vm, ipa, size }) => {
                if let Some(table) = self.space(vm) {
                    table.invalidate_range(ipa.raw(), size);
                }
                self.guests.count(vm, Op::TlbiIpa, ipa.raw(), size);
            }
            (CacheOp::TlbInvalidateVmid, MaintenanceTarget::Vm { vm, .. }) => {
                if let Some(table) = self.space(vm) {
                    table.invalidate_all();
                }
                self.guests.count(vm, Op::TlbiVmid, 0, 0);
            }
            // The object model never asks for TLB maintenance on a frame.
            (CacheOp::TlbInvalidateIpa | CacheOp::TlbInvalidateVmid, _) => {}
        }
    }
}

/// The index in [`El1State::sys`] of a named system register.
fn sys_index(register: VcpuRegister) -> usize {
    match register {
        VcpuRegister::SpEl1 => sys::SP_EL1,
        VcpuRegister::SctlrEl1 => sys::SCTLR,
        VcpuRegister::VbarEl1 => sys::VBAR,
        VcpuRegister::EsrEl1 => sys::ESR,
        VcpuRegister::FarEl1 => sys::FAR,
        VcpuRegister::ElrEl1 => sys::ELR,
        VcpuRegister::SpsrEl1 => sys::SPSR,
        VcpuRegister::Cntvoff => sys::CNTVOFF,
        VcpuRegister::Mpidr => sys::VMPIDR,
        // Handled by the callers (they live in the thread context, or are write-only).
        VcpuRegister::Pc | VcpuRegister::Pstate | VcpuRegister::SpEl0 | VcpuRegister::Reset => {
            sys::TPIDR_EL1
        }
    }
}

/// The length of the instruction that trapped: 4 for an A64 instruction (ESR.IL = 1), 2 for a
/// 16-bit T32 one (only aborts carry their ESR here; other traps are A64).
fn instruction_length(fault: &GuestFault) -> u64 {
    match fault {
        GuestFault::DataAbort { esr, .. }
        | GuestFault::InstructionAbort { esr, .. }
        | GuestFault::Other { esr }
            if esr.raw() & (1 << 25) == 0 =>
        {
            2
        }
        _ => 4,
    }
}

/// DC CIVAC over `[pa, pa + size)` through the kernel's identity map of RAM, by the smallest data
/// cache line (CTR_EL0.DminLine), then DSB SY (Arm ARM D7.5.9.2).
fn clean_invalidate_poc(pa: u64, size: u64) {
    let ctr: u64;
    // SAFETY: reading CTR_EL0 has no side effects.
    unsafe { asm!("mrs {}, ctr_el0", out(reg) ctr, options(nomem, nostack, preserves_flags)) };
    let line = 4u64 << ((ctr >> 16) & 0xf);
    let mut at = pa & !(line - 1);
    while at < pa + size {
        // SAFETY: `at` is inside RAM the kernel maps (the caller checked); cleaning and
        // invalidating a line changes no memory contents as seen by any observer.
        unsafe { asm!("dc civac, {}", in(reg) at, options(nostack, preserves_flags)) };
        at += line;
    }
    // SAFETY: a barrier.
    unsafe { asm!("dsb sy", options(nostack, preserves_flags)) };
}

/// IC IALLUIS, DSB ISH, ISB: every instruction cache of the inner-shareable domain invalidated to
/// PoU (Arm ARM D7.5.9.3).
fn invalidate_icache() {
    // SAFETY: instruction-cache invalidation and barriers change no memory contents.
    unsafe {
        asm!(
            "ic ialluis",
            "dsb ish",
            "isb",
            options(nostack, preserves_flags)
        )
    };
}

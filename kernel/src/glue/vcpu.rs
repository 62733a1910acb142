//! The glue's half of guests: vCPU state (registers, world switch), guest exits turned into
//! `Fault::guest` messages, applying a VMM's resolution (emulation, abort injection), and the
//! cache/TLB maintenance a memory manager asks for, counted per VM (and traced with
//! `capvisor.trace=1`).
//!
//! A vCPU's EL1 state lives in the vCPU object (`VcpuGlue`); the CPU holds one vCPU's state at a
//! time, loaded lazily ([`Guests::load`]): whoever needs a vCPU's state in memory while it is
//! loaded saves it first.

use crate::arch::aarch64::vcpu::{self, PSTATE_RESET, sys};
use crate::arch::aarch64::{gic, vgic};
use capvisor_ipc::abi::{KernelError, VcpuRegister};
use capvisor_ipc::esr::{self, ec};
use capvisor_ipc::protocols::fault::{GuestFault, Resolution, SysRegAccess};
use capvisor_ipc::types::{Esr, Far, Ipa};
use capvisor_kernel::context::{El1State, ThreadContext};
use capvisor_kernel::exception::{self, EntryFeatures};
use capvisor_kernel::object::{RegisterAccess, Resumption, VcpuGlue, VcpuRef};
use capvisor_kernel::vgic::{NoFreeListRegister, VgicState};
use capvisor_kernel::vsysreg::{self, Emulated, Hardware, Outcome};

/// The priority of the virtual timer interrupt in a vCPU's list register: Linux's default
/// interrupt priority (`GICD_INT_DEF_PRI`), above the priority masks guests use.
const VTIMER_PRIORITY: u8 = 0xa0;
/// The priority of a forwarded device interrupt: the same default.
const FORWARD_PRIORITY: u8 = 0xa0;
/// The emulated EL1 physical timer's interrupt: PPI 14, INTID 30 (the device tree's
/// non-secure physical timer), at the virtual timer's priority.
const PTIMER_INTID: u32 = 30;

/// Records what guests are shown of this machine, for the emulation of trapped registers and
/// exception entry (boot, from the CPU's ID registers).
pub fn set_platform(features: &crate::arch::aarch64::cpu::Features) {
    // DBGAUTHSTATUS_EL1 as the guest's machine has it: Non-secure invasive and non-invasive
    // debug implemented and enabled (NSID, NSNID = 0b11); no Secure state (it is shown no EL3),
    // so SID and SNID are 0b00 (D24.3.5). (QEMU does not implement the register at EL2.)
    let authstatus = 0b1111;
    let hardware = Hardware::new(features.dfr0, authstatus, super::IPA_BITS);
    let field = |value: u64, shift: u32| (value >> shift) & 0xf;
    let entry = EntryFeatures {
        pan: field(features.mmfr1, 20) >= 1,
        ssbs: field(features.pfr1, 4) >= 1,
        dit: field(features.pfr0, 48) >= 1,
    };
    let (_, glue) = super::state();
    glue.guests.set_platform(hardware, entry, features.ras());
}

/// Whether the kernel may answer an exit of exception class `class` itself ([`Guests::emulate`]).
#[must_use]
pub const fn kernel_class(class: u8) -> bool {
    matches!(
        class,
        ec::SYSREG
            | ec::CP15_32
            | ec::CP15_64
            | ec::CP14_32
            | ec::CP14_LS
            | ec::CP14_64
            | ec::SVE
            | ec::SME
            | ec::PAC
    )
}

/// The glue's guest state beside the objects: which vCPU the CPU holds, and interrupts held back.
pub struct Guests {
    /// Forwarded interrupts masked because their vCPU's list registers were full: (vCPU, INTID),
    /// unmasked when that vCPU is next entered (a level-sensitive one then comes again).
    held_back: heapless::Vec<(VcpuRef, u32), 16>,
    /// The vCPU whose state is in the CPU's EL1 registers.
    pub loaded: Option<VcpuRef>,
    /// Its EL0-visible registers, while services run with their own profile in them.
    parked: Option<vcpu::Parked>,
    /// MDSCR_EL1 as the hardware holds it (0 while services run).
    hw_mdscr: u64,
    /// The vCPU whose breakpoints and watchpoints are in the hardware.
    debug_loaded: Option<VcpuRef>,
    /// What the emulation of trapped registers needs to know of the hardware (set at boot).
    hardware: Hardware,
    /// What changes exception entry to a guest's EL1 on this CPU (set at boot).
    entry: EntryFeatures,
    /// The CPU has FEAT_RAS: VDISR_EL2 is switched with the vCPU.
    ras: bool,
    /// The maintenance interrupt fired for drained list registers (`Guests::maintenance`).
    drained: bool,
}

impl Guests {
    /// No vCPU loaded.
    pub const fn new() -> Self {
        Self {
            held_back: heapless::Vec::new(),
            loaded: None,
            parked: None,
            hw_mdscr: 0,
            debug_loaded: None,
            hardware: Hardware {
                breakpoints: 0,
                watchpoints: 0,
                authstatus: 0,
                ipa_bits: super::IPA_BITS,
            },
            entry: EntryFeatures {
                pan: false,
                ssbs: false,
                dit: false,
            },
            ras: false,
            drained: false,
        }
    }

    /// The maintenance interrupt for drained list registers fired: disarmed; the vCPU that
    /// runs (if it is the loaded one) goes to its VMM (`take_drained`), else it is armed again
    /// when that vCPU next runs.
    pub fn maintenance(&mut self) {
        vgic::arm_drained(false);
        self.drained = true;
    }

    /// Whether the loaded vCPU, whose exit this is, drained its list registers (once).
    pub fn take_drained(&mut self, state: &mut VcpuGlue) -> bool {
        if core::mem::take(&mut self.drained) && state.vgic.overflow {
            state.vgic.overflow = false;
            return true;
        }
        false
    }

    /// Records what the hardware has (boot, from its ID registers).
    pub fn set_platform(&mut self, hardware: Hardware, entry: EntryFeatures, ras: bool) {
        self.hardware = hardware;
        self.entry = entry;
        self.ras = ras;
    }

    /// MDSCR_EL1 in the hardware, written only when it changes.
    fn set_mdscr(&mut self, value: u64) {
        if self.hw_mdscr != value {
            vcpu::write_mdscr(value);
            self.hw_mdscr = value;
        }
    }

    /// Just before `vcpu` (its state loaded) is entered: its debug state goes into the hardware
    /// (MDSCR_EL1 as its OS Lock allows; its breakpoints and watchpoints when they can fire and
    /// are not there already), and its physical timer's interrupt is made pending if its level
    /// is high (or withdrawn if it fell before the guest took it); the kernel's timer fires by
    /// its deadline.
    #[inline]
    pub fn prepare_entry(&mut self, vcpu: VcpuRef, state: &mut VcpuGlue) {
        // Most guests use neither: no debug state, no physical timer, no queue at the VMM.
        let idle = state.emul.debug.mdscr
            | (state.emul.ptimer.ctl & 1)
            | u64::from(state.ptimer_line)
            | u64::from(state.vgic.overflow)
            | self.hw_mdscr;
        if idle != 0 {
            self.prepare_debug_and_timer(vcpu, state);
        }
    }

    #[inline(never)]
    fn prepare_debug_and_timer(&mut self, vcpu: VcpuRef, state: &mut VcpuGlue) {
        self.drained = false;
        if state.vgic.overflow {
            vgic::arm_drained(true);
        }
        let debug = &mut state.emul.debug;
        self.set_mdscr(debug.hardware_mdscr());
        if debug.armed() && (self.debug_loaded != Some(vcpu) || debug.changed) {
            vcpu::load_debug(debug, &self.hardware);
            debug.changed = false;
            self.debug_loaded = Some(vcpu);
        }
        let timer = state.emul.ptimer;
        if timer.ctl & 1 == 0 && !state.ptimer_line {
            return;
        }
        let now = crate::arch::aarch64::cpu::physical_counter();
        let level = timer.level(now);
        if level {
            // Pending (or still active) in a list register: nothing to add.
            let present = vgic::holds_loaded(PTIMER_INTID);
            if !present {
                let _ = vgic::inject_loaded(
                    capvisor_kernel::vgic::software_list_registers(vgic::list_registers()),
                    PTIMER_INTID,
                    VTIMER_PRIORITY,
                    None,
                );
            }
        } else if state.ptimer_line {
            // The level fell (the guest reprogrammed or disabled it) before it was taken.
            vgic::withdraw_pending_loaded(PTIMER_INTID);
        }
        state.ptimer_line = level;
        if let Some(deadline) = timer.deadline().filter(|d| *d > now) {
            gic::fire_by(deadline);
        }
    }

    /// A guest's trapped access that the kernel answers itself (`capvisor_kernel::vsysreg`):
    /// system registers and AArch32 coprocessor accesses, and the instructions of features the
    /// guest is told it does not have (SVE, SME, pointer authentication: UNDEFINED). `context` is
    /// the vCPU thread's, `esr` the exit's syndrome. `false` when the VMM must decide.
    pub fn emulate(
        &mut self,
        context: &mut ThreadContext,
        vcpu: VcpuRef,
        state: &mut VcpuGlue,
        esr: u64,
    ) -> bool {
        let class = esr::class(esr);
        let iss = esr::iss(esr);
        let rt = ((iss >> 5) & 0x1f) as usize;
        let register = |context: &ThreadContext, n: usize| context.x.get(n).copied().unwrap_or(0);
        let now = || crate::arch::aarch64::cpu::physical_counter();
        let outcome = match class {
            ec::SYSREG => {
                let access = SysRegAccess::from_iss(iss);
                let written = register(context, rt);
                // ICC_DIR_EL1 (trapped by ICH_HCR_EL2.TDIR): the kernel deactivates an
                // interrupt its list registers hold; one its VMM took out of them is the VMM's.
                if (
                    access.op0,
                    access.op1,
                    access.crn,
                    access.crm,
                    access.op2,
                    access.write,
                ) == (3, 0, 12, 11, 1, true)
                {
                    let intid = (written & 0xff_ffff) as u32;
                    if self.loaded == Some(vcpu) && vgic::deactivate_loaded(intid) {
                        exception::step(context, esr);
                        return true;
                    }
                    return false;
                }
                vsysreg::emulate(
                    &access,
                    written,
                    &mut state.emul,
                    &self.hardware,
                    now(),
                    vcpu::read_id_register,
                )
            }
            ec::CP15_32 | ec::CP15_64 | ec::CP14_32 | ec::CP14_LS | ec::CP14_64 => {
                if !exception::passes_condition(esr, context.spsr) {
                    // A conditional instruction that fails its condition does nothing.
                    exception::step(context, esr);
                    return true;
                }
                let rt2 = ((iss >> 10) & 0x1f) as usize;
                let written = (register(context, rt) & 0xffff_ffff)
                    | (register(context, rt2) & 0xffff_ffff) << 32;
                vsysreg::emulate_aarch32(class, iss, written, &mut state.emul, now())
            }
            ec::SVE | ec::SME | ec::PAC => Outcome::Undefined,
            _ => return false,
        };
        match outcome {
            Outcome::Read(value) => {
                let aarch32 = context.spsr & (1 << 4) != 0;
                if let Some(x) = context.x.get_mut(rt) {
                    *x = if aarch32 { value & 0xffff_ffff } else { value };
                }
                exception::step(context, esr);
            }
            Outcome::ReadPair(low, high) => {
                let rt2 = ((iss >> 10) & 0x1f) as usize;
                if let Some(x) = context.x.get_mut(rt) {
                    *x = low;
                }
                if let Some(x) = context.x.get_mut(rt2) {
                    *x = high;
                }
                exception::step(context, esr);
            }
            Outcome::Written => exception::step(context, esr),
            Outcome::Undefined => {
                self.sync(vcpu, state);
                if !exception::undefined(context, &mut state.el1, self.entry) {
                    return false;
                }
            }
            Outcome::Vmm => return false,
        }
        true
    }

    /// A service runs next: if a guest's state is loaded, its EL0-visible registers are kept
    /// and the services' profile loaded (issue 14: none of a guest's EL1 settings govern a
    /// service, and its FP/SIMD registers are out of reach).
    pub fn park(&mut self) {
        if self.loaded.is_some() && self.parked.is_none() {
            self.parked = Some(vcpu::park());
            // No guest's step, breakpoint or watchpoint fires in a service.
            self.set_mdscr(0);
        }
    }

    /// Puts the loaded guest's EL0-visible registers back, if services had their own.
    fn unpark(&mut self) {
        if let Some(parked) = self.parked.take() {
            vcpu::unpark(&parked);
        }
    }

    /// Writes the CPU's vCPU state into `state` (the loaded vCPU's): EL1 registers, virtual CPU
    /// interface, the physical virtual-timer PPI's active state; nothing is loaded afterwards.
    fn save_into(&mut self, state: &mut VcpuGlue) {
        self.unpark();
        vcpu::save(&mut state.el1);
        vgic::save(&mut state.vgic);
        if self.ras {
            state.vdisr = vcpu::take_vdisr();
        }
        state.vgic.vtimer_active = gic::take_vtimer_active();
        self.loaded = None;
        // No guest's state is in the CPU: the services' profile is, with debug off.
        vcpu::load_service_profile();
        self.set_mdscr(0);
    }

    /// Makes `state` (vCPU `vcpu`'s) current: if the CPU holds it, it is saved first.
    pub fn sync(&mut self, vcpu: VcpuRef, state: &mut VcpuGlue) {
        if self.loaded == Some(vcpu) {
            self.save_into(state);
        }
    }

    /// `vcpu` is being destroyed: if the CPU holds its state, the state is dropped (its timer
    /// disabled, its list registers no longer anyone's).
    pub fn forget(&mut self, vcpu: VcpuRef) {
        if self.debug_loaded == Some(vcpu) {
            self.debug_loaded = None;
        }
        if self.loaded == Some(vcpu) {
            let mut scratch = VcpuGlue::RESET;
            self.save_into(&mut scratch);
            for intid in scratch.vgic.linked().filter(|i| *i != gic::vtimer()) {
                gic::deactivate(intid);
            }
        }
        self.release_held_back(vcpu);
    }

    /// Forgets a held-back interrupt that is no longer forwarded.
    pub fn forget_held_back(&mut self, intid: u32) {
        self.held_back.retain(|(_, i)| *i != intid);
    }

    /// Resets `vcpu`'s EL1 state and virtual CPU interface (nothing pending or active; a
    /// physical timer interrupt it held was made inactive when its state was saved).
    pub fn reset(&mut self, vcpu: VcpuRef, state: &mut VcpuGlue) {
        self.sync(vcpu, state);
        // A reset keeps the vCPU's identity, which its VMM chose.
        let mpidr = state.el1.sys[sys::VMPIDR];
        state.el1 = El1State::RESET;
        state.el1.sys[sys::VMPIDR] = mpidr;
        // Forwarded interrupts its list registers held will never be deactivated by the guest
        // now: deactivate them here (the timer's was made inactive when the state was saved).
        for intid in state.vgic.linked().filter(|i| *i != gic::vtimer()) {
            gic::deactivate(intid);
        }
        state.vgic = VgicState::RESET;
        state.emul = Emulated::RESET;
        state.vdisr = 0;
        state.ptimer_line = false;
        if self.debug_loaded == Some(vcpu) {
            self.debug_loaded = None;
        }
        self.release_held_back(vcpu);
    }

    /// A forwarded device interrupt fired for `vcpu` (state `state`, `None` when it is gone):
    /// it becomes virtual interrupt `vintid`, hardware-linked to `pintid`, in a software list
    /// register (live if the vCPU is loaded). With none free the interrupt is deactivated and
    /// masked until the vCPU is next entered — never left to fire again and again.
    pub fn forward_irq(
        &mut self,
        vcpu: VcpuRef,
        state: Option<&mut VcpuGlue>,
        vintid: u32,
        pintid: u32,
    ) {
        let implemented = vgic::list_registers();
        let usable = capvisor_kernel::vgic::software_list_registers(implemented);
        let injected = if self.loaded == Some(vcpu) {
            vgic::inject_loaded(usable, vintid, FORWARD_PRIORITY, Some(pintid)).is_ok()
        } else {
            state.is_some_and(|state| {
                state
                    .vgic
                    .inject_linked(implemented, vintid, FORWARD_PRIORITY, pintid)
                    .is_ok()
            })
        };
        if !injected {
            gic::deactivate(pintid);
            gic::set_enabled(pintid, false);
            // More than 16 held back at once: this one stays masked until the vCPU is reset.
            let _ = self.held_back.push((vcpu, pintid));
        }
    }

    /// Unmasks the forwarded interrupts held back for `vcpu`.
    fn release_held_back(&mut self, vcpu: VcpuRef) {
        if self.held_back.iter().any(|(v, _)| *v == vcpu) {
            for (_, intid) in self.held_back.iter().filter(|(v, _)| *v == vcpu) {
                gic::set_enabled(*intid, true);
            }
            self.held_back.retain(|(v, _)| *v != vcpu);
        }
    }

    /// Saves the loaded vCPU's state into `state` (its object's; `None` when it is gone), so
    /// another can be loaded.
    pub fn unload(&mut self, state: Option<&mut VcpuGlue>) {
        if self.loaded.is_some() {
            match state {
                Some(state) => self.save_into(state),
                None => {
                    let mut scratch = VcpuGlue::RESET;
                    self.save_into(&mut scratch);
                }
            }
        }
    }

    /// Makes `vcpu`'s state the CPU's (the caller [`Guests::unload`]ed any other first).
    pub fn load(&mut self, vcpu: VcpuRef, state: &mut VcpuGlue) {
        self.release_held_back(vcpu);
        if self.loaded == Some(vcpu) {
            self.unpark();
            return;
        }
        if self.loaded.is_some() {
            let mut scratch = VcpuGlue::RESET;
            self.save_into(&mut scratch);
        }
        // A maintenance interrupt taken for the vCPU that left is not this one's.
        self.drained = false;
        // The timer's physical interrupt is made active again before its timer is re-enabled
        // (`vcpu::restore`), so it cannot be taken a second time meanwhile.
        if core::mem::take(&mut state.vgic.vtimer_active) {
            gic::set_vtimer_active();
        }
        vcpu::restore(&state.el1);
        vgic::restore(&state.vgic);
        if self.ras {
            vcpu::set_vdisr(state.vdisr);
        }
        self.loaded = Some(vcpu);
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

    /// Whether `vcpu` (state current) sleeps in WFI, and until when: it runs on at once if a
    /// virtual interrupt is pending in its list registers or held back for it, or its virtual
    /// timer has fired; otherwise it sleeps until its timer's deadline (if armed and unmasked,
    /// and its last timer interrupt is not still active) or an interrupt made pending for it.
    fn wakeup(&self, vcpu: VcpuRef, state: &VcpuGlue) -> Resumption {
        // A pending virtual interrupt ends the WFI only if the guest's virtual CPU interface
        // would signal it (group enabled, above the priority mask and the running priority).
        let pre_bits = vgic::pre_bits();
        let pending = state
            .vgic
            .pending_signalled(vgic::list_registers(), pre_bits);
        if pending || self.held_back.iter().any(|(v, _)| *v == vcpu) {
            return Resumption::Run;
        }
        // A timer whose interrupt the guest could not be signalled would not end it either.
        if !state.vgic.signals(VTIMER_PRIORITY, true, pre_bits) {
            return Resumption::Sleep { deadline: None };
        }
        // CNTV_CTL_EL0: ENABLE [0], IMASK [1] (Arm ARM D24.8.17); the virtual count is the
        // physical count minus CNTVOFF_EL2. The emulated physical timer counts the physical
        // count.
        let ctl = state.el1.sys[sys::CNTV_CTL];
        let virtual_deadline = (ctl & 0b11 == 0b01 && !state.vgic.vtimer_active)
            .then(|| state.el1.sys[sys::CNTV_CVAL].wrapping_add(state.el1.sys[sys::CNTVOFF]));
        let deadline = match (virtual_deadline, state.emul.ptimer.deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match deadline {
            Some(d) if crate::arch::aarch64::cpu::physical_counter() >= d => Resumption::Run,
            deadline => Resumption::Sleep { deadline },
        }
    }

    /// Makes virtual interrupt `intid` pending for `vcpu` at `priority` (`VcpuInjectIrq`).
    ///
    /// # Errors
    /// [`NoFreeListRegister`] when its list registers all hold other interrupts.
    pub fn inject(
        &mut self,
        vcpu: VcpuRef,
        state: &mut VcpuGlue,
        intid: u32,
        priority: u8,
    ) -> Result<(), NoFreeListRegister> {
        self.sync(vcpu, state);
        let result = state.vgic.inject(vgic::list_registers(), intid, priority);
        if result.is_err() {
            // The VMM keeps it: it hears when the guest has taken what is pending.
            state.vgic.overflow = true;
        }
        result
    }
}

/// The guest exit with syndrome `esr` (and FAR, HPFAR) as its fault message reports it
/// (ESR_EL2 ISS encodings, Arm ARM D24.2.39); `x` are the guest's x0–x30.
pub fn exit_fault(esr: u64, far: u64, hpfar: u64, x: &[u64; 31]) -> GuestFault {
    let (class, iss) = (esr::class(esr), esr::iss(esr));
    let args = [x[0], x[1], x[2], x[3]];
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
        ec::DABT_LOWER => {
            let ipa = Ipa::new(vcpu::fault_ipa(hpfar, far));
            GuestFault::data_abort(ipa, Far::new(far), Esr::new(esr), x)
        }
        ec::IABT_LOWER => GuestFault::InstructionAbort {
            ipa: Ipa::new(vcpu::fault_ipa(hpfar, far)),
            far: Far::new(far),
            esr: Esr::new(esr),
        },
        _ => GuestFault::Other { esr: Esr::new(esr) },
    }
}

/// PSTATE.M values a vCPU may be in (AArch64 only): EL0t, EL1t, EL1h.
fn valid_mode(pstate: u64) -> bool {
    matches!(pstate & 0x1f, 0b00000 | 0b00100 | 0b00101)
}

/// PSTATE bits a VMM may set: NZCV, DAIF and M[4:0].
const PSTATE_WRITABLE: u64 = (0xf << 28) | (0xf << 6) | 0x1f;

impl Guests {
    /// `vcpu_register`: `context` is the vCPU thread's saved registers, `state` the vCPU's.
    pub fn register(
        &mut self,
        context: &mut ThreadContext,
        vcpu: VcpuRef,
        state: &mut VcpuGlue,
        access: RegisterAccess,
    ) -> Result<u64, KernelError> {
        // Only the EL1 system registers live in the CPU while the vCPU is loaded: x0–x30, PC,
        // PSTATE and SP_EL0 are in its thread's saved context, and reach no further.
        let in_context = |r: &VcpuRegister| {
            matches!(
                r,
                VcpuRegister::Pc | VcpuRegister::Pstate | VcpuRegister::SpEl0
            )
        };
        match &access {
            RegisterAccess::ReadGp(_) | RegisterAccess::WriteGp(..) => {}
            RegisterAccess::Read(r) | RegisterAccess::Write(r, _) if in_context(r) => {}
            _ => self.sync(vcpu, state),
        }
        match access {
            RegisterAccess::ReadGp(n) => Ok(context.x[usize::from(n) % 31]),
            RegisterAccess::WriteGp(n, value) => {
                context.x[usize::from(n) % 31] = value;
                Ok(0)
            }
            RegisterAccess::Read(register) => read_named(context, state, register),
            RegisterAccess::Write(register, value) => {
                self.write_named(context, vcpu, state, register, value)?;
                Ok(0)
            }
        }
    }

    fn write_named(
        &mut self,
        context: &mut ThreadContext,
        vcpu: VcpuRef,
        state: &mut VcpuGlue,
        register: VcpuRegister,
        value: u64,
    ) -> Result<(), KernelError> {
        match register {
            VcpuRegister::Pc => context.pc = value,
            VcpuRegister::Pstate => {
                if value & !PSTATE_WRITABLE != 0 || !valid_mode(value) {
                    return Err(KernelError::InvalidArgument);
                }
                context.spsr = value;
            }
            VcpuRegister::SpEl0 => context.sp = value,
            VcpuRegister::Reset => {
                self.reset(vcpu, state);
                *context = ThreadContext::ZERO;
                context.spsr = PSTATE_RESET;
            }
            VcpuRegister::Mpidr => {
                let mpidr = vcpu::MPIDR_RESET | (value & vcpu::MPIDR_WRITABLE);
                state.el1.sys[sys::VMPIDR] = mpidr;
            }
            VcpuRegister::VirtualTimerCtl
            | VcpuRegister::PhysicalTimerCtl
            | VcpuRegister::GicVmcr
            | VcpuRegister::GicDeactivationTrapped
            | VcpuRegister::ListRegisters => return Err(KernelError::InvalidArgument),
            other => match list_register(other) {
                Some(n) => write_list_register(state, n, value)?,
                None => state.el1.sys[sys_index(other)] = value,
            },
        }
        Ok(())
    }

    /// `resolve_guest_fault`.
    pub fn resolve(
        &mut self,
        context: &mut ThreadContext,
        vcpu: VcpuRef,
        state: &mut VcpuGlue,
        fault: &GuestFault,
        resolution: &Resolution,
    ) -> Result<Resumption, KernelError> {
        let exit_esr = state.exit_esr;
        match resolution {
            Resolution::Resume => Ok(Resumption::Run),
            Resolution::Emulate { writes, advance_pc } => {
                for write in writes {
                    let n = usize::from(write.register.index());
                    // x31 is XZR here: writes to it are discarded.
                    if n < 31 {
                        context.x[n] = write.value;
                    }
                }
                if *advance_pc && !matches!(fault, GuestFault::Hvc { .. }) {
                    exception::step(context, exit_esr);
                }
                Ok(Resumption::Run)
            }
            Resolution::InjectAbort { esr, far } => {
                self.sync(vcpu, state);
                inject_abort(context, &mut state.el1, self.entry, *esr, *far)
                    .map(|()| Resumption::Run)
            }
            Resolution::WaitForInterrupt => {
                if !matches!(fault, GuestFault::Wait { event: false }) {
                    return Err(KernelError::InvalidArgument);
                }
                // The WFI completes when the vCPU wakes: step past it now.
                exception::step(context, exit_esr);
                self.sync(vcpu, state);
                Ok(self.wakeup(vcpu, state))
            }
        }
    }
}

/// Takes a synchronous abort to the guest's EL1 with `esr` and `far`, as hardware would
/// (`capvisor_kernel::exception::take_exception`: `AArch64.TakeException`).
///
/// The syndrome must be an abort of the class the guest's EL produces: from EL1 the same-EL
/// classes (0x21, 0x25), from EL0 (AArch64 or AArch32) the lower-EL ones (0x20, 0x24), with
/// IL = 1 (required for aborts, D24.2.40); anything else is refused and the vCPU stays stopped.
fn inject_abort(
    context: &mut ThreadContext,
    state: &mut El1State,
    entry: EntryFeatures,
    esr: Esr,
    far: Far,
) -> Result<(), KernelError> {
    let (esr, far) = (esr.raw(), far.raw());
    let class = esr::class(esr);
    let allowed = match context.spsr & 0x1f {
        0b00101 | 0b00100 => [ec::IABT_SAME, ec::DABT_SAME],
        0b00000 | 0b10000 => [ec::IABT_LOWER, ec::DABT_LOWER],
        _ => return Err(KernelError::InvalidArgument),
    };
    if !allowed.contains(&class) || esr & (1 << 25) == 0 || esr >> 32 != 0 {
        return Err(KernelError::InvalidArgument);
    }
    if exception::take_exception(context, state, entry, esr, far) {
        Ok(())
    } else {
        Err(KernelError::InvalidArgument)
    }
}

/// A named register of a vCPU (state current).
fn read_named(
    context: &ThreadContext,
    state: &VcpuGlue,
    register: VcpuRegister,
) -> Result<u64, KernelError> {
    let now = || crate::arch::aarch64::cpu::physical_counter();
    Ok(match register {
        VcpuRegister::Pc => context.pc,
        VcpuRegister::Pstate => context.spsr,
        VcpuRegister::SpEl0 => context.sp,
        VcpuRegister::Reset => return Err(KernelError::InvalidArgument),
        VcpuRegister::VirtualTimerCtl => {
            // ISTATUS from the saved compare value against the virtual count now.
            let ctl = state.el1.sys[sys::CNTV_CTL] & 0b11;
            let count = now().wrapping_sub(state.el1.sys[sys::CNTVOFF]);
            let met = ctl & 1 == 1 && count >= state.el1.sys[sys::CNTV_CVAL];
            ctl | (u64::from(met) << 2)
        }
        VcpuRegister::PhysicalTimerCtl => state.emul.ptimer.read_ctl(now()),
        VcpuRegister::ListRegisters => vgic::list_registers() as u64,
        VcpuRegister::GicVmcr => state.vgic.vmcr,
        VcpuRegister::GicDeactivationTrapped => u64::from(vgic::traps_deactivation()),
        other => match list_register(other) {
            Some(n) if n < vgic::list_registers() => state.vgic.lr[n],
            Some(_) => 0,
            None => state.el1.sys[sys_index(other)],
        },
    })
}

/// A VMM's write of list register `n` (state current): only the State field changes, of a
/// register that holds an interrupt; a hardware-linked interrupt that leaves the register or
/// whose active state ends is deactivated (the guest will not deactivate it now) — the virtual
/// timer's by not making it active again on the next load.
fn write_list_register(state: &mut VcpuGlue, n: usize, value: u64) -> Result<(), KernelError> {
    use capvisor_kernel::vgic::{ACTIVE, HW, STATE};
    if n >= vgic::list_registers() {
        return Err(KernelError::InvalidArgument);
    }
    let old = state.vgic.lr[n];
    if old & STATE == 0 {
        return Err(KernelError::InvalidArgument);
    }
    let new = (old & !STATE) | (value & STATE);
    state.vgic.lr[n] = new;
    // A hardware-linked interrupt's physical interrupt is active from the moment the kernel
    // took it until the guest deactivates the virtual one: it ends when the register no longer
    // holds it active, or when it leaves the register altogether (its pending state cleared).
    if old & HW != 0 && (new & STATE == 0 || (old & ACTIVE != 0 && new & ACTIVE == 0)) {
        let physical = ((old >> 32) & 0x3ff) as u32;
        if physical == gic::vtimer() {
            state.vgic.vtimer_active = false;
        } else {
            gic::deactivate(physical);
        }
    }
    Ok(())
}

/// The number of a `ListRegister<n>`.
const fn list_register(register: VcpuRegister) -> Option<usize> {
    let code = register.code();
    let first = VcpuRegister::ListRegister0.code();
    if code >= first && code < first + 16 {
        Some((code - first) as usize)
    } else {
        None
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
        // Handled by the callers (they live in the thread context or the glue's state, or are
        // write-only).
        _ => sys::TPIDR_EL1,
    }
}

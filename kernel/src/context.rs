//! The register files the glue keeps inside kernel objects: a thread's saved context and a vCPU's
//! EL1 state, and the per-VM counters. Plain data, laid out for the glue's assembly
//! (`arch/aarch64/el0.rs`, `arch/aarch64/vcpu.rs`), which saves and restores them by offset.

/// A thread's registers while it is not running.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadContext {
    /// x0 to x30.
    pub x: [u64; 31],
    /// SP_EL0.
    pub sp: u64,
    /// ELR_EL2: where it resumes.
    pub pc: u64,
    /// SPSR_EL2: the state it resumes in.
    pub spsr: u64,
}

const _: () = assert!(size_of::<ThreadContext>() == 34 * 8);

impl ThreadContext {
    /// All registers zero.
    pub const ZERO: Self = Self {
        x: [0; 31],
        sp: 0,
        pc: 0,
        spsr: 0,
    };

    /// A service thread about to run its first instruction: `pc`, `sp`, EL0t, and x0 = its IPC
    /// buffer's address (the runtime's convention); every other register zero.
    #[must_use]
    pub const fn service_start(pc: u64, sp: u64, ipc_buffer: u64) -> Self {
        let mut context = Self {
            pc,
            sp,
            spsr: SPSR_EL0T,
            ..Self::ZERO
        };
        context.x[0] = ipc_buffer;
        context
    }
}

/// SPSR for EL0t, AArch64, interrupts unmasked (they are taken to EL2 under TGE).
pub const SPSR_EL0T: u64 = 0;

/// SCTLR_EL1 at reset: its RES1 bits (29, 28, 23, 22, 20, 11) with the MMU and caches off
/// (Arm ARM D24.2.161, SCTLR_EL1; KVM uses the same value).
pub const SCTLR_EL1_RESET: u64 = 0x30d0_0800;
/// PSTATE at reset: EL1h with D, A, I and F masked.
pub const PSTATE_RESET: u64 = 0x3c5;

/// A vCPU's EL1 system registers, timer and FP/SIMD state while it is not loaded.
#[repr(C, align(16))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct El1State {
    /// Q0–Q31 (as pairs of u64, low first).
    pub fpsimd: [u64; 64],
    /// FPCR, FPSR.
    pub fpcr: u64,
    /// FPSR.
    pub fpsr: u64,
    /// The system registers, in [`SYSREGS`] order.
    pub sys: [u64; SYSREG_COUNT],
}

/// Indices into [`El1State::sys`] (the save/restore code stores them in this order, by offset).
#[allow(
    dead_code,
    reason = "every index documents the layout; the assembly uses offsets"
)]
pub mod sys {
    pub const SCTLR: usize = 0;
    pub const TTBR0: usize = 1;
    pub const TTBR1: usize = 2;
    pub const TCR: usize = 3;
    pub const MAIR: usize = 4;
    pub const AMAIR: usize = 5;
    pub const VBAR: usize = 6;
    pub const CONTEXTIDR: usize = 7;
    pub const TPIDR_EL1: usize = 8;
    pub const TPIDR_EL0: usize = 9;
    pub const TPIDRRO_EL0: usize = 10;
    pub const SP_EL1: usize = 11;
    pub const ELR: usize = 12;
    pub const SPSR: usize = 13;
    pub const ESR: usize = 14;
    pub const FAR: usize = 15;
    pub const AFSR0: usize = 16;
    pub const AFSR1: usize = 17;
    pub const PAR: usize = 18;
    pub const CPACR: usize = 19;
    pub const CNTKCTL: usize = 20;
    pub const CSSELR: usize = 21;
    pub const CNTV_CTL: usize = 22;
    pub const CNTV_CVAL: usize = 23;
    pub const CNTVOFF: usize = 24;
    pub const VMPIDR: usize = 25;
}

/// Number of saved system registers.
pub const SYSREG_COUNT: usize = 26;
/// VMPIDR_EL2 at creation: bit 31 (RES1), affinity 0.0.0.0.
pub const MPIDR_RESET: u64 = 1 << 31;
/// The bits of MPIDR_EL1 a VMM may set: Aff3 [39:32], U [30], MT [24], Aff2–Aff0 [23:0].
pub const MPIDR_WRITABLE: u64 = (0xff << 32) | (1 << 30) | (1 << 24) | 0xff_ffff;

const _: () = assert!(size_of::<El1State>() == ((64 + 2 + SYSREG_COUNT) * 8).next_multiple_of(16));

impl El1State {
    /// The reset state: everything zero but SCTLR_EL1's RES1 bits.
    pub const RESET: Self = {
        let mut sys = [0; SYSREG_COUNT];
        sys[sys::SCTLR] = SCTLR_EL1_RESET;
        sys[sys::VMPIDR] = MPIDR_RESET;
        Self {
            fpsimd: [0; 64],
            fpcr: 0,
            fpsr: 0,
            sys,
        }
    };
}

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

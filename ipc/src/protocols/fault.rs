//! The kernel's fault messages: a guest (vCPU) or service fault, and the handler's reply, in a
//! fixed layout (version 2, [`wire`]: a label and at most four words in the message registers, as
//! the guest calls of [`guest_call`](crate::protocols::guest_call) are), so the EL2 kernel encodes
//! and decodes them without serde or postcard.
//!
//! The kernel turns a trap it does not handle itself into a [`FaultMessage`] sent to the endpoint
//! that the thread's (or vCPU's thread's) fault capability names (the seL4 model); that
//! capability's badge tells the handler which thread or vCPU it is. The thread stays blocked until
//! the handler replies; the kernel decodes the reply ([`decode_guest_reply`],
//! [`decode_service_reply`]) and validates a resolution (register numbers, ESR values) before it
//! touches the vCPU. A trapped `hvc` or `smc` goes as a guest call instead, which a guest reply of
//! this layout may also answer. A guest fault carries no PC: the vCPU's is in its registers
//! (`VcpuReadRegisters`), as for a guest call. Handlers are served by [`serve`].
//!
//! ISS fields are decoded as the Arm ARM (DDI 0487) specifies, register ESR_EL2, "ISS encoding for
//! an exception from a Data Abort" and "ISS encoding for an exception from MSR, MRS, or System
//! instruction execution in AArch64 state".

use crate::abi::MSG_REGS_IN_CPU;
use crate::types::{Access, Esr, Far, Ipa};

mod serve;
pub mod wire;

pub use serve::{Handler, handle, serve};
pub use wire::{
    DecodeError, MessageKind, ReplyKind, VERSION, Words, decode_guest_reply, decode_service_reply,
    encode_guest_reply, encode_service_reply,
};

crate::stable_codes! {
    @fixed
    /// A fault handler's errors, sent as a reply's fields.
    ///
    /// # Errors
    /// Either makes the kernel stop the vCPU or thread (its supervisor or VMM may restart it).
    pub enum FaultError: u16 {
        /// The handler cannot resolve the fault.
        Unhandled = 1,
        /// The message was not a fault message (a sender other than the kernel).
        Malformed = 2,
    }
}

/// A general-purpose register number, 0–30, or 31 for XZR (reads as zero, writes are discarded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GpRegister(u8);

/// A register number above 31.
///
/// # Errors
/// Returned by [`GpRegister::new`] with the rejected number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadRegister(pub u8);

impl core::fmt::Display for BadRegister {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("register number above 31")
    }
}

impl GpRegister {
    /// The zero register.
    pub const XZR: Self = Self(31);

    /// Register `n`.
    ///
    /// # Errors
    /// [`BadRegister`] when `n > 31`.
    pub const fn new(n: u8) -> Result<Self, BadRegister> {
        if n <= 31 {
            Ok(Self(n))
        } else {
            Err(BadRegister(n))
        }
    }

    /// The register number.
    #[must_use]
    pub const fn index(self) -> u8 {
        self.0
    }

    /// Its value among `x` (x0–x30); XZR is 0.
    #[must_use]
    pub const fn value_in(self, x: &[u64; 31]) -> u64 {
        if self.0 < 31 { x[self.0 as usize] } else { 0 }
    }
}

impl TryFrom<u8> for GpRegister {
    type Error = BadRegister;
    fn try_from(n: u8) -> Result<Self, BadRegister> {
        Self::new(n)
    }
}

impl From<GpRegister> for u8 {
    fn from(register: GpRegister) -> u8 {
        register.0
    }
}

/// Access size of a data abort (ISS.SAS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessSize {
    /// 1 byte.
    Byte,
    /// 2 bytes.
    Halfword,
    /// 4 bytes.
    Word,
    /// 8 bytes.
    Doubleword,
}

impl AccessSize {
    /// The size in bytes.
    #[must_use]
    pub const fn bytes(self) -> u8 {
        match self {
            Self::Byte => 1,
            Self::Halfword => 2,
            Self::Word => 4,
            Self::Doubleword => 8,
        }
    }
}

/// Bit `n` of an ISS.
const fn iss_bit(iss: u32, n: u32) -> bool {
    (iss >> n) & 1 == 1
}

/// An ISS field: its lowest bit and width.
#[derive(Clone, Copy)]
struct IssField(u32, u32);

impl IssField {
    /// The field's value in `iss` (at most 8 bits wide).
    const fn get(self, iss: u32) -> u8 {
        ((iss >> self.0) & ((1 << self.1) - 1)) as u8
    }

    /// `value` in the field's place, its bits above the width dropped.
    const fn put(self, value: u8) -> u32 {
        ((value as u32) & ((1 << self.1) - 1)) << self.0
    }
}

/// The fields of a trapped MSR/MRS's ISS, and bit 0, Direction (1 a read): together bits 21:0.
const OP0: IssField = IssField(20, 2);
const OP2: IssField = IssField(17, 3);
const OP1: IssField = IssField(14, 3);
const CRN: IssField = IssField(10, 4);
const RT: IssField = IssField(5, 5);
const CRM: IssField = IssField(1, 4);
const SYSREG_ISS: u32 = (1 << 22) - 1;
const _: () = {
    let fields = [OP0, OP2, OP1, CRN, RT, CRM, IssField(0, 1)];
    let (mut covered, mut i) = (0u32, 0);
    while i < fields.len() {
        let mask = ((1 << fields[i].1) - 1) << fields[i].0;
        assert!(covered & mask == 0, "system-register ISS fields overlap");
        covered |= mask;
        i += 1;
    }
    assert!(
        covered == SYSREG_ISS,
        "system-register ISS fields tile bits 21:0"
    );
};

/// ISS.ISV and ISS.WnR of a data abort: a write whose syndrome names its register.
const ISV: u64 = 1 << 24;
const WNR: u64 = 1 << 6;

/// Whether a data abort with syndrome `esr` carries the stored value (a write with ISV = 1).
const fn carries_value(esr: u64) -> bool {
    esr & (ISV | WNR) == ISV | WNR
}

/// The decoded instruction syndrome of a data abort, present when ISS.ISV is 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataAccess {
    /// ISS.WnR: a write.
    pub write: bool,
    /// ISS.SAS.
    pub size: AccessSize,
    /// ISS.SRT: the transfer register.
    pub register: GpRegister,
    /// ISS.SSE: a load sign-extends.
    pub sign_extend: bool,
    /// ISS.SF: the register is 64-bit (else 32-bit).
    pub sixty_four: bool,
    /// ISS.AR: acquire/release semantics.
    pub acquire_release: bool,
}

impl DataAccess {
    /// Decodes a data abort's ISS (ESR_EL2 bits 24:0); `None` when ISV is 0 (no syndrome: the VMM must
    /// decode the instruction or inject an abort).
    #[must_use]
    pub const fn from_iss(iss: u32) -> Option<Self> {
        if !iss_bit(iss, 24) {
            return None;
        }
        let size = match (iss >> 22) & 0b11 {
            0 => AccessSize::Byte,
            1 => AccessSize::Halfword,
            2 => AccessSize::Word,
            _ => AccessSize::Doubleword,
        };
        Some(Self {
            write: iss_bit(iss, 6),
            size,
            register: GpRegister(((iss >> 16) & 0b1_1111) as u8),
            sign_extend: iss_bit(iss, 21),
            sixty_four: iss_bit(iss, 15),
            acquire_release: iss_bit(iss, 14),
        })
    }
}

/// A trapped MSR/MRS (ESR_EL2.EC 0x18), decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SysRegAccess {
    /// Op0.
    pub op0: u8,
    /// Op1.
    pub op1: u8,
    /// CRn.
    pub crn: u8,
    /// CRm.
    pub crm: u8,
    /// Op2.
    pub op2: u8,
    /// Rt.
    pub register: GpRegister,
    /// An MSR (write to the system register); else an MRS.
    pub write: bool,
}

impl SysRegAccess {
    /// Decodes the ISS of a trapped MSR/MRS.
    #[must_use]
    pub const fn from_iss(iss: u32) -> Self {
        Self {
            op0: OP0.get(iss),
            op2: OP2.get(iss),
            op1: OP1.get(iss),
            crn: CRN.get(iss),
            register: GpRegister(RT.get(iss)),
            crm: CRM.get(iss),
            // Direction: 1 is a read (MRS), 0 a write (MSR).
            write: iss & 1 == 0,
        }
    }

    /// The ISS's bits 21:0 that [`SysRegAccess::from_iss`] decodes to this (each field's bits
    /// above its width dropped).
    #[must_use]
    pub const fn iss(&self) -> u32 {
        OP0.put(self.op0)
            | OP2.put(self.op2)
            | OP1.put(self.op1)
            | CRN.put(self.crn)
            | RT.put(self.register.0)
            | CRM.put(self.crm)
            | if self.write { 0 } else { 1 }
    }
}

/// A guest (vCPU) fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestFault {
    /// A stage-2 data abort: RAM not yet mapped (for the memory manager) or MMIO to emulate.
    /// [`GuestFault::data_abort`] makes one as the kernel reports it.
    DataAbort {
        /// The faulting IPA (from HPFAR_EL2 and FAR_EL2's page offset).
        ipa: Ipa,
        /// FAR_EL2.
        far: Far,
        /// The decoded syndrome, when ISV is 1 (always `DataAccess::from_iss` of `esr`).
        access: Option<DataAccess>,
        /// The raw ESR_EL2.
        esr: Esr,
        /// For a write with ISV = 1 (and only then): the value of the transfer register x\[SRT\]
        /// (0 for XZR), as `VcpuReadRegisters` would read it, so an MMIO write's handler need not.
        write_value: Option<u64>,
    },
    /// A stage-2 instruction abort.
    InstructionAbort {
        /// The faulting IPA.
        ipa: Ipa,
        /// FAR_EL2.
        far: Far,
        /// The raw ESR_EL2.
        esr: Esr,
    },
    /// An HVC from the guest (ELR already points past it); sent as a guest call.
    Hvc {
        /// The instruction's immediate.
        imm: u16,
        /// x0–x3 (SMCCC arguments; a handler that needs x4–x7 reads them with `VcpuReadRegisters`).
        args: [u64; MSG_REGS_IN_CPU],
    },
    /// An SMC trapped by HCR_EL2.TSC (ELR points at it: emulate with `advance_pc`); sent as a
    /// guest call.
    Smc {
        /// The instruction's immediate.
        imm: u16,
        /// x0–x3 (SMCCC arguments).
        args: [u64; MSG_REGS_IN_CPU],
    },
    /// A trapped WFI or WFE.
    Wait {
        /// WFE (else WFI).
        event: bool,
    },
    /// A trapped system-register access.
    SysReg(SysRegAccess),
    /// The vCPU took every pending interrupt its list registers held while its VMM still had
    /// more for it (a `VcpuInjectIrq` found them full): the GIC's maintenance interrupt
    /// (ICH_MISR_EL2.NP, IHI 0069H 12.5.9). The VMM makes room — it may take active interrupts
    /// of a guest that deactivates them itself (EOImode 1: its ICC_DIR_EL1 writes trap) out of
    /// the list registers — and injects the rest. Resume the vCPU with `Resolution::Resume`.
    ListRegistersDrained,
    /// Any other trap the kernel does not handle itself.
    Other {
        /// The raw ESR_EL2.
        esr: Esr,
    },
}

impl GuestFault {
    /// A stage-2 data abort with syndrome `esr` by a vCPU whose x0–x30 are `x`: its access decoded
    /// from the ISS and, for a write with ISV = 1, the value of x\[SRT\].
    #[must_use]
    pub const fn data_abort(ipa: Ipa, far: Far, esr: Esr, x: &[u64; 31]) -> Self {
        let access = DataAccess::from_iss(esr.raw() as u32 & 0x1ff_ffff);
        let write_value = match access {
            Some(DataAccess {
                write: true,
                register,
                ..
            }) => Some(register.value_in(x)),
            _ => None,
        };
        Self::DataAbort {
            ipa,
            far,
            access,
            esr,
            write_value,
        }
    }
}

/// A register write in an emulation reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegisterWrite {
    /// The register (writes to XZR are discarded).
    pub register: GpRegister,
    /// The value.
    pub value: u64,
}

/// Registers one emulation reply may write (x0–x3 carry SMCCC results).
pub const MAX_REGISTER_WRITES: usize = 4;

/// How the handler resolved a guest fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Resume the vCPU at the same instruction (e.g. after a mapping was installed).
    Resume,
    /// The handler emulated the instruction: write these registers, then advance the PC by the
    /// instruction's length (ESR_EL2.IL) if `advance_pc`. For an HVC the PC already points past
    /// the instruction (its preferred return address, Arm ARM D1.10.1), so `advance_pc` is ignored.
    Emulate {
        /// Registers to write.
        writes: heapless::Vec<RegisterWrite, MAX_REGISTER_WRITES>,
        /// Skip the faulting instruction.
        advance_pc: bool,
    },
    /// Inject a synchronous external abort into the guest at EL1 with exactly this ESR and FAR.
    InjectAbort {
        /// ESR_EL1 to present.
        esr: Esr,
        /// FAR_EL1 to present.
        far: Far,
    },
    /// For a trapped WFI: step past it and let the vCPU sleep until an interrupt can wake it —
    /// a virtual interrupt pending in its list registers, its virtual timer firing, or one its
    /// VMM injects — instead of running (a guest that idles gives its CPU away). The kernel
    /// resumes it at once if one is already pending.
    WaitForInterrupt,
}

/// A service thread's fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceFault {
    /// An access outside its mapped memory.
    Memory {
        /// The faulting address (the service's IPA).
        address: Ipa,
        /// The access.
        access: Access,
        /// The raw ESR_EL2.
        esr: Esr,
    },
    /// An `svc` with a number that is not a syscall.
    UnknownSyscall {
        /// The number in `x7`.
        number: u64,
    },
    /// Any other exception (undefined instruction, alignment, …).
    Exception {
        /// The raw ESR_EL2.
        esr: Esr,
    },
}

/// How a supervisor resolved a service fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceResolution {
    /// Resume the thread where it faulted (after the supervisor fixed the cause).
    Resume,
    /// Stop the thread; the supervisor will restart the service (with a new generation).
    Stop,
}

/// What a fault endpoint receives from the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultMessage {
    /// A fault of the vCPU the badge names.
    Guest(GuestFault),
    /// A fault of the service thread the badge names, at `pc`.
    Service {
        /// Where it faulted.
        pc: u64,
        /// What happened.
        fault: ServiceFault,
    },
}

#[cfg(test)]
mod tests;

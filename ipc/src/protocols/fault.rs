//! The kernel's fault messages: guest (vCPU) faults and service faults, and the handler's replies.
//!
//! The kernel turns a trap it does not handle itself into a [`Request`] sent to the endpoint that the
//! vCPU's (or thread's) capability names (the seL4 model); the faulting vCPU stays blocked until the
//! handler replies with a [`Resolution`], which the kernel validates (register numbers, ESR values)
//! before it touches the vCPU. Fields are decoded from ESR_EL2 as described in the Arm ARM (DDI 0487),
//! register ESR_EL2, "ISS encoding for an exception from a Data Abort" and "ISS encoding for an
//! exception from MSR, MRS, or System instruction execution in AArch64 state"; the raw ESR is kept too.

use serde::{Deserialize, Serialize};

use crate::protocol::{ProtocolId, Version};
use crate::types::{Access, Esr, Far, Ipa, ThreadId, VcpuId};

crate::stable_codes! {
    /// A fault handler's errors.
    ///
    /// # Errors
    /// [`FaultError::Unhandled`]: the kernel stops the vCPU or thread and reports it to its supervisor.
    pub enum FaultError: u16 {
        /// The handler cannot resolve the fault.
        Unhandled = 1,
    }
}

/// A general-purpose register number, 0–30, or 31 for XZR (reads as zero, writes are discarded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

/// Bits `shift + width - 1 : shift` of an ISS (at most 8 bits wide).
const fn iss_field(iss: u32, shift: u32, width: u32) -> u8 {
    ((iss >> shift) & ((1 << width) - 1)) as u8
}

/// The decoded instruction syndrome of a data abort, present when ISS.ISV is 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
            op0: iss_field(iss, 20, 2),
            op2: iss_field(iss, 17, 3),
            op1: iss_field(iss, 14, 3),
            crn: iss_field(iss, 10, 4),
            register: GpRegister(iss_field(iss, 5, 5)),
            crm: iss_field(iss, 1, 4),
            // Direction: 1 is a read (MRS), 0 a write (MSR).
            write: iss & 1 == 0,
        }
    }
}

/// A guest (vCPU) fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GuestFault {
    /// A stage-2 data abort: RAM not yet mapped (for the memory manager) or MMIO to emulate.
    DataAbort {
        /// The faulting IPA (from HPFAR_EL2 and FAR_EL2's page offset).
        ipa: Ipa,
        /// FAR_EL2.
        far: Far,
        /// The decoded syndrome, when ISV is 1.
        access: Option<DataAccess>,
        /// The raw ESR_EL2.
        esr: Esr,
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
    /// An HVC from the guest (ELR already points past it).
    Hvc {
        /// The instruction's immediate.
        imm: u16,
        /// x0–x7 (SMCCC arguments).
        args: [u64; 8],
    },
    /// An SMC trapped by HCR_EL2.TSC (ELR points at it: emulate with `advance_pc`).
    Smc {
        /// The instruction's immediate.
        imm: u16,
        /// x0–x7 (SMCCC arguments).
        args: [u64; 8],
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

/// A register write in an emulation reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterWrite {
    /// The register (writes to XZR are discarded).
    pub register: GpRegister,
    /// The value.
    pub value: u64,
}

/// Registers one emulation reply may write (x0–x3 carry SMCCC results).
pub const MAX_REGISTER_WRITES: usize = 4;

/// How the handler resolved a guest fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceResolution {
    /// Resume the thread where it faulted (after the supervisor fixed the cause).
    Resume,
    /// Stop the thread; the supervisor will restart the service (with a new generation).
    Stop,
}

crate::protocol! {
    /// The kernel's fault messages.
    protocol Fault {
        id: ProtocolId::FAULT,
        version: Version::new(1, 2),
        error: FaultError,
    }
    /// A vCPU faulted at `pc`.
    fn guest(vcpu: VcpuId, pc: u64, fault: GuestFault) -> Resolution as Guest;
    /// A service thread faulted at `pc`.
    fn service(thread: ThreadId, pc: u64, fault: ServiceFault) -> ServiceResolution as Service;
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn sysreg_iss_decodes_cntvct_read() {
        // MRS x3, CNTVCT_EL0: op0 3, op1 3, CRn 14, CRm 0, op2 2, direction read.
        let iss = (3 << 20) | (2 << 17) | (3 << 14) | (14 << 10) | (3 << 5) | 1;
        let access = SysRegAccess::from_iss(iss);
        assert_eq!(
            (access.op0, access.op1, access.crn, access.crm, access.op2),
            (3, 3, 14, 0, 2)
        );
        assert_eq!(access.register.index(), 3);
        assert!(!access.write);
    }

    #[test]
    fn an_emulation_reply_with_too_many_register_writes_does_not_decode() {
        // Emulate (variant 1), five writes of x0 = 0, advance_pc = true.
        let mut bytes = vec![1u8, 5];
        bytes.extend_from_slice(&[0, 0].repeat(5));
        bytes.push(1);
        assert!(postcard::from_bytes::<Resolution>(&bytes).is_err());
        bytes[1] = 4;
        bytes.drain(10..12);
        let resolution = postcard::from_bytes::<Resolution>(&bytes).unwrap();
        assert!(
            matches!(resolution, Resolution::Emulate { ref writes, advance_pc: true } if writes.len() == 4)
        );
    }

    #[test]
    fn register_numbers_above_31_do_not_decode() {
        assert!(postcard::from_bytes::<GpRegister>(&[32]).is_err());
        assert_eq!(
            postcard::from_bytes::<GpRegister>(&[31]).unwrap(),
            GpRegister::XZR
        );
    }
}

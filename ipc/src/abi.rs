//! The kernel ABI: syscall numbers, invocation labels, the message-info word, the IPC buffer and
//! `KernelError`.
//!
//! These follow seL4's proven conventions, renumbered for capvisor (we do not share a binary ABI with
//! seL4, only its shape):
//! - **Registers** (AArch64, `svc #0` from EL0): `x7` holds the [`Syscall`] number; `x0` the capability
//!   pointer on entry and the sender's badge on return; `x1` the [`MessageInfo`] word; `x2`–`x5` the first
//!   [`MSG_REGS_IN_CPU`] message registers, the rest live in the thread's [`IpcBuffer`]. This is seL4's
//!   aarch64 layout, so the fast path (call/reply_recv with a short message) never touches memory.
//! - **Capability invocations** are not separate syscalls: a thread `call`s a capability to a kernel
//!   object, and the message-info label is the [`Invocation`] (seL4's invocation labels). So "map",
//!   "retype", "mint" and the rest are [`Invocation`]s, checked against the invoked object's type.
//! - **Replies** use an implicit one-shot reply capability held by the server thread between `recv` and
//!   `reply`/`reply_recv` (seL4's non-MCS model): a server cannot reply twice, nor to a caller it never
//!   received from.
//! - **Capability transfer**: up to [`MAX_CAPS`] capabilities per message (seL4: 3 "extra caps"), only
//!   through a capability with `Rights::GRANT` (or `GRANT_REPLY` in a reply). A transferred capability
//!   to an endpoint badged with the receiving endpoint itself is "unwrapped": the receiver gets its
//!   badge instead of a new slot, and the matching bit of `caps_unwrapped` is set.
//! - **Error codes**: on return from `svc`, `x7` holds 0 for success or a [`KernelError`] code. The kernel
//!   never reports its own errors inside a message, so a failed syscall or invocation cannot be confused
//!   with a reply that a (possibly hostile) server sends; servers' statuses are the reply's label, and
//!   the protocol layer checks them.

use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

/// Message registers in the IPC buffer (64 words: 512 payload bytes).
pub const MSG_MAX_WORDS: usize = 64;
/// Payload bytes a message can carry.
pub const MSG_MAX_BYTES: usize = MSG_MAX_WORDS * 8;
/// Message registers passed in CPU registers `x2`–`x5` on the fast path.
pub const MSG_REGS_IN_CPU: usize = 4;
/// Capabilities one message can transfer.
pub const MAX_CAPS: usize = 3;

crate::stable_codes! {
    /// Syscall numbers, in `x7`.
    ///
    /// # Errors
    /// A number that is none of these makes the kernel answer [`KernelError::InvalidSyscall`].
    pub enum Syscall: u64 {
        /// Send on an endpoint and wait for the reply, atomically (the caller donates a reply capability).
        Call = 1,
        /// Reply to the last caller, then wait on an endpoint: a server's loop in one syscall.
        ReplyRecv = 2,
        /// Send on an endpoint, blocking until a receiver takes the message.
        Send = 3,
        /// Send if a receiver is waiting, else drop the message (for the kernel's fault path, never blocks).
        NbSend = 4,
        /// Wait for a message on an endpoint (or for a notification bound to the thread).
        Recv = 5,
        /// Poll an endpoint without blocking.
        NbRecv = 6,
        /// Reply to the last caller without waiting.
        Reply = 7,
        /// OR bits into a notification word, waking a waiter.
        Signal = 8,
        /// Wait until a notification word is non-zero, then take (and clear) it.
        Wait = 9,
        /// Take a notification word without blocking (0 if nothing was signalled).
        Poll = 10,
        /// Give up the rest of the time slice.
        Yield = 11,
    }
}

crate::stable_codes! {
    /// The rest of the syscall table: the EL2 glue's own calls, answered before the object model
    /// (which knows only [`Syscall`], so it answers these numbers [`KernelError::InvalidSyscall`]).
    /// Their own type keeps them out of the object model's dispatch; their numbers are checked
    /// below never to be a [`Syscall`]'s.
    ///
    /// # Errors
    /// As for [`Syscall`].
    pub enum GlueSyscall: u64 {
        /// Print `x1` bytes at `x0` (at most 1 KiB) on the console, each line prefixed with the
        /// service's name.
        DebugWrite = 12,
        /// Stop the system with status `x0` (0: success), for test images.
        DebugHalt = 13,
    }
}

// One table: no number is both the object model's and the glue's.
const _: () = {
    let mut i = 0;
    while i < GlueSyscall::ALL.len() {
        assert!(
            Syscall::from_code(GlueSyscall::ALL[i].code()).is_none(),
            "a glue syscall number is also an object-model syscall"
        );
        i += 1;
    }
};

crate::stable_codes! {
    /// Capability invocations: the label of a `call` on a capability to a kernel object.
    ///
    /// # Errors
    /// An invocation that the invoked object does not support is [`KernelError::IllegalOperation`].
    pub enum Invocation: u64 {
        /// Untyped: create objects of a kind in destination slots.
        Retype = 1,
        /// CNode: copy a capability with the same or fewer rights.
        Copy = 2,
        /// CNode: copy with fewer rights and a badge.
        Mint = 3,
        /// CNode: move a capability to another slot.
        Move = 4,
        /// CNode: delete one capability.
        Delete = 5,
        /// CNode: delete every capability derived from one.
        Revoke = 6,
        /// Frame or DeviceFrame: map into a VM or service stage-2 at an IPA, with rights and memory type.
        Map = 7,
        /// Frame or DeviceFrame: unmap (the kernel invalidates the TLB by IPA for the VMID before returning).
        Unmap = 8,
        /// IrqHandler: acknowledge the interrupt so it can fire again.
        IrqAck = 9,
        /// IrqHandler: name the notification (and bit) the interrupt signals.
        IrqSetNotification = 10,
        /// IrqControl: create an IrqHandler for one INTID.
        IrqIssueHandler = 11,
        /// Vcpu: read its general-purpose and selected system registers.
        VcpuReadRegisters = 12,
        /// Vcpu: write them.
        VcpuWriteRegisters = 13,
        /// Vcpu: inject a virtual interrupt through a list register.
        VcpuInjectIrq = 14,
        /// Vcpu: bind the endpoint its faults are sent to.
        VcpuSetFaultEndpoint = 15,
        /// Vcpu or Thread: start running.
        Resume = 16,
        /// Vcpu or Thread: stop running.
        Suspend = 17,
        /// Any capability: report its object kind and rights.
        Identify = 18,
        /// Vm: clean+invalidate to PoC or invalidate the instruction cache for a range of the VM's IPA space.
        CacheMaintenance = 19,
        /// Thread: set entry point, stack, IPC buffer, priority, CSpace, address space and fault
        /// endpoint (see `kernel/src/object/tcb.rs` for the argument words).
        ThreadConfigure = 20,
        /// Thread: bind (or, with 0, unbind) a notification that `Recv` also waits on.
        ThreadBindNotification = 21,
        /// Thread: bind a vCPU (the thread then runs it at EL1 in its VM); the thread must be
        /// inactive and configured with a `Vm` as its address space.
        ThreadBindVcpu = 22,
        /// IrqHandler: deliver its interrupt (an SPI) to a vCPU as virtual interrupt `vINTID`
        /// through a hardware-linked list register, so the guest's deactivation deactivates it
        /// (vCPU CPtr with WRITE, vINTID 32–1019; a vCPU CPtr of 0 stops forwarding).
        IrqForwardToVcpu = 23,
        /// IrqControl: name a thread (word 0, a CPtr with WRITE) after the image's service entry
        /// word 1 (its console prefix and fault reports), as init does for the services it makes
        /// from the boot plan.
        IrqControlNameThread = 24,
        /// Untyped: where it is: its physical base, its size in bytes, and its memory (0 RAM;
        /// device memory: 1 Device-nGnRE only, 2 Device-nGnRE or Normal non-cacheable, 3 Normal
        /// write-back, a cacheable PFNMAP), so init can find the untyped that covers an address
        /// and say where it put a guest's RAM.
        UntypedDescribe = 25,
        /// IrqControl (the root's platform capability): make the untyped word 0 names (with
        /// WRITE, nothing made from it) device memory whose frames may be mapped with the memory
        /// types word 1 names (1 Device-nGnRE only, 2 Device-nGnRE or Normal non-cacheable,
        /// 3 Normal write-back: a cacheable PFNMAP). init sets a device region's types as the
        /// manifest gives them, and makes a cacheable carve-out of RAM this way (whose frames
        /// the kernel still zeroes); the kernel still refuses a cacheable device mapping without
        /// FWB and DIC.
        UntypedSetMemory = 26,
    }
}

crate::stable_codes! {
    /// Register numbers of `VcpuReadRegisters` / `VcpuWriteRegisters` (word 0), besides
    /// x0–x30, which are numbers 0–30.
    ///
    /// # Errors
    /// Any other number is [`KernelError::InvalidArgument`].
    pub enum VcpuRegister: u64 {
        /// The guest's PC (ELR_EL2 while it is out).
        Pc = 32,
        /// The guest's PSTATE (SPSR_EL2 while it is out): only EL1h, EL1t and EL0t in AArch64 are
        /// accepted on write, with the flags and DAIF as given.
        Pstate = 33,
        /// SP_EL0.
        SpEl0 = 34,
        /// SP_EL1.
        SpEl1 = 35,
        /// SCTLR_EL1.
        SctlrEl1 = 36,
        /// VBAR_EL1.
        VbarEl1 = 37,
        /// ESR_EL1.
        EsrEl1 = 38,
        /// FAR_EL1.
        FarEl1 = 39,
        /// ELR_EL1.
        ElrEl1 = 40,
        /// SPSR_EL1.
        SpsrEl1 = 41,
        /// CNTVOFF_EL2: the guest's virtual counter is the physical counter minus this.
        Cntvoff = 42,
        /// The guest's MPIDR_EL1 (VMPIDR_EL2): its affinity, which its VMM chooses (e.g. Aff0 =
        /// the vCPU's number). Bit 31 reads as one; only the affinity fields, U and MT are kept.
        /// A reset keeps it. At creation: `0x8000_0000`.
        Mpidr = 43,
        /// Read-only: CNTV_CTL_EL0 (ENABLE, IMASK) with ISTATUS (bit 2) as of now — the virtual
        /// timer's interrupt level is ENABLE and ISTATUS and not IMASK (for a VMM's virtual GIC).
        VirtualTimerCtl = 44,
        /// Read-only: the emulated EL1 physical timer's CNTP_CTL_EL0, ISTATUS as of now.
        PhysicalTimerCtl = 45,
        /// Read-only: the vCPU's ICH_VMCR_EL2 (its virtual CPU interface's priority mask, group
        /// enables, binary points and EOImode, VEOIM [9]; IHI 0069H 12.5.27).
        GicVmcr = 46,
        /// Read-only: how many list registers the vCPU's virtual CPU interface has
        /// (ICH_VTR_EL2.ListRegs + 1); `ListRegister0` up to that many are readable.
        ListRegisters = 47,
        /// Read-only: 1 if the guest's ICC_DIR_EL1 writes trap (ICH_HCR_EL2.TDIR, where
        /// ICH_VTR_EL2.TDS says the interface can): a deactivation of an interrupt no list
        /// register holds then reaches the VMM as a `SysReg` fault, so a VMM may take active
        /// interrupts of a guest that deactivates them itself (EOImode 1) out of the list
        /// registers to make room for pending ones. 0 otherwise.
        GicDeactivationTrapped = 48,
        /// Write-only: reset the whole vCPU (every general and EL1 system register, FP/SIMD and the
        /// virtual timer) to its reset state: EL1h with DAIF masked, MMU and caches off
        /// (SCTLR_EL1's RES1 bits only), everything else zero. The value written is ignored.
        Reset = 63,
        /// The vCPU's list registers (ICH_LR<n>_EL2, GIC IHI 0069H 12.5.10): a read gives the
        /// register (its State [63:62], HW [61], Group [60], Priority [55:48], pINTID [44:32]
        /// with HW, vINTID [31:0]); a write changes only the State of a register that holds an
        /// interrupt (a VMM's GICD/GICR ICPENDR, ICACTIVER, ISACTIVER), and ending the active
        /// state of a hardware-linked one deactivates its physical interrupt. An empty register
        /// or one beyond `ListRegisters` is `InvalidArgument` to write and reads as 0; writing State
        /// 00 takes the interrupt out of the register. New
        /// interrupts go through `VcpuInjectIrq`.
        ListRegister0 = 64,
        /// ICH_LR1_EL2.
        ListRegister1 = 65,
        /// ICH_LR2_EL2.
        ListRegister2 = 66,
        /// ICH_LR3_EL2.
        ListRegister3 = 67,
        /// ICH_LR4_EL2.
        ListRegister4 = 68,
        /// ICH_LR5_EL2.
        ListRegister5 = 69,
        /// ICH_LR6_EL2.
        ListRegister6 = 70,
        /// ICH_LR7_EL2.
        ListRegister7 = 71,
        /// ICH_LR8_EL2.
        ListRegister8 = 72,
        /// ICH_LR9_EL2.
        ListRegister9 = 73,
        /// ICH_LR10_EL2.
        ListRegister10 = 74,
        /// ICH_LR11_EL2.
        ListRegister11 = 75,
        /// ICH_LR12_EL2.
        ListRegister12 = 76,
        /// ICH_LR13_EL2.
        ListRegister13 = 77,
        /// ICH_LR14_EL2.
        ListRegister14 = 78,
        /// ICH_LR15_EL2.
        ListRegister15 = 79,
    }
}

crate::stable_codes! {
    /// Operations of the `CacheMaintenance` invocation (word 0).
    ///
    /// On a **Frame** (words: op, then a `Vm` CPtr or 0 naming the VM the work is for, for its trace):
    /// `CleanInvalidatePoc` and `InvalidateIcache` over the whole frame. On a **Vm** (words: op,
    /// IPA, size): `CleanInvalidatePoc` of the mapped pages in the range, `InvalidateIcache`
    /// (whole instruction cache, inner shareable), `TlbInvalidateIpa` for the range and
    /// `TlbInvalidateVmid` for the whole VM.
    ///
    /// # Errors
    /// Any other number is [`KernelError::InvalidArgument`].
    pub enum CacheOp: u64 {
        /// Clean and invalidate data cache lines to the point of coherency (DC CIVAC).
        CleanInvalidatePoc = 1,
        /// Invalidate the instruction cache to the point of unification.
        InvalidateIcache = 2,
        /// Invalidate stage-2 TLB entries by IPA for the VM's VMID (then stage-1 entries).
        TlbInvalidateIpa = 3,
        /// Invalidate every TLB entry of the VM's VMID.
        TlbInvalidateVmid = 4,
    }
}

/// The label of a bound notification's delivery through `Recv`: the thread receives a message with
/// this label and the notification word as its badge (the largest label, never an invocation or a
/// protocol id).
pub const BOUND_NOTIFICATION_LABEL: u64 = MessageInfo::MAX_LABEL;

crate::stable_codes! {
    /// Errors the kernel returns from syscalls and invocations.
    ///
    /// # Errors
    /// Each variant is a reason the kernel refused; the numbers are stable ABI.
    pub enum KernelError: u16 {
        /// The syscall number is not a [`Syscall`].
        InvalidSyscall = 1,
        /// The capability pointer does not resolve to a slot.
        InvalidSlot = 2,
        /// The slot is empty.
        EmptySlot = 3,
        /// The capability is to the wrong kind of object for the operation.
        WrongType = 4,
        /// The capability lacks a right the operation needs.
        InsufficientRights = 5,
        /// The capability (or the object behind it) was revoked or deleted while in use.
        Revoked = 6,
        /// An address (IPA, buffer, slot range) is outside what the caller may name.
        BadAddress = 7,
        /// An argument is invalid for the operation.
        InvalidArgument = 8,
        /// A number is out of range (size, level, INTID, VMID).
        RangeError = 9,
        /// An address or size is not aligned as the operation needs.
        AlignmentError = 10,
        /// The destination slot is occupied.
        SlotOccupied = 11,
        /// The untyped capability has too little memory left.
        NotEnoughMemory = 12,
        /// The message is longer or carries more capabilities than the receiver accepts.
        TruncatedMessage = 13,
        /// The invoked object does not support this invocation.
        IllegalOperation = 14,
        /// The mapping asks for a memory type the frame capability does not carry.
        MemoryTypeNotAllowed = 15,
        /// A cacheable mapping of device memory needs FEAT_S2FWB and CTR_EL0.DIC, and this CPU lacks one.
        CacheableDeviceUnsupported = 16,
        /// A region its owner maps cacheable may not be mapped non-cacheable (mismatched attributes).
        MismatchedAttributes = 17,
        /// Execution from a device (non-cacheable) mapping is refused.
        ExecuteFromDevice = 18,
        /// The message-info word is malformed (see [`MessageInfoError`]).
        InvalidMessageInfo = 19,
        /// The peer went away (endpoint deleted) while this thread was blocked on it.
        Cancelled = 20,
        /// A 2 MiB block of non-cacheable (Device-nGnRE or Normal non-cacheable) memory: such
        /// memory is mapped in 4 KiB pages only, never blocks (DESIGN.md stage-2 rule 8).
        UncachedBlock = 21,
        /// `VcpuInjectIrq`: every list register of the vCPU holds another interrupt; retry after
        /// the guest has handled one.
        ListRegistersFull = 22,
    }
}

crate::stable_codes! {
    /// Why a raw message-info word was rejected.
    ///
    /// # Errors
    /// Each variant names the field that is out of range.
    pub enum MessageInfoError: u8 {
        /// `length` is more than [`MSG_MAX_BYTES`].
        LengthTooLarge = 1,
        /// `extra_caps` is more than [`MAX_CAPS`].
        TooManyCaps = 2,
        /// A reserved bit is set.
        ReservedBitsSet = 3,
        /// The label does not fit in its 48 bits.
        LabelTooLarge = 4,
        /// `caps_unwrapped` names a capability that was not transferred.
        UnwrappedWithoutCap = 5,
    }
}

/// A bit field of the message-info word: position and width, named once.
#[derive(Clone, Copy)]
struct Field {
    shift: u32,
    width: u32,
}

impl Field {
    const fn mask(self) -> u64 {
        ((1u64 << self.width) - 1) << self.shift
    }
    const fn get(self, word: u64) -> u64 {
        (word & self.mask()) >> self.shift
    }
    const fn fits(self, value: u64) -> bool {
        value < (1u64 << self.width)
    }
    const fn put(self, word: u64, value: u64) -> u64 {
        (word & !self.mask()) | ((value << self.shift) & self.mask())
    }
}

const LENGTH: Field = Field {
    shift: 0,
    width: 10,
};
const EXTRA_CAPS: Field = Field {
    shift: 10,
    width: 2,
};
const CAPS_UNWRAPPED: Field = Field {
    shift: 12,
    width: 3,
};
const RESERVED: Field = Field {
    shift: 15,
    width: 1,
};
const LABEL: Field = Field {
    shift: 16,
    width: 48,
};

const _: () = {
    assert!(LENGTH.fits(MSG_MAX_BYTES as u64));
    assert!(EXTRA_CAPS.fits(MAX_CAPS as u64));
    assert!(CAPS_UNWRAPPED.width as usize == MAX_CAPS);
    // The fields tile the word exactly.
    let all =
        LENGTH.mask() | EXTRA_CAPS.mask() | CAPS_UNWRAPPED.mask() | RESERVED.mask() | LABEL.mask();
    assert!(all == u64::MAX);
    assert!(
        LENGTH.mask() & EXTRA_CAPS.mask() == 0 && EXTRA_CAPS.mask() & CAPS_UNWRAPPED.mask() == 0
    );
    assert!(CAPS_UNWRAPPED.mask() & RESERVED.mask() == 0 && RESERVED.mask() & LABEL.mask() == 0);
};

/// The message-info word (in `x1`): label, payload length in bytes, capabilities transferred.
///
/// | bits | field | meaning |
/// |---|---|---|
/// | 9:0 | `length` | payload bytes in the message registers, ≤ [`MSG_MAX_BYTES`] |
/// | 11:10 | `extra_caps` | capabilities transferred, ≤ [`MAX_CAPS`] |
/// | 14:12 | `caps_unwrapped` | which transferred capabilities arrived as badges (set by the kernel) |
/// | 15 | reserved | zero |
/// | 63:16 | `label` | [`Invocation`] for kernel objects; protocol id on requests; status on replies |
///
/// seL4 counts `length` in words; capvisor counts bytes, because payloads are postcard bytes and an exact
/// length lets the decoder reject trailing garbage. A value of this type is always valid: it is built by
/// [`MessageInfo::new`] or checked by [`MessageInfo::decode`] (it is `IntoBytes` but deliberately not
/// `FromBytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, IntoBytes, Immutable, KnownLayout)]
#[repr(transparent)]
pub struct MessageInfo(u64);

impl MessageInfo {
    /// The largest label (48 bits).
    pub const MAX_LABEL: u64 = (1 << 48) - 1;

    /// A message-info word for a message being sent (`caps_unwrapped` is the kernel's to set).
    ///
    /// # Errors
    /// [`MessageInfoError`] when a field is out of range.
    pub const fn new(
        label: u64,
        length: usize,
        extra_caps: usize,
    ) -> Result<Self, MessageInfoError> {
        if !LABEL.fits(label) {
            return Err(MessageInfoError::LabelTooLarge);
        }
        if length > MSG_MAX_BYTES {
            return Err(MessageInfoError::LengthTooLarge);
        }
        if extra_caps > MAX_CAPS {
            return Err(MessageInfoError::TooManyCaps);
        }
        let word = LABEL.put(0, label);
        let word = LENGTH.put(word, length as u64);
        Ok(Self(EXTRA_CAPS.put(word, extra_caps as u64)))
    }

    /// Validates a raw word from an untrusted register or buffer.
    ///
    /// # Errors
    /// [`MessageInfoError`] naming the first field that is out of range.
    pub const fn decode(raw: u64) -> Result<Self, MessageInfoError> {
        if RESERVED.get(raw) != 0 {
            return Err(MessageInfoError::ReservedBitsSet);
        }
        if LENGTH.get(raw) > MSG_MAX_BYTES as u64 {
            return Err(MessageInfoError::LengthTooLarge);
        }
        let caps = EXTRA_CAPS.get(raw);
        if caps > MAX_CAPS as u64 {
            return Err(MessageInfoError::TooManyCaps);
        }
        if CAPS_UNWRAPPED.get(raw) >> caps != 0 {
            return Err(MessageInfoError::UnwrappedWithoutCap);
        }
        Ok(Self(raw))
    }

    /// The raw word.
    #[must_use]
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// The label.
    #[must_use]
    pub const fn label(self) -> u64 {
        LABEL.get(self.0)
    }

    /// Payload length in bytes.
    #[must_use]
    pub const fn length(self) -> usize {
        LENGTH.get(self.0) as usize
    }

    /// Number of capabilities transferred.
    #[must_use]
    pub const fn extra_caps(self) -> usize {
        EXTRA_CAPS.get(self.0) as usize
    }

    /// Bit `i` set: transferred capability `i` arrived as a badge, not a new slot.
    #[must_use]
    pub const fn caps_unwrapped(self) -> u8 {
        CAPS_UNWRAPPED.get(self.0) as u8
    }

    /// This word with `caps_unwrapped` set (the kernel, or a transport standing in for it).
    ///
    /// # Errors
    /// [`MessageInfoError::UnwrappedWithoutCap`] when `mask` names a capability not transferred.
    pub const fn with_caps_unwrapped(self, mask: u8) -> Result<Self, MessageInfoError> {
        if (mask as u64) >> self.extra_caps() != 0 {
            return Err(MessageInfoError::UnwrappedWithoutCap);
        }
        Ok(Self(CAPS_UNWRAPPED.put(self.0, mask as u64)))
    }
}

/// The IPC buffer: one per thread, at an address the thread and the kernel both know.
///
/// A fixed `#[repr(C)]` layout of native-endian (little-endian on AArch64) words, shared between a thread
/// and the kernel, so it is an untrusted, raw type: every field is a plain integer, and [`MessageInfo`] and
/// the capability kinds are validated when read. Layout (offsets const-asserted below):
///
/// | offset | field | meaning |
/// |---|---|---|
/// | 0 | `tag` | the message-info word, mirrored from `x1` for messages longer than the CPU registers |
/// | 8 | `msg` | [`MSG_MAX_WORDS`] message registers; the payload is their bytes |
/// | 520 | `badge` | on receive: the badge of the capability the sender used |
/// | 528 | `caps` | on send: capabilities to transfer; on receive: where they were installed, or badges |
/// | 552 | `cap_kinds` | on receive: the [`ObjectKind`](crate::cap::ObjectKind) code of each installed capability |
/// | 576 | `receive_slot` | the first of [`MAX_CAPS`] empty slots where received capabilities go |
#[derive(Debug, Clone, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct IpcBuffer {
    /// The raw message-info word.
    pub tag: u64,
    /// The message registers.
    pub msg: [u64; MSG_MAX_WORDS],
    /// The sender's badge (receive side).
    pub badge: u64,
    /// Capabilities to transfer (send) or received (receive).
    pub caps: [u64; MAX_CAPS],
    /// Object kinds of received capabilities.
    pub cap_kinds: [u64; MAX_CAPS],
    /// First slot for received capabilities.
    pub receive_slot: u64,
}

const _: () = {
    assert!(core::mem::offset_of!(IpcBuffer, tag) == 0);
    assert!(core::mem::offset_of!(IpcBuffer, msg) == 8);
    assert!(core::mem::offset_of!(IpcBuffer, badge) == 520);
    assert!(core::mem::offset_of!(IpcBuffer, caps) == 528);
    assert!(core::mem::offset_of!(IpcBuffer, cap_kinds) == 552);
    assert!(core::mem::offset_of!(IpcBuffer, receive_slot) == 576);
    assert!(core::mem::size_of::<IpcBuffer>() == 584);
};

impl Default for IpcBuffer {
    fn default() -> Self {
        Self::new_zeroed()
    }
}

impl IpcBuffer {
    /// All message-register bytes.
    #[must_use]
    pub fn bytes(&self) -> &[u8; MSG_MAX_BYTES] {
        zerocopy::transmute_ref!(&self.msg)
    }

    /// All message-register bytes, for writing a payload.
    pub fn bytes_mut(&mut self) -> &mut [u8; MSG_MAX_BYTES] {
        zerocopy::transmute_mut!(&mut self.msg)
    }

    /// The payload bytes that `info` says are valid. `info` is already validated, so its length is in
    /// range and this cannot fail.
    #[must_use]
    pub fn payload(&self, info: MessageInfo) -> &[u8] {
        &self.bytes()[..info.length()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_info_fields_round_trip() {
        let info = MessageInfo::new(0xABCD_1234, 300, 2).unwrap();
        assert_eq!(
            (info.label(), info.length(), info.extra_caps()),
            (0xABCD_1234, 300, 2)
        );
        assert_eq!(MessageInfo::decode(info.raw()), Ok(info));
        let unwrapped = info.with_caps_unwrapped(0b10).unwrap();
        assert_eq!(unwrapped.caps_unwrapped(), 0b10);
        assert_eq!(
            info.with_caps_unwrapped(0b100),
            Err(MessageInfoError::UnwrappedWithoutCap)
        );
    }

    #[test]
    fn message_info_rejects_out_of_range_fields() {
        assert_eq!(
            MessageInfo::new(1 << 48, 0, 0),
            Err(MessageInfoError::LabelTooLarge)
        );
        assert_eq!(
            MessageInfo::new(0, MSG_MAX_BYTES + 1, 0),
            Err(MessageInfoError::LengthTooLarge)
        );
        assert_eq!(
            MessageInfo::new(0, 0, MAX_CAPS + 1),
            Err(MessageInfoError::TooManyCaps)
        );
        assert_eq!(
            MessageInfo::decode(1 << 15),
            Err(MessageInfoError::ReservedBitsSet)
        );
        assert_eq!(
            MessageInfo::decode(1023),
            Err(MessageInfoError::LengthTooLarge)
        );
        // The two-bit field holds exactly MAX_CAPS at most.
        assert_eq!(
            MessageInfo::decode(0b11 << 10).map(MessageInfo::extra_caps),
            Ok(MAX_CAPS)
        );
        assert_eq!(
            MessageInfo::decode(0b1 << 12),
            Err(MessageInfoError::UnwrappedWithoutCap)
        );
    }

    #[test]
    fn payload_is_the_little_endian_register_bytes() {
        let mut buffer = IpcBuffer::default();
        buffer.bytes_mut()[..3].copy_from_slice(&[1, 2, 3]);
        assert_eq!(buffer.msg[0].to_le_bytes()[..3], [1, 2, 3]);
        let info = MessageInfo::new(0, 3, 0).unwrap();
        assert_eq!(buffer.payload(info), &[1, 2, 3]);
    }
}

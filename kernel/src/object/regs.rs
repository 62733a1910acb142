//! What a kernel entry gives back: a syscall's registers in and out ([`SyscallRegs`]) and what
//! the glue runs next ([`Schedule`]). A leaf of the object model, so the modules that produce
//! results (threads, IPC, invocations) do not depend on the syscall entry that calls them.

use capvisor_ipc::abi::{KernelError, MSG_REGS_IN_CPU, MessageInfo};
use capvisor_ipc::cap::{Badge, CPtr};

use crate::context::ThreadContext;

/// x0–x7 of a syscall, in and out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SyscallRegs(pub [u64; 8]);

impl SyscallRegs {
    /// A copy made word by word. On the kernel's target (no FP/SIMD registers) LLVM turns a
    /// 64-byte aggregate copy into a `memcpy` call, about 40 instructions more than eight
    /// load/store pairs, and a syscall copies x0–x7 several times.
    #[must_use]
    #[inline(always)]
    pub const fn copied(&self) -> Self {
        let [a, b, c, d, e, f, g, h] = self.0;
        Self([a, b, c, d, e, f, g, h])
    }

    /// x0–x7 of a saved context.
    #[must_use]
    #[inline(always)]
    pub const fn of(context: &ThreadContext) -> Self {
        let [a, b, c, d, e, f, g, h, ..] = context.x;
        Self([a, b, c, d, e, f, g, h])
    }

    /// Writes these into x0–x7 of a saved context, word by word.
    #[inline(always)]
    pub const fn write_to(&self, context: &mut ThreadContext) {
        let [a, b, c, d, e, f, g, h] = self.0;
        let x = &mut context.x;
        [x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7]] = [a, b, c, d, e, f, g, h];
    }

    /// `x0`: the capability pointer on entry.
    #[must_use]
    pub const fn cptr(&self) -> CPtr {
        CPtr::new(self.0[0])
    }

    /// `x1`: the raw message-info word.
    #[must_use]
    pub const fn info(&self) -> u64 {
        self.0[1]
    }

    /// `x2`–`x5`: the message words in registers.
    #[must_use]
    pub const fn words(&self) -> [u64; MSG_REGS_IN_CPU] {
        [self.0[2], self.0[3], self.0[4], self.0[5]]
    }

    /// `x7`: the syscall number on entry, the error code on return.
    #[must_use]
    pub const fn number(&self) -> u64 {
        self.0[7]
    }

    /// Results that report `error`.
    #[must_use]
    pub const fn error(error: KernelError) -> Self {
        Self([0, 0, 0, 0, 0, 0, 0, error.code() as u64])
    }

    /// Results of a successful syscall: badge, message info and the words in registers.
    #[must_use]
    pub const fn message(badge: Badge, info: MessageInfo, words: [u64; MSG_REGS_IN_CPU]) -> Self {
        Self([
            badge.raw(),
            info.raw(),
            words[0],
            words[1],
            words[2],
            words[3],
            0,
            0,
        ])
    }

    /// The error code in `x7` (`None` for success).
    #[must_use]
    pub fn error_code(&self) -> Option<KernelError> {
        u16::try_from(self.0[7])
            .ok()
            .and_then(KernelError::from_code)
    }
}

/// What the glue does after a kernel entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// Return to the thread that entered the kernel.
    Resume,
    /// Call [`Kernel::pick_next`] and switch (or idle).
    Switch,
}

/// An empty successful result (x1 = label 0, length 0).
pub(super) const SUCCESS: SyscallRegs = SyscallRegs([0; 8]);

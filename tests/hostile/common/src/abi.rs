//! The ABI numbers the hostile services use, named once. The kernel fix for issue 13 may change
//! some of them (notably the size argument of AddressSpace and Vm retypes and the cost of every
//! object); adjust them here.

use capvisor_ipc::cap::ObjectKind;

/// `Retype` kind codes (`ObjectKind`).
pub mod kind {
    use super::ObjectKind;

    /// Untyped memory.
    pub const UNTYPED: u64 = ObjectKind::Untyped.code() as u64;
    /// An endpoint.
    pub const ENDPOINT: u64 = ObjectKind::Endpoint.code() as u64;
    /// A notification.
    pub const NOTIFICATION: u64 = ObjectKind::Notification.code() as u64;
    /// A CNode.
    pub const CNODE: u64 = ObjectKind::CNode.code() as u64;
    /// A RAM frame.
    pub const FRAME: u64 = ObjectKind::Frame.code() as u64;
    /// A device frame.
    pub const DEVICE_FRAME: u64 = ObjectKind::DeviceFrame.code() as u64;
    /// A VM.
    pub const VM: u64 = ObjectKind::Vm.code() as u64;
    /// A vCPU.
    pub const VCPU: u64 = ObjectKind::Vcpu.code() as u64;
    /// A thread.
    pub const THREAD: u64 = ObjectKind::Thread.code() as u64;
    /// An IRQ handler.
    pub const IRQ_HANDLER: u64 = ObjectKind::IrqHandler.code() as u64;
    /// IrqControl.
    pub const IRQ_CONTROL: u64 = ObjectKind::IrqControl.code() as u64;
    /// A service address space.
    pub const ADDRESS_SPACE: u64 = ObjectKind::AddressSpace.code() as u64;
}

/// `size_bits` of an AddressSpace or Vm retype under the fixed ABI: log2 of the object's bytes
/// (a metadata page, the root table and the space's own table budget). 64 KiB leaves a budget
/// of 14 table pages, plenty for the few mappings the tests make in spaces they create.
pub const SPACE_SIZE_BITS: u64 = 16;

/// `size_bits` of an AddressSpace or Vm retype as the kernel of 8f4ed9c takes it (fixed-size
/// objects: 0). [`crate::invoke::retype_space`] falls back to it when the kernel refuses
/// [`SPACE_SIZE_BITS`] with `RangeError`, so the services run on both ABIs unchanged.
pub const LEGACY_SPACE_SIZE_BITS: u64 = 0;

/// Radix bits of the CNodes the bystander makes (16 slots).
pub const CNODE_BITS: u64 = 4;

/// The smallest CNode (`size_bits` of a CNode retype: log2 of its slots).
pub const CNODE_MIN_BITS: u64 = 2;

/// A 4 KiB page.
pub const PAGE: u64 = 4096;

/// `size_bits` of a 4 KiB frame (or the smallest untyped).
pub const PAGE_BITS: u64 = 12;

/// Input address bits of a service's address space (`kernel/src/glue/mod.rs`).
pub const IPA_BITS: u32 = 39;

/// Where the hostile services map their scratch frames: the bottom of the 2 MiB region that
/// holds the stack (which ends at `0x40_0000_0000` and is 64 KiB), so the level-3 table that
/// maps the stack maps these too and a scratch mapping needs no new table page — under a kernel
/// that charges table pages to the space's own budget, the scratch pages cost nothing.
pub const SCRATCH_IPA: u64 = 0x3F_FFE0_0000;

/// Scratch pages available from [`SCRATCH_IPA`] (well below the stack's 64 KiB).
pub const SCRATCH_PAGES: u64 = 256;

/// PSTATE for EL1h with DAIF masked (what a vCPU reset gives).
pub const PSTATE_EL1H: u64 = 0x3c5;

/// A label for the messages the services send each other (not an invocation, not a protocol).
pub const SIGNAL_LABEL: u64 = 0x4854;

const _: () = {
    assert!(SCRATCH_IPA.is_multiple_of(2 << 20));
    assert!(SCRATCH_IPA + SCRATCH_PAGES * PAGE <= 0x40_0000_0000 - 16 * PAGE);
};

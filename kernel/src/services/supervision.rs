//! Supervised images (`BOOT_FLAG_SUPERVISED`: the first service is `services/init`): each further
//! service is created suspended, with a copy of the supervisor's endpoint badged `index + 1` as
//! its fault endpoint. The supervisor finds the services' threads in its boot info, starts them,
//! and receives their faults as `Fault::service` messages.

use super::LoadError;
use super::grants;
use super::spawn::Root;
use super::vms;
use capvisor_ipc::abi::Invocation;
use capvisor_ipc::cap::Rights;

/// The root slot of service `index`'s fault endpoint (made here): the supervisor's own endpoint
/// minted with badge `index + 1` and `WRITE` only.
///
/// # Errors
/// The first invocation that failed.
pub fn fault_endpoint(root: &mut Root<'_>, index: usize) -> Result<u64, LoadError> {
    let original = grants::ensure_endpoint(root, 0)?;
    let slot = vms::supervision_slot(root, index);
    let rights = u64::from(Rights::WRITE.bits());
    root.invoke(
        capvisor_kernel::object::RootLayout::CNODE,
        Invocation::Mint.code(),
        &[slot, original, rights, index as u64 + 1],
    )?;
    Ok(slot)
}

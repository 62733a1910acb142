//! The manifest's endpoint grants, made at boot (`caps = [{ endpoint = "X" }]`): one endpoint
//! per service that is granted to anyone, retyped from the root's untyped.
//!
//! Slots (service `i` in image order; the root is 0):
//! - the root keeps each original endpoint at [`ROOT_ENDPOINTS`]` + i` (so it can revoke them);
//! - a service's *grant window* starts at [`ROOT_GRANTS`] for the root and at
//!   [`FIRST_GRANT`](super::spawn::FIRST_GRANT) for the others. Its slot 0 holds its own
//!   endpoint (all rights, no badge: it receives there) when some service was granted it; the
//!   following slots hold the endpoints its manifest grants, in manifest order, each minted with
//!   WRITE and GRANT (call, send, transfer capabilities) and badge `i + 1`, so the receiver knows
//!   the caller.

use super::spawn::{FIRST_FRAME, FIRST_GRANT, Root};
use super::{LoadError, MAX_SERVICES};
use capvisor_image::grants::{self, Grant};
use capvisor_ipc::abi::Invocation;
use capvisor_ipc::cap::{ObjectKind, Rights};
use capvisor_kernel::object::{ROOT_CNODE_SLOTS, RootLayout};

/// The root's grant window (30 slots, below the boot scratch slot).
pub const ROOT_GRANTS: u64 = ROOT_CNODE_SLOTS as u64 - 32;
/// Where the root keeps the original endpoints (one per service).
pub const ROOT_ENDPOINTS: u64 = ROOT_GRANTS - MAX_SERVICES as u64;

/// Service `index`'s CNode (a capability in the root's CSpace) and grant window.
fn window(root: &Root<'_>, index: usize) -> (u64, u64, u64) {
    if index == 0 {
        (RootLayout::CNODE, ROOT_GRANTS, 30)
    } else {
        let cnode = root.layout.first_free + 3 * (index as u64 - 1);
        (cnode, FIRST_GRANT, FIRST_FRAME - FIRST_GRANT)
    }
}

/// Makes the grants of `entry` (the image's grants entry, if any) for `services` services.
///
/// # Errors
/// A malformed entry; a window overflow; the first invocation that failed.
pub fn apply(root: &mut Root<'_>, entry: Option<&[u8]>, services: usize) -> Result<(), LoadError> {
    let Some(bytes) = entry else {
        return Ok(());
    };
    let decoded = grants::decode(bytes, services.min(MAX_SERVICES)).map_err(LoadError::Grants)?;
    let mut next = [1u64; MAX_SERVICES];
    let mut made = [false; MAX_SERVICES];
    for Grant { granter, target } in decoded {
        let (granter, target) = (usize::from(granter), usize::from(target));
        let original = ROOT_ENDPOINTS + target as u64;
        if !made[target] {
            let kind = u64::from(ObjectKind::Endpoint.code());
            root.retype(kind, 0, 0, original)?;
            let (cnode, base, _) = window(root, target);
            let all = u64::from(Rights::ALL.bits());
            root.invoke(cnode, Invocation::Copy.code(), &[base, original, all])?;
            made[target] = true;
        }
        let (cnode, base, size) = window(root, granter);
        if next[granter] >= size {
            return Err(LoadError::TooMany);
        }
        let rights = u64::from(Rights::WRITE.union(Rights::GRANT).bits());
        let badge = granter as u64 + 1;
        let dest = base + next[granter];
        root.invoke(
            cnode,
            Invocation::Mint.code(),
            &[dest, original, rights, badge],
        )?;
        next[granter] += 1;
    }
    Ok(())
}

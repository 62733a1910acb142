//! The manifest's endpoint and untyped grants, made at boot (`caps = [{ endpoint = "X" }]`,
//! `{ untyped = "…" }`): one endpoint per service that is granted to anyone, and the untyped
//! pieces, all retyped from the root's untyped.
//!
//! Slots (service `i` in image order; the root is 0):
//! - the root keeps each original endpoint at [`ROOT_ENDPOINTS`]` + i` (so it can revoke them);
//! - a service's *grant window* starts at [`ROOT_GRANTS`] for the root and at
//!   [`FIRST_GRANT`](super::spawn::FIRST_GRANT) for the others. Its slot 0 holds its own
//!   endpoint (all rights, no badge: it receives there) when some service was granted it; the
//!   following slots hold the endpoints its manifest grants, in manifest order, each minted with
//!   WRITE and GRANT (call, send, transfer capabilities) and badge `i + 1`, so the receiver knows
//!   the caller; then the untyped RAM its manifest asks for (`caps = [{ untyped = "…" }]`), one
//!   slot per power-of-two piece, largest first, retyped from the root's untyped.

use super::spawn::{FIRST_FRAME, FIRST_GRANT, Root};
use super::{LoadError, MAX_SERVICES};
use capvisor_image::grants::{self, Grant, UntypedGrant};
use capvisor_ipc::abi::Invocation;
use capvisor_ipc::cap::{ObjectKind, Rights};
use capvisor_kernel::object::{ROOT_CNODE_SLOTS, RootLayout};

/// The root's grant window (30 slots, below the boot scratch slot).
pub const ROOT_GRANTS: u64 = ROOT_CNODE_SLOTS as u64 - 32;
/// Where the root keeps the original endpoints (one per service).
pub const ROOT_ENDPOINTS: u64 = ROOT_GRANTS - MAX_SERVICES as u64;

/// What the grants left: each service's next free grant-window offset, and which slot of a
/// granter's window holds its endpoint to each target (0: none), for the guests' set-up.
pub struct Granted {
    /// Next free offset in each service's grant window.
    pub next: [u64; MAX_SERVICES],
    /// `slots[granter][target]`: the granter's slot of the target's endpoint.
    pub slots: [[u64; MAX_SERVICES]; MAX_SERVICES],
    /// Each service's untyped pieces' slots, in grant order.
    pub untyped: [heapless::Vec<u64, { capvisor_ipc::bootinfo::MAX_UNTYPED }>; MAX_SERVICES],
}

/// Service `index`'s CNode (a capability in the root's CSpace) and grant window.
pub fn window(root: &Root<'_>, index: usize) -> (u64, u64, u64) {
    if index == 0 {
        (RootLayout::CNODE, ROOT_GRANTS, 30)
    } else {
        let cnode = root.layout.first_free + 3 * (index as u64 - 1);
        (cnode, FIRST_GRANT, FIRST_FRAME - FIRST_GRANT)
    }
}

/// Makes the endpoint grants of `endpoints` and then the untyped of `untyped` (the image's
/// entries, if any) for `services` services.
///
/// # Errors
/// A malformed entry; a window overflow; the first invocation that failed.
pub fn apply(
    root: &mut Root<'_>,
    (endpoints, untyped): (Option<&[u8]>, Option<&[u8]>),
    services: usize,
) -> Result<Granted, LoadError> {
    let services = services.min(MAX_SERVICES);
    let mut granted = Granted {
        next: [1u64; MAX_SERVICES],
        slots: [[0; MAX_SERVICES]; MAX_SERVICES],
        untyped: [const { heapless::Vec::new() }; MAX_SERVICES],
    };
    let next = &mut granted.next;
    if let Some(bytes) = endpoints {
        let decoded = grants::decode(bytes, services).map_err(LoadError::Grants)?;
        for grant in decoded {
            let slot = endpoint(root, grant, next)?;
            granted.slots[usize::from(grant.granter)][usize::from(grant.target)] = slot;
        }
    }
    if let Some(bytes) = untyped {
        let decoded = grants::decode_untyped(bytes, services).map_err(LoadError::Grants)?;
        for UntypedGrant { service, size_bits } in decoded {
            let service = usize::from(service);
            let dest = next_slot(root, service, next)?;
            let (cnode, _, _) = window(root, service);
            let kind = u64::from(ObjectKind::Untyped.code());
            root.retype(kind, u64::from(size_bits), cnode, dest)?;
            if let Some(list) = granted.untyped.get_mut(service) {
                // Listed in the boot info while there is room; the service can still find the
                // rest in its window.
                let _ = list.push(dest);
            }
        }
    }
    Ok(granted)
}

/// The next free slot of service `index`'s grant window.
pub fn next_slot(
    root: &Root<'_>,
    index: usize,
    next: &mut [u64; MAX_SERVICES],
) -> Result<u64, LoadError> {
    let (_, base, size) = window(root, index);
    let offset = next.get_mut(index).ok_or(LoadError::TooMany)?;
    if *offset >= size {
        return Err(LoadError::TooMany);
    }
    *offset += 1;
    Ok(base + *offset - 1)
}

/// Service `target`'s endpoint, made on first use (the original in the root's slot, returned,
/// and a copy with all rights at the start of the target's window, where it receives).
pub fn ensure_endpoint(root: &mut Root<'_>, target: usize) -> Result<u64, LoadError> {
    let original = ROOT_ENDPOINTS + target as u64;
    if root.object(original).is_none() {
        let kind = u64::from(ObjectKind::Endpoint.code());
        root.retype(kind, 0, 0, original)?;
        let (cnode, base, _) = window(root, target);
        let all = u64::from(Rights::ALL.bits());
        root.invoke(cnode, Invocation::Copy.code(), &[base, original, all])?;
    }
    Ok(original)
}

/// One endpoint grant: the target's endpoint (made on first use) minted into the granter's
/// window; returns the granter's slot.
fn endpoint(
    root: &mut Root<'_>,
    Grant { granter, target }: Grant,
    next: &mut [u64; MAX_SERVICES],
) -> Result<u64, LoadError> {
    let (granter, target) = (usize::from(granter), usize::from(target));
    let original = ensure_endpoint(root, target)?;
    let dest = next_slot(root, granter, next)?;
    let (cnode, _, _) = window(root, granter);
    let rights = u64::from(Rights::WRITE.union(Rights::GRANT).bits());
    let badge = granter as u64 + 1;
    root.invoke(
        cnode,
        Invocation::Mint.code(),
        &[dest, original, rights, badge],
    )?;
    Ok(dest)
}

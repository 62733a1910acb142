//! Finding a manifest's devices in the platform device tree (the copy the kernel put after init's
//! platform page): the lookup by node path or `compatible` string that the kernel no longer makes.
//! The tree is untrusted input like the plan: a malformed one finds nothing, never panics.

use fdt::Fdt;

const PAGE: u64 = 4096;

/// The node `locator` names: a node path, or with `compatible` the first node whose
/// `compatible` list has it.
fn node<'b, 'a>(
    fdt: &'b Fdt<'a>,
    locator: &str,
    compatible: bool,
) -> Option<fdt::node::FdtNode<'b, 'a>> {
    if compatible {
        fdt.find_compatible(&[locator])
    } else {
        // `find_node` wants an absolute path; anything else names no node.
        locator
            .starts_with('/')
            .then(|| fdt.find_node(locator))
            .flatten()
    }
}

/// The pages of the first `reg` range of the device `locator` names, as `(base, size)`: the
/// region the kernel handed init a device untyped for (`Description::device_regions` cuts the
/// board's regions at every node's page boundaries).
#[must_use]
pub fn find(dtb: &[u8], locator: &str, compatible: bool) -> Option<(u64, u64)> {
    let fdt = Fdt::new(dtb).ok()?;
    let reg = node(&fdt, locator, compatible)?.reg()?.next()?;
    let size = reg.size.filter(|&s| s > 0)? as u64;
    let start = reg.starting_address as u64;
    let base = start & !(PAGE - 1);
    let end = start.checked_add(size)?.checked_next_multiple_of(PAGE)?;
    Some((base, end - base))
}

/// The SPIs (as INTIDs, 32 + number) of the device `locator` names: its `interrupts` specifiers
/// of type 0 (GIC SPI, three cells each: type, number, flags), at most four.
#[must_use]
pub fn spis(dtb: &[u8], locator: &str, compatible: bool) -> heapless::Vec<u32, 4> {
    let mut spis = heapless::Vec::new();
    let Ok(fdt) = Fdt::new(dtb) else {
        return spis;
    };
    let Some(property) = node(&fdt, locator, compatible).and_then(|n| n.property("interrupts"))
    else {
        return spis;
    };
    for cells in property.value.chunks_exact(12) {
        let word =
            |i: usize| u32::from_be_bytes([cells[i], cells[i + 1], cells[i + 2], cells[i + 3]]);
        if word(0) == 0 && word(4) < 988 && spis.push(32 + word(4)).is_err() {
            break;
        }
    }
    spis
}

//! Test guest `hygiene`: every frame reaches a new owner zeroed (issue 14, item 6), even RAM
//! mapped at IPA = PA (`ram_identity`), which the kernel takes out of its own map at boot.
//!
//! With its MMU off — so every load is non-cacheable and reads memory, not a cache line the
//! hypervisor may have zeroed without cleaning it to the Point of Coherency — the guest reads
//! every 8-byte word of its RAM except what the guest contract fills (`docs/guests.md`): its own
//! image (text to stack), the boot count, and the device tree in the last 2 MiB. All of it must
//! be zero. `tests/tests/guests.rs` boots it with QEMU's `-device loader` planting a recognisable
//! secret in that RAM before the hypervisor starts: the secret must not be what the guest reads.
#![cfg_attr(target_os = "none", no_std, no_main)]

capvisor_guest_rt::guest!("hygiene", run);

/// The device tree's place: the start of the last 2 MiB of RAM (`capvisor_image::device_tree_ipa`).
#[cfg(target_os = "none")]
const TREE_SPACE: u64 = 2 << 20;

/// The ranges `[start, end)` of `[ram, ram_end)` outside `used` (sorted, disjoint, each inside
/// RAM), in order.
#[cfg(any(target_os = "none", test))]
fn gaps(ram: (u64, u64), used: &[(u64, u64)]) -> impl Iterator<Item = (u64, u64)> + '_ {
    let (start, end) = ram;
    let starts = core::iter::once(start).chain(used.iter().map(|&(_, e)| e));
    let ends = used.iter().map(|&(s, _)| s).chain(core::iter::once(end));
    starts.zip(ends).filter(|(s, e)| s < e)
}

#[cfg(target_os = "none")]
fn run() -> capvisor_guest_rt::Outcome {
    use capvisor_guest_rt::contract::BOOT_COUNT_OFFSET;
    use capvisor_guest_rt::{Outcome, boot_count, device_tree, image_range, println, ram_base};

    if boot_count() == 0 {
        return Outcome::Skip("no VMM (boot count 0): nothing hands this RAM over");
    }
    let base = ram_base();
    let tree = device_tree();
    if tree < base || !tree.is_multiple_of(TREE_SPACE) {
        return Outcome::Fail("the device tree is not at the start of RAM's last 2 MiB");
    }
    // SAFETY: the device tree's header, in guest RAM, aligned; nothing owns it. Its `totalsize`
    // is the big-endian word at offset 4.
    let header = unsafe { capvisor_guest_rt::read64(tree) };
    let tree_size = u64::from(((header >> 32) as u32).swap_bytes());
    let (image_start, image_end) = image_range();
    let boot_count_at = base + BOOT_COUNT_OFFSET;
    let used = [
        (boot_count_at, boot_count_at + 8),
        (image_start, image_end.next_multiple_of(8)),
        (tree, (tree + tree_size).next_multiple_of(8)),
    ];
    let ram = (base, tree + TREE_SPACE);
    println!(
        "RAM {:#x}..{:#x} at IPA = PA: reading it with the MMU off",
        ram.0, ram.1
    );
    let (mut scanned, mut nonzero, mut first) = (0u64, 0u64, None);
    for (start, end) in gaps(ram, &used) {
        let mut at = start;
        while at < end {
            // SAFETY: `at` is an 8-byte aligned address of guest RAM outside the image, so no
            // Rust object lives there.
            let word = unsafe { capvisor_guest_rt::read64(at) };
            if word != 0 {
                nonzero += 1;
                first.get_or_insert((at, word));
            }
            at += 8;
        }
        scanned += end - start;
    }
    println!(
        "{scanned} bytes outside the image, the boot count and the device tree: {nonzero} \
         non-zero words"
    );
    match first {
        None => Outcome::Pass,
        Some((at, word)) => {
            let bytes = word.to_le_bytes();
            let text = core::str::from_utf8(&bytes).unwrap_or("(not text)");
            println!("first non-zero word at {at:#x}: {word:#018x} {text:?}");
            Outcome::Fail("RAM held data the guest never wrote")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::gaps;

    #[test]
    fn gaps_are_what_lies_between_the_used_ranges() {
        let used = [(0x10, 0x18), (0x20, 0x40), (0x80, 0x90)];
        let found: Vec<_> = gaps((0, 0x90), &used).collect();
        assert_eq!(found, [(0, 0x10), (0x18, 0x20), (0x40, 0x80)]);
        assert_eq!(gaps((0, 0x10), &[(0, 0x10)]).count(), 0);
    }
}

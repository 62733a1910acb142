//! Test guest `boot`: what the VMM tells a guest at boot (the guest contract, docs/guests.md),
//! read the way Linux reads it (`Documentation/arch/arm64/booting.rst`): the device tree at `x0`,
//! its `/memory` node, `/chosen/bootargs` (the manifest's `cmdline`) and the initrd's range in
//! `/chosen/linux,initrd-start` and `linux,initrd-end` (the manifest's `initrd`, loaded by the
//! VMM through the memory manager on the first 2 MiB boundary after the kernel).
//!
//! The guest prints the command line and the initrd's length, FNV-1a hash and first line; the
//! QEMU test compares them with the manifest and the file. It fails if the tree is malformed,
//! RAM is not the contract's, there is no command line or initrd, or the initrd overlaps the
//! kernel or leaves RAM.
#![cfg_attr(target_os = "none", no_std, no_main)]

capvisor_guest_rt::guest!("boot", run);

/// The 64-bit FNV-1a hash of `bytes` (Fowler–Noll–Vo, the `FNV_offset_basis` and `FNV_prime`
/// of the 64-bit variant): what the test computes over the initrd file.
#[cfg(any(target_os = "none", test))]
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Checks the initrd's range `[start, end)` against the kernel image `[image_start, image_end)`
/// and RAM `[ram_start, ram_end)`.
#[cfg(any(target_os = "none", test))]
fn check_initrd(
    (start, end): (u64, u64),
    (image_start, image_end): (u64, u64),
    (ram_start, ram_end): (u64, u64),
) -> Result<(), &'static str> {
    if start >= end {
        return Err("the initrd's range is empty or reversed");
    }
    if start < ram_start || end > ram_end {
        return Err("the initrd is not inside guest RAM");
    }
    if start < image_end && image_start < end {
        return Err("the initrd overlaps the kernel image");
    }
    if start % (2 << 20) != 0 {
        return Err("the initrd is not on a 2 MiB boundary");
    }
    Ok(())
}

/// A big-endian `u64` or `u32` property value.
#[cfg(any(target_os = "none", test))]
fn be_value(bytes: &[u8]) -> Option<u64> {
    match bytes.len() {
        8 => Some(u64::from_be_bytes(bytes.try_into().ok()?)),
        4 => Some(u64::from(u32::from_be_bytes(bytes.try_into().ok()?))),
        _ => None,
    }
}

#[cfg(target_os = "none")]
mod run_on_target {
    use capvisor_guest_rt::contract::{MIN_RAM_SIZE, RAM_BASE};
    use capvisor_guest_rt::ram_base;
    use capvisor_guest_rt::{Outcome, println};

    use super::{be_value, check_initrd, fnv1a64};

    pub fn run() -> Outcome {
        // Device-tree reads are unaligned byte-string reads: with the MMU off every access is
        // Device-nGnRnE, where an unaligned one faults, so read it through Normal memory.
        // SAFETY: the MMU is off and nothing was cached yet.
        unsafe { capvisor_guest_rt::enable_mmu() };
        match check() {
            Ok(()) => Outcome::Pass,
            Err(reason) => Outcome::Fail(reason),
        }
    }

    fn check() -> Result<(), &'static str> {
        let address = capvisor_guest_rt::device_tree();
        println!("device tree at {address:#x}");
        // SAFETY: the VMM wrote a device tree at x0, in guest RAM, which nothing in the guest
        // writes; `from_ptr` reads its header's totalsize first and checks the magic.
        let tree = unsafe { fdt::Fdt::from_ptr(address as *const u8) }
            .map_err(|_| "no valid device tree at x0")?;
        let memory = tree
            .memory()
            .regions()
            .next()
            .ok_or("the device tree has no /memory region")?;
        let ram_start = memory.starting_address as u64;
        let ram_size = memory.size.unwrap_or(0) as u64;
        println!("memory: {ram_start:#x}..{:#x}", ram_start + ram_size);
        // RAM at the contract's IPA, or at IPA = PA with `ram_identity`: the image runs at its
        // base + text_offset either way.
        if ram_start != ram_base() || ram_size < MIN_RAM_SIZE {
            return Err("the device tree's RAM is not where the guest was loaded");
        }
        if ram_start == RAM_BASE {
            println!("RAM at the contract's IPA");
        } else {
            println!("RAM at IPA = PA {ram_start:#x}, not at the contract's IPA {RAM_BASE:#x}");
        }
        let chosen = tree.find_node("/chosen").ok_or("no /chosen node")?;
        let bootargs = tree.chosen().bootargs().unwrap_or("");
        println!("bootargs: {bootargs}");
        if bootargs.is_empty() {
            return Err("no command line in /chosen/bootargs");
        }
        let property = |name| {
            chosen
                .property(name)
                .and_then(|property| be_value(property.value))
        };
        let (Some(start), Some(end)) =
            (property("linux,initrd-start"), property("linux,initrd-end"))
        else {
            return Err("no linux,initrd-start and linux,initrd-end in /chosen");
        };
        check_initrd(
            (start, end),
            capvisor_guest_rt::image_range(),
            (ram_start, ram_start + ram_size),
        )?;
        // SAFETY: the range was checked to lie in guest RAM outside the image; the VMM loaded
        // the initrd there and nothing in the guest writes it.
        let initrd =
            unsafe { core::slice::from_raw_parts(start as *const u8, (end - start) as usize) };
        let first_line = initrd.split(|&b| b == b'\n').next().unwrap_or(&[]);
        println!(
            "initrd: {} bytes at {start:#x}, fnv1a64 {:#018x}, first line: {}",
            initrd.len(),
            fnv1a64(initrd),
            core::str::from_utf8(first_line).unwrap_or("(not UTF-8)")
        );
        Ok(())
    }
}

#[cfg(target_os = "none")]
use run_on_target::run;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_matches_the_published_test_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn the_initrd_must_be_in_ram_after_the_kernel_on_2m() {
        let image = (0x4020_0000, 0x4023_0000);
        let ram = (0x4000_0000, 0x4100_0000);
        assert_eq!(check_initrd((0x4040_0000, 0x4040_2000), image, ram), Ok(()));
        assert!(check_initrd((0x4040_0000, 0x4040_0000), image, ram).is_err());
        assert!(check_initrd((0x4020_0000, 0x4021_0000), image, ram).is_err());
        assert!(check_initrd((0x40e0_0000, 0x4110_0000), image, ram).is_err());
        assert!(check_initrd((0x4041_0000, 0x4042_0000), image, ram).is_err());
    }

    #[test]
    fn property_values_are_big_endian_cells() {
        assert_eq!(be_value(&[0, 0, 0, 0, 0x40, 0x40, 0, 0]), Some(0x4040_0000));
        assert_eq!(be_value(&[0x40, 0x40, 0, 0]), Some(0x4040_0000));
        assert_eq!(be_value(&[1, 2, 3]), None);
    }
}

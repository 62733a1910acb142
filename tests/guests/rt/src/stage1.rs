//! Identity stage-1 translation tables for the EL1&0 regime with the 4K granule, and the MAIR,
//! TCR and SCTLR values that go with them: pure encodings, tested on the host.
//!
//! Arm ARM DDI 0487 K.a, D8.3 "Translation table descriptor formats" (block and table
//! descriptors) and D8.6 "Memory region attributes". A 39-bit input range (T0SZ = 25) starts the
//! walk at level 1, whose entries map 1 GiB blocks: the first gigabyte (devices, the console) as
//! Device-nGnRE and execute-never, every further one as Normal write-back memory.

/// Entries in a 4K-granule table.
pub const ENTRIES: usize = 512;
/// Bytes one level-1 entry maps.
pub const L1_BLOCK: u64 = 1 << 30;
/// The input address size: T0SZ = 64 - 39.
pub const T0SZ: u64 = 25;

/// MAIR_EL1 attribute index of Device-nGnRE.
pub const ATTR_DEVICE: u64 = 0;
/// MAIR_EL1 attribute index of Normal, inner and outer write-back, read- and write-allocate.
pub const ATTR_NORMAL_WB: u64 = 1;

/// MAIR_EL1: attribute 0 Device-nGnRE (0x04), attribute 1 Normal write-back RW-allocate (0xff).
pub const MAIR: u64 = 0x04 | (0xff << 8);

/// TCR_EL1: T0SZ 25; walks inner and outer write-back write-allocate (IRGN0 = ORGN0 = 0b01), inner
/// shareable (SH0 = 0b11); TG0 4K; TTBR1 walks disabled (EPD1); IPS 40 bits (0b010).
pub const TCR: u64 = T0SZ | (0b01 << 8) | (0b01 << 10) | (0b11 << 12) | (1 << 23) | (0b010 << 32);

/// SCTLR_EL1.M: stage-1 translation enabled.
pub const SCTLR_M: u64 = 1 << 0;
/// SCTLR_EL1.A: alignment checking.
pub const SCTLR_A: u64 = 1 << 1;
/// SCTLR_EL1.C: data accesses cacheable.
pub const SCTLR_C: u64 = 1 << 2;
/// SCTLR_EL1.I: instruction accesses cacheable.
pub const SCTLR_I: u64 = 1 << 12;

/// What a block maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Memory {
    /// Device-nGnRE, execute-never at EL1 and EL0.
    Device,
    /// Normal write-back, inner shareable, executable at EL1.
    Normal,
}

/// A level-1 block descriptor mapping the 1 GiB at `output` (which must be 1 GiB aligned):
/// valid block (bits [1:0] = 0b01), AttrIndx, AP = 0b00 (EL1 read/write), SH, AF set.
#[must_use]
pub const fn block(output: u64, memory: Memory) -> u64 {
    let common = 0b01 | (1 << 10);
    match memory {
        // UXN (54) and PXN (53); shareability is ignored for Device memory.
        Memory::Device => output | common | (ATTR_DEVICE << 2) | (1 << 54) | (1 << 53),
        // Inner shareable; UXN only.
        Memory::Normal => output | common | (ATTR_NORMAL_WB << 2) | (0b11 << 8) | (1 << 54),
    }
}

/// The level-1 table of the identity map of the first `gigabytes` GiB of the address space.
#[must_use]
pub fn identity_level1(gigabytes: usize) -> [u64; ENTRIES] {
    let mut table = [0u64; ENTRIES];
    for (index, entry) in table.iter_mut().enumerate().take(gigabytes.min(ENTRIES)) {
        let memory = if index == 0 {
            Memory::Device
        } else {
            Memory::Normal
        };
        *entry = block(index as u64 * L1_BLOCK, memory);
    }
    table
}

/// The output address and memory type a level-1 identity table gives `address`, if any: what the
/// MMU would do, for tests.
#[must_use]
pub fn translate(table: &[u64; ENTRIES], address: u64) -> Option<(u64, Memory)> {
    if address >> (64 - T0SZ) != 0 {
        return None;
    }
    let entry = table[(address / L1_BLOCK) as usize];
    if entry & 0b11 != 0b01 {
        return None;
    }
    let output = (entry & 0x0000_ffff_c000_0000) | (address % L1_BLOCK);
    let memory = if (entry >> 2) & 0b111 == ATTR_DEVICE {
        Memory::Device
    } else {
        Memory::Normal
    };
    Some((output, memory))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{CONSOLE_ADDRESS, LOAD_ADDRESS, RAM_BASE};

    #[test]
    fn descriptors() {
        // Device block at 0: AF, AttrIndx 0, PXN, UXN.
        assert_eq!(block(0, Memory::Device), 0x0060_0000_0000_0401);
        // Normal block at 1 GiB: AF, SH inner, AttrIndx 1, UXN.
        assert_eq!(block(1 << 30, Memory::Normal), 0x0040_0000_4000_0705);
    }

    #[test]
    fn identity_map() {
        let table = identity_level1(4);
        assert_eq!(
            translate(&table, CONSOLE_ADDRESS),
            Some((CONSOLE_ADDRESS, Memory::Device))
        );
        assert_eq!(
            translate(&table, LOAD_ADDRESS + 0x1234),
            Some((LOAD_ADDRESS + 0x1234, Memory::Normal))
        );
        assert_eq!(
            translate(&table, RAM_BASE - 1),
            Some((RAM_BASE - 1, Memory::Device))
        );
        assert_eq!(translate(&table, 4 << 30), None);
        assert_eq!(translate(&table, 1 << 39), None);
    }

    #[test]
    fn register_values() {
        assert_eq!(MAIR, 0xff04);
        assert_eq!(TCR, 0x2_0080_3519);
    }
}

//! A guest's configuration as the image carries it: the payload entry of kind
//! [`EntryKind::Guest`](crate::EntryKind::Guest), named after the guest, holds one
//! [`GuestConfig`]; the guest's kernel (and initrd and device tree, if any) are the entries of
//! kinds `GuestKernel`, `GuestInitrd` and `GuestDtb` with the same name. The VMM service named in
//! the configuration reads it, checked once by [`GuestConfig::decode`].

use core::fmt;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The layout version of [`GuestConfig`].
pub const GUEST_CONFIG_VERSION: u32 = 1;
/// The most vCPUs a guest may have.
pub const MAX_GUEST_VCPUS: u32 = 8;
/// `flags` bit 0: guest RAM is mapped at IPA = PA.
pub const GUEST_FLAG_RAM_IDENTITY: u32 = 1 << 0;
/// Guest RAM's IPA unless the guest asks for an identity map (`docs/guests.md`).
pub const GUEST_RAM_BASE: u64 = 0x4000_0000;
/// The longest guest command line in bytes, without its terminating NUL (Linux arm64's
/// `COMMAND_LINE_SIZE` is 2048 including the NUL).
pub const MAX_CMDLINE: usize = 2047;
/// The alignment of the initrd's IPA (the guest contract, `docs/guests.md`).
pub const INITRD_ALIGN: u64 = 2 << 20;

/// The room at the top of guest RAM for the device tree: the last 2 MiB-aligned 2 MiB (Linux
/// `booting.rst`: at most 2 MiB, 8-byte aligned, in a 2 MiB region of its own).
pub const DEVICE_TREE_SPACE: u64 = 2 << 20;

/// Where a VMM puts the guest's device tree: the start of the last 2 MiB-aligned 2 MiB of RAM
/// `[ram_base, ram_base + ram_size)`, clear of a kernel loaded at the bottom of RAM (a Linux
/// `Image` with `text_offset` 0) and of the initrd after it. `None` for RAM too small to hold it
/// above its base.
#[must_use]
pub fn device_tree_ipa(ram_base: u64, ram_size: u64) -> Option<u64> {
    let end = ram_base.checked_add(ram_size)?;
    let at = end.checked_sub(DEVICE_TREE_SPACE)? & !(DEVICE_TREE_SPACE - 1);
    (at >= ram_base).then_some(at)
}

/// Where a VMM loads the initrd: the first [`INITRD_ALIGN`]-aligned IPA after the kernel, which
/// occupies `kernel_bytes` from `kernel_ipa` (the larger of its file size and its `Image`
/// header's `image_size`, which includes its BSS). `None` if that overflows.
#[must_use]
pub fn initrd_ipa(kernel_ipa: u64, kernel_bytes: u64) -> Option<u64> {
    kernel_ipa
        .checked_add(kernel_bytes)?
        .checked_next_multiple_of(INITRD_ALIGN)
}

/// Why a command line was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmdlineError {
    /// Longer than [`MAX_CMDLINE`] bytes.
    TooLong(usize),
    /// Not UTF-8, or contains a NUL or another control character.
    Invalid,
}

impl fmt::Display for CmdlineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::TooLong(n) => write!(f, "command line is {n} bytes, at most {MAX_CMDLINE}"),
            Self::Invalid => {
                f.write_str("command line is not UTF-8 text without control characters")
            }
        }
    }
}

/// Checks a command line entry's bytes: UTF-8 text of at most [`MAX_CMDLINE`] bytes without
/// control characters (a NUL would cut `/chosen/bootargs` short).
///
/// # Errors
/// What is wrong with it.
pub fn check_cmdline(bytes: &[u8]) -> Result<&str, CmdlineError> {
    if bytes.len() > MAX_CMDLINE {
        return Err(CmdlineError::TooLong(bytes.len()));
    }
    let text = core::str::from_utf8(bytes).map_err(|_| CmdlineError::Invalid)?;
    if text.chars().any(char::is_control) {
        return Err(CmdlineError::Invalid);
    }
    Ok(text)
}

/// One guest: who runs it, its vCPUs and its RAM. Little-endian, 72 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct GuestConfig {
    /// [`GUEST_CONFIG_VERSION`].
    pub version: u32,
    /// Number of vCPUs, 1 to [`MAX_GUEST_VCPUS`].
    pub vcpus: u32,
    /// The guest's VMM: a service index in image order.
    pub vmm: u32,
    /// The memory manager the VMM asks for guest RAM: a service index in image order.
    pub memmgr: u32,
    /// [`GUEST_FLAG_RAM_IDENTITY`]; other bits zero.
    pub flags: u32,
    /// Reserved, zero.
    pub reserved0: u32,
    /// Guest RAM's IPA: [`GUEST_RAM_BASE`] unless `ram_identity` (then 0: the kernel takes 2 MiB
    /// aligned RAM at boot and the memory manager maps it at IPA = PA).
    pub ram_base: u64,
    /// Bytes of guest RAM, a non-zero multiple of 4K.
    pub ram_size: u64,
    /// Reserved, zero.
    pub reserved: [u64; 4],
}

const _: () = assert!(size_of::<GuestConfig>() == 72);

/// Why a guest configuration was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestConfigError {
    /// The entry is not exactly one [`GuestConfig`] long.
    Size(usize),
    /// The version is not [`GUEST_CONFIG_VERSION`].
    Version(u32),
    /// vCPUs 0 or more than [`MAX_GUEST_VCPUS`].
    Vcpus(u32),
    /// A service index not below the image's number of services, or the VMM and memory manager
    /// the same service.
    Service(u32),
    /// Unknown flag bits or non-zero reserved fields.
    Reserved,
    /// RAM empty, not 4K aligned, or wrapping the address space.
    Ram {
        /// The base.
        base: u64,
        /// The size.
        size: u64,
    },
}

impl fmt::Display for GuestConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Size(n) => write!(
                f,
                "guest configuration is {n} bytes, expected {}",
                size_of::<GuestConfig>()
            ),
            Self::Version(v) => write!(
                f,
                "guest configuration version {v}, expected {GUEST_CONFIG_VERSION}"
            ),
            Self::Vcpus(n) => write!(f, "{n} vCPUs, expected 1 to {MAX_GUEST_VCPUS}"),
            Self::Service(i) => write!(f, "service index {i} is not a usable service"),
            Self::Reserved => f.write_str("unknown flags or non-zero reserved fields"),
            Self::Ram { base, size } => {
                write!(
                    f,
                    "guest RAM {size:#x} bytes at {base:#x} is not page-aligned memory"
                )
            }
        }
    }
}

impl GuestConfig {
    /// Reads and checks a configuration for an image of `services` services.
    ///
    /// # Errors
    ///
    /// A [`GuestConfigError`] saying the first thing found wrong.
    pub fn decode(bytes: &[u8], services: usize) -> Result<Self, GuestConfigError> {
        let config =
            Self::read_from_bytes(bytes).map_err(|_| GuestConfigError::Size(bytes.len()))?;
        if config.version != GUEST_CONFIG_VERSION {
            return Err(GuestConfigError::Version(config.version));
        }
        if config.vcpus == 0 || config.vcpus > MAX_GUEST_VCPUS {
            return Err(GuestConfigError::Vcpus(config.vcpus));
        }
        for index in [config.vmm, config.memmgr] {
            if index as usize >= services {
                return Err(GuestConfigError::Service(index));
            }
        }
        if config.vmm == config.memmgr {
            return Err(GuestConfigError::Service(config.vmm));
        }
        if config.flags & !GUEST_FLAG_RAM_IDENTITY != 0
            || config.reserved0 != 0
            || config.reserved != [0; 4]
        {
            return Err(GuestConfigError::Reserved);
        }
        let aligned = (config.ram_base | config.ram_size) % 4096 == 0;
        if config.ram_size == 0
            || !aligned
            || config.ram_base.checked_add(config.ram_size).is_none()
        {
            return Err(GuestConfigError::Ram {
                base: config.ram_base,
                size: config.ram_size,
            });
        }
        Ok(config)
    }

    /// Its bytes, as the image holds them.
    #[must_use]
    pub fn to_bytes(&self) -> &[u8] {
        self.as_bytes()
    }

    /// Whether guest RAM is mapped at IPA = PA.
    #[must_use]
    pub fn ram_identity(&self) -> bool {
        self.flags & GUEST_FLAG_RAM_IDENTITY != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> GuestConfig {
        GuestConfig {
            version: 1,
            vcpus: 1,
            vmm: 1,
            memmgr: 0,
            flags: 0,
            reserved0: 0,
            ram_base: GUEST_RAM_BASE,
            ram_size: 16 << 20,
            reserved: [0; 4],
        }
    }

    fn decode(config: GuestConfig) -> Result<GuestConfig, GuestConfigError> {
        GuestConfig::decode(config.as_bytes(), 2)
    }

    #[test]
    fn initrd_goes_on_the_next_2m_boundary_after_the_kernel() {
        assert_eq!(initrd_ipa(0x4020_0000, 0x1000), Some(0x4040_0000));
        assert_eq!(initrd_ipa(0x4020_0000, 0x20_0000), Some(0x4040_0000));
        assert_eq!(initrd_ipa(0x4020_0000, 0x20_0001), Some(0x4060_0000));
        assert_eq!(initrd_ipa(u64::MAX - 4, 8), None);
        assert_eq!(initrd_ipa(u64::MAX - (1 << 20), 1), None);
    }

    #[test]
    fn the_device_tree_goes_in_the_last_2m_of_ram() {
        assert_eq!(device_tree_ipa(0x4000_0000, 16 << 20), Some(0x40e0_0000));
        // RAM ending off a 2 MiB boundary: the last whole aligned 2 MiB below its end.
        assert_eq!(
            device_tree_ipa(0x4000_0000, (16 << 20) + 0x1000),
            Some(0x40e0_0000)
        );
        assert_eq!(device_tree_ipa(0x4000_0000, 2 << 20), Some(0x4000_0000));
        assert_eq!(device_tree_ipa(0x4000_0000, 1 << 20), None);
        assert_eq!(device_tree_ipa(u64::MAX - 0x1000, 4 << 20), None);
    }

    #[test]
    fn command_lines_are_short_text() {
        assert_eq!(
            check_cmdline(b"console=ttyAMA0 root=/dev/vda"),
            Ok("console=ttyAMA0 root=/dev/vda")
        );
        assert_eq!(check_cmdline(b""), Ok(""));
        assert_eq!(
            check_cmdline(&[b'a'; MAX_CMDLINE]).map(str::len),
            Ok(MAX_CMDLINE)
        );
        assert_eq!(
            check_cmdline(&[b'a'; MAX_CMDLINE + 1]),
            Err(CmdlineError::TooLong(2048))
        );
        assert_eq!(check_cmdline(b"a\0b"), Err(CmdlineError::Invalid));
        assert_eq!(check_cmdline(b"a\nb"), Err(CmdlineError::Invalid));
        assert_eq!(check_cmdline(&[0xff, 0xfe]), Err(CmdlineError::Invalid));
    }

    #[test]
    fn layout_is_little_endian_and_fixed() {
        let bytes = valid().as_bytes().to_vec();
        assert_eq!(bytes.len(), 72);
        assert_eq!(&bytes[0..4], &[1, 0, 0, 0]);
        assert_eq!(&bytes[24..32], &0x4000_0000u64.to_le_bytes());
        assert_eq!(&bytes[32..40], &(16u64 << 20).to_le_bytes());
    }

    #[test]
    fn accepts_a_valid_configuration() {
        assert_eq!(decode(valid()), Ok(valid()));
        let identity = GuestConfig {
            flags: GUEST_FLAG_RAM_IDENTITY,
            ram_base: 0,
            vcpus: 8,
            ..valid()
        };
        assert!(decode(identity).unwrap().ram_identity());
    }

    #[test]
    fn refuses_bad_configurations() {
        let bytes = valid().as_bytes().to_vec();
        assert_eq!(
            GuestConfig::decode(&bytes[..71], 2),
            Err(GuestConfigError::Size(71))
        );
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(
            GuestConfig::decode(&long, 2),
            Err(GuestConfigError::Size(73))
        );
        let cases = [
            (
                GuestConfig {
                    version: 2,
                    ..valid()
                },
                GuestConfigError::Version(2),
            ),
            (
                GuestConfig {
                    vcpus: 0,
                    ..valid()
                },
                GuestConfigError::Vcpus(0),
            ),
            (
                GuestConfig {
                    vcpus: 9,
                    ..valid()
                },
                GuestConfigError::Vcpus(9),
            ),
            (
                GuestConfig { vmm: 2, ..valid() },
                GuestConfigError::Service(2),
            ),
            (
                GuestConfig {
                    memmgr: 7,
                    ..valid()
                },
                GuestConfigError::Service(7),
            ),
            (
                GuestConfig {
                    memmgr: 1,
                    ..valid()
                },
                GuestConfigError::Service(1),
            ),
            (
                GuestConfig {
                    flags: 2,
                    ..valid()
                },
                GuestConfigError::Reserved,
            ),
            (
                GuestConfig {
                    reserved0: 1,
                    ..valid()
                },
                GuestConfigError::Reserved,
            ),
            (
                GuestConfig {
                    reserved: [0, 0, 0, 1],
                    ..valid()
                },
                GuestConfigError::Reserved,
            ),
            (
                GuestConfig {
                    ram_size: 0,
                    ..valid()
                },
                GuestConfigError::Ram {
                    base: GUEST_RAM_BASE,
                    size: 0,
                },
            ),
            (
                GuestConfig {
                    ram_size: 4095,
                    ..valid()
                },
                GuestConfigError::Ram {
                    base: GUEST_RAM_BASE,
                    size: 4095,
                },
            ),
            (
                GuestConfig {
                    ram_base: u64::MAX - 4095,
                    ..valid()
                },
                GuestConfigError::Ram {
                    base: u64::MAX - 4095,
                    size: 16 << 20,
                },
            ),
        ];
        for (config, error) in cases {
            assert_eq!(decode(config), Err(error), "{config:?}");
        }
    }

    proptest::proptest! {
        /// Any bytes decode or are refused without panicking, and what decodes is valid.
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..100),
                               services in 0usize..10) {
            if let Ok(config) = GuestConfig::decode(&bytes, services) {
                proptest::prop_assert_eq!(config.to_bytes(), &bytes[..]);
                proptest::prop_assert!((1..=MAX_GUEST_VCPUS).contains(&config.vcpus));
                proptest::prop_assert!((config.vmm as usize) < services);
            }
        }
    }

    #[test]
    fn errors_read_as_sentences() {
        assert_eq!(
            GuestConfigError::Vcpus(9).to_string(),
            "9 vCPUs, expected 1 to 8"
        );
    }
}

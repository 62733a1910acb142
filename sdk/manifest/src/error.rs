//! Manifest errors: what went wrong, in which file, at which line and column, in which field.
//!
//! Every error is reported as one line,
//! `path/to/file.toml:LINE:COLUMN: error: <field path>: <what was wrong, what was expected>`,
//! so that editors and CI logs can jump to it. Lines and columns count from 1; columns count
//! characters, not bytes. Field paths name tables and keys as they are written in the manifest,
//! with array elements indexed from 0: `service[1].caps[0].endpoint`.

use std::fmt;
use std::path::PathBuf;

use crate::feature::Feature;
use crate::model::PAGE_SIZE;

/// A position in a manifest, 1-based, pointing at the offending value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    /// Line, counting from 1.
    pub line: usize,
    /// Column in characters, counting from 1.
    pub column: usize,
}

impl Location {
    /// The location of byte `offset` in `text`. Offsets past the end (toml reports an empty span at
    /// the end of input) point just after the last character; an offset inside a multi-byte
    /// character is rounded down to that character.
    pub fn of_offset(text: &str, offset: usize) -> Location {
        let mut end = offset.min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let before = &text[..end];
        let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
        Location {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// One mistake in a manifest.
///
/// `Display` renders it as `file:LINE:COLUMN: error: field: message`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestError {
    /// The manifest file, as given to [`crate::load`] or [`crate::parse`].
    pub file: PathBuf,
    /// Where in the file; `None` only when the file could not be read at all.
    pub location: Option<Location>,
    /// The field path (`service[0].memory`); empty when the error concerns no field (a syntax
    /// error outside any key, an unreadable file).
    pub field: String,
    /// What was wrong.
    pub kind: ErrorKind,
}

/// What was wrong with a manifest: the closed set of manifest mistakes.
///
/// The first group, `Io` to `Schema`, comes from reading the TOML into the schema: only the first
/// such error is reported, since the document's shape is unknown past it. The rest are semantic
/// checks, all of which run and are reported together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The manifest file could not be read.
    Io {
        /// The operating system's reason.
        message: String,
    },
    /// The text is not valid TOML (including a key given twice).
    Syntax {
        /// The TOML parser's description.
        message: String,
    },
    /// A key that the schema does not have (tables deny unknown fields).
    UnknownField {
        /// The keys allowed there.
        expected: Vec<String>,
    },
    /// A required key is absent.
    MissingField,
    /// A value of the wrong TOML type.
    WrongType {
        /// What was found, e.g. `string "hi"`.
        found: String,
        /// What the schema expects, e.g. `an integer`.
        expected: String,
    },
    /// Any other shape error the TOML reader reports.
    Schema {
        /// The reader's description.
        message: String,
    },
    /// A name that is empty or has characters other than ASCII letters, digits, `-` and `_`.
    InvalidName {
        /// The name given.
        name: String,
    },
    /// A string outside a closed set of choices (self-test, log level, memory type, board).
    UnknownValue {
        /// The string given.
        found: String,
        /// The valid choices.
        expected: Vec<String>,
    },
    /// Two services, guests, devices or carve-outs with one name.
    DuplicateName {
        /// `service`, `guest`, `device` or `carveout`.
        what: &'static str,
        /// The repeated name.
        name: String,
        /// Where the first one is.
        first: Location,
    },
    /// A feature name that is not in the closed set of [`Feature`]s.
    UnknownFeature {
        /// The name given.
        found: String,
    },
    /// A feature listed twice in `requires`.
    DuplicateFeature {
        /// The repeated feature.
        feature: Feature,
    },
    /// `min_pa_bits` is not a physical address size the architecture defines.
    InvalidPaBits {
        /// The value given.
        found: i64,
    },
    /// An integer outside its allowed range (priority, vCPU count, CPU count, interrupt number).
    OutOfRange {
        /// The value given.
        found: i64,
        /// The smallest allowed value.
        min: i64,
        /// The largest allowed value.
        max: i64,
    },
    /// A size that is not a non-negative integer or a number with a unit (`K`, `M`, `G`).
    InvalidSize {
        /// The text given.
        found: String,
    },
    /// A memory size of zero.
    ZeroSize,
    /// A size that is not a multiple of the page size.
    UnalignedSize {
        /// The size in bytes.
        size: u64,
    },
    /// An address that is not aligned to the page size.
    UnalignedAddress {
        /// The address.
        address: u64,
    },
    /// A negative physical address.
    NegativeAddress {
        /// The value given.
        found: i64,
    },
    /// A size larger than the physical address space the platform guarantees.
    TooLarge {
        /// The value in bytes.
        value: u64,
        /// The physical address size that bounds it.
        pa_bits: u8,
    },
    /// A region that ends beyond the physical address space the platform guarantees.
    RegionOutOfRange {
        /// The first byte past the region (saturating).
        end: u64,
        /// The physical address size that bounds it.
        pa_bits: u8,
    },
    /// Two carve-outs share physical memory.
    Overlap {
        /// The other carve-out.
        other: String,
        /// Where the other carve-out's base is.
        other_location: Location,
    },
    /// A capability or a guest's `vmm` names a service that the manifest does not declare.
    UnknownService {
        /// The name given.
        name: String,
        /// The declared services.
        known: Vec<String>,
    },
    /// A capability or passthrough names a device that the manifest does not declare.
    UnknownDevice {
        /// The name given.
        name: String,
        /// The declared devices.
        known: Vec<String>,
    },
    /// A capability or guest names a carve-out that the manifest does not declare.
    UnknownCarveout {
        /// The name given.
        name: String,
        /// The declared carve-outs.
        known: Vec<String>,
    },
    /// A capability grant with no kind or several kinds in one table.
    NotOneGrant {
        /// The kinds found in the table.
        found: Vec<String>,
    },
    /// A device with both `path` and `compatible`, or neither.
    NotOneLocator,
    /// A guest with both `kernel` and `crate`, or neither.
    NotOneKernel,
    /// A guest whose `memmgr` is its `vmm`.
    VmmIsMemmgr {
        /// The service.
        service: String,
    },
    /// A Normal write-back (cacheable) passthrough of a device not declared `cacheable`.
    DeviceNotCacheable {
        /// The device.
        device: String,
    },
    /// A cacheable mapping of device memory on a platform that does not require the features
    /// that make it safe (FEAT_S2FWB and CTR_EL0.DIC, DESIGN.md rule 4).
    CacheableNeedsFeatures {
        /// The features missing from `[platform].requires`.
        missing: Vec<Feature>,
    },
    /// `optional = true` on a passthrough the platform never refuses (not cacheable).
    OptionalNotCacheable,
    /// A guest command line that Linux could not take: too long, or with a NUL or another
    /// control character.
    InvalidCmdline {
        /// What is wrong (`capvisor_image::CmdlineError`'s sentence).
        reason: String,
    },
    /// `cmdline` or `initrd` together with the guest's own `dtb`: the VMM writes them into the
    /// device tree it generates, and loads a given one as it is.
    NeedsGeneratedDeviceTree,
    /// A file that the manifest names does not exist (relative to the manifest's directory).
    FileNotFound {
        /// The path that was looked up.
        path: PathBuf,
    },
    /// One VMM service named by two guests (a VMM is trusted for its own guest only).
    SharedVmm {
        /// The service.
        service: String,
        /// The guest that names it first.
        other_guest: String,
    },
    /// One device or carve-out passed through to two guests (the image gives each region to one
    /// guest at most).
    PassedThroughTwice {
        /// `device` or `carve-out`.
        what: &'static str,
        /// Its name.
        name: String,
        /// The guest it is already passed through to.
        other_guest: String,
        /// Where that first passthrough is.
        other_location: Location,
    },
    /// An interrupt granted to two components.
    IrqTwice {
        /// The interrupt number.
        irq: u32,
        /// The component it is already granted to.
        other: String,
    },
    /// A device or carve-out granted to two services (the kernel gives a region to one holder).
    HeldTwice {
        /// `device` or `carve-out`.
        what: &'static str,
        /// Its name.
        name: String,
        /// The service of this grant.
        service: String,
        /// The service granted it first.
        other_service: String,
        /// Where that first grant is.
        other_location: Location,
    },
    /// A device or carve-out passed through to a guest that no service holds, so nothing would
    /// map it (the holder, the device broker, maps passthroughs).
    PassthroughNotHeld {
        /// `device` or `carve-out`.
        what: &'static str,
        /// The grant key that would give it to a service: `device` or `carveout`.
        grant_key: &'static str,
        /// Its name.
        name: String,
        /// The guest it is passed through to.
        guest: String,
    },
    /// A device that may master the bus passed through to a guest without `unprotected_dma =
    /// true`: with no IOMMU, it could DMA to all physical memory.
    UnprotectedDma {
        /// The device.
        device: String,
        /// The guest.
        guest: String,
        /// Its `compatible`, when it is located by one (else by path, so unknown here).
        compatible: Option<String>,
    },
    /// `unprotected_dma = true` on a device that cannot master the bus.
    NeedlessUnprotectedDma {
        /// The device.
        device: String,
        /// Its `compatible`.
        compatible: String,
    },
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", Escaped(&self.file.display().to_string()))?;
        if let Some(location) = self.location {
            write!(f, "{location}:")?;
        }
        write!(f, " error: ")?;
        if !self.field.is_empty() {
            write!(f, "{}: ", Escaped(&self.field))?;
        }
        write!(f, "{}", self.kind)
    }
}

impl std::error::Error for ManifestError {}

/// Writes `` `a`, `b`, `c` `` (or `none` for an empty list).
pub(crate) struct Choices<'a, T: fmt::Display>(pub &'a [T]);

impl<T: fmt::Display> fmt::Display for Choices<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return write!(f, "none");
        }
        for (index, choice) in self.0.iter().enumerate() {
            if index > 0 {
                write!(f, ", ")?;
            }
            write!(f, "`{choice}`")?;
        }
        Ok(())
    }
}

/// A byte count in the largest unit that divides it (`2M`, `4K`, `3000`).
pub(crate) struct Bytes(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (shift, unit) in [(50, 'P'), (40, 'T'), (30, 'G'), (20, 'M'), (10, 'K')] {
            if self.0 != 0 && self.0.trailing_zeros() >= shift {
                return write!(f, "{}{unit}", self.0 >> shift);
            }
        }
        write!(f, "{}", self.0)
    }
}

/// Writes text with control characters escaped (`\n`, `\u{7f}`), so that a name or path taken from a
/// manifest cannot break an error across lines.
struct Escaped<'a>(&'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_debug())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for ErrorKind {
    /// One line: values quoted from the manifest are escaped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Escaped(&Message(self).to_string()).fmt(f)
    }
}

/// The message of an error kind, before escaping.
struct Message<'a>(&'a ErrorKind);

// One flat, exhaustive match (longer than the usual function) so that no kind can exist without its
// message; each arm is one message.
impl fmt::Display for Message<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            ErrorKind::Io { message } => write!(f, "cannot read the manifest: {message}"),
            ErrorKind::Syntax { message } => write!(f, "invalid TOML: {message}"),
            ErrorKind::UnknownField { expected } => {
                write!(f, "unknown field, expected one of {}", Choices(expected))
            }
            ErrorKind::MissingField => write!(f, "missing required field"),
            ErrorKind::WrongType { found, expected } => {
                write!(f, "expected {expected}, found {found}")
            }
            ErrorKind::UnknownValue { found, expected } => {
                write!(
                    f,
                    "unknown value `{found}`, expected one of {}",
                    Choices(expected)
                )
            }
            ErrorKind::Schema { message } => write!(f, "{message}"),
            ErrorKind::InvalidName { name } => write!(
                f,
                "invalid name `{name}`: expected a non-empty name of ASCII letters, digits, `-` and `_`"
            ),
            ErrorKind::DuplicateName { what, name, first } => {
                write!(
                    f,
                    "duplicate {what} name `{name}` (first declared at {first})"
                )
            }
            ErrorKind::UnknownFeature { found } => write!(
                f,
                "unknown CPU feature `{found}`, expected one of {}",
                Choices(Feature::NAMES)
            ),
            ErrorKind::DuplicateFeature { feature } => {
                write!(f, "feature `{feature}` is listed twice")
            }
            ErrorKind::InvalidPaBits { found } => write!(
                f,
                "{found} is not an architectural physical address size, expected one of {}",
                Choices(crate::model::PA_BITS)
            ),
            ErrorKind::OutOfRange { found, min, max } => {
                write!(f, "{found} is out of range, expected {min} to {max}")
            }
            ErrorKind::InvalidSize { found } => write!(
                f,
                "invalid size `{found}`, expected an integer number of bytes or a string of \
                 digits and a unit K, M, G or T (e.g. \"2M\")"
            ),
            ErrorKind::ZeroSize => write!(
                f,
                "size is zero, expected at least one {} page",
                Bytes(PAGE_SIZE)
            ),
            ErrorKind::UnalignedSize { size } => {
                write!(f, "size {}", Bytes(*size))?;
                if size % 1024 == 0 {
                    write!(f, " ({size} bytes)")?;
                }
                write!(
                    f,
                    " is not a multiple of the {} page size",
                    Bytes(PAGE_SIZE)
                )
            }
            ErrorKind::UnalignedAddress { address } => write!(
                f,
                "address {address:#x} is not aligned to the {} page size",
                Bytes(PAGE_SIZE)
            ),
            ErrorKind::NegativeAddress { found } => write!(
                f,
                "{found} is not a physical address, expected a non-negative integer such as \
                 0x8000_0000"
            ),
            ErrorKind::TooLarge { value, pa_bits } => write!(
                f,
                "{} is larger than the {pa_bits}-bit physical address space ({})",
                Bytes(*value),
                Bytes(1 << pa_bits)
            ),
            ErrorKind::RegionOutOfRange { end, pa_bits } => write!(
                f,
                "region ends at {end:#x}, beyond the {pa_bits}-bit physical address space ({:#x})",
                1u64 << pa_bits
            ),
            ErrorKind::Overlap {
                other,
                other_location,
            } => write!(
                f,
                "overlaps carve-out `{other}` (declared at {other_location})"
            ),
            ErrorKind::UnknownService { name, known } => write!(
                f,
                "unknown service `{name}`, expected one of {}",
                Choices(known)
            ),
            ErrorKind::UnknownDevice { name, known } => write!(
                f,
                "unknown device `{name}`, expected one of {}",
                Choices(known)
            ),
            ErrorKind::UnknownCarveout { name, known } => write!(
                f,
                "unknown carve-out `{name}`, expected one of {}",
                Choices(known)
            ),
            ErrorKind::NotOneGrant { found } => write!(
                f,
                "a capability grant names exactly one of {}, found {}",
                Choices(crate::model::GRANT_KINDS),
                Choices(found)
            ),
            ErrorKind::NotOneLocator => write!(
                f,
                "a device is located by exactly one of `path` (device-tree node) or `compatible`"
            ),
            ErrorKind::NotOneKernel => write!(
                f,
                "a guest's kernel is exactly one of `kernel` (an arm64 Image file) or `crate` (a \
                 guest crate the SDK builds)"
            ),
            ErrorKind::VmmIsMemmgr { service } => write!(
                f,
                "service `{service}` is both the guest's VMM and its memory manager; expected two \
                 services"
            ),
            ErrorKind::DeviceNotCacheable { device } => write!(
                f,
                "memtype `normal-wb` maps device `{device}` cacheable, but the device is not \
                 declared `cacheable = true`; expected `device-ngnre` or `normal-nc`"
            ),
            ErrorKind::CacheableNeedsFeatures { missing } => write!(
                f,
                "a cacheable mapping of device memory needs FEAT_S2FWB and CTR_EL0.DIC; add {} \
                 to [platform].requires, or mark the passthrough `optional = true` to boot \
                 without it where the platform lacks them",
                Choices(missing)
            ),
            ErrorKind::OptionalNotCacheable => write!(
                f,
                "`optional` is for a cacheable (`normal-wb` or `cacheable_pfnmap`) passthrough, \
                 which a platform without FEAT_S2FWB and CTR_EL0.DIC refuses; this one is \
                 always granted, remove `optional`"
            ),
            ErrorKind::InvalidCmdline { reason } => write!(f, "{reason}"),
            ErrorKind::NeedsGeneratedDeviceTree => write!(
                f,
                "the VMM writes the command line and the initrd's range into `/chosen` of the \
                 device tree it generates, but loads a `dtb` as it is: remove `dtb` to use this \
                 field"
            ),
            ErrorKind::FileNotFound { path } => {
                write!(f, "file `{}` does not exist", path.display())
            }
            ErrorKind::SharedVmm {
                service,
                other_guest,
            } => write!(
                f,
                "service `{service}` is already the VMM of guest `{other_guest}`; each guest needs \
                 its own VMM"
            ),
            ErrorKind::PassedThroughTwice {
                what,
                name,
                other_guest,
                other_location,
            } => write!(
                f,
                "{what} `{name}` is already passed through to guest `{other_guest}` (at \
                 {other_location})"
            ),
            ErrorKind::IrqTwice { irq, other } => {
                write!(f, "interrupt {irq} is already granted to `{other}`")
            }
            ErrorKind::HeldTwice {
                what,
                name,
                service,
                other_service,
                other_location,
            } => write!(
                f,
                "{what} `{name}` is granted to service `{service}` but already to service \
                 `{other_service}` (at {other_location}); a {what} has one holder, the device \
                 broker that maps it"
            ),
            ErrorKind::PassthroughNotHeld {
                what,
                grant_key,
                name,
                guest,
            } => write!(
                f,
                "{what} `{name}` is passed through to guest `{guest}` but no service holds it, so \
                 nothing would map it; grant it to the device broker (`{{ {grant_key} = \
                 \"{name}\" }}` in its `caps`), which maps every passthrough"
            ),
            ErrorKind::UnprotectedDma {
                device,
                guest,
                compatible,
            } => {
                let why = match compatible {
                    Some(compatible) => format!("its compatible `{compatible}` is not"),
                    None => "located by `path`, it is not known to be".to_owned(),
                };
                write!(
                    f,
                    "device `{device}` passed through to guest `{guest}` may master the bus ({why} \
                     one of {}, which cannot): with no IOMMU it could DMA to all physical \
                     memory; add `unprotected_dma = true` to this passthrough to accept that, or \
                     do not pass the device through",
                    Choices(&capvisor_image::devices::NO_BUS_MASTER)
                )
            }
            ErrorKind::NeedlessUnprotectedDma { device, compatible } => write!(
                f,
                "device `{device}` (`{compatible}`) cannot master the bus, so it cannot DMA: \
                 remove `unprotected_dma`"
            ),
        }
    }
}

/// All the errors found in one manifest, in the order of the checks.
///
/// `Display` writes each on its own line. Never empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestErrors(pub Vec<ManifestError>);

impl ManifestErrors {
    /// The errors, one per mistake.
    pub fn errors(&self) -> &[ManifestError] {
        &self.0
    }
}

impl fmt::Display for ManifestErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, error) in self.0.iter().enumerate() {
            if index > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ManifestErrors {}

impl IntoIterator for ManifestErrors {
    type Item = ManifestError;
    type IntoIter = std::vec::IntoIter<ManifestError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

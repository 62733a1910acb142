//! The manifest as written: serde types that mirror the TOML, with spans kept for checking.
//!
//! Every table denies unknown fields, and is read through [`Table`] so that an array in its place
//! is a type error. Values that semantic checks need to point at are kept as `Spanned`; integers
//! are read as `i64` (TOML's integer type) and closed sets of words as strings, so that an
//! out-of-range number or unknown word is a precise semantic error, reported with the others,
//! rather than a reading error that stops at the first.

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, Visitor};
use toml::Spanned;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawManifest {
    pub name: Spanned<String>,
    pub description: Option<String>,
    pub kernel: Option<Table<RawKernel>>,
    pub platform: Option<Table<RawPlatform>>,
    #[serde(default)]
    pub device: Vec<Spanned<Table<RawDevice>>>,
    #[serde(default)]
    pub carveout: Vec<Spanned<Table<RawCarveout>>>,
    #[serde(default)]
    pub service: Vec<Spanned<Table<RawService>>>,
    #[serde(default)]
    pub guest: Vec<Spanned<Table<RawGuest>>>,
}

/// `[kernel]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawKernel {
    pub selftest: Option<Spanned<String>>,
    pub log: Option<Spanned<String>>,
}

/// `[platform]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPlatform {
    pub board: Option<Spanned<String>>,
    #[serde(default)]
    pub requires: Vec<Spanned<String>>,
    pub min_pa_bits: Option<Spanned<i64>>,
    pub min_cpus: Option<Spanned<i64>>,
}

/// `[[device]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDevice {
    pub name: Spanned<String>,
    pub path: Option<Spanned<String>>,
    pub compatible: Option<Spanned<String>>,
    #[serde(default)]
    pub cacheable: bool,
}

/// `[[carveout]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCarveout {
    pub name: Spanned<String>,
    pub base: Spanned<i64>,
    pub size: Spanned<RawSize>,
    #[serde(default)]
    pub cacheable_pfnmap: bool,
}

/// `[[service]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawService {
    pub name: Spanned<String>,
    #[serde(rename = "crate")]
    pub crate_ref: Spanned<String>,
    pub priority: Spanned<i64>,
    pub memory: Spanned<RawSize>,
    pub stack: Option<Spanned<RawSize>>,
    #[serde(default = "yes")]
    pub start: bool,
    #[serde(default)]
    pub caps: Vec<Spanned<Table<RawGrant>>>,
}

fn yes() -> bool {
    true
}

/// One element of a service's `caps`: exactly one of the fields must be set.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGrant {
    pub endpoint: Option<Spanned<String>>,
    pub device: Option<Spanned<String>>,
    pub irq: Option<Spanned<i64>>,
    pub untyped: Option<Spanned<RawSize>>,
    pub carveout: Option<Spanned<String>>,
}

/// `[[guest]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGuest {
    pub name: Spanned<String>,
    pub kernel: Option<Spanned<String>>,
    #[serde(rename = "crate")]
    pub crate_name: Option<Spanned<String>>,
    pub initrd: Option<Spanned<String>>,
    pub dtb: Option<Spanned<String>>,
    pub cmdline: Option<Spanned<String>>,
    pub memory: Spanned<RawSize>,
    pub vcpus: Option<Spanned<i64>>,
    #[serde(default)]
    pub ram_identity: bool,
    #[serde(default)]
    pub devices: Vec<Table<RawPassthrough>>,
    #[serde(default)]
    pub carveouts: Vec<Spanned<RawCarveoutPassthrough>>,
    pub vmm: Spanned<String>,
    pub memmgr: Option<Spanned<String>>,
}

/// One element of a guest's `devices`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPassthrough {
    pub device: Spanned<String>,
    pub memtype: Option<Spanned<String>>,
    #[serde(default = "yes")]
    pub irqs: bool,
    #[serde(default)]
    pub optional: Option<Spanned<bool>>,
    #[serde(default)]
    pub unprotected_dma: Option<Spanned<bool>>,
}

/// One element of a guest's `carveouts`: a carve-out name, or a table
/// `{ carveout = "<name>", optional = true }`.
#[derive(Debug)]
pub(crate) enum RawCarveoutPassthrough {
    Name(String),
    Table(RawCarveoutTable),
}

/// The table form of a guest's carve-out.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCarveoutTable {
    pub carveout: Spanned<String>,
    #[serde(default)]
    pub optional: Option<Spanned<bool>>,
}

impl<'de> Deserialize<'de> for RawCarveoutPassthrough {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(CarveoutPassthroughVisitor)
    }
}

struct CarveoutPassthroughVisitor;

impl<'de> Visitor<'de> for CarveoutPassthroughVisitor {
    type Value = RawCarveoutPassthrough;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a carve-out name or a table `{ carveout = \"<name>\", optional = true }`")
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<Self::Value, E> {
        Ok(RawCarveoutPassthrough::Name(name.to_owned()))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        RawCarveoutTable::deserialize(de::value::MapAccessDeserializer::new(map))
            .map(RawCarveoutPassthrough::Table)
    }
}

/// A value that must be a TOML table. Serde's derived structs also accept an array of their
/// fields in order, which in a manifest is only ever a mistake.
#[derive(Debug, Default)]
pub(crate) struct Table<T>(pub T);

impl<T> std::ops::Deref for Table<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Table<T> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(TableVisitor(PhantomData))
    }
}

struct TableVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for TableVisitor<T> {
    type Value = Table<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a table")
    }

    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Table<T>, A::Error> {
        T::deserialize(de::value::MapAccessDeserializer::new(map)).map(Table)
    }
}

/// A size as written: a string with an optional unit, or a TOML integer of bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RawSize {
    Text(String),
    Bytes(i64),
}

impl<'de> Deserialize<'de> for RawSize {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RawSizeVisitor)
    }
}

struct RawSizeVisitor;

impl Visitor<'_> for RawSizeVisitor {
    type Value = RawSize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a size such as \"2M\" or an integer number of bytes")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<RawSize, E> {
        Ok(RawSize::Text(text.to_owned()))
    }

    fn visit_i64<E: de::Error>(self, bytes: i64) -> Result<RawSize, E> {
        Ok(RawSize::Bytes(bytes))
    }

    fn visit_u64<E: de::Error>(self, bytes: u64) -> Result<RawSize, E> {
        Ok(RawSize::Bytes(i64::try_from(bytes).unwrap_or(-1)))
    }
}

impl RawSize {
    /// The size in bytes, or `None` when the text is not a size.
    ///
    /// Accepted: decimal digits (`_` allowed between them) followed by nothing (bytes) or one of
    /// `K`, `M`, `G`, `T`, optionally spelled `KiB`, `MiB`, `GiB`, `TiB`; units are powers of 1024.
    pub fn bytes(&self) -> Option<u64> {
        match self {
            RawSize::Bytes(bytes) => u64::try_from(*bytes).ok(),
            RawSize::Text(text) => parse_size(text),
        }
    }

    /// The size as written, for messages.
    pub fn written(&self) -> String {
        match self {
            RawSize::Bytes(bytes) => bytes.to_string(),
            RawSize::Text(text) => text.clone(),
        }
    }
}

fn parse_size(text: &str) -> Option<u64> {
    let digits_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '_'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    let starts_and_ends_with_digit = number.starts_with(|c: char| c.is_ascii_digit())
        && number.ends_with(|c: char| c.is_ascii_digit());
    if !starts_and_ends_with_digit {
        return None;
    }
    let shift = match unit {
        "" => 0,
        "K" | "KiB" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        "T" | "TiB" => 40,
        _ => return None,
    };
    let value: u64 = number.replace('_', "").parse().ok()?;
    value.checked_mul(1 << shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        let size = |text: &str| RawSize::Text(text.to_owned()).bytes();
        assert_eq!(size("4096"), Some(4096));
        assert_eq!(size("256K"), Some(256 << 10));
        assert_eq!(size("2M"), Some(2 << 20));
        assert_eq!(size("1GiB"), Some(1 << 30));
        assert_eq!(size("1_024K"), Some(1 << 20));
        assert_eq!(size("2T"), Some(2 << 40));
        for bad in [
            "",
            "M",
            "2m",
            "2 M",
            "-1",
            "_1K",
            "1_K",
            "2MB",
            "99999999999999999999G",
        ] {
            assert_eq!(size(bad), None, "{bad:?}");
        }
        assert_eq!(RawSize::Bytes(-4096).bytes(), None);
        assert_eq!(RawSize::Bytes(8192).bytes(), Some(8192));
    }
}

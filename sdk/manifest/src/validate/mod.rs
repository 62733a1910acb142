//! Semantic checks: from the manifest as written to a [`Manifest`], collecting every mistake.
//!
//! Each check records its error and goes on, so one run reports all that is wrong. Names are
//! gathered before references are resolved, so a reference to a service declared later in the file
//! is fine and a reference to an undeclared one is reported once, where it is written.
//!
//! The checks follow the manifest's tables. This module holds the [`Checker`] and the checks of
//! values that every table uses: names, sizes, files, closed-set words, crate references and
//! references by name. `platform.rs` checks `[kernel]` and `[platform]`; `regions.rs` the
//! devices and carve-outs, and the rules of who holds each and which guest gets it;
//! `services.rs` the services and their grants; `guests.rs` the guests and their passthroughs.

mod guests;
mod platform;
mod regions;
mod services;

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;

use crate::error::{ErrorKind, Location, ManifestError};
use crate::feature::FeatureSet;
use crate::model::{Choice, CrateRef, DEFAULT_PA_BITS, Manifest, PAGE_SIZE, choice_named};
use crate::schema::{RawKernel, RawManifest, RawPlatform, RawSize};

use regions::RegionKind;

/// The state of one validation run.
pub(crate) struct Checker<'a> {
    text: &'a str,
    file: &'a Path,
    dir: PathBuf,
    errors: Vec<ManifestError>,
    /// Bounds every size and region: `[platform].min_pa_bits` or [`DEFAULT_PA_BITS`].
    pa_bits: u8,
    /// Declared services, in order, for resolving references and listing them in messages.
    services: Vec<String>,
    /// Declared devices, each with whether it is declared `cacheable` and its `compatible`, when
    /// it is located by one.
    devices: BTreeMap<String, DeclaredDevice>,
    /// Declared carve-outs, each with whether it is a cacheable PFNMAP.
    carveouts: BTreeMap<String, bool>,
    /// `[platform].requires`, for the cacheable-mapping rule.
    requires: FeatureSet,
    /// Who holds each granted interrupt, to refuse a second grant.
    irq_holders: BTreeMap<u32, String>,
    /// Who holds each granted device and carve-out (keyed by kind and name), and where, to
    /// refuse a second holder and a passthrough that nobody holds.
    region_holders: BTreeMap<(RegionKind, String), (String, Location)>,
    /// The guest each device and carve-out is passed through to, and where, to refuse a second.
    passed_through: BTreeMap<(RegionKind, String), (String, Location)>,
}

/// What the checks of passthroughs need to know of a declared device.
#[derive(Clone, Debug, Default)]
pub(crate) struct DeclaredDevice {
    /// Declared `cacheable`.
    cacheable: bool,
    /// Its `compatible`, when it is located by one (not by `path`).
    compatible: Option<String>,
}

/// Checks `raw` (read from `text`, the contents of `file`) and builds the manifest.
pub(crate) fn check(
    raw: RawManifest,
    text: &str,
    file: &Path,
) -> Result<Manifest, Vec<ManifestError>> {
    let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut checker = Checker {
        text,
        file,
        dir: dir.clone(),
        errors: Vec::new(),
        pa_bits: DEFAULT_PA_BITS,
        services: unique_names_of(&raw.service, |service| &service.name),
        devices: BTreeMap::new(),
        carveouts: BTreeMap::new(),
        requires: FeatureSet::EMPTY,
        irq_holders: BTreeMap::new(),
        region_holders: BTreeMap::new(),
        passed_through: BTreeMap::new(),
    };
    checker.name(&raw.name, "name");
    let kernel = checker.kernel(raw.kernel.as_deref().unwrap_or(&RawKernel::default()));
    let platform = checker.platform(raw.platform.as_deref().unwrap_or(&RawPlatform::default()));
    let devices = checker.devices(&raw.device);
    let carveouts = checker.carveouts(&raw.carveout);
    let services = checker.services(&raw.service);
    let guests = checker.guests(&raw.guest);
    let mut errors = checker.errors;
    if !errors.is_empty() {
        errors.sort_by_key(|error| error.location);
        return Err(errors);
    }
    Ok(Manifest {
        name: raw.name.into_inner(),
        description: raw.description,
        dir,
        kernel,
        platform,
        devices,
        carveouts,
        services,
        guests,
    })
}

/// The distinct names of `items`, in declaration order.
fn unique_names_of<T>(items: &[Spanned<T>], name: impl Fn(&T) -> &Spanned<String>) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for item in items {
        let name = name(item.get_ref()).get_ref();
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    names
}

impl Checker<'_> {
    fn location(&self, span: &Range<usize>) -> Location {
        Location::of_offset(self.text, span.start)
    }

    /// The line `span` starts on, for the model's `line` fields.
    fn line(&self, span: &Range<usize>) -> u32 {
        u32::try_from(self.location(span).line).unwrap_or(u32::MAX)
    }

    fn error(&mut self, span: Range<usize>, field: String, kind: ErrorKind) {
        self.errors.push(ManifestError {
            file: self.file.to_path_buf(),
            location: Some(self.location(&span)),
            field,
            kind,
        });
    }

    /// Checks a component name: non-empty ASCII letters, digits, `-` and `_`.
    fn name(&mut self, name: &Spanned<String>, field: &str) {
        let valid = !name.get_ref().is_empty()
            && name
                .get_ref()
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            let kind = ErrorKind::InvalidName {
                name: name.get_ref().clone(),
            };
            self.error(name.span(), field.to_owned(), kind);
        }
    }

    /// Checks the names of one kind of table for validity and uniqueness.
    fn unique_names<'n>(
        &mut self,
        what: &'static str,
        names: impl Iterator<Item = &'n Spanned<String>>,
    ) {
        let mut first: BTreeMap<&str, Location> = BTreeMap::new();
        for (index, name) in names.enumerate() {
            let field = format!("{what}[{index}].name");
            self.name(name, &field);
            let here = self.location(&name.span());
            if let Some(&first) = first.get(name.get_ref().as_str()) {
                let kind = ErrorKind::DuplicateName {
                    what,
                    name: name.get_ref().clone(),
                    first,
                };
                self.error(name.span(), field, kind);
            } else {
                first.insert(name.get_ref(), here);
            }
        }
    }

    /// An integer in `min..=max`, or an `OutOfRange` error.
    fn in_range(&mut self, value: &Spanned<i64>, field: String, min: i64, max: i64) -> Option<i64> {
        let found = *value.get_ref();
        if (min..=max).contains(&found) {
            return Some(found);
        }
        self.error(
            value.span(),
            field,
            ErrorKind::OutOfRange { found, min, max },
        );
        None
    }

    /// A memory size: parsed, non-zero, a page multiple, within the physical address space.
    fn size(&mut self, size: &Spanned<RawSize>, field: String) -> Option<u64> {
        let Some(bytes) = size.get_ref().bytes() else {
            let found = size.get_ref().written();
            self.error(size.span(), field, ErrorKind::InvalidSize { found });
            return None;
        };
        let kind = if bytes == 0 {
            ErrorKind::ZeroSize
        } else if bytes % PAGE_SIZE != 0 {
            ErrorKind::UnalignedSize { size: bytes }
        } else if bytes > 1 << self.pa_bits {
            ErrorKind::TooLarge {
                value: bytes,
                pa_bits: self.pa_bits,
            }
        } else {
            return Some(bytes);
        };
        self.error(size.span(), field, kind);
        None
    }

    /// A file named relative to the manifest's directory, which must exist.
    fn file(&mut self, path: &Spanned<String>, field: String) -> PathBuf {
        let joined = self.dir.join(path.get_ref());
        if !joined.is_file() {
            let kind = ErrorKind::FileNotFound {
                path: joined.clone(),
            };
            self.error(path.span(), field, kind);
        }
        joined
    }

    /// A word from a closed set, or the set's default when absent.
    fn choice<T: Choice>(&mut self, raw: Option<&Spanned<String>>, field: &str) -> T {
        let Some(raw) = raw else {
            return T::default();
        };
        if let Some(choice) = choice_named(raw.get_ref()) {
            return choice;
        }
        let kind = ErrorKind::UnknownValue {
            found: raw.get_ref().clone(),
            expected: T::CHOICES
                .iter()
                .map(|(name, _)| (*name).to_owned())
                .collect(),
        };
        self.error(raw.span(), field.to_owned(), kind);
        T::default()
    }

    /// A crate path (containing `/` or starting with `.`), which must hold a `Cargo.toml`, or a
    /// workspace package name.
    fn crate_ref(&mut self, raw: &Spanned<String>, field: String) -> CrateRef {
        let text = raw.get_ref();
        if text.contains('/') || text.starts_with('.') {
            let dir = self.dir.join(text);
            let cargo_toml = dir.join("Cargo.toml");
            if !cargo_toml.is_file() {
                let kind = ErrorKind::FileNotFound { path: cargo_toml };
                self.error(raw.span(), field, kind);
            }
            CrateRef::Path(dir)
        } else {
            self.name(raw, &field);
            CrateRef::Name(text.clone())
        }
    }

    fn known_service(&mut self, name: &Spanned<String>, field: String) -> Option<String> {
        if self.services.contains(name.get_ref()) {
            return Some(name.get_ref().clone());
        }
        let kind = ErrorKind::UnknownService {
            name: name.get_ref().clone(),
            known: self.services.clone(),
        };
        self.error(name.span(), field, kind);
        None
    }

    fn known_device(&mut self, name: &Spanned<String>, field: String) -> Option<String> {
        if self.devices.contains_key(name.get_ref()) {
            return Some(name.get_ref().clone());
        }
        let kind = ErrorKind::UnknownDevice {
            name: name.get_ref().clone(),
            known: self.devices.keys().cloned().collect(),
        };
        self.error(name.span(), field, kind);
        None
    }

    fn known_carveout(&mut self, name: &Spanned<String>, field: String) -> Option<String> {
        if self.carveouts.contains_key(name.get_ref()) {
            return Some(name.get_ref().clone());
        }
        let kind = ErrorKind::UnknownCarveout {
            name: name.get_ref().clone(),
            known: self.carveouts.keys().cloned().collect(),
        };
        self.error(name.span(), field, kind);
        None
    }
}

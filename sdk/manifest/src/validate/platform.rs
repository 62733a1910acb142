//! `[kernel]` and `[platform]`: the kernel's options and what the system needs of the machine.

use crate::error::ErrorKind;
use crate::feature::{Feature, FeatureSet};
use crate::model::{DEFAULT_PA_BITS, Kernel, PA_BITS, Platform};
use crate::schema::{RawKernel, RawPlatform};

use super::Checker;

impl Checker<'_> {
    pub(super) fn kernel(&mut self, raw: &RawKernel) -> Kernel {
        Kernel {
            selftest: self.choice(raw.selftest.as_ref(), "kernel.selftest"),
            log: self.choice(raw.log.as_ref(), "kernel.log"),
        }
    }

    pub(super) fn platform(&mut self, raw: &RawPlatform) -> Platform {
        let mut requires = FeatureSet::EMPTY;
        for (index, name) in raw.requires.iter().enumerate() {
            let field = format!("platform.requires[{index}]");
            match Feature::from_name(name.get_ref()) {
                Some(feature) if requires.contains(feature) => {
                    self.error(name.span(), field, ErrorKind::DuplicateFeature { feature });
                }
                Some(feature) => requires = requires.with(feature),
                None => {
                    let found = name.get_ref().clone();
                    self.error(name.span(), field, ErrorKind::UnknownFeature { found });
                }
            }
        }
        self.requires = requires;
        let min_pa_bits = raw.min_pa_bits.as_ref().and_then(|bits| {
            let valid = PA_BITS
                .iter()
                .find(|&&valid| i64::from(valid) == *bits.get_ref());
            if valid.is_none() {
                let kind = ErrorKind::InvalidPaBits {
                    found: *bits.get_ref(),
                };
                self.error(bits.span(), "platform.min_pa_bits".to_owned(), kind);
            }
            valid.copied()
        });
        self.pa_bits = min_pa_bits.unwrap_or(DEFAULT_PA_BITS);
        let min_cpus = raw.min_cpus.as_ref().map_or(1, |cpus| {
            let field = "platform.min_cpus".to_owned();
            self.in_range(cpus, field, 1, i64::from(u8::MAX))
                .map_or(1, |cpus| cpus as u8)
        });
        Platform {
            board: self.choice(raw.board.as_ref(), "platform.board"),
            requires,
            min_pa_bits,
            min_cpus,
        }
    }
}

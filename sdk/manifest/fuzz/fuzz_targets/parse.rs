//! Fuzz target: `capvisor_manifest::parse` on arbitrary text never panics, and every error it
//! reports has a location inside the text and renders as one line.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(errors) = capvisor_manifest::parse(text, Path::new("fuzz/manifest.toml")) {
        let lines = text.split('\n').count();
        for error in errors.errors() {
            let location = error.location.expect("parse errors have a location");
            assert!(location.line >= 1 && location.line <= lines);
            assert!(location.column >= 1);
            assert_eq!(error.to_string().lines().count(), 1);
        }
    }
});

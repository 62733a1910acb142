//! `capvisor new service NAME`: a service crate that builds and runs out of the box, added to
//! the workspace, with an image manifest that boots it.

use std::path::{Path, PathBuf};

/// What was created.
#[derive(Clone, Debug)]
pub struct Created {
    /// The crate's directory.
    pub crate_dir: PathBuf,
    /// The image manifest that runs it.
    pub manifest: PathBuf,
}

/// Checks that `name` can name a crate, a service and an image.
///
/// # Errors
///
/// What is wrong with it.
pub fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    if !first_ok
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(format!(
            "service name {name:?}: use lowercase letters, digits and '-', starting with a letter"
        ));
    }
    if name.len() > 31 {
        return Err(format!(
            "service name {name:?} is longer than 31 characters"
        ));
    }
    Ok(())
}

fn cargo_toml(name: &str) -> String {
    format!(
        r#"[package]
name = "{name}"
description = "A capvisor EL0 service"
version = "0.1.0"
edition = "2024"
publish = false

[dependencies]
capvisor-rt = {{ path = "../../sdk/rt" }}
"#
    )
}

const BUILD_RS: &str = r#"//! Links the service with capvisor's service linker script for the bare-metal target.

fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        let script = std::env::var("DEP_CAPVISOR_RT_LINKER_SCRIPT")
            .expect("capvisor-rt publishes its linker script");
        println!("cargo::rustc-link-arg-bins=-T{script}");
        println!("cargo::rustc-link-arg-bins=--no-pie");
    }
}
"#;

fn main_rs(name: &str) -> String {
    format!(
        r#"//! The `{name}` service.
#![cfg_attr(target_os = "none", no_std, no_main)]

capvisor_rt::service!(run);

/// The service's work. Keep decisions in plain functions like `greeting`, so they are
/// unit-tested on the host (`cargo test -p {name}`).
fn run() -> u64 {{
    capvisor_rt::debug_write(greeting());
    // A test image ends the run; a real service would serve requests here instead.
    capvisor_rt::debug_halt(0)
}}

fn greeting() -> &'static str {{
    "hello from the {name} service\n"
}}

#[cfg(test)]
mod tests {{
    #[test]
    fn greets() {{
        assert!(super::greeting().starts_with("hello"));
    }}
}}
"#
    )
}

fn manifest(name: &str) -> String {
    format!(
        r#"# Runs the `{name}` service (created by `capvisor new service {name}`).
# Reference: docs/manifest.md
name = "{name}"
description = "The {name} service"

[[service]]
name = "{name}"
crate = "{name}"
priority = 100
memory = "1M"
"#
    )
}

/// Adds `member` to the `members` (and `default-members`) lists of the workspace's Cargo.toml.
fn add_to_workspace(root: &Path, member: &str) -> Result<(), String> {
    let path = root.join("Cargo.toml");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let entry = format!("    \"{member}\",\n");
    if text.contains(&entry) {
        return Ok(());
    }
    let mut out = String::new();
    let mut in_list = false;
    for line in text.split_inclusive('\n') {
        if line.starts_with("members = [") || line.starts_with("default-members = [") {
            in_list = true;
        } else if in_list && line.trim_end() == "]" {
            out.push_str(&entry);
            in_list = false;
        }
        out.push_str(line);
    }
    std::fs::write(&path, out).map_err(|e| format!("{}: {e}", path.display()))
}

/// Creates the service `name` in `root/services/name`, adds it to the workspace, and writes
/// `root/images/name.toml`.
///
/// # Errors
///
/// A message when the name is unusable or something already exists.
pub fn create(root: &Path, name: &str) -> Result<Created, String> {
    check_name(name)?;
    let crate_dir = root.join("services").join(name);
    let manifest_path = root.join("images").join(format!("{name}.toml"));
    for path in [&crate_dir, &manifest_path] {
        if path.exists() {
            return Err(format!("{} already exists", path.display()));
        }
    }
    let write = |path: PathBuf, text: String| {
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))
    };
    std::fs::create_dir_all(crate_dir.join("src"))
        .map_err(|e| format!("{}: {e}", crate_dir.display()))?;
    write(crate_dir.join("Cargo.toml"), cargo_toml(name))?;
    write(crate_dir.join("build.rs"), BUILD_RS.into())?;
    write(crate_dir.join("src/main.rs"), main_rs(name))?;
    write(manifest_path.clone(), manifest(name))?;
    add_to_workspace(root, &format!("services/{name}"))?;
    Ok(Created {
        crate_dir,
        manifest: manifest_path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("echo-2").is_ok());
        assert!(check_name("Echo").is_err());
        assert!(check_name("2echo").is_err());
        assert!(check_name("a_b").is_err());
        assert!(check_name("").is_err());
    }

    #[test]
    fn adds_to_both_member_lists() {
        let dir = std::env::temp_dir().join(format!("capvisor-new-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("Cargo.toml"),
            "[workspace]\nmembers = [\n    \"a\",\n]\ndefault-members = [\n    \"a\",\n]\n",
        )
        .unwrap();
        add_to_workspace(&dir, "services/x").unwrap();
        add_to_workspace(&dir, "services/x").unwrap();
        let text = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        assert_eq!(text.matches("\"services/x\"").count(), 2, "{text}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}

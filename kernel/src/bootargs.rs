//! The kernel's command line (`/chosen/bootargs`): space-separated `capvisor.<key>=<value>`
//! words; other words are ignored, so a boot loader's own arguments do no harm.

/// How the kernel reports its end to whoever started it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitMethod {
    /// PSCI SYSTEM_OFF whatever the outcome (the default: safe on any board).
    Psci,
    /// Arm semihosting SYS_EXIT with a status code, for QEMU started with `-semihosting`.
    Semihosting,
}

/// The options capvisor takes from its command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootArgs {
    /// How to exit.
    pub exit: ExitMethod,
    /// `capvisor.trace=1`: print every stage-2 mapping change and cache/TLB maintenance operation
    /// of each VM as it happens (`capvisor run --trace`).
    pub trace: bool,
}

impl Default for BootArgs {
    fn default() -> Self {
        Self {
            exit: ExitMethod::Psci,
            trace: false,
        }
    }
}

impl BootArgs {
    /// Reads the options from `line`; unknown values leave the default in place.
    #[must_use]
    pub fn parse(line: &str) -> Self {
        let mut args = Self::default();
        for word in line.split_ascii_whitespace() {
            if let Some(value) = word.strip_prefix("capvisor.exit=") {
                match value {
                    "semihosting" => args.exit = ExitMethod::Semihosting,
                    "psci" => args.exit = ExitMethod::Psci,
                    _ => {}
                }
            }
            if let Some(value) = word.strip_prefix("capvisor.trace=") {
                args.trace = matches!(value, "1" | "on" | "true");
            }
        }
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exit() {
        assert_eq!(BootArgs::parse("").exit, ExitMethod::Psci);
        assert_eq!(
            BootArgs::parse("console=ttyAMA0 capvisor.exit=semihosting").exit,
            ExitMethod::Semihosting
        );
        assert_eq!(
            BootArgs::parse("capvisor.exit=bogus").exit,
            ExitMethod::Psci
        );
        assert!(!BootArgs::parse("capvisor.exit=psci").trace);
        assert!(BootArgs::parse("capvisor.trace=1").trace);
        assert!(!BootArgs::parse("capvisor.trace=0").trace);
    }
}

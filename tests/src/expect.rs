//! What one boot of a hostile image must show (`tests/tests/hostile.rs`,
//! `tests/tests/hostile_guests.rs`): every miss is collected, then reported at once with the item
//! (finding) it belongs to and the console, so one run lists all of an image's failures.

use capvisor::qemu::{Ending, Outcome};

/// The misses of one boot's console and ending.
#[derive(Debug)]
pub struct Expect<'a> {
    outcome: &'a Outcome,
    misses: Vec<String>,
}

impl<'a> Expect<'a> {
    #[must_use]
    pub fn new(outcome: &'a Outcome) -> Self {
        Self {
            outcome,
            misses: Vec::new(),
        }
    }

    /// The whole console.
    #[must_use]
    pub fn console(&self) -> &'a str {
        &self.outcome.console
    }

    /// The console's lines, without trailing blanks.
    pub fn lines(&self) -> impl Iterator<Item = &'a str> {
        self.outcome.console.lines().map(str::trim_end)
    }

    /// Records a miss of `item` unless `ok`.
    pub fn check(&mut self, item: &str, ok: bool, what: impl Into<String>) {
        if !ok {
            self.misses.push(format!("{item}: {}", what.into()));
        }
    }

    /// A console line equal to `line`.
    pub fn line(&mut self, item: &str, line: &str) {
        let found = self.lines().any(|l| l == line);
        self.check(item, found, format!("no line {line:?}"));
    }

    /// A console line that starts with `start` and ends with `end`.
    pub fn line_like(&mut self, item: &str, start: &str, end: &str) {
        let found = self
            .lines()
            .any(|l| l.starts_with(start) && l.ends_with(end));
        self.check(item, found, format!("no line {start:?} … {end:?}"));
    }

    /// A console line that starts with `start` and contains `middle` after it.
    pub fn line_with(&mut self, item: &str, start: &str, middle: &str) {
        let found = self
            .lines()
            .any(|l| l.starts_with(start) && l[start.len()..].contains(middle));
        self.check(item, found, format!("no line {start:?} … {middle:?} …"));
    }

    /// A console line equal to one of `lines`.
    pub fn one_of(&mut self, item: &str, lines: &[&str]) {
        let found = self.lines().any(|l| lines.contains(&l));
        self.check(item, found, format!("no line among {lines:?}"));
    }

    /// How many console lines equal `line`.
    #[must_use]
    pub fn count(&self, line: &str) -> usize {
        self.lines().filter(|&l| l == line).count()
    }

    /// No console line contains `text`.
    pub fn absent(&mut self, item: &str, text: &str) {
        let found: Vec<&str> = self.lines().filter(|l| l.contains(text)).collect();
        self.check(
            item,
            found.is_empty(),
            format!("unexpected line(s) {found:?}"),
        );
    }

    /// The guest lines `[<vmm>] guest <name>: <text>` for each of `texts`.
    pub fn guest_lines(&mut self, item: &str, vmm: &str, name: &str, texts: &[&str]) {
        for text in texts {
            self.line(item, &format!("[{vmm}] guest {name}: {text}"));
        }
    }

    /// The kernel never faulted, and the bystander found the system working and ended it.
    pub fn system_survives(&mut self) {
        for dump in ["capvisor: UNEXPECTED EXCEPTION", "capvisor: PANIC"] {
            let faulted = self.outcome.console.contains(dump);
            self.check("kernel", !faulted, format!("the kernel stopped: {dump:?}"));
        }
        self.line("bystander", "[bystander] bystander: ok");
        self.line(
            "bystander",
            "capvisor: service 'bystander' halted the system with status 0",
        );
        let ending = self.outcome.ending;
        let ended = ending == Ending::Exited(0);
        self.check("end", ended, format!("ended {ending:?}, not with status 0"));
    }

    /// Fails with every miss, and the console.
    pub fn done(self) {
        assert!(
            self.misses.is_empty(),
            "{} miss(es):\n  {}\nconsole:\n{}",
            self.misses.len(),
            self.misses.join("\n  "),
            self.outcome.console
        );
    }
}

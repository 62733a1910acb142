//! Booting an image in QEMU: the command line, console streaming and capture, time limits, and
//! what the exit status means.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use wait_timeout::ChildExt;

/// The CPU models capvisor supports and tests (each has EL2 in QEMU).
pub const CPU_MODELS: [&str; 5] = [
    "cortex-a57",
    "neoverse-n1",
    "cortex-a710",
    "neoverse-v1",
    "max",
];

/// How to boot.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// The image file.
    pub image: PathBuf,
    /// `-cpu` model.
    pub cpu: String,
    /// Number of CPUs.
    pub smp: u32,
    /// RAM, as QEMU's `-m` takes it.
    pub mem: String,
    /// Wait for a debugger on TCP port 1234 before the first instruction.
    pub gdb: bool,
    /// Give up after this long (`None`: never).
    pub timeout: Option<Duration>,
    /// Print the console to our stdout as it arrives.
    pub echo: bool,
    /// Deterministic instruction counting (`-icount shift=0,...`).
    pub icount: bool,
    /// More QEMU arguments, appended last.
    pub extra: Vec<String>,
    /// The kernel command line (`/chosen/bootargs`).
    pub append: String,
    /// Boot through this U-Boot binary (`booti`, as on a board) instead of QEMU's `-kernel`.
    pub uboot: Option<PathBuf>,
    /// Stop QEMU as soon as the console shows this text (a guest's shell prompt, which then
    /// waits for input forever): the run ends [`Ending::Reached`].
    pub stop_at: Option<String>,
}

/// Where Debian's `u-boot-qemu` puts U-Boot for QEMU's arm64 `virt` board.
pub const DEBIAN_UBOOT: &str = "/usr/lib/u-boot/qemu_arm64/u-boot.bin";
/// Where the U-Boot path places the image (2 MiB aligned, clear of U-Boot's device tree).
pub const UBOOT_LOAD_ADDRESS: u64 = 0x4040_0000;

impl RunConfig {
    /// Defaults: `-cpu max`, one CPU, 1 GiB, semihosting exit, a 60 s limit, echo on.
    #[must_use]
    pub fn new(image: &Path) -> Self {
        Self {
            image: image.to_path_buf(),
            cpu: "max".into(),
            smp: 1,
            mem: "1G".into(),
            gdb: false,
            timeout: Some(Duration::from_secs(60)),
            echo: true,
            icount: false,
            extra: Vec::new(),
            append: "capvisor.exit=semihosting".into(),
            uboot: None,
            stop_at: None,
        }
    }

    /// The QEMU command.
    #[must_use]
    pub fn command(&self) -> Command {
        let mut cmd = Command::new("qemu-system-aarch64");
        cmd.args(["-M", "virt,virtualization=on,gic-version=3"])
            .args(["-cpu", &self.cpu])
            .args(["-smp", &self.smp.to_string()])
            .args(["-m", &self.mem])
            .args(["-display", "none", "-monitor", "none", "-serial", "stdio"])
            .args(["-semihosting-config", "enable=on,target=native"])
            .arg("-no-reboot");
        if let Some(uboot) = &self.uboot {
            // U-Boot is the firmware; the image waits in RAM for `booti`, as a board's would
            // after `load` from storage.
            cmd.arg("-bios").arg(uboot).arg("-device").arg(format!(
                "loader,file={},addr={UBOOT_LOAD_ADDRESS:#x},force-raw=on",
                self.image.display()
            ));
        } else {
            cmd.arg("-kernel")
                .arg(&self.image)
                .args(["-append", &self.append]);
        }
        if self.icount {
            cmd.args([
                "-icount",
                "shift=0,align=off,sleep=off",
                "-seed",
                "1",
                "-rtc",
                "base=2024-01-01T00:00:00,clock=vm",
            ]);
        }
        if self.gdb {
            cmd.args(["-s", "-S"]);
        }
        cmd.args(&self.extra);
        cmd
    }
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// QEMU exited with this status (the kernel's, under semihosting; 0 after SYSTEM_OFF).
    Exited(i32),
    /// QEMU was killed by a signal.
    Killed,
    /// The time limit passed; QEMU was killed.
    TimedOut,
    /// The console showed [`RunConfig::stop_at`]; QEMU was stopped.
    Reached,
}

impl Ending {
    /// The exit code `capvisor run` passes on.
    #[must_use]
    pub fn code(self) -> i32 {
        match self {
            Self::Exited(code) => code,
            Self::Killed => 128,
            Self::TimedOut => 124,
            Self::Reached => 0,
        }
    }

    /// What the status means, in words.
    #[must_use]
    pub fn describe(self) -> String {
        match self {
            Self::Exited(0) => "exit status 0 (success)".into(),
            Self::Exited(1) => "exit status 1 (kernel fault: unexpected exception)".into(),
            Self::Exited(2) => "exit status 2 (kernel panic)".into(),
            Self::Exited(3) => "exit status 3 (image or platform refused)".into(),
            Self::Exited(n) => format!("exit status {n}"),
            Self::Killed => "QEMU was killed by a signal".into(),
            Self::TimedOut => "time limit reached; QEMU was stopped".into(),
            Self::Reached => "the awaited console text appeared; QEMU was stopped".into(),
        }
    }
}

/// The result of a run.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// How it ended.
    pub ending: Ending,
    /// Everything the console printed.
    pub console: String,
}

/// Adds a line of its own after a console line (such as the source location of an address).
pub type Annotator = Box<dyn Fn(&str) -> Option<String> + Send>;

/// Boots `config` and waits for the end, streaming the console (when echo is on) with the lines
/// `annotate` adds.
///
/// # Errors
///
/// A message when QEMU cannot be started (not installed, with how to install it).
pub fn run(config: &RunConfig, annotate: Option<Annotator>) -> Result<Outcome, String> {
    let mut child = config
        .command()
        .stdin(if config.uboot.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!(
                "could not start qemu-system-aarch64 ({e}); install QEMU 10 with `scripts/setup.sh` \
                 (Debian bookworm-backports' qemu-system-arm)"
            )
        })?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let stdin = child.stdin.take();
    let booti = config.uboot.as_ref().map(|_| {
        format!(
            "setenv bootargs {}; booti {UBOOT_LOAD_ADDRESS:#x} - ${{fdtcontroladdr}}\n",
            config.append
        )
    });
    let echo = config.echo;
    let reached = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = config.stop_at.clone().map(|text| (text, reached.clone()));
    let reader =
        std::thread::spawn(move || read_console(stdout, (stdin, booti), echo, annotate, stop));
    let err_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let ending = wait(&mut child, config.timeout, &reached)?;
    let console = reader.join().unwrap_or_default();
    let stderr_text = err_reader.join().unwrap_or_default();
    if !stderr_text.trim().is_empty() {
        eprintln!("qemu: {}", stderr_text.trim_end());
    }
    Ok(Outcome { ending, console })
}

/// Reads the console to its end: echoes it (with annotations after complete lines) and, on the
/// U-Boot path, answers U-Boot's autoboot countdown and prompt with the `booti` command.
fn read_console(
    mut stdout: std::process::ChildStdout,
    (mut stdin, mut booti): (Option<std::process::ChildStdin>, Option<String>),
    echo: bool,
    annotate: Option<Annotator>,
    stop: Option<(String, std::sync::Arc<std::sync::atomic::AtomicBool>)>,
) -> String {
    let mut console = String::new();
    let mut pending = String::new();
    let mut interrupted = false;
    let mut chunk = [0u8; 4096];
    loop {
        let n = match stdout.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let text = String::from_utf8_lossy(&chunk[..n]).into_owned();
        console.push_str(&text);
        if let Some((awaited, reached)) = &stop
            && console.contains(awaited.as_str())
        {
            reached.store(true, std::sync::atomic::Ordering::Release);
        }
        if echo {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(text.as_bytes());
            pending.push_str(&text);
            while let Some(end) = pending.find('\n') {
                let line: String = pending.drain(..=end).collect();
                if let Some(note) = annotate.as_ref().and_then(|a| a(&line)) {
                    let _ = writeln!(out, "{note}");
                }
            }
            let _ = out.flush();
        }
        if let (Some(input), Some(command)) = (stdin.as_mut(), booti.as_ref()) {
            if !interrupted && console.contains("Hit any key to stop autoboot") {
                let _ = input.write_all(b"\n");
                let _ = input.flush();
                interrupted = true;
            } else if interrupted
                && console
                    .rsplit("Hit any key")
                    .next()
                    .is_some_and(|t| t.contains("=> "))
            {
                let _ = input.write_all(command.as_bytes());
                let _ = input.flush();
                booti = None;
            }
        }
    }
    console
}

/// Waits for QEMU to exit, for `timeout`, or for the console reader to see the awaited text
/// (`reached`), whichever comes first.
fn wait(
    child: &mut std::process::Child,
    timeout: Option<Duration>,
    reached: &std::sync::atomic::AtomicBool,
) -> Result<Ending, String> {
    let start = std::time::Instant::now();
    let tick = Duration::from_millis(50);
    loop {
        if let Some(status) = child.wait_timeout(tick).map_err(|e| e.to_string())? {
            return Ok(status.code().map_or(Ending::Killed, Ending::Exited));
        }
        let ending = if reached.load(std::sync::atomic::Ordering::Acquire) {
            Ending::Reached
        } else if timeout.is_some_and(|limit| start.elapsed() >= limit) {
            Ending::TimedOut
        } else {
            continue;
        };
        let _ = child.kill();
        let _ = child.wait();
        return Ok(ending);
    }
}

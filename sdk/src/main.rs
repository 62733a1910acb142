//! The `capvisor` command: build system images from manifests and boot them in QEMU.
#![forbid(unsafe_code)]

use capvisor::qemu::{self, RunConfig};
use capvisor::{bench, doctor, image, inspect, new_service, s2walk_cmd, symbols, workspace_root};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// capvisor: a microkernel-style hypervisor for AArch64, and its SDK.
#[derive(Debug, Parser)]
#[command(name = "capvisor", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Debug, Subcommand)]
enum Commands {
    /// Build an image from a manifest.
    Build {
        /// The manifest (default: images/hello.toml).
        manifest: Option<PathBuf>,
        /// Where to write the image (default: target/images/<name>.img).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Build an image and boot it in QEMU, streaming its console; exits with the system's status.
    Run(RunArgs),
    /// Check that this machine can build and boot images, and say how to fix what is missing.
    Doctor,
    /// Create something new.
    #[command(subcommand)]
    New(NewCommand),
    /// Show what is inside an image file, checking it as the kernel does.
    Inspect {
        /// The image file (e.g. target/images/hello.img).
        image: PathBuf,
    },
    /// Boot the benchmark image under QEMU -icount shift=0 and report instruction counts.
    Bench {
        /// QEMU CPU model.
        #[arg(long, default_value = "max")]
        cpu: String,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Walk AArch64 stage-2 translation tables given as JSON cases (see docs/s2walk.md).
    S2walk(s2walk_cmd::S2walkArgs),
}

#[derive(Debug, Subcommand)]
enum NewCommand {
    /// A service crate (services/NAME) that builds and runs out of the box, added to the
    /// workspace, with an image manifest (images/NAME.toml) that boots it.
    Service {
        /// The service's name: lowercase letters, digits and '-'.
        name: String,
    },
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The manifest to build and boot (default: images/hello.toml).
    manifest: Option<PathBuf>,
    /// QEMU CPU model: cortex-a57, neoverse-n1, cortex-a710, neoverse-v1, max, ...
    #[arg(long, default_value = "max")]
    cpu: String,
    /// Number of CPUs.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=8))]
    smp: u32,
    /// Guest-physical RAM for the machine, as QEMU's -m takes it.
    #[arg(long, default_value = "1G")]
    mem: String,
    /// Wait for a debugger on localhost:1234 before the first instruction.
    #[arg(long)]
    gdb: bool,
    /// Stop QEMU after this many seconds (0: no limit).
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// Deterministic instruction counting (QEMU -icount shift=0).
    #[arg(long)]
    icount: bool,
    /// Print every guest stage-2 mapping change and cache/TLB maintenance operation as the kernel
    /// performs it, and each VM's counters at the end (kernel argument `capvisor.trace=1`).
    #[arg(long)]
    trace: bool,
    /// Stop QEMU (status 0) once the console shows TEXT, e.g. a guest shell's prompt "/ # ".
    #[arg(long, value_name = "TEXT")]
    until: Option<String>,
    /// Boot through U-Boot's `booti`, as on a board (Debian's u-boot-qemu by default).
    #[arg(long)]
    uboot: bool,
    /// The U-Boot binary for --uboot.
    #[arg(long, value_name = "FILE", default_value = capvisor::qemu::DEBIAN_UBOOT)]
    uboot_bin: PathBuf,
    /// Extra QEMU arguments, after `--`.
    #[arg(last = true)]
    qemu_args: Vec<String>,
}

fn default_manifest(root: &std::path::Path, given: Option<PathBuf>) -> PathBuf {
    given.unwrap_or_else(|| root.join("images/hello.toml"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let root = workspace_root();
    match cli.command {
        Commands::Build { manifest, output } => {
            let manifest = default_manifest(&root, manifest);
            match image::build(&root, &manifest, output.as_deref()) {
                Ok(built) => {
                    println!("capvisor: built {}", built.path.display());
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        Commands::Run(args) => run(&root, args),
        Commands::S2walk(args) => s2walk_cmd::run(args),
        Commands::Doctor => {
            if doctor::report(&doctor::checks()) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Commands::New(NewCommand::Service { name }) => match new_service::create(&root, &name) {
            Ok(created) => {
                println!("capvisor: created {}", created.crate_dir.display());
                println!("capvisor: created {}", created.manifest.display());
                println!("capvisor: run it with: capvisor run images/{name}.toml");
                println!("capvisor: test it on the host with: cargo test -p {name}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
        Commands::Inspect { image } => match std::fs::read(&image) {
            Ok(bytes) => match inspect::report(&bytes) {
                Ok(text) => {
                    print!("{}: {text}", image.display());
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&format!(
                    "{}: not a valid capvisor image: {e}",
                    image.display()
                )),
            },
            Err(e) => fail(&format!("{}: {e}", image.display())),
        },
        Commands::Bench { cpu, json } => match bench::run(&root, &cpu) {
            Ok(results) if json => {
                println!("{}", bench::to_json(&cpu, &results));
                ExitCode::SUCCESS
            }
            Ok(results) => {
                print!("{}", bench::to_table(&cpu, &results));
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("capvisor: error: {message}");
    ExitCode::FAILURE
}

fn run(root: &std::path::Path, args: RunArgs) -> ExitCode {
    let manifest = default_manifest(root, args.manifest);
    eprintln!("capvisor: building {}", manifest.display());
    let built = match image::build(root, &manifest, None) {
        Ok(built) => built,
        Err(e) => return fail(&e),
    };
    let mut config = RunConfig::new(&built.path);
    config.cpu = args.cpu;
    config.smp = args.smp;
    config.mem = args.mem;
    config.gdb = args.gdb;
    config.icount = args.icount;
    if args.trace {
        config.append.push_str(" capvisor.trace=1");
    }
    config.uboot = args.uboot.then_some(args.uboot_bin);
    config.stop_at = args.until;
    config.extra = args.qemu_args;
    config.timeout = (args.timeout > 0 && !args.gdb).then(|| Duration::from_secs(args.timeout));
    eprintln!(
        "capvisor: booting {} on -cpu {} -smp {}",
        built.path.display(),
        config.cpu,
        config.smp
    );
    if args.gdb {
        eprintln!(
            "capvisor: waiting for a debugger: gdb-multiarch -ex 'target remote :1234' \
             -ex 'add-symbol-file {} -o <load address from the banner>'",
            built.kernel.elf.display()
        );
    }
    match qemu::run(&config, symbols::kernel_annotator(&built.kernel.elf)) {
        Ok(outcome) => {
            // A prompt the run stopped at has no newline of its own.
            let gap = if outcome.ending == qemu::Ending::Reached {
                "\n"
            } else {
                ""
            };
            eprintln!("{gap}capvisor: {}", outcome.ending.describe());
            ExitCode::from(outcome.ending.code().clamp(0, 255) as u8)
        }
        Err(e) => fail(&e),
    }
}

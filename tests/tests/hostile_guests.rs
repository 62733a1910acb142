//! The hostile-guest suite (`docs/hostile-guests.md`, issue 14 "Tests that boot the real
//! thing"): test guests (`tests/guests/hostile-*`) do at EL1, EL0 and AArch32 EL0 what a
//! hostile guest can, and each test asserts what the Arm ARM and the guest contract say they
//! must get, that a second guest and the EL0 services see nothing of it and keep working, that
//! the kernel never faults, and that the bystander ends the system with status 0. Every image
//! boots on `cortex-a57`, `neoverse-n1`, `cortex-a710` and `max`. Each test collects every miss
//! before it fails, so one run lists all of an image's failures.

use capvisor_tests::expect::Expect;
use capvisor_tests::{boot, build, expected_platform_line};

/// Each test body on the four models.
macro_rules! on_four_cpus {
    ($body:ident: $a57:ident, $n1:ident, $a710:ident, $max:ident) => {
        #[test]
        fn $a57() {
            $body("cortex-a57");
        }

        #[test]
        fn $n1() {
            $body("neoverse-n1");
        }

        #[test]
        fn $a710() {
            $body("cortex-a710");
        }

        #[test]
        fn $max() {
            $body("max");
        }
    };
}

/// The MIDR the kernel's platform line gives for `cpu` (QEMU's CPU definition).
fn midr(cpu: &str) -> &'static str {
    let line = expected_platform_line(cpu);
    let start = line.find("midr=").expect("the platform line has midr=") + 5;
    let end = line[start..].find(' ').map_or(line.len(), |n| start + n);
    &line[start..end]
}

/// ID_AA64DFR0_EL1.DebugVer of each model under QEMU 10.0.2 (measured at EL2,
/// `/work/notes/issue14-research.md` section 9): Armv8.0, v8.2, v8.4, v8.8 debug.
fn debug_version(cpu: &str) -> u32 {
    match cpu {
        "cortex-a57" => 6,
        "neoverse-n1" => 8,
        "cortex-a710" => 9,
        "max" => 10,
        other => panic!("no expectation for CPU model {other}"),
    }
}

/// Item A, `tests/images/hostile-guest-state.toml`: EL1 state does not reach services or other
/// guests.
fn el1_state(cpu: &str) {
    let image = build("tests/images/hostile-guest-state.toml");
    let outcome = boot(&image.path, cpu, 1);
    let mut expect = Expect::new(&outcome);
    let item = "A (EL1 state)";
    for (exit, last) in [
        ("wfi", "waiting in WFI forever"),
        ("cpu-off", "calling CPU_OFF"),
        ("system-off", "calling SYSTEM_OFF"),
    ] {
        let vmm = format!("vmm-attack-{exit}");
        let role = format!("attack-{exit}");
        expect.guest_lines(
            item,
            &vmm,
            "state",
            &[
                &format!("{role}: CNTVOFF_EL2 write: UNDEF"),
                &format!("{role}: {last}"),
            ],
        );
        expect.line_with(
            item,
            &format!("[{vmm}] guest state: {role}: wrote SCTLR_EL1 "),
            "(E0E=1 A=1 UCI=UCT=DZE=nTWI=nTWE=0)",
        );
        expect.absent(item, &format!("{role}: WFI returned"));
        let witness = format!("[witness-{exit}] witness: ");
        for line in [
            "unaligned 8-byte load at offset 1 reads 0x807060504030201: ok",
            "first byte of the stored 0x1122334455667788 is 0x88: ok",
            "ok",
        ] {
            expect.line(item, &format!("{witness}{line}"));
        }
        for start in [
            "counter read at EL0 and advancing (",
            "TPIDR_EL0 ",
            "CTR_EL0 read at EL0: ",
        ] {
            expect.line_with(item, &format!("{witness}{start}"), ": ok");
        }
        expect.line_with(item, &format!("{witness}DC ZVA"), "block at EL0: ok");
        let fp = format!("fp-{exit}");
        expect.line(item, &format!("[{fp}] fp: executing FMOV X0, D0"));
        expect.line_with(
            item,
            &format!("capvisor: service '{fp}' faulted and was stopped: "),
            "EC=0x07 ",
        );
        expect.absent(item, &format!("[{fp}] fp: read Q0"));
    }
    expect.line(
        item,
        "[vmm-attack-system-off] vmm: guest attack-system-off powered off",
    );
    let wrong: Vec<String> = expect
        .lines()
        .filter(|l| l.starts_with("[vmm-victim] guest state: victim: ") && l.ends_with(": WRONG"))
        .map(str::to_owned)
        .collect();
    for line in wrong {
        expect.check(item, false, format!("the victim saw {line:?}"));
    }
    expect.line(item, "[vmm-victim] guest state: PASS");
    expect.system_survives();
    expect.done();
}

on_four_cpus!(el1_state:
    el1_state_does_not_reach_services_or_other_guests_on_cortex_a57,
    el1_state_does_not_reach_services_or_other_guests_on_neoverse_n1,
    el1_state_does_not_reach_services_or_other_guests_on_cortex_a710,
    el1_state_does_not_reach_services_or_other_guests_on_max);

/// Registers of hidden features: each must be UNDEFINED at EL1, read and write.
const UNDEFINED_AT_EL1: [&str; 28] = [
    "LORSA_EL1",
    "LOREA_EL1",
    "LORN_EL1",
    "LORC_EL1",
    "LORID_EL1",
    "ERRIDR_EL1",
    "ERRSELR_EL1",
    "ERXFR_EL1",
    "ERXCTLR_EL1",
    "ERXSTATUS_EL1",
    "ERXADDR_EL1",
    "ERXMISC0_EL1",
    "ERXMISC1_EL1",
    "PMCR_EL0",
    "PMCNTENSET_EL0",
    "PMOVSCLR_EL0",
    "PMSELR_EL0",
    "PMCEID0_EL0",
    "PMCCNTR_EL0",
    "PMXEVTYPER_EL0",
    "PMUSERENR_EL0",
    "PMINTENSET_EL1",
    "AMCR_EL0",
    "PMSCR_EL1",
    "PMBLIMITR_EL1",
    "TRFCR_EL1",
    "APIAKeyLo_EL1",
    "SCXTNUM_EL1",
];

/// The ID register fields that must read the given value on every model, each because its
/// feature is hidden (its registers UNDEFINED above) or not switched.
const HIDDEN_FIELDS: [&str; 20] = [
    "ID_AA64PFR0_EL1.RAS 0",
    "ID_AA64PFR0_EL1.SVE 0",
    "ID_AA64PFR0_EL1.MPAM 0",
    "ID_AA64PFR0_EL1.AMU 0",
    "ID_AA64PFR1_EL1.MTE 0",
    "ID_AA64PFR1_EL1.RAS_frac 0",
    "ID_AA64PFR1_EL1.SME 0",
    "ID_AA64DFR0_EL1.TraceVer 0",
    "ID_AA64DFR0_EL1.PMUVer 0",
    "ID_AA64DFR0_EL1.PMSVer 0",
    "ID_AA64DFR0_EL1.TraceFilt 0",
    "ID_AA64DFR0_EL1.TraceBuffer 0",
    "ID_AA64DFR0_EL1.BRPs 5",
    "ID_AA64DFR0_EL1.WRPs 3",
    "ID_AA64MMFR1_EL1.LO 0",
    "ID_AA64ISAR1_EL1.APA 0",
    "ID_AA64ISAR1_EL1.API 0",
    "ID_AA64ISAR1_EL1.GPA 0",
    "ID_AA64ISAR1_EL1.GPI 0",
    "ID_AA64ISAR2_EL1.APA3 0",
];

/// The value of a `REGISTER.FIELD n` guest line, if printed.
fn field(expect: &Expect<'_>, prefix: &str, name: &str) -> Option<u32> {
    let start = format!("{prefix}{name} ");
    expect
        .lines()
        .find_map(|l| l.strip_prefix(start.as_str()))
        .and_then(|value| value.parse().ok())
}

/// Items B and C, `tests/images/hostile-guest-sysregs.toml`.
fn sysregs(cpu: &str) {
    let image = build("tests/images/hostile-guest-sysregs.toml");
    let outcome = boot(&image.path, cpu, 1);
    let mut expect = Expect::new(&outcome);
    sysregs_el1(&mut expect, cpu);
    sysregs_el0(&mut expect);
    expect.line("second guest", "[vmm-mmu] guest mmu: PASS");
    expect.system_survives();
    expect.done();
}

/// Item B: from EL1.
fn sysregs_el1(expect: &mut Expect<'_>, cpu: &str) {
    let item = "B (EL1 sweep)";
    let prefix = "[vmm-el1] guest sysregs: ";
    for name in UNDEFINED_AT_EL1 {
        for access in ["read", "write"] {
            expect.line(item, &format!("{prefix}{name} {access}: UNDEF at +0x200"));
        }
    }
    let midr = midr(cpu);
    let platform = format!("capvisor: platform midr={midr} ");
    expect.line_with(item, &platform, "");
    let debug = format!("ID_AA64DFR0_EL1.DebugVer {}", debug_version(cpu));
    let mut lines = vec![
        "ACTLR_EL1: read 0x0; wrote 0x5a; read 0x0".to_owned(),
        format!("MIDR_EL1 {midr}"),
        "CNTP_CVAL_EL0 reads back: true; ISTATUS before CVAL: 0, after: 1; TVAL counts down: \
         true; TVAL write sets CVAL ahead: true"
            .to_owned(),
        debug,
        "ID_AA64ISAR2_EL1.GPA3 0".to_owned(),
        "reserved ID registers read as zero: 14 of 14".to_owned(),
        "HVC fuzz: 2000 calls with unknown function IDs and random x1-x7: 2000 answered \
         NOT_SUPPORTED"
            .to_owned(),
        "SMC fuzz: 2000 calls with unknown function IDs and random x1-x7: 2000 answered \
         NOT_SUPPORTED"
            .to_owned(),
        "HVC #1, HVC #0xffff, SMC #0x1234 with function 0xc300dead: 0xffffffff 0xffffffff \
         0xffffffff"
            .to_owned(),
        // EC 0x3C, IL, ISS = the immediate; the BRK's own address.
        "BRK #0x1234: ESR_EL1 0xf2001234 at +0x200, ELR at the instruction".to_owned(),
        // EC 0x15, IL, ISS = the immediate; the next instruction.
        "SVC #0x4321 at EL1: ESR_EL1 0x56004321 at +0x200, ELR pc+4".to_owned(),
        "WFE: completed".to_owned(),
        "TLBI VMALLE1, VMALLE1IS, VAE1IS, ASIDE1IS, VAALE1IS at EL1: 0 exception(s)".to_owned(),
        "PASS".to_owned(),
    ];
    lines.extend(HIDDEN_FIELDS.iter().map(|&f| f.to_owned()));
    for line in lines {
        expect.line(item, &format!("{prefix}{line}"));
    }
    expect.line_with(
        item,
        &format!("{prefix}DC CVAC, CIVAC, IVAC, CVAU, ZVA and IC IVAU, IALLU, IALLUIS at EL1: "),
        "0 exception(s); DC ZVA zeroed 64 bytes: true",
    );
    // SCXTNUM_EL1 is present with FEAT_CSV2_2 or FEAT_CSV2_1p2: UNDEFINED only if the ID fields
    // say neither (ID_AA64PFR0_EL1.CSV2 < 2, ID_AA64PFR1_EL1.CSV2_frac < 2).
    let csv2 = field(expect, prefix, "ID_AA64PFR0_EL1.CSV2");
    let frac = field(expect, prefix, "ID_AA64PFR1_EL1.CSV2_frac");
    expect.check(
        item,
        csv2.is_some_and(|v| v < 2) && frac.is_some_and(|v| v < 2),
        format!(
            "SCXTNUM_EL1 must be UNDEF, so CSV2 < 2 and CSV2_frac < 2: read {csv2:?}, {frac:?}"
        ),
    );
}

/// Item C: from AArch64 EL0 and AArch32 EL0.
fn sysregs_el0(expect: &mut Expect<'_>) {
    let item = "C (EL0 sweep)";
    let prefix = "[vmm-el0] guest sysregs: ";
    for line in [
        "EL0 CNTVCT_EL0 with CNTKCTL_EL1.EL0VCTEN=1: read, between the EL1 reads around it: true",
        // EC 0x18 to EL1 (from EL0: +0x400), ISS MRS x0, CNTVCT_EL0 (3, 3, C14, C0, 2), read.
        "EL0 CNTVCT_EL0 with CNTKCTL_EL1=0: ESR_EL1 0x6234f801 at +0x400, ELR at the instruction",
        // ISS MRS x0, CNTP_CTL_EL0 (3, 3, C14, C2, 1), read.
        "EL0 CNTP_CTL_EL0 with CNTKCTL_EL1.EL0PTEN=0: ESR_EL1 0x6232f805 at +0x400, ELR at the \
         instruction",
        "EL0 CNTP_CTL_EL0 with CNTKCTL_EL1.EL0PTEN=1: read, the value EL1 reads: true",
        "EL0 PMCR_EL0: UNDEF at +0x400",
        "EL0 SCTLR_EL1: UNDEF at +0x400",
        "EL0 HVC #0: UNDEF at +0x400",
        "EL0 SMC #0: UNDEF at +0x400",
        // AArch32 EL0 is implemented on all four QEMU models (research section 9).
        "ID_AA64PFR0_EL1.EL0 2",
        // The SVC #1 two bytes after the WFI (16-bit, so IL = 0; EC 0x11), ELR after it.
        "AArch32 EL0 T32 WFI, then SVC #1 at +2: ESR_EL1 0x44000001 at +0x600, ELR pc+4",
        "AArch32 EL0 MRC p15 PMCR: UNDEF at +0x600",
        "AArch32 EL0 MRC p14 DBGDIDR: UNDEF at +0x600",
        "PASS",
    ] {
        expect.line(item, &format!("{prefix}{line}"));
    }
    expect.absent(item, "vmm: guest el0 vcpu 0: unhandled exit");
}

on_four_cpus!(sysregs:
    system_registers_and_exceptions_from_el1_el0_and_aarch32_on_cortex_a57,
    system_registers_and_exceptions_from_el1_el0_and_aarch32_on_neoverse_n1,
    system_registers_and_exceptions_from_el1_el0_and_aarch32_on_cortex_a710,
    system_registers_and_exceptions_from_el1_el0_and_aarch32_on_max);

/// Item D, `tests/images/hostile-guest-debug.toml`.
fn debug(cpu: &str) {
    let image = build("tests/images/hostile-guest-debug.toml");
    let outcome = boot(&image.path, cpu, 1);
    let mut expect = Expect::new(&outcome);
    let item = "D (debug)";
    expect.guest_lines(
        item,
        "vmm-debugger",
        "debug",
        &[
            // OSLSR_EL1: OSLM = 0b10 (bit 3), OSLK (bit 1).
            "OSLAR_EL1 1: OSLSR_EL1 0xa; OSLAR_EL1 0: OSLSR_EL1 0x8",
            "DBGBVR0_EL1, DBGBCR0_EL1 read back as written: true",
            // EC 0x31 (breakpoint, same EL), IL, IFSC 0x22 (debug exception).
            "breakpoint on an EL1 function: ESR_EL1 0xc6000022 at +0x200, ELR at the instruction",
            // EC 0x35 (watchpoint, same EL), IL, WnR, DFSC 0x22.
            "watchpoint on a stored word at EL1: ESR_EL1 0xd6000062 at +0x200, ELR at the \
             instruction, FAR the watched word",
            // EC 0x32 (software step, lower EL), IL, ISV, EX = 0, IFSC 0x22; after one
            // instruction.
            "single step of EL0 code: ESR_EL1 0xcb000022 at +0x400, ELR code+4",
            "OS lock, breakpoint, watchpoint and step as the Arm ARM describes: true",
            "waiting in WFI forever",
        ],
    );
    expect.line_with(item, "[vmm-debugger] guest debug: armed: ", "MDSCR_EL1 ");
    expect.absent(item, "debug: WFI returned");
    expect.guest_lines(
        item,
        "vmm-victim",
        "debug",
        &[
            "victim: EL0 code on the debugger's addresses ran to its SVC: true (ESR_EL1 \
             0x56000000, ELR code+20)",
            "PASS",
        ],
    );
    expect.line_with(
        item,
        "[vmm-victim] guest debug: victim: 0 of its breakpoints 0-3 and watchpoints 0-1 \
         enabled; DBGBVR0_EL1 ",
        "(the debugger's: false); MDSCR_EL1.SS/KDE/MDE 0x0",
    );
    expect.absent(item, "capvisor: service 'bystander' faulted");
    expect.system_survives();
    expect.done();
}

on_four_cpus!(debug:
    debug_works_inside_a_guest_and_nowhere_else_on_cortex_a57,
    debug_works_inside_a_guest_and_nowhere_else_on_neoverse_n1,
    debug_works_inside_a_guest_and_nowhere_else_on_cortex_a710,
    debug_works_inside_a_guest_and_nowhere_else_on_max);

/// Item E, `tests/images/hostile-guest-timer.toml`.
fn timers(cpu: &str) {
    let image = build("tests/images/hostile-guest-timer.toml");
    let outcome = boot(&image.path, cpu, 1);
    let mut expect = Expect::new(&outcome);
    let item = "E (physical timer)";
    expect.guest_lines(
        item,
        "vmm-first",
        "timer",
        &[
            "first: virtual timer: INTID 27 taken: true",
            "first: CVAL 300 ms ahead, after 200 ms asleep: reads back true, early interrupts 0",
            "first: INTID 30 at its own CVAL: taken 1, on time: true",
            "first: INTID 30 from CNTP_TVAL_EL0 = 1 ms: taken 1, with ISTATUS set and CVAL \
             reached: true",
            "first: IMASK with CVAL passed: ISTATUS 1, interrupts in 5 ms: 0",
            "first: other interrupts: 0",
            "PASS",
        ],
    );
    expect.guest_lines(
        item,
        "vmm-second",
        "timer",
        &[
            "second: virtual timer: INTID 27 taken: true",
            "second: INTID 30 from CNTP_TVAL_EL0 = 2 ms: taken 1, with ISTATUS set and CVAL \
             reached: true",
            "second: CVAL 5 ms ahead, after 0 ms asleep: reads back true, early interrupts 0",
            "second: INTID 30 at its own CVAL: taken 1, on time: true",
            "second: other interrupts: 0",
            "PASS",
        ],
    );
    expect.line(item, "[gate] gate: opened after 1000 ms");
    expect.system_survives();
    expect.done();
}

on_four_cpus!(timers:
    the_physical_timer_works_inside_a_guest_and_is_its_own_on_cortex_a57,
    the_physical_timer_works_inside_a_guest_and_is_its_own_on_neoverse_n1,
    the_physical_timer_works_inside_a_guest_and_is_its_own_on_cortex_a710,
    the_physical_timer_works_inside_a_guest_and_is_its_own_on_max);

/// Item F, `tests/images/hostile-guest-irq.toml`.
fn interrupts(cpu: &str) {
    let image = build("tests/images/hostile-guest-irq.toml");
    let outcome = boot(&image.path, cpu, 1);
    let mut expect = Expect::new(&outcome);
    let item = "F (interrupts)";
    expect.guest_lines(
        item,
        "vmm-holder",
        "interrupts",
        &[
            "SGI 3 sent to itself: GICR_ISPENDR0 bit 3 1; after GICR_ICPENDR0: 0, acknowledge \
             finds 1023",
            "SGI 4 acknowledged as 4: GICR_ISACTIVER0 bit 4 1 while active, 0 after its EOI",
            "virtual timer fired (ISTATUS 1) while masked at PSTATE: GICR_ISPENDR0 bit 27 1; \
             masked by IMASK, after GICR_ICPENDR0: 0, acknowledge finds 1023",
            "SPI 40 by GICD_ISPENDR1: pending 1, acknowledged as 40, GICD_ISACTIVER1 1 while \
             active, 0 after its EOI",
            "SPI 40 pending again 1; after GICD_ICPENDR1: 0, acknowledge finds 1023",
            "pending and active state as the GIC specification says: true",
            "16 SGIs sent to itself: GICR_ISPENDR0 0xffff",
            "acknowledged and ended, never deactivated: 16 SGIs (0xffff); GICR_ISACTIVER0 0xffff",
            "virtual timer acknowledged as 27 and held active: GICR_ISACTIVER0 bit 27 1",
            "waiting in WFI forever, holding them",
        ],
    );
    expect.absent(item, "interrupts: WFI returned");
    expect.guest_lines(
        item,
        "vmm-irq",
        "irq",
        &[
            "5 virtual timer interrupts (INTID 27), none before its deadline: true",
            "SGI 5 sent to itself through ICC_SGI1R_EL1 and taken",
            "PASS",
        ],
    );
    expect.line(item, "[gate] gate: opened after 1000 ms");
    expect.system_survives();
    expect.done();
}

on_four_cpus!(interrupts:
    interrupt_state_is_visible_and_held_interrupts_stop_no_one_on_cortex_a57,
    interrupt_state_is_visible_and_held_interrupts_stop_no_one_on_neoverse_n1,
    interrupt_state_is_visible_and_held_interrupts_stop_no_one_on_cortex_a710,
    interrupt_state_is_visible_and_held_interrupts_stop_no_one_on_max);

/// Item G, `tests/images/hostile-guest-wfi.toml`.
fn waits_and_mmio(cpu: &str) {
    let image = build("tests/images/hostile-guest-wfi.toml");
    let outcome = boot(&image.path, cpu, 1);
    let mut expect = Expect::new(&outcome);
    let item = "G (WFI loops)";
    expect.line(
        item,
        "[vmm-sleeper] guest wfi: sleeper: nothing armed: waiting in WFI forever",
    );
    expect.line(
        item,
        "[vmm-sleeper-masked] guest wfi: sleeper-masked: virtual timer armed 1 ms ahead, \
         ICC_PMR_EL1 0: waiting in WFI forever",
    );
    expect.absent(item, "WFI returned");
    expect.line(item, "[vmm-mmu] guest mmu: PASS");
    let item = "G (MMIO)";
    let prefix = "[vmm-mmio] guest wfi: mmio: ";
    let at = "at +0x200, ELR at the instruction, FAR the address";
    for (what, syndrome) in [
        // The VMM's synchronous external abort, as for an unmapped address.
        (
            "LDP from the GIC distributor",
            "EC 0x25 DFSC 0x10 IL 1 ISV 0 WnR 0",
        ),
        (
            "STP to the GIC distributor",
            "EC 0x25 DFSC 0x10 IL 1 ISV 0 WnR 1",
        ),
        // Alignment faults (Device memory at stage 1).
        (
            "unaligned LDR from the GIC distributor, MMU off",
            "EC 0x25 DFSC 0x21 IL 1",
        ),
        (
            "unaligned LDR from the GIC distributor, MMU on",
            "EC 0x25 DFSC 0x21 IL 1",
        ),
    ] {
        expect.line_with(item, &format!("{prefix}{what}: {syndrome} "), at);
    }
    expect.line(item, "[vmm-mmio] guest wfi: PASS");
    expect.system_survives();
    expect.done();
}

on_four_cpus!(waits_and_mmio:
    wfi_loops_stop_no_one_and_mmio_gets_the_arm_answer_on_cortex_a57,
    wfi_loops_stop_no_one_and_mmio_gets_the_arm_answer_on_neoverse_n1,
    wfi_loops_stop_no_one_and_mmio_gets_the_arm_answer_on_cortex_a710,
    wfi_loops_stop_no_one_and_mmio_gets_the_arm_answer_on_max);

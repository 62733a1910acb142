//! Item B, identification: the feature fields a guest reads (trapped by HCR_EL2.TID3 and
//! answered by the kernel) must describe only what works in the guest, and the reserved
//! encodings of the ID space read as zero (Arm ARM DDI 0487, D23.3.1 "Reserved encodings in the
//! ID register space": op0 = 3, op1 = 0, CRn = 0, CRm = 1..7 are RAZ at EL1).

use capvisor_guest_rt::{println, probe};
use hostile_guest_common::encode::nibble;
use hostile_guest_common::read_sysreg;

/// Prints `REGISTER.FIELD value` for each named 4-bit field.
fn fields(register: &str, value: u64, named: &[(&str, u32)]) {
    println!("{register} {value:#x}");
    for (field, shift) in named {
        println!("{register}.{field} {}", nibble(value, *shift));
    }
}

pub fn run() {
    let pfr0 = read_sysreg!("id_aa64pfr0_el1");
    fields(
        "ID_AA64PFR0_EL1",
        pfr0,
        &[
            ("EL0", 0),
            ("EL1", 4),
            ("RAS", 28),
            ("SVE", 32),
            ("MPAM", 40),
            ("AMU", 44),
            ("CSV2", 56),
        ],
    );
    let pfr1 = read_sysreg!("id_aa64pfr1_el1");
    fields(
        "ID_AA64PFR1_EL1",
        pfr1,
        &[("MTE", 8), ("RAS_frac", 12), ("SME", 24), ("CSV2_frac", 32)],
    );
    let dfr0 = read_sysreg!("id_aa64dfr0_el1");
    fields(
        "ID_AA64DFR0_EL1",
        dfr0,
        &[
            ("DebugVer", 0),
            ("TraceVer", 4),
            ("PMUVer", 8),
            ("BRPs", 12),
            ("WRPs", 20),
            ("PMSVer", 32),
            ("TraceFilt", 40),
            ("TraceBuffer", 44),
        ],
    );
    let mmfr1 = read_sysreg!("id_aa64mmfr1_el1");
    fields("ID_AA64MMFR1_EL1", mmfr1, &[("LO", 16)]);
    let isar1 = read_sysreg!("id_aa64isar1_el1");
    fields(
        "ID_AA64ISAR1_EL1",
        isar1,
        &[("APA", 4), ("API", 8), ("GPA", 24), ("GPI", 28)],
    );
    let isar2 = read_sysreg!("S3_0_C0_C6_2");
    fields("ID_AA64ISAR2_EL1", isar2, &[("GPA3", 8), ("APA3", 12)]);
    reserved();
}

/// Reads a reserved ID encoding: `Ok(value)` or `Err(ESR)` if it trapped.
macro_rules! reserved {
    ($encoding:literal) => {{
        let mut value = 0u64;
        match probe!(concat!("mrs {v}, ", $encoding), v = inout(reg) value) {
            None => ($encoding, Ok(value)),
            Some(trap) => ($encoding, Err(trap.esr)),
        }
    }};
}

/// The encodings of op0 = 3, op1 = 0, CRn = 0, CRm = 1..7 that no feature of DDI 0487 L.a
/// allocates.
fn reserved() {
    let all = [
        reserved!("S3_0_C0_C3_3"),
        reserved!("S3_0_C0_C3_7"),
        reserved!("S3_0_C0_C4_3"),
        reserved!("S3_0_C0_C4_6"),
        reserved!("S3_0_C0_C5_3"),
        reserved!("S3_0_C0_C5_6"),
        reserved!("S3_0_C0_C5_7"),
        reserved!("S3_0_C0_C6_4"),
        reserved!("S3_0_C0_C6_5"),
        reserved!("S3_0_C0_C6_6"),
        reserved!("S3_0_C0_C6_7"),
        reserved!("S3_0_C0_C7_5"),
        reserved!("S3_0_C0_C7_6"),
        reserved!("S3_0_C0_C7_7"),
    ];
    let mut zero = 0;
    for (encoding, read) in all {
        match read {
            Ok(0) => zero += 1,
            Ok(value) => println!("reserved ID register {encoding}: {value:#x}"),
            Err(esr) => println!("reserved ID register {encoding}: exception, ESR_EL1 {esr:#x}"),
        }
    }
    println!(
        "reserved ID registers read as zero: {zero} of {}",
        all.len()
    );
}

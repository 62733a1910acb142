//! Checks the numeric tables of `docs/ipc.md` against the code, so the reference cannot drift.
#![forbid(unsafe_code)]

use capvisor_ipc::abi::{GlueSyscall, Invocation, KernelError, Syscall};
use capvisor_ipc::protocol::{Protocol, WireError};
use capvisor_ipc::protocols::{devbroker, memmgr, s2walk, vmm};

const DOC: &str = include_str!("../../docs/ipc.md");

/// The `| number | name | …` rows of the first table after the heading that starts with `heading`.
fn rows(heading: &str) -> Vec<(u64, String)> {
    let start = DOC
        .lines()
        .position(|line| line.starts_with(heading))
        .expect("heading in docs/ipc.md");
    DOC.lines()
        .skip(start + 1)
        .skip_while(|line| !line.starts_with('|'))
        .take_while(|line| line.starts_with('|'))
        .filter_map(|line| {
            let mut cells = line.split('|').map(str::trim).skip(1);
            let number = cells.next()?.parse().ok()?;
            Some((number, cells.next()?.to_owned()))
        })
        .collect()
}

fn check(heading: &str, all: &[(u64, &str)]) {
    let documented = rows(heading);
    let code: Vec<(u64, String)> = all.iter().map(|&(n, name)| (n, name.to_owned())).collect();
    assert_eq!(
        documented, code,
        "table under {heading:?} differs from the code"
    );
}

#[test]
fn abi_tables_match_the_code() {
    // One table in the docs for both: the object model's syscalls, then the glue's.
    let syscalls: Vec<_> = Syscall::ALL
        .iter()
        .map(|s| (s.code(), s.name()))
        .chain(GlueSyscall::ALL.iter().map(|s| (s.code(), s.name())))
        .collect();
    check("### Syscalls", &syscalls);
    let invocations: Vec<_> = Invocation::ALL
        .iter()
        .map(|i| (i.code(), i.name()))
        .collect();
    check("### Capability invocations", &invocations);
    let errors: Vec<_> = KernelError::ALL
        .iter()
        .map(|e| (u64::from(e.code()), e.name()))
        .collect();
    check("### Kernel errors", &errors);
}

#[test]
fn protocol_tables_match_the_code() {
    let wire: Vec<_> = WireError::ALL
        .iter()
        .map(|e| (u64::from(e.code()), e.name()))
        .collect();
    check("| code | `WireError`", &wire);
    let ids = rows("| protocol | id | version |");
    assert!(
        ids.is_empty(),
        "the protocol table starts with the name, parsed below"
    );
    let start = DOC
        .lines()
        .position(|l| l.starts_with("| protocol | id | version |"))
        .unwrap();
    let documented: Vec<String> = DOC
        .lines()
        .skip(start + 2)
        .take_while(|l| l.starts_with('|'))
        .map(str::to_owned)
        .collect();
    let expected: Vec<String> = [
        ("memmgr", memmgr::MemMgr::ID, memmgr::MemMgr::VERSION),
        ("s2walk", s2walk::S2Walk::ID, s2walk::S2Walk::VERSION),
        (
            "devbroker",
            devbroker::DevBroker::ID,
            devbroker::DevBroker::VERSION,
        ),
        ("vmm", vmm::Vmm::ID, vmm::Vmm::VERSION),
    ]
    .iter()
    .map(|(name, id, v)| format!("| {name} | {} | {}.{} |", id.raw(), v.major, v.minor))
    .collect();
    assert_eq!(documented, expected);
}

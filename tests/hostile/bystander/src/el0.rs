//! The bystander's checks, at EL0.

use capvisor_ipc::abi::{KernelError, MessageInfo};
use capvisor_rt::{CPtr, println, sys};
use core::sync::atomic::{AtomicU64, Ordering};
use hostile_common::abi::{self, CNODE_BITS, PAGE, PAGE_BITS, SCRATCH_IPA, kind};
use hostile_common::invoke::{self, Configure};
use hostile_common::scan::Inventory;

/// Written to the first scratch frame and read back.
const PATTERN: u64 = 0xb757_a4de_0000_0001;
/// Where the frame goes in the address space the bystander creates (its second GiB: the space
/// needs a level-2 and a level-3 table for it).
const NEW_SPACE_IPA: u64 = 0x4000_0000;
/// The word sent to the helper thread, which answers it plus one.
const QUESTION: u64 = 41;
/// The helper thread's endpoint (set before it is resumed).
static HELPER_ENDPOINT: AtomicU64 = AtomicU64::new(0);
/// The helper's reply: one word, label 0.
const ANSWER: MessageInfo = match MessageInfo::new(0, 8, 0) {
    Ok(info) => info,
    Err(_) => panic!("one word fits a message"),
};

/// The checks so far: a failure is printed at once and counted.
struct Checks {
    caps: Inventory,
    failed: u32,
}

impl Checks {
    fn check<T>(&mut self, what: &str, result: Result<T, KernelError>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(error) => {
                println!("bystander: {what}: {error:?}");
                self.failed += 1;
                None
            }
        }
    }

    /// A free slot of its CNode (a failure when none is left).
    fn slot(&mut self) -> Option<u64> {
        let slot = self.caps.slot();
        if slot.is_none() {
            println!("bystander: no free slot left");
            self.failed += 1;
        }
        slot
    }

    /// Retypes one object of `kind` from its untyped (the first with room) into a free slot.
    fn retype(&mut self, what: &str, kind: u64, size_bits: u64) -> Option<u64> {
        let slot = self.slot()?;
        let result = self.caps.retype(kind, size_bits, slot);
        self.check(what, result).map(|()| slot)
    }

    /// Retypes a 4 KiB frame and maps it read/write at `ipa` in `space`.
    fn frame_at(&mut self, what: &str, space: u64, ipa: u64) -> Option<u64> {
        let frame = self.retype(what, kind::FRAME, PAGE_BITS)?;
        let mapped = sys::map(CPtr::new(frame), CPtr::new(space), ipa, 0b011, 0);
        self.check(what, mapped).map(|()| frame)
    }
}

/// The bystander's run: the checks, the signal to waiting attackers, the verdict and the halt.
pub fn run() -> u64 {
    // At the same priority as a service still busy (the root of hostile-root.toml): let it go
    // first, so the bystander checks what the attack left.
    capvisor_rt::yield_now();
    println!("bystander: starting");
    let start = capvisor_rt::counter();
    let caps = Inventory::scan();
    if caps.untyped.first().is_none() {
        println!("bystander: no untyped to work with; FAILED");
        capvisor_rt::debug_halt(1)
    }
    let mut checks = Checks { caps, failed: 0 };
    objects(&mut checks);
    memory(&mut checks);
    new_space(&mut checks);
    round_trip(&mut checks);
    if capvisor_rt::counter() <= start {
        println!("bystander: the counter did not advance");
        checks.failed += 1;
    }
    // An attacker may wait on its endpoint for the bystander to be done (hostile-console).
    for &endpoint in checks.caps.endpoints.as_slice() {
        let _ = invoke::nb_send(endpoint, abi::SIGNAL_LABEL, [0; 4]);
    }
    if checks.failed == 0 {
        println!("bystander: ok");
        capvisor_rt::debug_halt(0)
    }
    println!("bystander: FAILED ({} check(s))", checks.failed);
    capvisor_rt::debug_halt(1)
}

/// One of each cheap kernel object.
fn objects(checks: &mut Checks) {
    checks.retype("retype an endpoint", kind::ENDPOINT, 0);
    checks.retype("retype a notification", kind::NOTIFICATION, 0);
    checks.retype("retype a CNode", kind::CNODE, CNODE_BITS);
    checks.retype("retype a vCPU", kind::VCPU, 0);
}

/// A frame mapped into its own space, written and read back.
fn memory(checks: &mut Checks) {
    let space = checks.caps.space;
    if checks.frame_at("map a frame", space, SCRATCH_IPA).is_none() {
        return;
    }
    let word = SCRATCH_IPA as *mut u64;
    // SAFETY: SCRATCH_IPA is the frame just mapped read/write into this service's own space,
    // which nothing else maps or uses.
    let read = unsafe {
        word.write_volatile(PATTERN);
        word.read_volatile()
    };
    if read != PATTERN {
        println!("bystander: the frame reads {read:#x} after {PATTERN:#x} was written");
        checks.failed += 1;
    }
}

/// A new address space, with a frame mapped where it needs new tables; then deleted.
fn new_space(checks: &mut Checks) {
    let Some(space) = checks.slot() else {
        return;
    };
    let created = checks.caps.retype_space(false, space);
    if checks.check("create an address space", created).is_none() {
        return;
    }
    checks.frame_at("map a frame into the new space", space, NEW_SPACE_IPA);
    let deleted = sys::delete(CPtr::new(checks.caps.cnode), space);
    checks.check("delete the new space", deleted);
}

/// A thread of its own that answers a call: a new thread, an endpoint, a stack frame, a round
/// trip.
fn round_trip(checks: &mut Checks) {
    let (Some(endpoint), Some(thread)) = (
        checks.retype("retype the round trip's endpoint", kind::ENDPOINT, 0),
        checks.retype("retype a thread", kind::THREAD, 0),
    ) else {
        return;
    };
    let stack = SCRATCH_IPA + PAGE;
    if checks
        .frame_at("map the helper's stack", checks.caps.space, stack)
        .is_none()
    {
        return;
    }
    HELPER_ENDPOINT.store(endpoint, Ordering::Relaxed);
    let configured = configure_helper(checks, thread, stack + PAGE);
    if checks
        .check("configure the helper thread", configured)
        .is_none()
    {
        return;
    }
    if checks
        .check("resume the helper thread", invoke::resume(thread))
        .is_none()
    {
        return;
    }
    let info = MessageInfo::new(abi::SIGNAL_LABEL, 8, 0).map_err(|_| KernelError::InvalidArgument);
    let reply = info.and_then(|info| sys::call(CPtr::new(endpoint), info, [QUESTION, 0, 0, 0]));
    if let Some(reply) = checks.check("call the helper thread", reply)
        && reply.words[0] != QUESTION + 1
    {
        println!("bystander: the helper answered {}", reply.words[0]);
        checks.failed += 1;
    }
}

/// Configures the helper at the bystander's own priority: the highest the kernel accepts (a
/// service may not make a thread above its own maximum priority), so a spinner at the
/// bystander's priority cannot starve the helper.
fn configure_helper(checks: &Checks, thread: u64, stack_top: u64) -> Result<(), KernelError> {
    let mut result = Err(KernelError::RangeError);
    for priority in (0..=u8::MAX).rev() {
        let config = Configure {
            pc: helper as *const () as usize as u64,
            sp: stack_top,
            ipc_buffer: 0,
            priority,
            max_priority: priority,
            cspace: checks.caps.cnode,
            space: checks.caps.space,
            fault: 0,
        };
        result = invoke::configure(thread, &config);
        if result != Err(KernelError::RangeError) {
            break;
        }
    }
    result
}

/// The helper thread: answers every call on its endpoint with the word plus one. Short
/// messages only, so it needs no IPC buffer; its stack is the frame mapped for it.
extern "C" fn helper(_ipc_buffer: u64) -> ! {
    let endpoint = CPtr::new(HELPER_ENDPOINT.load(Ordering::Relaxed));
    let mut received = sys::recv(endpoint);
    loop {
        let answer = received.map_or(0, |message| message.words[0].wrapping_add(1));
        received = sys::reply_recv(endpoint, ANSWER, [answer, 0, 0, 0]);
    }
}

//! The plan's checks: each stored item read into a typed [`Op`] (every number in its range), and
//! a walk over the steps that follows what each plan slot holds, so that every reference names a
//! live object of the kind its step needs, made by an earlier step. The encoder beside them is
//! the SDK's side.

use super::{
    DEVICE_COMPATIBLE, IMAGE_BLOCK, INIT_CNODE, INIT_SPACE, IRQ_CONTROL, Kind, MAX_CNODE_SLOT,
    MAX_INFO_DEVICES, MAX_INFO_GUESTS, MAX_PAGES, NONE, Op, OpCode, PAGES_CMDLINE, Plan, PlanError,
    PlanItem, Purpose, RetypeKind, Step,
};

/// Page size.
const PAGE: u64 = 4096;
/// The largest IPA a step may map at (the services' 39-bit address spaces).
const IPA_LIMIT: u64 = 1 << 39;
/// Rights bits (`capvisor_ipc::cap::Rights::ALL`).
const ALL_RIGHTS: u64 = 0b1_1111;

/// The stored item as a step, its numbers checked (references are checked by [`references`]).
pub(super) fn step<'a>(item: &PlanItem, strings: &'a [u8]) -> Result<Step<'a>, ()> {
    let purpose = Purpose::from_u16(item.purpose).ok_or(())?;
    let code = OpCode::from_u16(item.op).ok_or(())?;
    if item.reserved != 0 {
        return Err(());
    }
    let [a, b, c, d, e] = item.args;
    let (slot, target, third) = (item.slot, item.target, item.third);
    let op = match code {
        OpCode::Retype => {
            let kind = RetypeKind::from_u64(a).ok_or(())?;
            check(kind.takes(b) && rest(&[c, d, e]))?;
            Op::Retype {
                slot,
                kind,
                bits: b,
            }
        }
        OpCode::Pages => {
            let (access, flags, count) = (e & 0xff, ((e >> 8) & 0xff) as u32, e >> 32);
            // Bits 16–31 are unused: zero, so one step has one encoding.
            check(e & 0xffff_0000 == 0)?;
            check((1..=MAX_PAGES).contains(&count) && flags & !PAGES_CMDLINE == 0)?;
            check(b <= count * PAGE && (target == NONE || page_range(a, count) && rwx(access)))?;
            check(
                third == NONE
                    || d.checked_add(count)
                        .is_some_and(|end| end <= MAX_CNODE_SLOT),
            )?;
            Op::Pages {
                slot,
                count,
                source: c,
                data_size: b,
                space: target,
                ipa: a,
                access,
                cnode: third,
                dest: d,
                flags,
            }
        }
        OpCode::ImageFrame => {
            check(rest(&[b, c, d, e]))?;
            Op::ImageFrame { slot, block: a }
        }
        OpCode::Device => {
            let locator = strings
                .get(a as usize..a.saturating_add(b) as usize)
                .and_then(|s| core::str::from_utf8(s).ok())
                .ok_or(())?;
            check(
                !locator.is_empty()
                    && c & !DEVICE_COMPATIBLE == 0
                    && (1..=3).contains(&d)
                    && e == 0,
            )?;
            Op::Device {
                slot,
                locator,
                compatible: c & DEVICE_COMPATIBLE != 0,
                attributes: d,
            }
        }
        OpCode::Carveout => {
            let natural = b.is_power_of_two() && b >= PAGE && a.is_multiple_of(b);
            check(natural && a.checked_add(b).is_some() && c <= 1 && rest(&[d, e]))?;
            Op::Carveout {
                slot,
                base: a,
                size: b,
                cacheable: c == 1,
            }
        }
        OpCode::IdentityRam => {
            check((21..=40).contains(&a) && rest(&[b, c, d, e]))?;
            Op::IdentityRam { slot, bits: a }
        }
        OpCode::Copy => {
            check(rights(b) && rest(&[c, d, e]))?;
            Op::Copy {
                slot,
                cnode: target,
                dest: a,
                rights: b,
            }
        }
        OpCode::Mint => {
            check(rights(b) && rest(&[d, e]))?;
            Op::Mint {
                slot,
                cnode: target,
                dest: a,
                rights: b,
                badge: c,
            }
        }
        OpCode::Move => {
            check(rest(&[b, c, d, e]))?;
            Op::Move {
                slot,
                cnode: target,
                dest: a,
            }
        }
        OpCode::Map => {
            check(page_range(a, 1) && a.is_multiple_of(PAGE) && rwx(b) && c <= 2 && rest(&[d, e]))?;
            Op::Map {
                slot,
                space: target,
                ipa: a,
                access: b,
                memtype: c,
            }
        }
        OpCode::Configure => {
            check(d <= 0xffff && (d & 0xff) <= d >> 8)?;
            let fault = u32::try_from(e).map_err(|_| ())?;
            Op::Configure {
                slot,
                cspace: target,
                space: third,
                registers: [a, b, c],
                priorities: d,
                fault,
            }
        }
        OpCode::BindVcpu => {
            check(rest(&[a, b, c, d, e]))?;
            Op::BindVcpu { slot, vcpu: target }
        }
        OpCode::Name => {
            check(a < 256 && rest(&[b, c, d, e]))?;
            Op::Name { slot, service: a }
        }
        OpCode::Resume => {
            check(rest(&[a, b, c, d, e]))?;
            Op::Resume { slot }
        }
        OpCode::Irqs => {
            check(b < MAX_INFO_GUESTS && a < MAX_CNODE_SLOT && rest(&[c, d, e]))?;
            Op::Irqs {
                slot,
                cnode: target,
                info: third,
                dest: a,
                guest: b,
            }
        }
        OpCode::InfoPlatform => {
            check(rest(&[a, b, c, d, e]))?;
            Op::InfoPlatform { slot }
        }
        OpCode::InfoDevice => {
            check(a < MAX_INFO_DEVICES && rest(&[b, c, d, e]))?;
            Op::InfoDevice {
                slot,
                region: target,
                index: a,
            }
        }
        OpCode::InfoGuestRam => {
            check(a < MAX_INFO_GUESTS && rest(&[b, c, d, e]))?;
            Op::InfoGuestRam {
                slot,
                region: target,
                index: a,
            }
        }
        OpCode::InfoDtb => {
            check(a.is_multiple_of(PAGE) && a < IPA_LIMIT && rest(&[b, c, d, e]))?;
            Op::InfoDtb {
                slot,
                space: target,
                ipa: a,
            }
        }
        OpCode::GiveRam => {
            check(a < b && b <= MAX_CNODE_SLOT && rest(&[c, d, e]))?;
            Op::GiveRam {
                cnode: target,
                first: a,
                end: b,
            }
        }
    };
    // References a step does not use must be NONE (one encoding per step).
    let used = references_of(&op);
    let unused_ok = [(slot, used[0]), (target, used[1]), (third, used[2])]
        .iter()
        .all(|&(value, used)| used || value == NONE);
    check(unused_ok)?;
    Ok(Step {
        op,
        purpose,
        owner: item.owner,
    })
}

fn check(ok: bool) -> Result<(), ()> {
    if ok { Ok(()) } else { Err(()) }
}

fn rest(words: &[u64]) -> bool {
    words.iter().all(|&w| w == 0)
}

fn rights(bits: u64) -> bool {
    bits & !ALL_RIGHTS == 0
}

fn rwx(access: u64) -> bool {
    access != 0 && access & !0b111 == 0
}

/// `count` pages from `ipa` lie in a 39-bit address space, page-aligned.
fn page_range(ipa: u64, count: u64) -> bool {
    ipa.is_multiple_of(PAGE)
        && count
            .checked_mul(PAGE)
            .and_then(|bytes| ipa.checked_add(bytes))
            .is_some_and(|end| end <= IPA_LIMIT)
}

/// Which of (slot, target, third) a step uses.
fn references_of(op: &Op<'_>) -> [bool; 3] {
    match op {
        Op::Retype { .. }
        | Op::ImageFrame { .. }
        | Op::Device { .. }
        | Op::Carveout { .. }
        | Op::IdentityRam { .. }
        | Op::Name { .. }
        | Op::Resume { .. }
        | Op::InfoPlatform { .. } => [true, false, false],
        Op::Pages { .. } | Op::Configure { .. } | Op::Irqs { .. } => [true, true, true],
        Op::Copy { .. }
        | Op::Mint { .. }
        | Op::Move { .. }
        | Op::Map { .. }
        | Op::BindVcpu { .. }
        | Op::InfoDevice { .. }
        | Op::InfoGuestRam { .. }
        | Op::InfoDtb { .. } => [true, true, false],
        Op::GiveRam { .. } => [false, true, false],
    }
}

/// What the walk knows: each plan slot's kind.
struct Slots {
    kinds: [Kind; super::MAX_SLOTS as usize],
    count: u32,
}

impl Slots {
    /// What `slot` holds: a live plan slot, or one of init's own capabilities.
    fn kind(&self, slot: u32) -> Kind {
        match slot {
            INIT_CNODE => Kind::Cnode,
            INIT_SPACE => Kind::Space,
            IRQ_CONTROL => Kind::Other,
            _ if slot < self.count => self.kinds[slot as usize],
            _ => Kind::Empty,
        }
    }

    fn is(&self, slot: u32, kinds: &[Kind]) -> bool {
        kinds.contains(&self.kind(slot))
    }

    /// Fills plan slot `slot` (which must be empty) with `kind`.
    fn make(&mut self, slot: u32, kind: Kind) -> Result<(), ()> {
        check(slot < self.count && self.kinds[slot as usize] == Kind::Empty)?;
        self.kinds[slot as usize] = kind;
        Ok(())
    }

    /// Empties plan slot `slot` (a move out of it).
    fn take(&mut self, slot: u32) -> Result<Kind, ()> {
        check(slot < self.count)?;
        let kind = core::mem::replace(&mut self.kinds[slot as usize], Kind::Empty);
        check(kind != Kind::Empty)?;
        Ok(kind)
    }

    /// A capability copied or minted into `cnode`'s slot `dest`: a new plan slot when `cnode` is
    /// init's own.
    fn place(&mut self, cnode: u32, dest: u64, kind: Kind) -> Result<(), ()> {
        if cnode == INIT_CNODE {
            self.make(u32::try_from(dest).map_err(|_| ())?, kind)
        } else {
            check(self.is(cnode, &[Kind::Cnode]) && dest < MAX_CNODE_SLOT && dest != 0)
        }
    }
}

const SPACES: [Kind; 2] = [Kind::Space, Kind::Vm];
const REGIONS: [Kind; 2] = [Kind::DeviceUntyped, Kind::Untyped];

/// Walks the steps in order, checking each against what the slots hold.
pub(super) fn references(plan: &Plan<'_>, payload_size: u64) -> Result<(), PlanError> {
    let mut slots = Slots {
        kinds: [Kind::Empty; super::MAX_SLOTS as usize],
        count: plan.header.slot_count,
    };
    let blocks = payload_size.div_ceil(IMAGE_BLOCK);
    for (index, item) in plan.items.iter().enumerate() {
        let step = step(item, plan.strings).map_err(|()| PlanError::Item(index))?;
        let owner_ok = (step.owner as usize) < plan.names.len();
        if !owner_ok || walk(&mut slots, &step.op, (payload_size, blocks)).is_err() {
            return Err(PlanError::Item(index));
        }
    }
    let supervisor = plan.header.supervisor;
    let supervised = plan.supervised();
    if supervised != (supervisor != NONE)
        || (supervised && !slots.is(supervisor, &[Kind::Endpoint]))
    {
        return Err(PlanError::Header);
    }
    Ok(())
}

fn walk(slots: &mut Slots, op: &Op<'_>, (payload, blocks): (u64, u64)) -> Result<(), ()> {
    match *op {
        Op::Retype { slot, kind, .. } => slots.make(slot, kind.object()),
        Op::Pages {
            slot,
            count,
            source,
            data_size,
            space,
            cnode,
            flags,
            ..
        } => {
            let in_payload = source
                .checked_add(data_size)
                .is_some_and(|end| end <= payload);
            check(in_payload && (flags & PAGES_CMDLINE == 0 || count == 1))?;
            check(space == NONE || slots.is(space, &SPACES) || space == INIT_SPACE)?;
            check(cnode == NONE || slots.is(cnode, &[Kind::Cnode]))?;
            let count = u32::try_from(count).map_err(|_| ())?;
            for n in 0..count {
                let at = slot.checked_add(n).ok_or(())?;
                slots.make(at, Kind::Frame)?;
                if cnode != NONE {
                    slots.take(at)?;
                }
            }
            Ok(())
        }
        Op::ImageFrame { slot, block } => {
            check(block < blocks)?;
            slots.make(slot, Kind::Frame)
        }
        Op::Device { slot, .. } => slots.make(slot, Kind::DeviceUntyped),
        Op::Carveout {
            slot, cacheable, ..
        } => {
            let kind = if cacheable {
                Kind::DeviceUntyped
            } else {
                Kind::Untyped
            };
            slots.make(slot, kind)
        }
        Op::IdentityRam { slot, .. } => slots.make(slot, Kind::Untyped),
        Op::Copy {
            slot, cnode, dest, ..
        }
        | Op::Mint {
            slot, cnode, dest, ..
        } => {
            let kind = slots.kind(slot);
            check(kind != Kind::Empty)?;
            slots.place(cnode, dest, kind)
        }
        Op::Move { slot, cnode, dest } => {
            check(cnode != INIT_CNODE)?;
            let kind = slots.kind(slot);
            check(kind != Kind::Empty && slots.place(cnode, dest, kind).is_ok())?;
            slots.take(slot).map(|_| ())
        }
        Op::Map { slot, space, .. } => {
            check(slots.is(slot, &[Kind::Frame]))?;
            check(slots.is(space, &SPACES) || space == INIT_SPACE)
        }
        Op::Configure {
            slot,
            cspace,
            space,
            fault,
            ..
        } => {
            check(slots.is(slot, &[Kind::Thread]) && slots.is(cspace, &[Kind::Cnode]))?;
            check(slots.is(space, &SPACES) && space != INIT_SPACE)?;
            check(fault == NONE || slots.is(fault, &[Kind::Endpoint]))
        }
        Op::BindVcpu { slot, vcpu } => {
            check(slots.is(slot, &[Kind::Thread]) && slots.is(vcpu, &[Kind::Vcpu]))
        }
        Op::Name { slot, .. } | Op::Resume { slot } => check(slots.is(slot, &[Kind::Thread])),
        Op::Irqs {
            slot, cnode, info, ..
        } => check(
            slots.is(slot, &[Kind::DeviceUntyped])
                && slots.is(cnode, &[Kind::Cnode])
                && cnode != INIT_CNODE
                && slots.is(info, &[Kind::Frame]),
        ),
        Op::InfoPlatform { slot } => check(slots.is(slot, &[Kind::Frame])),
        Op::InfoDevice { slot, region, .. } | Op::InfoGuestRam { slot, region, .. } => {
            check(slots.is(slot, &[Kind::Frame]) && slots.is(region, &REGIONS))
        }
        Op::InfoDtb { slot, space, .. } => {
            check(slots.is(slot, &[Kind::Frame]) && slots.is(space, &SPACES) && space != INIT_SPACE)
        }
        Op::GiveRam { cnode, .. } => check(slots.is(cnode, &[Kind::Cnode]) && cnode != INIT_CNODE),
    }
}

/// The stored form of a step (the SDK's side; [`step`] reads it back).
#[must_use]
pub fn encode_op(step: &Step<'_>, strings: (u64, u64)) -> PlanItem {
    let (slot, target, third, code, args) = match step.op {
        Op::Retype { slot, kind, bits } => (
            slot,
            NONE,
            NONE,
            OpCode::Retype,
            [kind as u64, bits, 0, 0, 0],
        ),
        Op::Pages {
            slot,
            count,
            source,
            data_size,
            space,
            ipa,
            access,
            cnode,
            dest,
            flags,
        } => (
            slot,
            space,
            cnode,
            OpCode::Pages,
            [
                ipa,
                data_size,
                source,
                dest,
                access | u64::from(flags) << 8 | count << 32,
            ],
        ),
        Op::ImageFrame { slot, block } => {
            (slot, NONE, NONE, OpCode::ImageFrame, [block, 0, 0, 0, 0])
        }
        Op::Device {
            slot,
            compatible,
            attributes,
            ..
        } => (
            slot,
            NONE,
            NONE,
            OpCode::Device,
            [strings.0, strings.1, u64::from(compatible), attributes, 0],
        ),
        Op::Carveout {
            slot,
            base,
            size,
            cacheable,
        } => (
            slot,
            NONE,
            NONE,
            OpCode::Carveout,
            [base, size, u64::from(cacheable), 0, 0],
        ),
        Op::IdentityRam { slot, bits } => {
            (slot, NONE, NONE, OpCode::IdentityRam, [bits, 0, 0, 0, 0])
        }
        Op::Copy {
            slot,
            cnode,
            dest,
            rights,
        } => (slot, cnode, NONE, OpCode::Copy, [dest, rights, 0, 0, 0]),
        Op::Mint {
            slot,
            cnode,
            dest,
            rights,
            badge,
        } => (slot, cnode, NONE, OpCode::Mint, [dest, rights, badge, 0, 0]),
        Op::Move { slot, cnode, dest } => (slot, cnode, NONE, OpCode::Move, [dest, 0, 0, 0, 0]),
        Op::Map {
            slot,
            space,
            ipa,
            access,
            memtype,
        } => (slot, space, NONE, OpCode::Map, [ipa, access, memtype, 0, 0]),
        Op::Configure {
            slot,
            cspace,
            space,
            registers: [entry, sp, ipc],
            priorities,
            fault,
        } => (
            slot,
            cspace,
            space,
            OpCode::Configure,
            [entry, sp, ipc, priorities, u64::from(fault)],
        ),
        Op::BindVcpu { slot, vcpu } => (slot, vcpu, NONE, OpCode::BindVcpu, [0; 5]),
        Op::Name { slot, service } => (slot, NONE, NONE, OpCode::Name, [service, 0, 0, 0, 0]),
        Op::Resume { slot } => (slot, NONE, NONE, OpCode::Resume, [0; 5]),
        Op::Irqs {
            slot,
            cnode,
            info,
            dest,
            guest,
        } => (slot, cnode, info, OpCode::Irqs, [dest, guest, 0, 0, 0]),
        Op::InfoPlatform { slot } => (slot, NONE, NONE, OpCode::InfoPlatform, [0; 5]),
        Op::InfoDevice {
            slot,
            region,
            index,
        } => (slot, region, NONE, OpCode::InfoDevice, [index, 0, 0, 0, 0]),
        Op::InfoGuestRam {
            slot,
            region,
            index,
        } => (
            slot,
            region,
            NONE,
            OpCode::InfoGuestRam,
            [index, 0, 0, 0, 0],
        ),
        Op::InfoDtb { slot, space, ipa } => (slot, space, NONE, OpCode::InfoDtb, [ipa, 0, 0, 0, 0]),
        Op::GiveRam { cnode, first, end } => {
            (NONE, cnode, NONE, OpCode::GiveRam, [first, end, 0, 0, 0])
        }
    };
    PlanItem {
        op: code as u16,
        purpose: step.purpose as u16,
        owner: step.owner,
        slot,
        target,
        third,
        reserved: 0,
        args,
    }
}

//! A deliberately simple reference model: the Arm ARM stage-2 pseudocode transcribed function by
//! function, written apart from the fast walker so each can check the other.
//!
//! Source: Arm DDI 0487 (L.a), J1.1.5 "aarch64/translation" and J1.3 "shared/translation"
//! library pseudocode, restricted to a non-secure stage 2 with 64-bit descriptors (no FEAT_D128,
//! FEAT_S2PIE, FEAT_RME), stage 1 in AArch64 (s1aarch64 = TRUE), SCTLR_EL2.EE = 0. Names follow
//! the pseudocode; integers are `i64` and bit-vectors `u64`, sliced with [`slice`] the way
//! `x<hi:lo>` slices them. Speed is no goal here: clarity of correspondence is. The only
//! departure is marked where the pseudocode's types cannot hold our inputs.

use crate::fault::{Fault, FaultKind};
use crate::memory::GuestMemory;
use crate::regs::{Access, Ipa, Machine, OutputAddr, Vtcr, Vttbr};
use crate::walk::{Permissions, Translation};

const FINAL_LEVEL: i64 = 3;

/// `x<hi:lo>`.
fn slice(x: u64, hi: i64, lo: i64) -> u64 {
    if hi < lo || lo > 63 {
        return 0;
    }
    let width = hi - lo + 1;
    let shifted = x >> lo;
    if width >= 64 {
        shifted
    } else {
        shifted & ((1u64 << width) - 1)
    }
}

/// `IsZero(x<hi:lo>)`.
fn is_zero(x: u64, hi: i64, lo: i64) -> bool {
    slice(x, hi, lo) == 0
}

/// `Align(x, 2^n)`.
fn align(x: u64, log2: i64) -> u64 {
    if log2 >= 64 {
        0
    } else {
        x & !((1u64 << log2) - 1)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum TGx {
    Kb4,
    Kb16,
    Kb64,
}

/// The subset of S2TTWParams a non-secure 64-bit-descriptor stage 2 uses.
#[derive(Clone, Copy, Debug)]
struct S2TTWParams {
    tgx: TGx,
    txsz: u64,
    sl0: u64,
    sl2: u64,
    ps: u64,
    ds: u64,
    ha: u64,
    hd: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Status {
    None,
    Translation,
    AddressSize,
    AccessFlag,
    Permission,
    SyncExternalOnWalk,
}

#[derive(Clone, Copy, Debug)]
struct FaultRecord {
    statuscode: Status,
    level: i64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum DescriptorType {
    Table,
    Leaf,
    Invalid,
}

#[derive(Clone, Copy, Debug, Default)]
struct S2Perms {
    s2ap: u64,
    s2xn: u64,
    s2xnx: u64,
}

#[derive(Clone, Copy, Debug, Default)]
struct TTWState {
    baseaddress: u64,
    level: i64,
    contiguous: u64,
    permissions: S2Perms,
    memattrs: u64,
}

fn pamax(machine: &Machine) -> i64 {
    i64::from(machine.pa_bits.bits())
}

/// AArch64.S2DecodeTG0 (reserved 0b11: the IMPLEMENTATION DEFINED choice is 4KB).
fn s2_decode_tg0(tg0: u64) -> TGx {
    match tg0 {
        0b01 => TGx::Kb64,
        0b10 => TGx::Kb16,
        _ => TGx::Kb4,
    }
}

/// TGxGranuleBits.
fn tgx_granule_bits(tgx: TGx) -> i64 {
    match tgx {
        TGx::Kb4 => 12,
        TGx::Kb16 => 14,
        TGx::Kb64 => 16,
    }
}

/// AArch64.NSS2TTWParams (the fields a walk uses).
fn ns_s2_ttw_params(machine: &Machine, vtcr: u64) -> S2TTWParams {
    let tgx = s2_decode_tg0(slice(vtcr, 15, 14));
    let ha = if machine.hafdbs {
        slice(vtcr, 21, 21)
    } else {
        0
    };
    let hd = if ha == 1 { slice(vtcr, 22, 22) } else { 0 };
    let ds = if matches!(tgx, TGx::Kb4 | TGx::Kb16) && machine.lpa2 {
        slice(vtcr, 32, 32)
    } else {
        0
    };
    let sl2 = if tgx == TGx::Kb4 && machine.lpa2 {
        slice(vtcr, 33, 33) & ds
    } else {
        0
    };
    S2TTWParams {
        tgx,
        txsz: slice(vtcr, 5, 0),
        sl0: slice(vtcr, 7, 6),
        sl2,
        ps: slice(vtcr, 18, 16),
        ds,
        ha,
        hd,
    }
}

/// AArch64.IASize.
fn ia_size(txsz: u64) -> i64 {
    64 - txsz as i64
}

/// AArch64.S2MinTxSZ (s1aarch64 = TRUE, d128 = '0').
fn s2_min_txsz(machine: &Machine, ds: u64, tgx: TGx) -> i64 {
    let ips = if machine.lpa() && tgx != TGx::Kb64 && ds == 0 {
        48.min(pamax(machine))
    } else {
        52.min(pamax(machine))
    };
    64 - ips
}

/// AArch64.MaxTxSZ.
fn max_txsz(machine: &Machine, tgx: TGx) -> i64 {
    if machine.ttst {
        return match tgx {
            TGx::Kb4 | TGx::Kb16 => 48,
            TGx::Kb64 => 47,
        };
    }
    39
}

/// AArch64.S2TxSZFaults.
fn s2_txsz_faults(machine: &Machine, walkparams: &S2TTWParams) -> bool {
    let mintxsz = s2_min_txsz(machine, walkparams.ds, walkparams.tgx);
    let maxtxsz = max_txsz(machine, walkparams.tgx);
    if (walkparams.txsz as i64) < mintxsz {
        return machine.lpa() || machine.fault_txsz_below_min;
    }
    if (walkparams.txsz as i64) > maxtxsz {
        return machine.fault_txsz_above_max;
    }
    false
}

/// AArch64.S2StartLevel (d128 = '0'). Reserved encodings return a level that
/// AArch64.S2InvalidSL has already rejected.
fn s2_start_level(walkparams: &S2TTWParams) -> i64 {
    match walkparams.tgx {
        TGx::Kb4 => match (walkparams.sl2 << 2) | walkparams.sl0 {
            0b000 => 2,
            0b001 => 1,
            0b010 => 0,
            0b011 => 3,
            _ => -1,
        },
        TGx::Kb16 | TGx::Kb64 => 3 - walkparams.sl0 as i64,
    }
}

/// AArch64.S2InvalidSL.
fn s2_invalid_sl(machine: &Machine, walkparams: &S2TTWParams) -> bool {
    match walkparams.tgx {
        TGx::Kb4 => match (walkparams.sl2 << 2) | walkparams.sl0 {
            0b101 | 0b111 => true, // '1x1'
            0b110 => true,         // '11x' ('111' matched above)
            0b100 => pamax(machine) < 52,
            0b010 => pamax(machine) < 44,
            0b011 => !machine.ttst,
            _ => false,
        },
        TGx::Kb16 => match walkparams.sl0 {
            0b11 => walkparams.ds == 0 || pamax(machine) < 52,
            0b10 => pamax(machine) < 42,
            _ => false,
        },
        TGx::Kb64 => match walkparams.sl0 {
            0b11 => true,
            0b10 => pamax(machine) < 44,
            _ => false,
        },
    }
}

/// AArch64.S2InconsistentSL.
fn s2_inconsistent_sl(walkparams: &S2TTWParams) -> bool {
    let startlevel = s2_start_level(walkparams);
    let levels = FINAL_LEVEL - startlevel;
    let granulebits = tgx_granule_bits(walkparams.tgx);
    let descsizelog2 = 3;
    let stride = granulebits - descsizelog2;
    // Input address size must at least be large enough to be resolved from the start level.
    let sl_min_iasize = levels * stride + granulebits + 1;
    // Can accommodate 1 more stride in the level + concatenation of up to 2^4 tables.
    let sl_max_iasize = sl_min_iasize + (stride - 1) + 4;
    let iasize = ia_size(walkparams.txsz);
    iasize < sl_min_iasize || iasize > sl_max_iasize
}

/// AArch64.IPAIsOutOfRange.
fn ipa_is_out_of_range(ipa: u64, walkparams: &S2TTWParams) -> bool {
    let iasize = ia_size(walkparams.txsz);
    if iasize < 56 {
        !is_zero(ipa, 55, iasize)
    } else {
        false
    }
}

/// AArch64.PhysicalAddressSize (d128 = '0').
fn physical_address_size(machine: &Machine, ds: u64, encoded_ps: u64, tgx: TGx) -> i64 {
    let ps = match encoded_ps {
        0b000 => 32,
        0b001 => 36,
        0b010 => 40,
        0b011 => 42,
        0b100 => 44,
        0b101 => 48,
        0b110 => 52,
        _ => 56,
    };
    let max_ps = if machine.lpa() && (tgx == TGx::Kb64 || ds == 1) {
        52.min(pamax(machine))
    } else {
        48.min(pamax(machine))
    };
    ps.min(max_ps)
}

/// AArch64.OAOutOfRange / AArch64.S2OAOutOfRange.
fn s2_oa_out_of_range(machine: &Machine, walkparams: &S2TTWParams, address: u64) -> bool {
    let oasize = physical_address_size(machine, walkparams.ds, walkparams.ps, walkparams.tgx);
    if oasize < 56 {
        !is_zero(address, 55, oasize)
    } else {
        false
    }
}

/// AArch64.TTBaseAddress (d128 = '0').
fn tt_base_address(machine: &Machine, ttb: u64, walkparams: &S2TTWParams, startlevel: i64) -> u64 {
    let mut tablebase: u64 = 0;
    let iasize = ia_size(walkparams.txsz);
    let granulebits = tgx_granule_bits(walkparams.tgx);
    let descsizelog2 = 3;
    let stride = granulebits - descsizelog2;
    let levels = FINAL_LEVEL - startlevel;
    // Base address is aligned to size of the initial translation table in bytes.
    let mut tsize = (iasize - (levels * stride + granulebits)) + descsizelog2;
    if (machine.lpa() && walkparams.tgx == TGx::Kb64 && walkparams.ps == 0b110)
        || walkparams.ds == 1
    {
        tsize = tsize.max(6);
        // tablebase<51:6> = ttb<5:2>:ttb<47:6>
        tablebase |= slice(ttb, 5, 2) << 48;
        tablebase |= slice(ttb, 47, 6) << 6;
    } else {
        // tablebase<47:1> = ttb<47:1>
        tablebase |= slice(ttb, 47, 1) << 1;
    }
    align(tablebase, tsize)
}

/// AArch64.S2SLTTEntryAddress.
fn s2_sl_tt_entry_address(walkparams: &S2TTWParams, ipa: u64, tablebase: u64) -> u64 {
    let startlevel = s2_start_level(walkparams);
    let iasize = ia_size(walkparams.txsz);
    let granulebits = tgx_granule_bits(walkparams.tgx);
    let descsizelog2 = 3;
    let stride = granulebits - descsizelog2;
    let levels = FINAL_LEVEL - startlevel;
    let lsb = levels * stride + granulebits;
    let msb = iasize - 1;
    let index = slice(ipa, msb, lsb) << descsizelog2;
    tablebase | index
}

/// AArch64.TTEntryAddress (d128 = '0', so skl = '00' and nstride = 1).
fn tt_entry_address(level: i64, tgx: TGx, ia: u64, tablebase: u64) -> u64 {
    let granulebits = tgx_granule_bits(tgx);
    let descsizelog2 = 3;
    let stride = granulebits - descsizelog2;
    let levels = FINAL_LEVEL - level;
    let lsb = levels * stride + granulebits;
    let msb = (lsb + stride) - 1;
    let index = slice(ia, msb, lsb) << descsizelog2;
    tablebase | index
}

/// AArch64.BlockDescSupported (d128 = '0').
fn block_desc_supported(machine: &Machine, ds: u64, tgx: TGx, level: i64) -> bool {
    match tgx {
        TGx::Kb4 => (level == 0 && ds == 1) || level == 1 || level == 2,
        TGx::Kb16 => (level == 1 && ds == 1) || level == 2,
        TGx::Kb64 => (level == 1 && pamax(machine) >= 52) || level == 2,
    }
}

/// AArch64.DecodeDescriptorType (d128 = '0').
fn decode_descriptor_type(
    machine: &Machine,
    desc: u64,
    ds: u64,
    tgx: TGx,
    level: i64,
) -> DescriptorType {
    if slice(desc, 1, 0) == 0b11 && level == FINAL_LEVEL {
        DescriptorType::Leaf
    } else if slice(desc, 1, 0) == 0b11 {
        DescriptorType::Table
    } else if slice(desc, 1, 0) == 0b01 {
        if block_desc_supported(machine, ds, tgx, level) {
            DescriptorType::Leaf
        } else {
            DescriptorType::Invalid
        }
    } else {
        DescriptorType::Invalid
    }
}

/// The high output-address bits shared by AArch64.NextTableBase and AArch64.LeafBase. The
/// IMPLEMENTATION DEFINED "descriptor\[15:12\] for 64KB OA" is TRUE: those bits are OA\[51:48\]
/// with a 64KB granule even below 52-bit PAMax, so a non-zero value there is out of range.
fn high_oa_bits(desc: u64, ds: u64, tgx: TGx) -> u64 {
    if tgx == TGx::Kb64 {
        slice(desc, 15, 12) << 48
    } else if ds == 1 {
        (slice(desc, 9, 8) << 50) | (slice(desc, 49, 48) << 48)
    } else {
        0
    }
}

/// AArch64.NextTableBase (d128 = '0').
fn next_table_base(desc: u64, ds: u64, tgx: TGx) -> u64 {
    let granulebits = tgx_granule_bits(tgx);
    let mut tablebase = slice(desc, 47, granulebits) << granulebits;
    tablebase = align(tablebase, granulebits);
    tablebase | high_oa_bits(desc, ds, tgx)
}

/// AArch64.LeafBase (d128 = '0').
fn leaf_base(desc: u64, ds: u64, tgx: TGx, level: i64) -> u64 {
    let granulebits = tgx_granule_bits(tgx);
    let descsizelog2 = 3;
    let stride = granulebits - descsizelog2;
    let leafsize = granulebits + stride * (FINAL_LEVEL - level);
    let leafbase = align(slice(desc, 47, 0), leafsize);
    leafbase | high_oa_bits(desc, ds, tgx)
}

/// AArch64.ContiguousBit (d128 = '0').
fn contiguous_bit(tgx: TGx, level: i64, desc: u64) -> u64 {
    if (tgx == TGx::Kb64 || tgx == TGx::Kb16) && level == 1 {
        return 0; // RES0
    }
    if tgx == TGx::Kb4 && level == 0 {
        return 0; // RES0
    }
    slice(desc, 52, 52)
}

/// ContiguousSize (d128 = '0').
fn contiguous_size(tgx: TGx, level: i64) -> i64 {
    match tgx {
        TGx::Kb4 => 4,
        TGx::Kb16 => {
            if level == 2 {
                5
            } else {
                7
            }
        }
        TGx::Kb64 => 5,
    }
}

/// TranslationSize (d128 = '0').
fn translation_size(tgx: TGx, level: i64) -> i64 {
    let granulebits = tgx_granule_bits(tgx);
    let descsizelog2 = 3;
    let blockbits = (FINAL_LEVEL - level) * (granulebits - descsizelog2);
    granulebits + blockbits
}

/// StageOA.
fn stage_oa(ia: u64, tgx: TGx, walkstate: &TTWState) -> u64 {
    let tsize = translation_size(tgx, walkstate.level);
    let csize = if walkstate.contiguous == 1 {
        contiguous_size(tgx, walkstate.level)
    } else {
        0
    };
    let ia_msb = tsize + csize;
    (slice(walkstate.baseaddress, 55, ia_msb) << ia_msb) | slice(ia, ia_msb - 1, 0)
}

/// AArch64.S2ApplyOutputPerms (no FEAT_S2PIE).
fn s2_apply_output_perms(machine: &Machine, desc: u64, walkparams: &S2TTWParams) -> S2Perms {
    let mut permissions = S2Perms {
        s2ap: slice(desc, 7, 6),
        s2xn: slice(desc, 54, 54),
        s2xnx: if machine.xnx { slice(desc, 53, 53) } else { 0 },
    };
    // Descriptors marked with DBM set have the effective value of S2AP[1] set.
    if walkparams.ha == 1 && walkparams.hd == 1 && slice(desc, 51, 51) == 1 {
        permissions.s2ap |= 0b10;
    }
    permissions
}

/// The permissions a reference leaf grants, for comparison with the fast walker.
fn output_permissions(perms: &S2Perms) -> Permissions {
    let (px, ux) = match (perms.s2xn, perms.s2xnx) {
        (0, 0) => (true, true),
        (0, _) => (false, true),
        (_, 0) => (false, false),
        (_, _) => (true, false),
    };
    Permissions {
        read: perms.s2ap & 1 == 1,
        write: perms.s2ap & 2 == 2,
        exec_el1: px,
        exec_el0: ux,
    }
}

/// AArch64.S2InitialTTWState (non-secure).
fn s2_initial_ttw_state(machine: &Machine, walkparams: &S2TTWParams, vttbr: u64) -> TTWState {
    let startlevel = s2_start_level(walkparams);
    TTWState {
        baseaddress: tt_base_address(machine, vttbr, walkparams, startlevel),
        level: startlevel,
        ..TTWState::default()
    }
}

/// AArch64.S2NextWalkStateTable.
fn s2_next_walk_state_table(current: &TTWState, walkparams: &S2TTWParams, desc: u64) -> TTWState {
    TTWState {
        baseaddress: next_table_base(desc, walkparams.ds, walkparams.tgx),
        level: current.level + 1,
        ..TTWState::default()
    }
}

/// AArch64.S2NextWalkStateLeaf (FWB = 0: the memory attributes are the raw MemAttr).
fn s2_next_walk_state_leaf(
    machine: &Machine,
    current: &TTWState,
    walkparams: &S2TTWParams,
    desc: u64,
) -> TTWState {
    TTWState {
        baseaddress: leaf_base(desc, walkparams.ds, walkparams.tgx, current.level),
        level: current.level,
        contiguous: contiguous_bit(walkparams.tgx, current.level, desc),
        permissions: s2_apply_output_perms(machine, desc, walkparams),
        memattrs: slice(desc, 5, 2),
    }
}

/// FetchDescriptor: a read the memory system cannot satisfy is a synchronous External abort.
fn fetch_descriptor(mem: &impl GuestMemory, address: u64, fault: &mut FaultRecord) -> Option<u64> {
    match mem.read_u64(OutputAddr::new(address)) {
        Ok(descriptor) => Some(descriptor),
        Err(_) => {
            fault.statuscode = Status::SyncExternalOnWalk;
            None
        }
    }
}

/// What AArch64.S2Walk hands back: the fault record, the final walk state, the leaf
/// descriptor and its address.
struct WalkOutcome {
    fault: FaultRecord,
    walkstate: TTWState,
    descriptor: u64,
    descaddress: u64,
}

/// AArch64.S2Walk (non-secure, d128 = '0', no TLB, no hardware descriptor updates).
fn s2_walk(
    machine: &Machine,
    ipa: u64,
    walkparams: &S2TTWParams,
    vttbr: u64,
    mem: &impl GuestMemory,
) -> WalkOutcome {
    let mut fault = FaultRecord {
        statuscode: Status::None,
        level: 0,
    };
    let mut walkstate = s2_initial_ttw_state(machine, walkparams, vttbr);
    let mut descaddress = s2_sl_tt_entry_address(walkparams, ipa, walkstate.baseaddress);
    let mut descriptor;
    let unknown = |fault| WalkOutcome {
        fault,
        walkstate: TTWState::default(),
        descriptor: 0,
        descaddress: 0,
    };
    // Detect Address Size Fault by Descriptor Address.
    if s2_oa_out_of_range(machine, walkparams, descaddress) {
        fault.statuscode = Status::AddressSize;
        fault.level = 0;
        return unknown(fault);
    }
    let mut leafaddress;
    loop {
        fault.level = walkstate.level;
        leafaddress = descaddress;
        match fetch_descriptor(mem, descaddress, &mut fault) {
            Some(d) => descriptor = d,
            None => return unknown(fault),
        }
        let desctype = decode_descriptor_type(
            machine,
            descriptor,
            walkparams.ds,
            walkparams.tgx,
            walkstate.level,
        );
        match desctype {
            DescriptorType::Table => {
                walkstate = s2_next_walk_state_table(&walkstate, walkparams, descriptor);
                descaddress =
                    tt_entry_address(walkstate.level, walkparams.tgx, ipa, walkstate.baseaddress);
                // Detect Address Size Fault by table descriptor.
                if s2_oa_out_of_range(machine, walkparams, descaddress) {
                    fault.statuscode = Status::AddressSize;
                    return unknown(fault);
                }
            }
            DescriptorType::Leaf => {
                walkstate = s2_next_walk_state_leaf(machine, &walkstate, walkparams, descriptor);
            }
            DescriptorType::Invalid => {
                fault.statuscode = Status::Translation;
                return unknown(fault);
            }
        }
        if desctype == DescriptorType::Leaf {
            break;
        }
    }
    fault.statuscode = s2_walk_leaf_checks(machine, ipa, walkparams, &walkstate, descriptor);
    WalkOutcome {
        fault,
        walkstate,
        descriptor,
        descaddress: leafaddress,
    }
}

/// The end of AArch64.S2Walk, after the leaf is found.
fn s2_walk_leaf_checks(
    machine: &Machine,
    ipa: u64,
    walkparams: &S2TTWParams,
    walkstate: &TTWState,
    descriptor: u64,
) -> Status {
    let oa = stage_oa(ipa, walkparams.tgx, walkstate);
    // AArch64.ContiguousBitFaults: IMPLEMENTATION DEFINED, chosen FALSE.
    // AArch64.BlocknTFaults: FALSE without FEAT_BBM's nT.
    // Detect Address Size Fault by final output.
    if s2_oa_out_of_range(machine, walkparams, oa) {
        Status::AddressSize
    } else if slice(descriptor, 10, 10) == 0 && walkparams.ha == 0 {
        // Check descriptor AF bit.
        Status::AccessFlag
    } else {
        Status::None
    }
}

/// AArch64.S2CheckPermissions (no FEAT_S2PIE, no FEAT_S2POE, not a stage 1 walk): an
/// instruction fetch faults on Device memory, then on execute-never; data accesses on S2AP.
fn s2_check_permissions(
    mut fault: FaultRecord,
    walkstate: &TTWState,
    access: Access,
) -> FaultRecord {
    let r = walkstate.permissions.s2ap & 1 == 1;
    let w = walkstate.permissions.s2ap & 2 == 2;
    let perms = output_permissions(&walkstate.permissions);
    // S2DecodeMemAttrs (FWB = 0): MemAttr '00xx' is MemType_Device.
    let device = slice(walkstate.memattrs, 3, 2) == 0b00;
    let failed = match access {
        Access::ExecEl1 => device || !perms.exec_el1,
        Access::ExecEl0 => device || !perms.exec_el0,
        Access::Write => !w,
        Access::Read => !r,
    };
    if failed {
        fault.statuscode = Status::Permission;
    }
    fault
}

fn to_fault(record: &FaultRecord) -> Fault {
    let kind = match record.statuscode {
        Status::AddressSize => FaultKind::AddressSize,
        Status::AccessFlag => FaultKind::AccessFlag,
        Status::Permission => FaultKind::Permission,
        Status::SyncExternalOnWalk => FaultKind::ExternalAbortOnWalk,
        Status::Translation | Status::None => FaultKind::Translation,
    };
    Fault::new(kind, record.level as i8)
}

/// AArch64.S2Translate (non-secure, HCR_EL2.VM = 1, FWB = 0, no alignment check).
///
/// # Errors
/// The fault the pseudocode records.
pub fn s2_translate(
    machine: &Machine,
    vtcr: Vtcr,
    vttbr: Vttbr,
    mem: &impl GuestMemory,
    ipa: Ipa,
    access: Access,
) -> Result<Translation, Fault> {
    let level0 = FaultRecord {
        statuscode: Status::Translation,
        level: 0,
    };
    let mut walkparams = ns_s2_ttw_params(machine, vtcr.get());
    let s2mintxsz = s2_min_txsz(machine, walkparams.ds, walkparams.tgx);
    let s2maxtxsz = max_txsz(machine, walkparams.tgx);
    if s2_txsz_faults(machine, &walkparams) {
        return Err(to_fault(&level0));
    } else if (walkparams.txsz as i64) < s2mintxsz {
        walkparams.txsz = s2mintxsz as u64;
    } else if (walkparams.txsz as i64) > s2maxtxsz {
        walkparams.txsz = s2maxtxsz as u64;
    }
    if s2_invalid_sl(machine, &walkparams) || s2_inconsistent_sl(&walkparams) {
        return Err(to_fault(&level0));
    }
    // Departure: the pseudocode's IPA is bits(56); a wider one cannot come from stage 1, and
    // is treated as out of range like any other bit above the input size.
    let ipa = ipa.get();
    if ipa >> 56 != 0 || ipa_is_out_of_range(ipa, &walkparams) {
        return Err(to_fault(&level0));
    }
    let outcome = s2_walk(machine, ipa, &walkparams, vttbr.get(), mem);
    if outcome.fault.statuscode != Status::None {
        return Err(to_fault(&outcome.fault));
    }
    let fault = s2_check_permissions(outcome.fault, &outcome.walkstate, access);
    if fault.statuscode != Status::None {
        return Err(to_fault(&fault));
    }
    let walkstate = outcome.walkstate;
    Ok(Translation {
        oa: OutputAddr::new(stage_oa(ipa, walkparams.tgx, &walkstate)),
        level: walkstate.level as i8,
        size_bits: translation_size(walkparams.tgx, walkstate.level) as u32,
        perms: output_permissions(&walkstate.permissions),
        memattr: walkstate.memattrs as u8,
        descriptor: outcome.descriptor,
        descriptor_addr: OutputAddr::new(outcome.descaddress),
    })
}

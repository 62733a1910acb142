#!/usr/bin/env python3
"""Writes the hand-made `capvisor s2walk` cases (*.json) from symbolic descriptors.

Only the inputs are generated; each *.expected.jsonl was written by hand from the Arm ARM
pseudocode (see the case names and docs/s2walk.md) and is what the CLI test compares against.
Run from this directory: python3 make_cases.py
"""
import json

AF = 1 << 10
RW, RO, WO = 3 << 6, 1 << 6, 2 << 6
WB = 0xF << 2
T = P = 3  # table (levels < 3) and page (level 3) descriptors
B = 1  # block descriptor
XN0, XN1 = 1 << 53, 1 << 54


def region(base, entries, size=None):
    top = max(entries) + 8 if size is None else size
    b = bytearray(top)
    for off, v in entries.items():
        b[off:off + 8] = v.to_bytes(8, "little")
    return {"base": hex(base), "hex": b.hex()}


def vtcr(t0sz, sl0, tg0, ps, extra=0):
    return hex(t0sz | sl0 << 6 | tg0 << 14 | ps << 16 | extra)


def case(name, v, ttb, pa, mem, ipa, acc):
    return {"name": name, "vtcr": v, "vttbr": hex(ttb), "pa_bits": pa, "memory": mem,
            "ipa": hex(ipa), "access": acc}


def write(path, cases):
    with open(path, "w") as f:
        json.dump(cases, f, indent=1)
        f.write("\n")


# 4KB: 48-bit IPA from level 0 (SL0=0b10), PS 48; L0 at 0x1000, L1 0x2000, L2 0x3000, L3 0x4000.
V4 = vtcr(16, 2, 0, 5)
IPA4 = (1 << 39) | (2 << 30) | (3 << 21) | (4 << 12) | 0x567


def tree4(l0=0x2000 | T, l1=0x3000 | T, l2=0x4000 | T, l3=0x12345000 | AF | RW | WB | P, skip=()):
    regions = []
    for lvl, base, off, d in [(0, 0x1000, 8, l0), (1, 0x2000, 16, l1), (2, 0x3000, 24, l2),
                              (3, 0x4000, 32, l3)]:
        if lvl not in skip:
            regions.append(region(base, {off: d}))
    return regions


write("4k.json", [
    case("4k page, 4 levels", V4, 0x1000, 48, tree4(), IPA4, "read"),
    case("4k translation fault at level 1", V4, 0x1000, 48, tree4(l1=0), IPA4, "read"),
    case("4k translation fault at level 3: 0b01 reserved at level 3", V4, 0x1000, 48,
         tree4(l3=0x12345000 | AF | RW | B), IPA4, "read"),
    case("4k access flag fault at level 3", V4, 0x1000, 48, tree4(l3=0x12345000 | RW | P), IPA4,
         "write"),
    case("4k permission fault at level 3: write to read-only", V4, 0x1000, 48,
         tree4(l3=0x12345000 | AF | RO | P), IPA4, "write"),
    case("4k external abort at level 2: level 2 table outside memory", V4, 0x1000, 48,
         tree4(skip=(2,)), IPA4, "read"),
    case("4k external abort at level 0: VTTBR outside memory", V4, 0x9000, 48, tree4(), IPA4,
         "read"),
    case("4k address size fault at level 0: base above the 40-bit PS, start level 1",
         vtcr(25, 1, 0, 2), 1 << 40, 48, tree4(), 0x1000, "read"),
    case("4k address size fault at level 1: table descriptor above the 40-bit PS",
         vtcr(16, 2, 0, 2), 0x1000, 48, tree4(l1=(1 << 44) | T), IPA4, "read"),
    case("4k address size fault at level 3: page above the 40-bit PS", vtcr(16, 2, 0, 2),
         0x1000, 48, tree4(l3=(1 << 41) | AF | RW | P), IPA4, "read"),
    case("4k invalid SL0: a level 0 start needs PAMax >= 44", vtcr(24, 2, 0, 2), 0x1000, 40,
         tree4(), 0x1000, "read"),
    case("4k inconsistent SL0: a 39-bit IPA cannot start at level 0", vtcr(25, 2, 0, 5), 0x1000,
         48, tree4(), 0x1000, "read"),
    case("4k IPA above the input size", V4, 0x1000, 48, tree4(), 1 << 48, "read"),
    case("4k 2MB block at level 2, XN[1:0]=0b01: EL0 may fetch", V4, 0x1000, 48,
         tree4(l2=0x40000000 | AF | RW | WB | XN0 | B), IPA4, "exec_el0"),
    case("4k 1GB block at level 1, XN[1:0]=0b01: EL1 may not fetch", V4, 0x1000, 48,
         tree4(l1=0x40000000 | AF | RW | WB | XN0 | B), IPA4, "exec_el1"),
    case("4k permission fault at level 2: instruction fetch from Device memory, XN clear", V4,
         0x1000, 48, tree4(l2=0x40000000 | AF | RW | (0x1 << 2) | B), IPA4, "exec_el1"),
    case("4k 1GB block at level 1, AF clear but VTCR.HA set", vtcr(16, 2, 0, 5, 1 << 21), 0x1000,
         48, tree4(l1=0x40000000 | RO | B), IPA4, "read"),
])

# 16KB: 36-bit IPA from level 2 (SL0=0b01), PS 48; L2 at 0x4000 (idx ipa[35:25]), L3 at 0x8000.
V16 = vtcr(28, 1, 2, 5)
IPA16 = (3 << 25) | (5 << 14) | 0x1234


def tree16(l2=0x8000 | T, l3=0x77000000 | AF | RW | WB | P, skip=()):
    regions = []
    if 2 not in skip:
        regions.append(region(0x4000, {24: l2}))
    if 3 not in skip:
        regions.append(region(0x8000, {40: l3}))
    return regions


write("16k.json", [
    case("16k page", V16, 0x4000, 48, tree16(), IPA16, "read"),
    case("16k 32MB block at level 2", V16, 0x4000, 48,
         tree16(l2=0x60000000 | AF | RW | (0x5 << 2) | B), IPA16, "write"),
    case("16k translation fault at level 2", V16, 0x4000, 48, tree16(l2=0), IPA16, "read"),
    case("16k access flag fault at level 2", V16, 0x4000, 48, tree16(l2=0x60000000 | RW | B),
         IPA16, "read"),
    case("16k permission fault at level 3: XN forbids an EL1 fetch", V16, 0x4000, 48,
         tree16(l3=0x77000000 | AF | RW | WB | XN1 | P), IPA16, "exec_el1"),
    case("16k external abort at level 3", V16, 0x4000, 48, tree16(skip=(3,)), IPA16, "read"),
    case("16k level 1 block needs DS: translation fault at level 1", vtcr(17, 2, 2, 5), 0x4000, 48,
         [region(0x4000, {0: 0x40000000 | AF | RW | B})], 0x123, "read"),
])

# 64KB: 42-bit IPA from level 2 (SL0=0b01), PS 48; L2 at 0x10000 (idx ipa[41:29]), L3 0x20000.
V64 = vtcr(22, 1, 1, 5)
IPA64 = (7 << 29) | (9 << 16) | 0xABC


def tree64(l2=0x20000 | T, l3=0x500000000 | AF | RW | WB | P, skip=()):
    regions = []
    if 2 not in skip:
        regions.append(region(0x10000, {56: l2}))
    if 3 not in skip:
        regions.append(region(0x20000, {72: l3}))
    return regions


write("64k.json", [
    case("64k page", V64, 0x10000, 48, tree64(), IPA64, "read"),
    case("64k 512MB block at level 2", V64, 0x10000, 48, tree64(l2=0x40000000 | AF | RW | WB | B),
         IPA64, "exec_el1"),
    case("64k translation fault at level 3: 0b01 reserved", V64, 0x10000, 48,
         tree64(l3=0x500000000 | AF | RW | B), IPA64, "read"),
    case("64k address size fault at level 2: descriptor bits [15:12] are OA[51:48]", V64,
         0x10000, 48, tree64(l2=0x40000000 | (1 << 12) | AF | RW | B), IPA64, "read"),
    case("64k 52-bit output: the same block with PAMax 52 and PS 52", vtcr(22, 1, 1, 6), 0x10000,
         52, tree64(l2=0x40000000 | (1 << 12) | AF | RW | B), IPA64, "read"),
    case("64k access flag fault at level 3", V64, 0x10000, 48, tree64(l3=0x500000000 | RW | P),
         IPA64, "read"),
    case("64k external abort at level 3", V64, 0x10000, 48, tree64(skip=(3,)), IPA64, "read"),
    case("64k permission fault at level 2: read of a write-only block", V64, 0x10000, 48,
         tree64(l2=0x40000000 | AF | WO | B), IPA64, "read"),
])

# FEAT_LPA2, 4KB: DS=1, SL2=1, SL0=0 starts at level -1; 52-bit IPA (T0SZ 12); L-1 at 0x10000.
DS_SL2 = (1 << 32) | (1 << 33)
VL = vtcr(12, 0, 0, 6, DS_SL2)
IPAL = (5 << 48) | (1 << 39) | 0x123
write("lpa2.json", [
    case("lpa2 external abort at level -1", VL, 0x10000, 52, [], IPAL, "read"),
    case("lpa2 translation fault at level -1", VL, 0x10000, 52, [region(0x10000, {0: 0}, 0x1000)],
         IPAL, "read"),
    case("lpa2 address size fault at level -1: table above the 48-bit PS", vtcr(12, 0, 0, 5, DS_SL2),
         0x10000, 52, [region(0x10000, {40: 0x20000 | (1 << 8) | T})], IPAL, "read"),
    case("lpa2 512GB block at level 0 above 2^50", VL, 0x10000, 52,
         [region(0x10000, {40: 0x20000 | T}), region(0x20000, {8: (3 << 39) | (2 << 8) | AF | RW | B})],
         IPAL, "read"),
    case("lpa2 level -1 is invalid on a 48-bit machine", VL, 0x10000, 48, [], IPAL, "read"),
])

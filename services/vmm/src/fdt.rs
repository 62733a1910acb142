//! A minimal flattened device tree (Devicetree Specification v0.4, chapter 5 "Flattened
//! Devicetree (DTB) Format"), for a guest whose manifest gives none: what the guest contract
//! (`docs/guests.md`) promises — RAM, CPUs, PSCI by HVC, the GICv3 (distributor and one
//! redistributor per vCPU, `vgic.rs`), the architected timer's PPIs, the console (PL011 at
//! `0x0900_0000` with its clock and SPI), and `/chosen`. The GIC and timer nodes follow the
//! Linux bindings `arm,gic-v3` and `arm,armv8-timer`; the layout is QEMU `virt`'s.

use crate::vgic;

/// The console's IPA (the PL011 UART of QEMU `virt`).
pub const UART_BASE: u64 = 0x0900_0000;
/// Bytes of the console's register page.
pub const UART_SIZE: u64 = 0x1000;
/// The largest tree written: about 2 KiB for 8 vCPUs, plus the command line.
pub const MAX_FDT: usize = 3072 + capvisor_image::MAX_CMDLINE + 1;
/// The GIC's phandle.
const GIC_PHANDLE: u32 = 1;
/// The console's clock's phandle.
const CLOCK_PHANDLE: u32 = 2;
/// Interrupt specifier cells (`arm,gic-v3`): type (0 SPI, 1 PPI), number, flags (4: level high).
const SPI: u32 = 0;
const PPI: u32 = 1;
const LEVEL_HIGH: u32 = 4;
/// The console's SPI (INTID 33 on QEMU `virt`).
pub const UART_SPI: u32 = 1;

const MAGIC: u32 = 0xd00d_feed;
const BEGIN_NODE: u32 = 1;
const END_NODE: u32 = 2;
const PROP: u32 = 3;
const END: u32 = 9;
const HEADER: usize = 40;
const RESERVE_MAP: usize = 16;

/// A tree under construction: the structure block and the strings block.
struct Builder {
    structure: heapless::Vec<u8, MAX_FDT>,
    strings: heapless::Vec<u8, 512>,
    full: bool,
}

impl Builder {
    fn word(&mut self, value: u32) {
        self.bytes(&value.to_be_bytes());
    }

    fn bytes(&mut self, bytes: &[u8]) {
        self.full |= self.structure.extend_from_slice(bytes).is_err();
    }

    fn pad(&mut self) {
        while !self.structure.len().is_multiple_of(4) {
            self.bytes(&[0]);
        }
    }

    fn begin(&mut self, name: &str) {
        self.word(BEGIN_NODE);
        self.bytes(name.as_bytes());
        self.bytes(&[0]);
        self.pad();
    }

    fn end(&mut self) {
        self.word(END_NODE);
    }

    /// The offset of `name` in the strings block (added once).
    fn string(&mut self, name: &str) -> u32 {
        let needle = name.as_bytes();
        let mut offset = 0;
        for piece in self.strings.split(|&b| b == 0) {
            if piece == needle && offset < self.strings.len() {
                return offset as u32;
            }
            offset += piece.len() + 1;
        }
        let at = self.strings.len() as u32;
        self.full |= self.strings.extend_from_slice(needle).is_err();
        self.full |= self.strings.push(0).is_err();
        at
    }

    fn property(&mut self, name: &str, value: &[u8]) {
        self.bytes_property(name, &[value]);
    }

    fn cells(&mut self, name: &str, cells: &[u32]) {
        let mut value: heapless::Vec<u8, 64> = heapless::Vec::new();
        for cell in cells {
            self.full |= value.extend_from_slice(&cell.to_be_bytes()).is_err();
        }
        self.property(name, &value);
    }

    /// A string list property: `strings` holds each string followed by its NUL.
    fn text(&mut self, name: &str, strings: &str) {
        self.property(name, strings.as_bytes());
    }

    /// A property whose value is `pieces` one after another.
    fn bytes_property(&mut self, name: &str, pieces: &[&[u8]]) {
        let offset = self.string(name);
        let len: usize = pieces.iter().map(|p| p.len()).sum();
        self.word(PROP);
        self.word(len as u32);
        self.word(offset);
        for piece in pieces {
            self.bytes(piece);
        }
        self.pad();
    }
}

/// `value` as two cells (high, low).
const fn split(value: u64) -> [u32; 2] {
    [(value >> 32) as u32, value as u32]
}

/// What `/chosen` says besides the console (Linux `Documentation/devicetree/bindings/chosen.txt`
/// and the Devicetree Specification v0.4, 3.6).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Chosen<'a> {
    /// `bootargs`: the kernel command line.
    pub bootargs: &'a str,
    /// `linux,initrd-start` and `linux,initrd-end` (the first byte after it).
    pub initrd: Option<(u64, u64)>,
}

/// Writes the tree for a guest with `vcpus` vCPUs and RAM `[ram_base, ram_base + ram_size)` into
/// `out`; returns its size, or `None` if it does not fit.
pub fn write(
    out: &mut [u8],
    (ram_base, ram_size): (u64, u64),
    vcpus: u32,
    chosen: &Chosen<'_>,
) -> Option<usize> {
    let mut tree = Builder {
        structure: heapless::Vec::new(),
        strings: heapless::Vec::new(),
        full: false,
    };
    tree.begin("");
    tree.cells("#address-cells", &[2]);
    tree.cells("#size-cells", &[2]);
    tree.cells("interrupt-parent", &[GIC_PHANDLE]);
    tree.text("compatible", "linux,dummy-virt\0");
    tree.text("model", "capvisor guest\0");

    let mut name: heapless::String<40> = heapless::String::new();
    let _ = core::fmt::write(&mut name, format_args!("memory@{ram_base:x}"));
    tree.begin(&name);
    tree.text("device_type", "memory\0");
    let [base_high, base_low] = split(ram_base);
    let [size_high, size_low] = split(ram_size);
    tree.cells("reg", &[base_high, base_low, size_high, size_low]);
    tree.end();

    tree.begin("cpus");
    tree.cells("#address-cells", &[1]);
    tree.cells("#size-cells", &[0]);
    for cpu in 0..vcpus {
        name.clear();
        let _ = core::fmt::write(&mut name, format_args!("cpu@{cpu:x}"));
        tree.begin(&name);
        tree.text("device_type", "cpu\0");
        tree.text("compatible", "arm,armv8\0");
        tree.cells("reg", &[cpu]);
        tree.text("enable-method", "psci\0");
        tree.end();
    }
    tree.end();

    tree.begin("psci");
    tree.text("compatible", "arm,psci-1.0\0arm,psci-0.2\0");
    tree.text("method", "hvc\0");
    tree.end();

    name.clear();
    let _ = core::fmt::write(&mut name, format_args!("intc@{:x}", vgic::GICD_BASE));
    tree.begin(&name);
    tree.text("compatible", "arm,gic-v3\0");
    tree.cells("#interrupt-cells", &[3]);
    tree.property("interrupt-controller", &[]);
    tree.cells("#redistributor-regions", &[1]);
    let [gicd_high, gicd_low] = split(vgic::GICD_BASE);
    let [gicr_high, gicr_low] = split(vgic::GICR_BASE);
    let redistributors = vgic::GICR_STRIDE as u32 * vcpus;
    let gicd_size = vgic::GICD_SIZE as u32;
    let reg = [
        gicd_high,
        gicd_low,
        0,
        gicd_size,
        gicr_high,
        gicr_low,
        0,
        redistributors,
    ];
    tree.cells("reg", &reg);
    tree.cells("phandle", &[GIC_PHANDLE]);
    tree.end();

    // Secure and non-secure physical, virtual, hypervisor timers: PPIs 13, 14, 11, 10.
    tree.begin("timer");
    tree.text("compatible", "arm,armv8-timer\0");
    let ppis = [13, 14, 11, 10].map(|ppi| [PPI, ppi, LEVEL_HIGH]);
    tree.cells("interrupts", ppis.as_flattened());
    tree.property("always-on", &[]);
    tree.end();

    tree.begin("apb-pclk");
    tree.text("compatible", "fixed-clock\0");
    tree.cells("#clock-cells", &[0]);
    tree.cells("clock-frequency", &[24_000_000]);
    tree.text("clock-output-names", "clk24mhz\0");
    tree.cells("phandle", &[CLOCK_PHANDLE]);
    tree.end();

    tree.begin("pl011@9000000");
    tree.text("compatible", "arm,pl011\0arm,primecell\0");
    let [uart_high, uart_low] = split(UART_BASE);
    tree.cells("reg", &[uart_high, uart_low, 0, UART_SIZE as u32]);
    tree.cells("interrupts", &[SPI, UART_SPI, LEVEL_HIGH]);
    tree.cells("clocks", &[CLOCK_PHANDLE, CLOCK_PHANDLE]);
    tree.text("clock-names", "uartclk\0apb_pclk\0");
    tree.end();

    tree.begin("chosen");
    tree.bytes_property("bootargs", &[chosen.bootargs.as_bytes(), b"\0"]);
    tree.text("stdout-path", "/pl011@9000000\0");
    if let Some((start, end)) = chosen.initrd {
        tree.cells("linux,initrd-start", &split(start));
        tree.cells("linux,initrd-end", &split(end));
    }
    tree.end();

    tree.end();
    tree.word(END);
    if tree.full {
        return None;
    }

    let structure_at = HEADER + RESERVE_MAP;
    let strings_at = structure_at + tree.structure.len();
    let total = strings_at + tree.strings.len();
    let out = out.get_mut(..total)?;
    out.fill(0);
    let header = [
        MAGIC,
        total as u32,
        structure_at as u32,
        strings_at as u32,
        HEADER as u32,
        17,
        16,
        0,
        tree.strings.len() as u32,
        tree.structure.len() as u32,
    ];
    for (n, word) in header.iter().enumerate() {
        out[n * 4..n * 4 + 4].copy_from_slice(&word.to_be_bytes());
    }
    out[structure_at..strings_at].copy_from_slice(&tree.structure);
    out[strings_at..total].copy_from_slice(&tree.strings);
    Some(total)
}

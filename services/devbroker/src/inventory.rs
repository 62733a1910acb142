//! The inventory of the platform's devices: every device-tree node with registers or interrupts,
//! minus what the kernel keeps for itself (its console UART, the GIC and its children, the
//! generic timer), read from the copy of the device tree the kernel gives the broker.
//!
//! The device tree is the platform's (firmware or QEMU), which the kernel parsed at boot with the
//! same crate before copying it here; it is parsed once, here, by the `fdt` crate. A truncated or
//! wrongly headed blob is an error; note that `fdt` 0.1.5 panics on some corrupt string offsets
//! inside a well-headed blob, so a hostile device tree would stop the broker (never the kernel,
//! which checks the blob first). Interrupts are read
//! from `interrupts` with the GICv3 binding's three cells (type, number, flags: SPI `n` is INTID
//! `n + 32`, PPI `n` is INTID `n + 16`; IHI 0069 2.2); other encodings are not listed. Registers
//! are the nodes' `reg` as the `fdt` crate reads them with their parent's cell sizes (no `ranges`
//! translation: QEMU `virt` puts its devices at the root).

use core::fmt;

use fdt::Fdt;
use fdt::node::FdtNode;

/// The most register ranges and interrupts listed per node.
pub const MAX_RANGES: usize = 4;
/// The most interrupts listed per node.
pub const MAX_IRQS: usize = 8;

/// What the kernel keeps for itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kept {
    /// Its console UART (`/chosen/stdout-path`, else the first `arm,pl011`).
    Console,
    /// The interrupt controller and its children (e.g. the ITS).
    Gic,
    /// The generic timer (its PPIs).
    Timer,
}

/// One device node (or a run of alike nodes, e.g. QEMU's 32 `virtio,mmio` transports).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device<'a> {
    /// The node name (the first of a run).
    pub name: &'a str,
    /// Its first `compatible` string ("" if none).
    pub compatible: &'a str,
    /// Its register ranges (base, size).
    pub ranges: heapless::Vec<(u64, u64), MAX_RANGES>,
    /// Its interrupts as INTIDs.
    pub irqs: heapless::Vec<u32, MAX_IRQS>,
    /// How many alike nodes this line stands for (1 for a single node).
    pub count: u32,
    /// The size of each alike node's one register range (0 when the node has several).
    pub unit: u64,
    /// The kernel keeps it.
    pub kept: Option<Kept>,
}

impl Device<'_> {
    /// The lowest base and highest end of its ranges.
    #[must_use]
    pub fn span(&self) -> Option<(u64, u64)> {
        let start = self.ranges.iter().map(|r| r.0).min()?;
        let end = self.ranges.iter().map(|r| r.0.saturating_add(r.1)).max()?;
        Some((start, end))
    }

    /// Whether `base..base + size` lies within one of its ranges.
    #[must_use]
    pub fn covers(&self, base: u64, size: u64) -> bool {
        self.ranges
            .iter()
            .any(|&(b, s)| base >= b && base.saturating_add(size) <= b.saturating_add(s))
    }

    /// Whether `other` continues a run of alike nodes with this one (same compatible, one
    /// range each of the same size, no more than one interrupt each).
    fn joins(&self, other: &Device<'_>) -> bool {
        self.kept.is_none()
            && other.kept.is_none()
            && !self.compatible.is_empty()
            && self.compatible == other.compatible
            && self.unit != 0
            && other.ranges.len() == 1
            && other.ranges[0].1 == self.unit
            && other.irqs.len() <= 1
    }

    /// Adds alike node `other` to this run.
    fn merge(&mut self, other: &Device<'_>) {
        if self.ranges.push(other.ranges[0]).is_err() {
            // Keep the span only: a run is shown by its span.
            let (start, end) = self.span().unwrap_or((0, 0));
            let (other_start, other_size) = other.ranges[0];
            self.ranges.clear();
            let (start, end) = (start.min(other_start), end.max(other_start + other_size));
            let _ = self.ranges.push((start, end - start));
        }
        for &irq in &other.irqs {
            if self.irqs.push(irq).is_err() {
                let low = self.irqs.iter().copied().chain([irq]).min().unwrap_or(irq);
                let high = self.irqs.iter().copied().chain([irq]).max().unwrap_or(irq);
                self.irqs.clear();
                let _ = self.irqs.push(low);
                let _ = self.irqs.push(high);
            }
        }
        self.count += 1;
    }
}

/// Reads the device tree `dtb` and calls `visit` with each device, alike neighbours merged into
/// one [`Device`] with a `count` (their span and interrupts' range then cover them all).
///
/// # Errors
/// The `fdt` crate's error for a malformed device tree.
pub fn scan<'a>(dtb: &'a [u8], mut visit: impl FnMut(&Device<'a>)) -> Result<(), fdt::FdtError> {
    let fdt = Fdt::new(dtb)?;
    let console = console(&fdt).map(|node| node.name);
    let mut pending: Option<Device<'a>> = None;
    let Some(root) = fdt.find_node("/") else {
        return Ok(());
    };
    for node in root.children() {
        walk(node, 0, console, &mut |device| match &mut pending {
            Some(run) if run.joins(&device) => run.merge(&device),
            _ => {
                if let Some(done) = pending.replace(device) {
                    visit(&done);
                }
            }
        });
    }
    if let Some(done) = pending {
        visit(&done);
    }
    Ok(())
}

/// Whether the device whose registers cover `base..base + size` in the device tree `dtb` may
/// master the bus: true unless its first `compatible` string is one of the devices known not to
/// (`capvisor_image::devices::NO_BUS_MASTER`). A region no device covers, or a device tree that
/// does not parse, counts as one that may: the safe answer.
#[must_use]
pub fn masters_bus(dtb: &[u8], base: u64, size: u64) -> bool {
    let mut masters = true;
    let _ = scan(dtb, |device| {
        if device.covers(base, size) {
            masters =
                !capvisor_image::devices::cannot_master_bus(core::iter::once(device.compatible));
        }
    });
    masters
}

fn console<'b, 'a>(fdt: &'b Fdt<'a>) -> Option<FdtNode<'b, 'a>> {
    let is_pl011 = |n: &FdtNode<'_, '_>| {
        n.compatible()
            .is_some_and(|c| c.all().any(|s| s == "arm,pl011"))
    };
    fdt.find_node("/chosen")
        .and_then(|c| c.property("stdout-path"))
        .and_then(|p| p.as_str())
        .map(|path| path.split(':').next().unwrap_or(path))
        .and_then(|path| fdt.find_node(path))
        .filter(is_pl011)
        .or_else(|| fdt.find_compatible(&["arm,pl011"]))
}

/// The nodes that are not devices: CPUs, memory, the firmware interfaces without registers.
fn skipped(node: &FdtNode<'_, '_>) -> bool {
    let memory = node
        .property("device_type")
        .and_then(|p| p.as_str())
        .is_some_and(|t| t == "memory" || t == "cpu");
    memory || matches!(node.name, "cpus" | "chosen" | "aliases" | "reserved-memory")
}

fn walk<'b, 'a>(
    node: FdtNode<'b, 'a>,
    depth: usize,
    console: Option<&str>,
    emit: &mut dyn FnMut(Device<'a>),
) {
    if skipped(&node) || depth > 8 {
        return;
    }
    let compatible = node.compatible().map_or("", |c| c.first());
    let all = |name: &str| {
        node.compatible()
            .is_some_and(|c| c.all().any(|s| s == name))
    };
    let kept = if console == Some(node.name) {
        Some(Kept::Console)
    } else if all("arm,gic-v3") || all("arm,cortex-a15-gic") || all("arm,gic-400") {
        Some(Kept::Gic)
    } else if all("arm,armv8-timer") || all("arm,armv7-timer") {
        Some(Kept::Timer)
    } else {
        None
    };
    let mut ranges = heapless::Vec::new();
    for reg in node.reg().into_iter().flatten() {
        let size = reg.size.unwrap_or(0) as u64;
        if size != 0 {
            let _ = ranges.push((reg.starting_address as u64, size));
        }
    }
    let irqs = interrupts(&node);
    if !ranges.is_empty() || !irqs.is_empty() {
        let unit = if ranges.len() == 1 { ranges[0].1 } else { 0 };
        emit(Device {
            unit,
            name: node.name,
            compatible,
            ranges,
            irqs,
            count: 1,
            kept,
        });
    }
    // The GIC's children (the ITS) are the GIC's; the others' children are devices of their own.
    if kept != Some(Kept::Gic) {
        for child in node.children() {
            walk(child, depth + 1, console, emit);
        }
    }
}

/// A node's interrupts in the GICv3 binding (three cells each), as INTIDs.
fn interrupts(node: &FdtNode<'_, '_>) -> heapless::Vec<u32, MAX_IRQS> {
    let mut irqs = heapless::Vec::new();
    let Some(value) = node.property("interrupts").map(|p| p.value) else {
        return irqs;
    };
    if value.len() % 12 != 0 {
        return irqs;
    }
    for spec in value.chunks_exact(12) {
        let cell = |i: usize| u32::from_be_bytes([spec[i], spec[i + 1], spec[i + 2], spec[i + 3]]);
        let intid = match cell(0) {
            0 => cell(4).checked_add(32),
            1 => cell(4).checked_add(16),
            _ => None,
        };
        if let Some(intid) = intid {
            let _ = irqs.push(intid);
        }
    }
    irqs
}

impl fmt::Display for Device<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name)?;
        if self.count > 1 {
            write!(f, " (+{} alike)", self.count - 1)?;
        }
        if !self.compatible.is_empty() {
            write!(f, " [{}]", self.compatible)?;
        }
        if self.count > 1 {
            if let Some((start, end)) = self.span() {
                write!(f, " {start:#x}..{end:#x}")?;
            }
        } else {
            for &(base, size) in &self.ranges {
                write!(f, " {base:#x}..{:#x}", base.saturating_add(size))?;
            }
        }
        match (self.irqs.iter().min(), self.irqs.iter().max()) {
            (Some(low), Some(high)) if self.count > 1 && low != high => {
                write!(f, " irqs {low}..={high}")?;
            }
            _ if !self.irqs.is_empty() => {
                f.write_str(" irq")?;
                for irq in &self.irqs {
                    write!(f, " {irq}")?;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

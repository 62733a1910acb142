//! What the kernel takes from the device tree: memory, console, GIC, timer, PSCI, CPUs and the
//! command line. A device tree that lacks something needed is an error naming it, never a panic.

use crate::arch::boot::MAX_CPUS;
use capvisor_kernel::platform::GicVersion;
use core::fmt;
use fdt::Fdt;
use heapless::Vec;

/// A physical address range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// First byte.
    pub base: usize,
    /// Length in bytes.
    pub size: usize,
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}..{:#x}", self.base, self.base + self.size)
    }
}

/// How PSCI is called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PsciMethod {
    /// SMC (the only one usable from EL2: HVC would trap to ourselves).
    Smc,
    /// HVC.
    Hvc,
}

/// The platform as the device tree describes it.
#[derive(Debug)]
pub struct Description {
    /// RAM regions.
    pub memory: Vec<Region, 8>,
    /// The console PL011.
    pub uart: Region,
    /// GIC version.
    pub gic: GicVersion,
    /// GIC distributor.
    pub gicd: Option<Region>,
    /// GIC redistributors (v3).
    pub gicr: Option<Region>,
    /// Generic timer PPIs: secure, non-secure physical, virtual, hypervisor (as listed).
    pub timer_irqs: Vec<u32, 5>,
    /// PSCI conduit.
    pub psci: PsciMethod,
    /// The CPUs' MPIDR affinity values, boot CPU included.
    pub cpus: Vec<u64, MAX_CPUS>,
    /// `/chosen/bootargs`.
    pub bootargs: &'static str,
    /// Memory the boot loader or firmware keeps (`/memreserve/` entries and `/reserved-memory`
    /// children); the kernel never allocates from it.
    pub reserved: Vec<Region, 16>,
    /// The whole blob: its device regions ([`Description::device_regions`]) and init's copy.
    pub blob: &'static [u8],
}

/// The most device regions handed to init.
pub const MAX_DEVICE_REGIONS: usize = 96;

/// What is wrong with a device tree.
#[derive(Clone, Copy, Debug)]
pub enum Error {
    /// The header is not a flattened device tree.
    Header(fdt::FdtError),
    /// A required node or property is missing or malformed.
    Missing(&'static str),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Header(e) => write!(f, "not a valid flattened device tree: {e:?}"),
            Self::Missing(what) => write!(f, "device tree has no usable {what}"),
        }
    }
}

fn first_reg(node: fdt::node::FdtNode<'_, '_>) -> Option<Region> {
    let reg = node.reg()?.next()?;
    Some(Region {
        base: reg.starting_address as usize,
        size: reg.size?,
    })
}

fn nth_reg(node: fdt::node::FdtNode<'_, '_>, n: usize) -> Option<Region> {
    let reg = node.reg()?.nth(n)?;
    Some(Region {
        base: reg.starting_address as usize,
        size: reg.size?,
    })
}

impl Description {
    /// Reads the device tree in `blob`.
    ///
    /// # Errors
    ///
    /// [`Error`] naming the first thing missing.
    pub fn parse(blob: &'static [u8]) -> Result<Self, Error> {
        let fdt = Fdt::new(blob).map_err(Error::Header)?;
        let mut memory = Vec::new();
        for node in fdt
            .all_nodes()
            .filter(|n| n.property("device_type").and_then(|p| p.as_str()) == Some("memory"))
        {
            for reg in node.reg().into_iter().flatten() {
                if let Some(size) = reg.size.filter(|&s| s > 0) {
                    let _ = memory.push(Region {
                        base: reg.starting_address as usize,
                        size,
                    });
                }
            }
        }
        if memory.is_empty() {
            return Err(Error::Missing("memory node (device_type = \"memory\")"));
        }
        let chosen = fdt.find_node("/chosen");
        let stdout = chosen
            .and_then(|c| c.property("stdout-path"))
            .and_then(|p| p.as_str())
            .map(|path| path.split(':').next().unwrap_or(path))
            .and_then(|path| fdt.find_node(path))
            .filter(|n| {
                n.compatible()
                    .is_some_and(|c| c.all().any(|s| s == "arm,pl011"))
            });
        let uart = stdout
            .or_else(|| fdt.find_compatible(&["arm,pl011"]))
            .and_then(first_reg)
            .ok_or(Error::Missing("PL011 console (compatible \"arm,pl011\")"))?;
        let (gic, gicd, gicr) = if let Some(node) = fdt.find_compatible(&["arm,gic-v3"]) {
            (GicVersion::V3, first_reg(node), nth_reg(node, 1))
        } else if let Some(node) =
            fdt.find_compatible(&["arm,cortex-a15-gic", "arm,gic-400", "arm,cortex-a9-gic"])
        {
            (GicVersion::V2, first_reg(node), None)
        } else {
            (GicVersion::None, None, None)
        };
        Ok(Self {
            memory,
            uart,
            gic,
            gicd,
            gicr,
            timer_irqs: timer_irqs(&fdt),
            psci: psci_method(&fdt)?,
            cpus: cpus(&fdt)?,
            bootargs: chosen
                .and_then(|c| c.property("bootargs"))
                .and_then(|p| p.as_str())
                .unwrap_or(""),
            reserved: reserved(&fdt),
            blob,
        })
    }

    /// Every device region of the board, page aligned, for init as device untyped: each `reg`
    /// range of every node that lies outside RAM and is not the kernel's own (console, GIC),
    /// cut at every node's page boundaries so that a node that shares pages with others (QEMU's
    /// virtio-mmio transports, 512 bytes apart) still has a region that is exactly its pages.
    /// Which device a manifest names is init's lookup, not the kernel's. At most
    /// [`MAX_DEVICE_REGIONS`] ranges are handed out (QEMU `virt` has about 45); a board with more
    /// has the rest refused by init as missing, by name.
    pub fn device_regions(&self) -> Vec<Region, MAX_DEVICE_REGIONS> {
        const PAGE: usize = 4096;
        let mut ranges: Vec<(usize, usize), MAX_DEVICE_REGIONS> = Vec::new();
        let Ok(fdt) = Fdt::new(self.blob) else {
            return Vec::new();
        };
        let own = [Some(self.uart), self.gicd, self.gicr];
        let taken = |start: usize, end: usize| {
            let overlaps = |r: &Region| start < r.base + r.size && r.base < end;
            self.memory.iter().chain(&self.reserved).any(overlaps)
                || own.iter().flatten().any(overlaps)
        };
        for node in fdt.all_nodes() {
            for reg in node.reg().into_iter().flatten() {
                let Some(size) = reg.size.filter(|&s| s > 0) else {
                    continue;
                };
                let start = reg.starting_address as usize & !(PAGE - 1);
                let Some(end) = (reg.starting_address as usize)
                    .checked_add(size)
                    .and_then(|e| e.checked_next_multiple_of(PAGE))
                else {
                    continue;
                };
                if !taken(start, end) && !ranges.contains(&(start, end)) {
                    let _ = ranges.push((start, end));
                }
            }
        }
        let mut cuts: Vec<usize, { 2 * MAX_DEVICE_REGIONS }> = Vec::new();
        for &(start, end) in &ranges {
            let _ = cuts.push(start);
            let _ = cuts.push(end);
        }
        cuts.sort_unstable();
        let mut regions = Vec::new();
        for pair in cuts.windows(2) {
            let (start, end) = (pair[0], pair[1]);
            if start < end && ranges.iter().any(|&(s, e)| s <= start && end <= e) {
                let _ = regions.push(Region {
                    base: start,
                    size: end - start,
                });
            }
        }
        regions
    }
}

fn reserved(fdt: &Fdt<'_>) -> Vec<Region, 16> {
    let mut regions = Vec::new();
    for entry in fdt.memory_reservations() {
        let _ = regions.push(Region {
            base: entry.address() as usize,
            size: entry.size(),
        });
    }
    if let Some(node) = fdt.find_node("/reserved-memory") {
        for child in node.children() {
            if let Some(region) = first_reg(child) {
                let _ = regions.push(region);
            }
        }
    }
    regions
}

fn timer_irqs(fdt: &Fdt<'_>) -> Vec<u32, 5> {
    let mut irqs = Vec::new();
    let Some(node) = fdt.find_compatible(&["arm,armv8-timer", "arm,armv7-timer"]) else {
        return irqs;
    };
    // Each GIC interrupt specifier is three cells: type (1 = PPI), number, flags.
    if let Some(prop) = node.property("interrupts") {
        for cells in prop.value.chunks_exact(12) {
            let number = u32::from_be_bytes([cells[4], cells[5], cells[6], cells[7]]);
            let _ = irqs.push(number + 16);
        }
    }
    irqs
}

fn psci_method(fdt: &Fdt<'_>) -> Result<PsciMethod, Error> {
    let node = fdt
        .find_compatible(&["arm,psci-1.0", "arm,psci-0.2", "arm,psci"])
        .or_else(|| fdt.find_node("/psci"))
        .ok_or(Error::Missing("PSCI node"))?;
    match node.property("method").and_then(|p| p.as_str()) {
        Some("smc") => Ok(PsciMethod::Smc),
        Some("hvc") => Ok(PsciMethod::Hvc),
        _ => Err(Error::Missing("PSCI method (\"smc\" or \"hvc\")")),
    }
}

fn cpus(fdt: &Fdt<'_>) -> Result<Vec<u64, MAX_CPUS>, Error> {
    let mut cpus = Vec::new();
    let Some(node) = fdt.find_node("/cpus") else {
        return Err(Error::Missing("/cpus node"));
    };
    for cpu in node.children() {
        if cpu.property("device_type").and_then(|p| p.as_str()) != Some("cpu") {
            continue;
        }
        let Some(reg) = cpu.property("reg") else {
            continue;
        };
        let mpidr = match reg.value.len() {
            4 => u64::from(u32::from_be_bytes(reg.value.try_into().unwrap_or([0; 4]))),
            8 => u64::from_be_bytes(reg.value.try_into().unwrap_or([0; 8])),
            _ => continue,
        };
        if cpus.push(mpidr).is_err() {
            break;
        }
    }
    if cpus.is_empty() {
        return Err(Error::Missing("CPU node under /cpus"));
    }
    Ok(cpus)
}

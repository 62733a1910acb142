//! The boot plan of a manifest (`capvisor_image::plan`): every object init creates, every
//! capability it places (slot, rights, badge), every mapping, every thread's configuration and
//! every grant, computed here at build time (seL4 Microkit's and capDL's way), so that the
//! kernel creates only init and init only follows the plan.
//!
//! The layout is the one the kernel used to make at boot, slot for slot, so services find what
//! they found before ([`layout`]). Steps come in this order: the carve-outs (in address order,
//! before anything else takes memory), `ram_identity` RAM, the manifest's devices, the services
//! (with their pages, stack and IPC buffer), the endpoint and untyped grants, the guests (VMs,
//! vCPUs and their threads, payloads), the devices' grants, the boot-info pages, the root's RAM
//! and last the threads' start.

mod layout;

use crate::image::device_records;
use capvisor_image::devices::{self, DeviceRecord};
use capvisor_image::plan::{
    self, INIT_CNODE, INIT_SPACE, IRQ_CONTROL, NONE, NameKind, Op, PAGES_CMDLINE, PlanHeader,
    PlanItem, PlanName, Purpose, RetypeKind, Step,
};
use capvisor_image::service::{
    ACCESS_READ, ACCESS_WRITE, IPC_BUFFER, PAGE, STACK_TOP, ServiceImage,
};
use capvisor_ipc::bootinfo::{BOOT_INFO, BootInfo, DeviceInfo, GuestInfo, VCPU_BADGE};
use capvisor_manifest::{Capability, Manifest};
use layout::{Window, vm_bits};
use zerocopy::FromZeros;

pub use layout::{PAYLOAD_IPA, ROOT_CNODE_BITS, SERVICE_CNODE_BITS, SERVICE_SPACE_BITS};

/// A payload entry the plan refers to: where it is in the payload, and its bytes.
#[derive(Clone, Copy, Debug)]
pub struct Placed<'a> {
    /// Its offset from the start of the payload.
    pub offset: u64,
    /// Its bytes.
    pub bytes: &'a [u8],
}

/// A guest's payload entries.
#[derive(Clone, Copy, Debug)]
pub struct GuestPayloads<'a> {
    /// The kernel.
    pub kernel: Placed<'a>,
    /// The device tree, if any.
    pub dtb: Option<Placed<'a>>,
    /// The initrd, if any.
    pub initrd: Option<Placed<'a>>,
    /// The command line, if any.
    pub cmdline: Option<Placed<'a>>,
}

/// What the plan is made from.
#[derive(Clone, Debug)]
pub struct Inputs<'a> {
    /// The manifest.
    pub manifest: &'a Manifest,
    /// Each manifest service's image entry, in manifest order.
    pub services: Vec<Placed<'a>>,
    /// The index among the image's service entries of the manifest's first service (1 when the
    /// SDK added init as the image's first, 0 when the manifest's first service is init).
    pub first_entry: u64,
    /// Each guest's payloads, in manifest order.
    pub guests: Vec<GuestPayloads<'a>>,
    /// Each service's boot-info entry offset (by manifest index; 0 for none, or before the
    /// image is laid out).
    pub boot_infos: Vec<u64>,
    /// The payload's size (before the plan: the plan is the last entry).
    pub payload_size: u64,
}

/// A plan, with the boot-info pages it refers to.
#[derive(Clone, Debug)]
pub struct Planned {
    /// Each service's boot-info page as far as the build knows it, by manifest index.
    pub boot_infos: Vec<Option<BootInfo>>,
    /// The encoded plan.
    pub plan: Vec<u8>,
}

/// What init must still write into a service's boot-info page once it exists.
#[derive(Clone, Copy, Debug)]
enum Patch {
    Device { region: u32, index: u64 },
    GuestRam { region: u32, index: u64 },
    Irqs { device: u32, dest: u64, guest: u64 },
    Dtb,
}

/// One manifest service as the plan makes it.
#[derive(Clone, Debug)]
struct Service {
    owner: u32,
    /// Its CNode, space and thread (plan slots; init's own when it is init).
    cnode: u32,
    space: u32,
    thread: u32,
    window: Window,
    /// The first slot after its frames (its free range starts there).
    frames_end: u64,
    /// Its untyped grants' slots.
    untyped: Vec<u64>,
    /// `granted[target]`: its slot of service `target`'s endpoint (0: none).
    granted: Vec<u64>,
    /// Where its next guest payload goes, from [`PAYLOAD_IPA`]; where its next command line.
    next_payload: u64,
    next_cmdline: u64,
}

struct Planner<'a> {
    inputs: &'a Inputs<'a>,
    records: Vec<DeviceRecord>,
    names: Vec<PlanName>,
    items: Vec<PlanItem>,
    strings: Vec<u8>,
    next_slot: u32,
    scratch: Option<u32>,
    supervised: bool,
    services: Vec<Service>,
    endpoints: Vec<Option<u32>>,
    infos: Vec<Option<BootInfo>>,
    patches: Vec<Vec<Patch>>,
    regions: Vec<u32>,
    identity: Vec<Option<u32>>,
    vms: Vec<u32>,
}

/// The boot plan of `inputs`.
///
/// # Errors
/// What cannot be planned (a grant window or init's CNode too small, a carve-out that is not a
/// power of two aligned to its size), naming the manifest item.
pub fn plan(inputs: &Inputs<'_>, supervised: bool) -> Result<Planned, String> {
    let manifest = inputs.manifest;
    let mut planner = Planner::new(inputs, supervised)?;
    planner.carveouts()?;
    planner.identity_ram();
    planner.devices();
    if supervised {
        planner.endpoint(0)?;
    }
    for index in 0..manifest.services.len() {
        planner.service(index)?;
    }
    planner.grants()?;
    for index in 0..manifest.guests.len() {
        planner.guest(index)?;
    }
    planner.device_grants()?;
    planner.boot_info_pages();
    planner.root_memory();
    planner.start();
    planner.finish()
}

const ALL: u64 = 0b1_1111;
const WRITE: u64 = 0b10;
const GRANT: u64 = 0b1000;

impl<'a> Planner<'a> {
    fn new(inputs: &'a Inputs<'a>, supervised: bool) -> Result<Self, String> {
        let manifest = inputs.manifest;
        let mut names: Vec<PlanName> = manifest
            .services
            .iter()
            .map(|s| PlanName::new(NameKind::Service, &s.name, s.line))
            .collect();
        names.extend(
            manifest
                .guests
                .iter()
                .map(|g| PlanName::new(NameKind::Guest, &g.name, g.line)),
        );
        names.extend(
            manifest
                .devices
                .iter()
                .map(|d| PlanName::new(NameKind::Device, &d.name, d.line)),
        );
        names.extend(
            manifest
                .carveouts
                .iter()
                .map(|c| PlanName::new(NameKind::Carveout, &c.name, c.line)),
        );
        if !supervised {
            names.push(PlanName::new(NameKind::Init, "init", 0));
        }
        let count = manifest.services.len();
        let services = (0..count)
            .map(|index| Service {
                owner: index as u32,
                cnode: INIT_CNODE,
                space: INIT_SPACE,
                thread: NONE,
                window: Window::of(index, supervised),
                frames_end: layout::FIRST_FRAME,
                untyped: Vec::new(),
                granted: vec![0; count],
                next_payload: 0,
                next_cmdline: PAGE,
            })
            .collect();
        Ok(Self {
            inputs,
            records: device_records(manifest)?,
            names,
            items: Vec::new(),
            strings: Vec::new(),
            next_slot: 0,
            scratch: None,
            supervised,
            services,
            endpoints: vec![None; count],
            infos: vec![None; count],
            patches: vec![Vec::new(); count],
            regions: Vec::new(),
            identity: vec![None; manifest.guests.len()],
            vms: Vec::new(),
        })
    }

    fn push(&mut self, op: Op<'_>, purpose: Purpose, owner: u32, strings: (u64, u64)) {
        let step = Step { op, purpose, owner };
        self.items.push(plan::encode_op(&step, strings));
    }

    fn step(&mut self, op: Op<'_>, purpose: Purpose, owner: u32) {
        self.push(op, purpose, owner, (0, 0));
    }

    /// A new plan slot, kept to the end.
    fn slot(&mut self) -> u32 {
        self.next_slot += 1;
        self.next_slot - 1
    }

    /// The plan slots pages use on their way to a service's CNode.
    fn scratch(&mut self) -> u32 {
        if let Some(scratch) = self.scratch {
            return scratch;
        }
        let scratch = self.next_slot;
        self.next_slot += layout::SCRATCH_SLOTS;
        self.scratch = Some(scratch);
        scratch
    }

    /// The owner index of manifest item `kind` number `index`.
    fn owner(&self, kind: NameKind, index: usize) -> u32 {
        let manifest = self.inputs.manifest;
        let (services, guests, devices) = (
            manifest.services.len(),
            manifest.guests.len(),
            manifest.devices.len(),
        );
        let base = match kind {
            NameKind::Service => 0,
            NameKind::Guest => services,
            NameKind::Device => services + guests,
            NameKind::Carveout => services + guests + devices,
            NameKind::Init => self.names.len() - 1,
        };
        (base + index) as u32
    }

    fn retype(&mut self, kind: RetypeKind, bits: u64, purpose: Purpose, owner: u32) -> u32 {
        let slot = self.slot();
        self.step(Op::Retype { slot, kind, bits }, purpose, owner);
        slot
    }

    /// The next free slot of service `index`'s grant window.
    fn window_slot(&mut self, index: usize) -> Result<u64, String> {
        let name = self.names[index].to_string();
        self.services[index]
            .window
            .take()
            .ok_or_else(|| format!("{name}: its capability window is full"))
    }

    /// Copies (or, with a badge, mints) `source` into service `index`'s next window slot, or
    /// into a new plan slot when the service is init itself; returns the slot.
    fn give(
        &mut self,
        index: usize,
        source: u32,
        (rights, badge): (u64, Option<u64>),
        (purpose, owner): (Purpose, u32),
    ) -> Result<u64, String> {
        let cnode = self.services[index].cnode;
        let dest = if cnode == INIT_CNODE {
            u64::from(self.slot())
        } else {
            self.window_slot(index)?
        };
        let op = match badge {
            Some(badge) => Op::Mint {
                slot: source,
                cnode,
                dest,
                rights,
                badge,
            },
            None => Op::Copy {
                slot: source,
                cnode,
                dest,
                rights,
            },
        };
        self.step(op, purpose, owner);
        Ok(dest)
    }

    /// Service `target`'s endpoint, made on first use (kept by init; a copy with all rights
    /// heads the target's window, where it receives).
    fn endpoint(&mut self, target: usize) -> Result<u32, String> {
        if let Some(slot) = self.endpoints[target] {
            return Ok(slot);
        }
        let owner = self.services[target].owner;
        let slot = self.retype(RetypeKind::Endpoint, 0, Purpose::Endpoint, owner);
        self.endpoints[target] = Some(slot);
        let service = &self.services[target];
        if service.cnode != INIT_CNODE {
            let (cnode, dest) = (service.cnode, service.window.base);
            let op = Op::Copy {
                slot,
                cnode,
                dest,
                rights: ALL,
            };
            self.step(op, Purpose::Endpoint, owner);
        }
        Ok(slot)
    }

    fn info(&mut self, index: usize) -> &mut BootInfo {
        self.infos[index].get_or_insert_with(|| {
            let mut info = BootInfo::new_zeroed();
            info.magic = BootInfo::MAGIC;
            info.version = BootInfo::VERSION;
            info
        })
    }

    /// The carve-outs, in address order, before anything else takes memory.
    fn carveouts(&mut self) -> Result<(), String> {
        let manifest = self.inputs.manifest;
        let first = manifest.devices.len();
        self.regions = vec![NONE; self.records.len()];
        let mut order: Vec<usize> = (0..manifest.carveouts.len()).collect();
        order.sort_by_key(|&i| manifest.carveouts[i].base);
        for index in order {
            let carveout = &manifest.carveouts[index];
            let owner = self.owner(NameKind::Carveout, index);
            let (base, size) = (carveout.base, carveout.size);
            if !size.is_power_of_two() || !base.is_multiple_of(size) {
                return Err(format!(
                    "{}: init makes a carve-out one untyped region, so its size ({size:#x}) must \
                     be a power of two and its base ({base:#x}) aligned to it",
                    self.names[owner as usize]
                ));
            }
            let slot = self.slot();
            let cacheable = carveout.cacheable_pfnmap;
            let op = Op::Carveout {
                slot,
                base,
                size,
                cacheable,
            };
            self.step(op, Purpose::Carveout, owner);
            self.regions[first + index] = slot;
        }
        Ok(())
    }

    /// RAM at IPA = PA for the guests that ask for it: a power of two of at least 2 MiB,
    /// aligned to its size.
    fn identity_ram(&mut self) {
        for (index, guest) in self.inputs.manifest.guests.iter().enumerate() {
            if guest.ram_identity {
                let bits = u64::from(
                    guest
                        .memory
                        .max(2 << 20)
                        .next_power_of_two()
                        .trailing_zeros(),
                );
                let slot = self.slot();
                let owner = self.owner(NameKind::Guest, index);
                self.step(Op::IdentityRam { slot, bits }, Purpose::IdentityRam, owner);
                self.identity[index] = Some(slot);
            }
        }
    }

    /// Every manifest device, found in the device tree, with its memory attributes.
    fn devices(&mut self) {
        let manifest = self.inputs.manifest;
        for (index, device) in manifest.devices.iter().enumerate() {
            let record = self.records[index];
            let (locator, compatible) = match &device.locator {
                capvisor_manifest::DeviceLocator::Path(path) => (path.as_str(), false),
                capvisor_manifest::DeviceLocator::Compatible(c) => (c.as_str(), true),
            };
            let attributes = if record.cacheable() {
                3
            } else if record.memtype == devices::MEMTYPE_NORMAL_NC {
                2
            } else {
                1
            };
            let strings = (self.strings.len() as u64, locator.len() as u64);
            self.strings.extend_from_slice(locator.as_bytes());
            let slot = self.slot();
            let op = Op::Device {
                slot,
                locator,
                compatible,
                attributes,
            };
            let owner = self.owner(NameKind::Device, index);
            self.push(op, Purpose::Device, owner, strings);
            self.regions[index] = slot;
        }
    }
}

mod steps;

#[cfg(test)]
mod tests;

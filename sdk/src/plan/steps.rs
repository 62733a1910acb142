//! The planner's steps for services, grants, guests, devices and boot-info pages, in the order
//! [`super::plan`] calls them.

use super::layout::{
    self, DTB_IPA, PAYLOAD_IPA, ROOT_CNODE_BITS, SERVICE_CNODE_BITS, SERVICE_SPACE_BITS,
};
use super::{
    ACCESS_READ, ACCESS_WRITE, ALL, BOOT_INFO, BootInfo, Capability, DeviceInfo, GRANT, GuestInfo,
    INIT_CNODE, IPC_BUFFER, IRQ_CONTROL, NONE, NameKind, Op, PAGE, PAGES_CMDLINE, Patch,
    PlanHeader, Planned, Planner, Purpose, RetypeKind, STACK_TOP, ServiceImage, VCPU_BADGE, WRITE,
    devices, plan, vm_bits,
};
use capvisor_image::plan::{IMAGE_BLOCK, MAX_SLOTS};
use zerocopy::FromZeros;

/// The most interrupts of one passed-through device its guest's VMM is given.
const IRQS_PER_DEVICE: u64 = 4;

impl Planner<'_> {
    /// Service `index`: its CNode, space and thread, its pages, its configuration and name.
    pub(super) fn service(&mut self, index: usize) -> Result<(), String> {
        if self.supervised && index == 0 {
            return Ok(());
        }
        let manifest = self.inputs.manifest;
        let service = &manifest.services[index];
        let owner = self.services[index].owner;
        let root = index == 0;
        let fault = if self.supervised {
            let supervisor = self.endpoint(0)?;
            let slot = self.slot();
            let op = Op::Mint {
                slot: supervisor,
                cnode: INIT_CNODE,
                dest: u64::from(slot),
                rights: WRITE,
                badge: index as u64 + 1,
            };
            self.step(op, Purpose::FaultEndpoint, owner);
            slot
        } else {
            NONE
        };
        let bits = if root {
            ROOT_CNODE_BITS
        } else {
            SERVICE_CNODE_BITS
        };
        let cnode = self.retype(RetypeKind::CNode, bits, Purpose::Cnode, owner);
        let space = self.retype(
            RetypeKind::AddressSpace,
            SERVICE_SPACE_BITS,
            Purpose::Space,
            owner,
        );
        let thread = self.retype(RetypeKind::Thread, 0, Purpose::Thread, owner);
        for (dest, slot, purpose) in [
            (1, cnode, Purpose::Cnode),
            (2, space, Purpose::Space),
            (3, thread, Purpose::Thread),
        ] {
            self.step(
                Op::Copy {
                    slot,
                    cnode,
                    dest,
                    rights: ALL,
                },
                purpose,
                owner,
            );
        }
        if root {
            let op = Op::Copy {
                slot: IRQ_CONTROL,
                cnode,
                dest: 4,
                rights: ALL,
            };
            self.step(op, Purpose::Root, owner);
        }
        let record = &mut self.services[index];
        (record.cnode, record.space, record.thread) = (cnode, space, thread);
        let placed = self.inputs.services[index];
        let image = ServiceImage::decode(placed.bytes)
            .map_err(|e| format!("{}: {e}", self.names[index]))?;
        let mut frame = layout::FIRST_FRAME;
        for segment in image.segments() {
            let source = placed.offset + segment.offset;
            let range = (segment.ipa, segment.pages, source, segment.data_size);
            self.pages(
                index,
                range,
                (u64::from(segment.access), 0),
                (Purpose::Code, &mut frame),
            );
        }
        let stack = service.stack.max(PAGE).next_multiple_of(PAGE);
        let read_write = u64::from(ACCESS_READ | ACCESS_WRITE);
        let stack_range = (STACK_TOP - stack, stack / PAGE, 0, 0);
        self.pages(
            index,
            stack_range,
            (read_write, 0),
            (Purpose::Stack, &mut frame),
        );
        let ipc = (IPC_BUFFER, 1, 0, 0);
        self.pages(
            index,
            ipc,
            (read_write, 0),
            (Purpose::IpcBuffer, &mut frame),
        );
        self.services[index].frames_end = frame;
        // Its manifest priority, which is also its maximum (it cannot make a thread above
        // itself); the root-compatible first service keeps the root's maximum, 255.
        let priority = u64::from(service.priority);
        let max = if root && !self.supervised {
            255
        } else {
            priority
        };
        let configure = Op::Configure {
            slot: thread,
            cspace: cnode,
            space,
            registers: [image.header.entry, STACK_TOP, IPC_BUFFER],
            priorities: priority | max << 8,
            fault,
        };
        self.step(configure, Purpose::Thread, owner);
        let entry = self.inputs.first_entry + index as u64;
        self.step(
            Op::Name {
                slot: thread,
                service: entry,
            },
            Purpose::Thread,
            owner,
        );
        Ok(())
    }

    /// `pages` pages at `ipa` holding `data_size` bytes of the payload at `source`, mapped
    /// with `access` into service `index`'s space and moved to its frame slots from `*frame`
    /// (the root-compatible service's stay in init's CNode, as the kernel kept them).
    fn pages(
        &mut self,
        index: usize,
        (ipa, pages, source, data_size): (u64, u64, u64, u64),
        (access, flags): (u64, u32),
        (purpose, frame): (Purpose, &mut u64),
    ) {
        let service = &self.services[index];
        let (space, owner) = (service.space, service.owner);
        let keep = index == 0 && !self.supervised;
        let chunk = u64::from(layout::SCRATCH_SLOTS);
        let mut done = 0;
        while done < pages {
            let count = chunk.min(pages - done);
            let offset = done * PAGE;
            let bytes = data_size.saturating_sub(offset).min(count * PAGE);
            let (slot, cnode, dest) = if keep {
                let first = self.next_slot;
                self.next_slot += count as u32;
                (first, NONE, 0)
            } else {
                (self.scratch(), self.services[index].cnode, *frame)
            };
            let op = Op::Pages {
                slot,
                count,
                source: if bytes == 0 { 0 } else { source + offset },
                data_size: bytes,
                space,
                ipa: ipa + offset,
                access,
                cnode,
                dest,
                flags,
            };
            self.step(op, purpose, owner);
            if !keep {
                *frame += count;
            }
            done += count;
        }
    }

    /// The manifest's endpoint grants, then its untyped grants, in manifest order.
    pub(super) fn grants(&mut self) -> Result<(), String> {
        let manifest = self.inputs.manifest;
        for (granter, service) in manifest.services.iter().enumerate() {
            for cap in &service.caps {
                if let Capability::Endpoint(target) = cap {
                    let target = self.index_of(target)?;
                    let endpoint = self.endpoint(target)?;
                    let owner = self.services[granter].owner;
                    let badge = Some(granter as u64 + 1);
                    let slot = self.give(
                        granter,
                        endpoint,
                        (WRITE | GRANT, badge),
                        (Purpose::Grant, owner),
                    )?;
                    self.services[granter].granted[target] = slot;
                }
            }
        }
        for (index, service) in manifest.services.iter().enumerate() {
            for cap in &service.caps {
                let Capability::Untyped(bytes) = cap else {
                    continue;
                };
                for bits in (12..=47u64).rev().filter(|bits| bytes & (1 << bits) != 0) {
                    let owner = self.services[index].owner;
                    let piece = self.retype(RetypeKind::Untyped, bits, Purpose::Untyped, owner);
                    let slot = self.give(index, piece, (ALL, None), (Purpose::Untyped, owner))?;
                    self.services[index].untyped.push(slot);
                }
            }
        }
        Ok(())
    }

    fn index_of(&self, service: &str) -> Result<usize, String> {
        self.inputs
            .manifest
            .services
            .iter()
            .position(|s| s.name == service)
            .ok_or_else(|| format!("no service named '{service}'"))
    }

    /// Guest `index`: its VM, its vCPUs and their threads, what its VMM and memory manager
    /// hold for it, its payloads and its boot-info entries.
    pub(super) fn guest(&mut self, index: usize) -> Result<(), String> {
        let manifest = self.inputs.manifest;
        let guest = &manifest.guests[index];
        let owner = self.owner(NameKind::Guest, index);
        let (vmm, memmgr) = (self.index_of(&guest.vmm)?, self.index_of(&guest.memmgr)?);
        let mut vmm_info = self.guest_info(index);
        let mut mm_info = vmm_info;
        let vm = self.retype(RetypeKind::Vm, vm_bits(guest.memory), Purpose::Vm, owner);
        self.vms.push(vm);
        mm_info.vm = self.give(memmgr, vm, (ALL, None), (Purpose::Vm, owner))?;
        mm_info.vmm_badge = vmm as u64 + 1;
        let endpoint = self.endpoint(vmm)?;
        vmm_info.memmgr = match self.services[vmm].granted[memmgr] {
            0 => {
                let to_memmgr = self.endpoint(memmgr)?;
                let badge = Some(vmm as u64 + 1);
                let slot = self.give(
                    vmm,
                    to_memmgr,
                    (WRITE | GRANT, badge),
                    (Purpose::Grant, owner),
                )?;
                self.services[vmm].granted[memmgr] = slot;
                slot
            }
            slot => slot,
        };
        // A vCPU below its VMM: the VMM answers its faults before it runs again.
        let priority = u64::from(manifest.services[vmm].priority.saturating_sub(1));
        for n in 0..usize::from(guest.vcpus) {
            let vcpu = self.retype(RetypeKind::Vcpu, 0, Purpose::Vcpu, owner);
            let thread = self.retype(RetypeKind::Thread, 0, Purpose::VcpuThread, owner);
            let fault = self.slot();
            let badge = VCPU_BADGE + n as u64;
            let mint = Op::Mint {
                slot: endpoint,
                cnode: INIT_CNODE,
                dest: u64::from(fault),
                rights: WRITE,
                badge,
            };
            self.step(mint, Purpose::FaultEndpoint, owner);
            // Entry, stack and IPC buffer are the VMM's to set (a guest makes no syscalls); its
            // CSpace is the VMM's CNode, which it never uses.
            let configure = Op::Configure {
                slot: thread,
                cspace: self.services[vmm].cnode,
                space: vm,
                registers: [0; 3],
                priorities: priority | priority << 8,
                fault,
            };
            self.step(configure, Purpose::VcpuThread, owner);
            self.step(
                Op::BindVcpu { slot: thread, vcpu },
                Purpose::VcpuThread,
                owner,
            );
            vmm_info.vcpu[n] = self.give(vmm, vcpu, (ALL, None), (Purpose::Vcpu, owner))?;
            vmm_info.thread[n] =
                self.give(vmm, thread, (ALL, None), (Purpose::VcpuThread, owner))?;
        }
        self.interrupts(index, vmm, &mut vmm_info)?;
        if let Some(ram) = self.identity[index] {
            mm_info.ram_untyped =
                self.give(memmgr, ram, (ALL, None), (Purpose::IdentityRam, owner))?;
        }
        self.payloads(index, (vmm, memmgr), (&mut vmm_info, &mut mm_info));
        for (service, info) in [(vmm, vmm_info), (memmgr, mm_info)] {
            self.add_guest(service, index, info);
        }
        Ok(())
    }

    /// Lists guest `index` in service `service`'s boot-info page; init writes its RAM base
    /// there when it is mapped at IPA = PA.
    fn add_guest(&mut self, service: usize, index: usize, info: GuestInfo) {
        let page = self.info(service);
        let entry = page.guest_count;
        if let Some(slot) = page.guests.get_mut(entry as usize) {
            *slot = info;
            page.guest_count += 1;
            if let Some(region) = self.identity[index] {
                self.patches[service].push(Patch::GuestRam {
                    region,
                    index: entry,
                });
            }
        }
    }

    /// Reserves slots in the VMM's window for the interrupts of each device passed through to
    /// guest `index` with its interrupts; init makes a handler per SPI the device tree lists.
    fn interrupts(&mut self, index: usize, vmm: usize, info: &mut GuestInfo) -> Result<(), String> {
        let guest_entry = self.infos[vmm].as_ref().map_or(0, |page| page.guest_count);
        for (record, &region) in self.records.clone().iter().zip(&self.regions.clone()) {
            let passed = record.guest as usize == index && !record.is_carveout();
            if passed && record.flags & devices::FLAG_IRQS != 0 {
                let name = self.names[vmm].to_string();
                let dest = self.services[vmm]
                    .window
                    .reserve(IRQS_PER_DEVICE)
                    .ok_or_else(|| format!("{name}: its capability window is full"))?;
                self.info(vmm);
                let patch = Patch::Irqs {
                    device: region,
                    dest,
                    guest: guest_entry,
                };
                self.patches[vmm].push(patch);
            }
        }
        info.irq_count = 0;
        Ok(())
    }

    /// The guest's kernel, device tree and initrd: the image's read-only frames, mapped into the
    /// memory manager's space on 2 MiB blocks of their own; its command line: a page of the VMM.
    fn payloads(
        &mut self,
        index: usize,
        (vmm, memmgr): (usize, usize),
        (vmm_info, mm_info): (&mut GuestInfo, &mut GuestInfo),
    ) {
        let payloads = self.inputs.guests[index];
        let owner = self.owner(NameKind::Guest, index);
        let space = self.services[memmgr].space;
        for (payload, out) in [
            (Some(payloads.kernel), &mut mm_info.kernel),
            (payloads.dtb, &mut mm_info.dtb),
            (payloads.initrd, &mut mm_info.initrd),
        ] {
            let Some(payload) = payload else { continue };
            let at = self.services[memmgr].next_payload;
            let blocks = (payload.bytes.len() as u64).div_ceil(IMAGE_BLOCK);
            for block in 0..blocks {
                let slot = self.slot();
                let first = payload.offset / IMAGE_BLOCK;
                self.step(
                    Op::ImageFrame {
                        slot,
                        block: first + block,
                    },
                    Purpose::GuestPayload,
                    owner,
                );
                let ipa = PAYLOAD_IPA + at + block * IMAGE_BLOCK;
                let map = Op::Map {
                    slot,
                    space,
                    ipa,
                    access: u64::from(ACCESS_READ),
                    memtype: 0,
                };
                self.step(map, Purpose::GuestPayload, owner);
            }
            *out = capvisor_ipc::bootinfo::Payload {
                offset: PAYLOAD_IPA - BOOT_INFO + at,
                size: payload.bytes.len() as u64,
            };
            self.services[memmgr].next_payload = at + blocks * IMAGE_BLOCK;
        }
        if let Some(cmdline) = payloads.cmdline {
            let at = self.services[vmm].next_cmdline;
            self.services[vmm].next_cmdline += PAGE;
            let range = (
                BOOT_INFO + at,
                1,
                cmdline.offset,
                cmdline.bytes.len() as u64,
            );
            let read = (u64::from(ACCESS_READ), PAGES_CMDLINE);
            self.pages_owned(vmm, range, read, (Purpose::Cmdline, owner));
            vmm_info.cmdline = capvisor_ipc::bootinfo::Payload {
                offset: at,
                size: cmdline.bytes.len() as u64,
            };
        }
    }

    /// One page of `service`'s boot-info region, kept in init's CNode (the service holds no
    /// capability to it), for `owner`.
    fn pages_owned(
        &mut self,
        service: usize,
        (ipa, count, source, data_size): (u64, u64, u64, u64),
        (access, flags): (u64, u32),
        (purpose, owner): (Purpose, u32),
    ) {
        let slot = self.next_slot;
        self.next_slot += count as u32;
        let space = self.services[service].space;
        let op = Op::Pages {
            slot,
            count,
            source,
            data_size,
            space,
            ipa,
            access,
            cnode: NONE,
            dest: 0,
            flags,
        };
        self.step(op, purpose, owner);
    }

    /// A guest's entry as its services see it (capabilities filled in by [`Self::guest`]).
    fn guest_info(&self, index: usize) -> GuestInfo {
        let guest = &self.inputs.manifest.guests[index];
        let kernel = self.inputs.guests[index].kernel.bytes;
        let mut info = GuestInfo::new_zeroed();
        info.index = index as u32;
        info.vcpus = u32::from(guest.vcpus);
        info.ram_base = if guest.ram_identity {
            0
        } else {
            capvisor_image::GUEST_RAM_BASE
        };
        info.ram_size = guest.memory;
        let header = capvisor_image::LinuxImageHeader::read(kernel);
        info.text_offset = header.map_or(0, |header| header.text_offset);
        info.image_size = header
            .map_or(0, |header| header.image_size)
            .max(kernel.len() as u64);
        let name = guest.name.as_bytes();
        let len = name.len().min(info.name.len());
        info.name[..len].copy_from_slice(&name[..len]);
        info
    }

    /// Each device's and carve-out's holder gets its untyped and, for a passthrough, the
    /// guest's `Vm`, listed in its boot-info page with a copy of the platform device tree.
    pub(super) fn device_grants(&mut self) -> Result<(), String> {
        for (index, record) in self.records.clone().iter().enumerate() {
            let Some(holder) = usize::try_from(record.service)
                .ok()
                .filter(|&s| s < self.services.len())
            else {
                continue;
            };
            let devices = self.inputs.manifest.devices.len();
            let owner = if index < devices {
                self.owner(NameKind::Device, index)
            } else {
                self.owner(NameKind::Carveout, index - devices)
            };
            let region = self.regions[index];
            let mut device = DeviceInfo::new_zeroed();
            device.name = record.name;
            device.untyped = self.give(holder, region, (ALL, None), (Purpose::Device, owner))?;
            device.memtype = record.memtype;
            device.guest = record.guest;
            if record.is_carveout() {
                (device.base, device.size) = (record.base, record.size);
            }
            device.flags = device_flags(record);
            let guest = record.guest as usize;
            if let Some(&vm) = self.vms.get(guest) {
                device.vm = self.give(holder, vm, (ALL, None), (Purpose::Vm, owner))?;
                let known = self
                    .info(holder)
                    .guests()
                    .iter()
                    .any(|g| g.index == record.guest);
                if !known {
                    let info = self.guest_info(guest);
                    self.add_guest(holder, guest, info);
                }
            }
            let page = self.info(holder);
            let entry = page.device_count;
            if let Some(slot) = page.devices.get_mut(entry as usize) {
                *slot = device;
                page.device_count += 1;
                if !record.is_carveout() {
                    self.patches[holder].push(Patch::Device {
                        region,
                        index: entry,
                    });
                }
            }
            if !self.patches[holder].iter().any(|p| matches!(p, Patch::Dtb)) {
                self.patches[holder].push(Patch::Dtb);
            }
        }
        Ok(())
    }

    /// Each boot-info page: made from the image's copy, completed by init, mapped read-only.
    pub(super) fn boot_info_pages(&mut self) {
        for index in 0..self.infos.len() {
            let Some(mut info) = self.infos[index] else {
                continue;
            };
            let service = &self.services[index];
            info.endpoint = if self.endpoints[index].is_some() {
                service.window.base
            } else {
                0
            };
            for (slot, &untyped) in info.untyped.iter_mut().zip(&service.untyped) {
                *slot = untyped;
            }
            info.untyped_count = service.untyped.len().min(info.untyped.len()) as u64;
            (info.free_first, info.free_end) = if index == 0 && !self.supervised {
                layout::ROOT_FREE
            } else {
                (service.frames_end, 1 << SERVICE_CNODE_BITS)
            };
            self.infos[index] = Some(info);
            let owner = service.owner;
            let space = service.space;
            let frame = self.slot();
            let source = self.inputs.boot_infos.get(index).copied().unwrap_or(0);
            let size = size_of::<BootInfo>() as u64;
            let op = Op::Pages {
                slot: frame,
                count: 1,
                source,
                data_size: size,
                space: NONE,
                ipa: 0,
                access: 0,
                cnode: NONE,
                dest: 0,
                flags: 0,
            };
            self.step(op, Purpose::BootInfo, owner);
            self.step(Op::InfoPlatform { slot: frame }, Purpose::BootInfo, owner);
            for patch in self.patches[index].clone() {
                let op = match patch {
                    Patch::Device { region, index } => Op::InfoDevice {
                        slot: frame,
                        region,
                        index,
                    },
                    Patch::GuestRam { region, index } => Op::InfoGuestRam {
                        slot: frame,
                        region,
                        index,
                    },
                    Patch::Irqs {
                        device,
                        dest,
                        guest,
                    } => {
                        let cnode = self.services[index].cnode;
                        Op::Irqs {
                            slot: device,
                            cnode,
                            info: frame,
                            dest,
                            guest,
                        }
                    }
                    Patch::Dtb => Op::InfoDtb {
                        slot: frame,
                        space,
                        ipa: DTB_IPA,
                    },
                };
                let purpose = if matches!(patch, Patch::Irqs { .. }) {
                    Purpose::Irq
                } else {
                    Purpose::BootInfo
                };
                self.step(op, purpose, owner);
            }
            let map = Op::Map {
                slot: frame,
                space,
                ipa: BOOT_INFO,
                access: u64::from(ACCESS_READ),
                memtype: 0,
            };
            self.step(map, Purpose::BootInfo, owner);
        }
    }

    /// The root-compatible first service gets the RAM init leaves.
    pub(super) fn root_memory(&mut self) {
        if self.supervised || self.services.is_empty() {
            return;
        }
        let (first, end) = layout::ROOT_RAM;
        let cnode = self.services[0].cnode;
        self.step(Op::GiveRam { cnode, first, end }, Purpose::Root, 0);
    }

    /// Every service that starts at boot, in manifest order.
    pub(super) fn start(&mut self) {
        for (index, service) in self.inputs.manifest.services.iter().enumerate() {
            let skip = self.supervised && index == 0;
            if service.start && !skip {
                let (slot, owner) = (self.services[index].thread, self.services[index].owner);
                self.step(Op::Resume { slot }, Purpose::Start, owner);
            }
        }
    }

    /// The encoded plan, checked as init checks it.
    pub(super) fn finish(self) -> Result<Planned, String> {
        if self.next_slot > MAX_SLOTS {
            return Err(format!(
                "the plan needs {} of init's slots, more than its {MAX_SLOTS}",
                self.next_slot
            ));
        }
        let mut header = PlanHeader::new_zeroed();
        header.slot_count = self.next_slot;
        header.service_count = self.services.len() as u32;
        header.supervisor = NONE;
        if self.supervised {
            header.flags = plan::PLAN_SUPERVISED;
            header.supervisor = self.endpoints[0].unwrap_or(NONE);
        }
        let bytes = plan::encode(header, &self.names, &self.items, &self.strings);
        plan::Plan::decode(&bytes, self.inputs.payload_size)
            .map_err(|e| format!("the SDK made a plan it cannot read back: {e}"))?;
        Ok(Planned {
            boot_infos: self.infos,
            plan: bytes,
        })
    }
}

/// A device record's boot-info flags.
fn device_flags(record: &capvisor_image::devices::DeviceRecord) -> u32 {
    use capvisor_ipc::bootinfo::{
        DEVICE_CACHEABLE, DEVICE_CARVEOUT, DEVICE_OPTIONAL, DEVICE_UNPROTECTED_DMA,
    };
    let mut flags = 0;
    if record.cacheable() {
        flags |= DEVICE_CACHEABLE;
    }
    if record.is_carveout() {
        flags |= DEVICE_CARVEOUT;
    }
    if record.flags & devices::FLAG_OPTIONAL != 0 {
        flags |= DEVICE_OPTIONAL;
    }
    if record.flags & devices::FLAG_UNPROTECTED_DMA != 0 {
        flags |= DEVICE_UNPROTECTED_DMA;
    }
    flags
}

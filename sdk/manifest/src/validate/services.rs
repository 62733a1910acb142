//! `[[service]]`: the EL0 services and the capabilities each starts with.

use toml::Spanned;

use crate::error::ErrorKind;
use crate::model::{Capability, DEFAULT_STACK, SPI_RANGE, Service};
use crate::schema::{RawGrant, RawService, Table};

use super::Checker;
use super::regions::RegionKind;

impl Checker<'_> {
    pub(super) fn services(&mut self, raw: &[Spanned<Table<RawService>>]) -> Vec<Service> {
        self.unique_names("service", raw.iter().map(|service| &service.get_ref().name));
        raw.iter()
            .enumerate()
            .map(|(index, service)| self.service(service.get_ref(), index))
            .collect()
    }

    fn service(&mut self, raw: &RawService, index: usize) -> Service {
        let prefix = format!("service[{index}]");
        let crate_ref = self.crate_ref(&raw.crate_ref, format!("{prefix}.crate"));
        let priority = self
            .in_range(&raw.priority, format!("{prefix}.priority"), 0, 255)
            .unwrap_or(0) as u8;
        let memory = self.size(&raw.memory, format!("{prefix}.memory"));
        let stack = raw.stack.as_ref().map_or(Some(DEFAULT_STACK), |stack| {
            self.size(stack, format!("{prefix}.stack"))
        });
        let caps = raw
            .caps
            .iter()
            .enumerate()
            .filter_map(|(cap_index, grant)| {
                let field = format!("{prefix}.caps[{cap_index}]");
                self.grant(grant, field, raw.name.get_ref())
            })
            .collect();
        Service {
            name: raw.name.get_ref().clone(),
            crate_ref,
            priority,
            memory: memory.unwrap_or(0),
            stack: stack.unwrap_or(0),
            start: raw.start,
            caps,
            line: self.line(&raw.name.span()),
        }
    }

    /// One capability grant of service `holder`.
    fn grant(
        &mut self,
        grant: &Spanned<Table<RawGrant>>,
        field: String,
        holder: &str,
    ) -> Option<Capability> {
        let raw = grant.get_ref();
        let present: Vec<String> = [
            ("endpoint", raw.endpoint.is_some()),
            ("device", raw.device.is_some()),
            ("irq", raw.irq.is_some()),
            ("untyped", raw.untyped.is_some()),
            ("carveout", raw.carveout.is_some()),
        ]
        .into_iter()
        .filter(|(_, present)| *present)
        .map(|(kind, _)| kind.to_owned())
        .collect();
        if present.len() != 1 {
            let kind = ErrorKind::NotOneGrant { found: present };
            self.error(grant.span(), field, kind);
            return None;
        }
        if let Some(service) = &raw.endpoint {
            let field = format!("{field}.endpoint");
            return self.known_service(service, field).map(Capability::Endpoint);
        }
        if let Some(device) = &raw.device {
            let field = format!("{field}.device");
            let device = self.known_device(device, field.clone())?;
            let span = raw.device.as_ref().map_or(0..0, Spanned::span);
            self.hold(RegionKind::Device, &device, holder, span, field);
            return Some(Capability::Device(device));
        }
        if let Some(irq) = &raw.irq {
            return self
                .irq(irq, format!("{field}.irq"), holder)
                .map(Capability::Irq);
        }
        if let Some(size) = &raw.untyped {
            let field = format!("{field}.untyped");
            return self.size(size, field).map(Capability::Untyped);
        }
        let carveout = raw.carveout.as_ref()?;
        let field = format!("{field}.carveout");
        let name = self.known_carveout(carveout, field.clone())?;
        self.hold(RegionKind::Carveout, &name, holder, carveout.span(), field);
        Some(Capability::Carveout(name))
    }

    fn irq(&mut self, irq: &Spanned<i64>, field: String, holder: &str) -> Option<u32> {
        let (min, max) = SPI_RANGE;
        let number = self.in_range(irq, field.clone(), min.into(), max.into())? as u32;
        if let Some(other) = self.irq_holders.get(&number) {
            let kind = ErrorKind::IrqTwice {
                irq: number,
                other: other.clone(),
            };
            self.error(irq.span(), field, kind);
            return None;
        }
        self.irq_holders.insert(number, holder.to_owned());
        Some(number)
    }
}

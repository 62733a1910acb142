//! Everything AArch64-specific: entry, vectors, system registers, the MMU and cache maintenance.
//! No assembly or system-register access lives outside this module.

pub mod boot;
pub mod cache;
pub mod cpu;
pub mod el0;
pub mod exceptions;
pub mod firmware;
pub mod gic;
pub mod mitigation;
pub mod mmu;
pub mod stage2;
pub mod tlb;
pub mod vcpu;
pub mod vgic;

//! Fixed-capacity object arenas with generation-checked references.
//!
//! Invariant: an entry's generation changes every time its object is freed, so a reference made
//! before the free never resolves again ([`KernelError::Revoked`]). Generations are 32 bits and
//! wrap after 2^32 frees of one entry, which the capacities make unreachable in practice.

use capvisor_ipc::abi::KernelError;

/// A typed, generation-checked reference into one arena.
pub trait ArenaRef: Copy {
    /// A reference to entry `index` of generation `generation`.
    fn from_parts(index: u16, generation: u32) -> Self;
    /// The entry index.
    fn index(self) -> u16;
    /// The generation the reference was made for.
    fn generation(self) -> u32;
}

macro_rules! arena_refs {
    ($( $(#[$meta:meta])* $name:ident; )+) => {
        $(
            $(#[$meta])*
            #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
            pub struct $name {
                index: u16,
                generation: u32,
            }

            impl ArenaRef for $name {
                fn from_parts(index: u16, generation: u32) -> Self {
                    Self { index, generation }
                }
                fn index(self) -> u16 {
                    self.index
                }
                fn generation(self) -> u32 {
                    self.generation
                }
            }

            impl $name {
                /// The arena index (stable while the object lives; reused after it dies).
                #[must_use]
                pub const fn index(self) -> usize {
                    self.index as usize
                }
            }
        )+
    };
}

arena_refs! {
    /// A thread.
    ThreadRef;
    /// An endpoint.
    EndpointRef;
    /// A notification.
    NotificationRef;
    /// A CNode (a thread's capability space).
    CNodeRef;
    /// An untyped memory object.
    UntypedRef;
    /// An address space: a service's stage-2 space or a VM's.
    SpaceRef;
    /// A virtual CPU.
    VcpuRef;
    /// An IRQ handler.
    IrqHandlerRef;
}

#[derive(Debug)]
struct Entry<T> {
    generation: u32,
    value: Option<T>,
}

/// `N` entries of `T`.
#[derive(Debug)]
pub struct Arena<T, const N: usize> {
    entries: [Entry<T>; N],
}

impl<T, const N: usize> Arena<T, N> {
    /// An empty arena.
    pub const fn new() -> Self {
        Self {
            entries: [const {
                Entry {
                    generation: 0,
                    value: None,
                }
            }; N],
        }
    }

    /// Stores `value` in a free entry.
    ///
    /// # Errors
    /// [`KernelError::NotEnoughMemory`] when every entry is in use.
    pub fn alloc<R: ArenaRef>(&mut self, value: T) -> Result<R, KernelError> {
        let (index, entry) = self
            .entries
            .iter_mut()
            .enumerate()
            .find(|(_, e)| e.value.is_none())
            .ok_or(KernelError::NotEnoughMemory)?;
        entry.value = Some(value);
        // Cannot truncate: capacities are below 2^16 (asserted in `mod.rs` tests).
        Ok(R::from_parts(index as u16, entry.generation))
    }

    /// Number of free entries.
    pub fn free_entries(&self) -> usize {
        self.entries.iter().filter(|e| e.value.is_none()).count()
    }

    /// The object `r` names.
    ///
    /// # Errors
    /// [`KernelError::Revoked`] when the object was freed (or `r` is out of range).
    pub fn get<R: ArenaRef>(&self, r: R) -> Result<&T, KernelError> {
        match self.entries.get(usize::from(r.index())) {
            Some(Entry {
                generation,
                value: Some(value),
            }) if *generation == r.generation() => Ok(value),
            _ => Err(KernelError::Revoked),
        }
    }

    /// The object `r` names, mutably.
    ///
    /// # Errors
    /// [`KernelError::Revoked`] when the object was freed.
    pub fn get_mut<R: ArenaRef>(&mut self, r: R) -> Result<&mut T, KernelError> {
        match self.entries.get_mut(usize::from(r.index())) {
            Some(Entry {
                generation,
                value: Some(value),
            }) if *generation == r.generation() => Ok(value),
            _ => Err(KernelError::Revoked),
        }
    }

    /// The live object at `index` and a reference to it (for scans and for internal links that
    /// store bare indices).
    pub fn at<R: ArenaRef>(&self, index: usize) -> Option<(R, &T)> {
        let entry = self.entries.get(index)?;
        let value = entry.value.as_ref()?;
        Some((R::from_parts(index as u16, entry.generation), value))
    }

    /// The live object at `index`, mutably.
    pub fn at_mut(&mut self, index: usize) -> Option<&mut T> {
        self.entries.get_mut(index)?.value.as_mut()
    }

    /// Frees the object `r` names, returning it; later lookups of `r` fail.
    pub fn free<R: ArenaRef>(&mut self, r: R) -> Option<T> {
        let entry = self.entries.get_mut(usize::from(r.index()))?;
        if entry.generation != r.generation() {
            return None;
        }
        let value = entry.value.take()?;
        entry.generation = entry.generation.wrapping_add(1);
        Some(value)
    }

    /// Every live object with its reference.
    pub fn iter<R: ArenaRef>(&self) -> impl Iterator<Item = (R, &T)> {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(index, entry)| {
                entry
                    .value
                    .as_ref()
                    .map(|value| (R::from_parts(index as u16, entry.generation), value))
            })
    }
}

// Arena and slot indices are u16, with u16::MAX reserved as "no link".
const _: () = {
    assert!(super::MAX_SLOTS < u16::MAX as usize);
    assert!(super::MAX_ENDPOINTS < u16::MAX as usize);
    assert!(super::MAX_NOTIFICATIONS < u16::MAX as usize);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_freed_reference_never_resolves_again() {
        let mut arena: Arena<u32, 2> = Arena::new();
        let a: ThreadRef = arena.alloc(7).unwrap();
        assert_eq!(arena.get(a), Ok(&7));
        assert_eq!(arena.free(a), Some(7));
        assert_eq!(arena.get(a), Err(KernelError::Revoked));
        let b: ThreadRef = arena.alloc(8).unwrap();
        assert_eq!(b.index(), a.index());
        assert_eq!(arena.get(a), Err(KernelError::Revoked));
        assert_eq!(arena.free(a), None);
        assert_eq!(arena.get(b), Ok(&8));
    }

    #[test]
    fn a_full_arena_refuses() {
        let mut arena: Arena<u8, 1> = Arena::new();
        let _: EndpointRef = arena.alloc(1).unwrap();
        assert_eq!(
            arena.alloc::<EndpointRef>(2),
            Err(KernelError::NotEnoughMemory)
        );
        assert_eq!(arena.free_entries(), 0);
    }
}

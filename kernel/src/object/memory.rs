//! Kernel objects in the memory their untyped paid for, found through a frame table.
//!
//! seL4's rule, kept here: every kernel object occupies memory retyped from an untyped, so
//! whoever creates an object pays for it, and no party can exhaust a shared kernel pool by
//! creating objects it did not pay for (DESIGN.md, "Threat model"). Each object takes one or
//! more whole 4 KiB pages at a page-aligned physical address inside RAM the kernel maps; its
//! Rust value is stored at the start of its first page.
//!
//! A [`FrameTable`] holds one [`PageInfo`] per page of kernel-reachable RAM, in kernel memory no
//! service can map: the kind of object whose first page it is ([`PageKind`]), or `Tail` for its
//! further pages, or `Free`; and a generation that changes each time an object on that page is
//! freed. A reference ([`ObjectRef`]) names a page and the generation it was made for, so a
//! reference kept past the object's death resolves to [`KernelError::Revoked`] — even after the
//! page has been handed to a new owner, because the table (not the page) holds the generation.
//!
//! # Safety argument
//! This module is the object model's only `unsafe` code. It relies on three facts:
//! 1. [`FrameTable::new`]'s contract: the window maps every covered page for the kernel, read
//!    and write, and the table and window are not otherwise used while the table lives.
//! 2. A page is dereferenced as a `T` only when its `PageInfo` says it is the first page of a
//!    `T` of the expected generation, and only [`Store::create`] makes it so, after writing a
//!    whole `T` there; [`Store::free`] moves the value out and marks the pages `Free` first.
//! 3. Each object kind has one [`Store`]; a `&mut T` is handed out only through
//!    `&mut Store<T>`, and pages of different kinds never overlap (create refuses a page that
//!    is not `Free`), so no two live references alias.

#![allow(unsafe_code)]

use core::marker::PhantomData;
use core::mem::MaybeUninit;
use core::ptr::NonNull;

use capvisor_ipc::abi::KernelError;
use capvisor_ipc::types::PhysAddr;

/// The page size objects are placed in.
pub const PAGE: u64 = 4096;

/// What a page holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum PageKind {
    /// Nothing the kernel owns (free untyped memory, or a frame).
    Free = 0,
    /// The first page of a thread.
    Thread,
    /// The first page of an endpoint.
    Endpoint,
    /// The first page of a notification.
    Notification,
    /// The first page of a CNode.
    CNode,
    /// The first page of an untyped object's record.
    Untyped,
    /// The first page of an address space or VM.
    Space,
    /// The first page of a vCPU.
    Vcpu,
    /// A further page of the object that starts below it.
    Tail,
}

/// One page's entry in the frame table: 8 bytes without padding, so that a lookup compares
/// kind and generation as one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C, align(8))]
pub struct PageInfo {
    generation: u32,
    kind: PageKind,
}

impl PageInfo {
    /// What the page holds.
    #[must_use]
    pub const fn kind(self) -> PageKind {
        self.kind
    }

    /// Its generation.
    #[must_use]
    pub const fn generation(self) -> u32 {
        self.generation
    }

    /// A free page of generation 0 (what a zeroed table holds).
    pub const FREE: Self = Self {
        generation: 0,
        kind: PageKind::Free,
    };

    /// Kind and generation as one word.
    #[inline(always)]
    const fn word(self) -> u64 {
        ((self.kind as u64) << 32) | self.generation as u64
    }
}

/// The generation after `generation`: never 0, so a reference's generation is never 0 and an
/// `Option` of a reference takes no more room than the reference.
const fn next_generation(generation: u32) -> u32 {
    match generation.wrapping_add(1) {
        0 => 1,
        next => next,
    }
}

/// A typed, generation-checked reference to a kernel object: the index of its first page in the
/// frame table and the generation it was made for.
pub trait ObjectRef: Copy {
    /// A reference to the object whose first page is `page`, of `generation`.
    fn from_parts(page: u32, generation: u32) -> Self;
    /// The first page's index in the frame table.
    fn page(self) -> u32;
    /// The generation the reference was made for.
    fn generation(self) -> u32;
}

macro_rules! object_refs {
    ($( $(#[$meta:meta])* $name:ident; )+) => {
        $(
            $(#[$meta])*
            #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
            pub struct $name {
                page: u32,
                generation: core::num::NonZeroU32,
            }

            impl ObjectRef for $name {
                #[inline(always)]
                fn from_parts(page: u32, generation: u32) -> Self {
                    // Live objects never have generation 0 (`claim`); a forged 0 names nothing.
                    let generation = core::num::NonZeroU32::new(generation)
                        .unwrap_or(core::num::NonZeroU32::MAX);
                    Self { page, generation }
                }
                #[inline(always)]
                fn page(self) -> u32 {
                    self.page
                }
                #[inline(always)]
                fn generation(self) -> u32 {
                    self.generation.get()
                }
            }

            impl $name {
                /// A number that names the object while it lives (its first page's index in the
                /// frame table), for diagnostics; reused once the object is freed.
                #[must_use]
                pub const fn index(self) -> usize {
                    self.page as usize
                }
            }
        )+
    };
}

object_refs! {
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
}

const _: () = assert!(size_of::<Option<ThreadRef>>() == 8 && size_of::<PageInfo>() == 8);

/// A kernel object type: which page kind marks it.
pub trait KernelObject: Sized {
    /// The kind of its first page.
    const KIND: PageKind;
}

/// The frame table and the kernel's window onto the RAM it covers.
///
/// `Copy` so that each [`Store`] (one per object kind, so the borrow checker keeps references
/// to different kinds apart) holds its own copy of the same two pointers.
#[derive(Debug, Clone, Copy)]
pub struct FrameTable {
    /// Physical address of page 0.
    base: u64,
    /// Pages covered (0: none, and the pointers are dangling).
    pages: u32,
    /// One entry per page.
    table: NonNull<PageInfo>,
    /// Where the kernel reaches physical address `base`.
    window: NonNull<u8>,
}

impl FrameTable {
    /// A table that covers nothing: every object creation is refused (a kernel before boot).
    pub const EMPTY: Self = Self {
        base: 0,
        pages: 0,
        table: NonNull::dangling(),
        window: NonNull::dangling(),
    };

    /// A table for the `pages` pages from physical address `base`.
    ///
    /// # Safety
    /// For as long as any copy of the returned value is used:
    /// 1. `table` points to `pages` initialised [`PageInfo`]s that nothing else accesses, in
    ///    memory that is not itself covered;
    /// 2. `window` points to `pages * PAGE` bytes that the kernel may read and write, which are
    ///    physical memory `[base, base + pages * PAGE)`, accessed by nothing else but through the
    ///    [`Store`]s and slot tables built on this table and through frames the untyped model
    ///    hands out from pages marked `Free`;
    /// 3. `window` is at least 16-byte aligned (objects start on page boundaries of it).
    #[must_use]
    pub const unsafe fn new(base: u64, pages: u32, table: *mut PageInfo, window: *mut u8) -> Self {
        match (NonNull::new(table), NonNull::new(window)) {
            (Some(table), Some(window)) => Self {
                base,
                pages,
                table,
                window,
            },
            _ => Self::EMPTY,
        }
    }

    /// The page index of physical address `pa`, if it is a page the table covers.
    #[must_use]
    pub fn page_of(&self, pa: PhysAddr) -> Option<u32> {
        let offset = pa.raw().checked_sub(self.base)?;
        let page = u32::try_from(offset / PAGE).ok()?;
        (page < self.pages).then_some(page)
    }

    /// The physical address of page `page`.
    #[must_use]
    pub const fn address(&self, page: u32) -> PhysAddr {
        PhysAddr::new(self.base + page as u64 * PAGE)
    }

    /// Whether `[pa, pa + bytes)` lies in covered pages (objects can be placed there).
    #[must_use]
    pub fn covers(&self, pa: PhysAddr, bytes: u64) -> bool {
        let Some(end) = pa.raw().checked_add(bytes) else {
            return false;
        };
        let limit = self.base + u64::from(self.pages) * PAGE;
        pa.raw() >= self.base && end <= limit
    }

    /// The entry of page `page` (a free entry for a page the table does not cover).
    #[must_use]
    #[inline]
    pub fn info(&self, page: u32) -> PageInfo {
        if page < self.pages {
            // SAFETY: `page` is below `pages` (checked), so the entry is inside the table
            // (`new`'s contract 1); no reference to it is held anywhere.
            unsafe { self.table.as_ptr().add(page as usize).read() }
        } else {
            PageInfo::FREE
        }
    }

    fn set(&self, page: u32, info: PageInfo) {
        if page < self.pages {
            // SAFETY: as in `info`; the write replaces a plain-data entry.
            unsafe { self.table.as_ptr().add(page as usize).write(info) };
        }
    }

    /// The kernel pointer to the start of page `page`, when it is covered.
    #[inline]
    fn pointer(&self, page: u32) -> Option<NonNull<u8>> {
        if page >= self.pages {
            return None;
        }
        // SAFETY: `page < pages`, so the offset stays inside the window (contract 2).
        Some(unsafe { self.window.add(page as usize * PAGE as usize) })
    }

    /// The kernel pointer to the object of `kind` and `generation` whose first page is `page`,
    /// if that is what the page holds (one bounds check, one table read).
    #[inline]
    fn object(&self, page: u32, kind: PageKind, generation: u32) -> Option<NonNull<u8>> {
        if page >= self.pages {
            return None;
        }
        // SAFETY: `page < pages`: inside the table (contract 1) and the window (contract 2).
        unsafe {
            let info = self.table.as_ptr().add(page as usize).read();
            (info.word() == PageInfo { generation, kind }.word())
                .then(|| self.window.add(page as usize * PAGE as usize))
        }
    }

    /// Marks `[page, page + pages)` as one object of `kind` (the first) and its tails, if every
    /// page is free; returns the first page's generation.
    fn claim(&self, page: u32, pages: u32, kind: PageKind) -> Result<u32, KernelError> {
        let end = page.checked_add(pages).ok_or(KernelError::RangeError)?;
        if pages == 0 || end > self.pages {
            return Err(KernelError::NotEnoughMemory);
        }
        if (page..end).any(|p| self.info(p).kind != PageKind::Free) {
            // Memory is never handed out twice: the untyped model must have placed an object
            // over a live one. Refuse rather than alias.
            return Err(KernelError::IllegalOperation);
        }
        // Generation 0 is never handed out (a zeroed table's pages start there).
        let generation = match self.info(page).generation {
            0 => 1,
            generation => generation,
        };
        self.set(page, PageInfo { generation, kind });
        for tail in page + 1..end {
            let generation = self.info(tail).generation;
            self.set(
                tail,
                PageInfo {
                    generation,
                    kind: PageKind::Tail,
                },
            );
        }
        Ok(generation)
    }

    /// Frees the object whose first page is `page`: every page of it becomes free and the first
    /// page's generation changes, so references to it never resolve again.
    fn release(&self, page: u32) {
        let info = self.info(page);
        self.set(
            page,
            PageInfo {
                generation: next_generation(info.generation),
                kind: PageKind::Free,
            },
        );
        let mut tail = page + 1;
        while tail < self.pages && self.info(tail).kind == PageKind::Tail {
            let generation = self.info(tail).generation;
            self.set(
                tail,
                PageInfo {
                    generation,
                    kind: PageKind::Free,
                },
            );
            tail += 1;
        }
    }
}

/// The objects of one kind: typed access through the frame table.
#[derive(Debug)]
pub struct Store<T> {
    memory: FrameTable,
    _objects: PhantomData<T>,
}

impl<T: KernelObject> Store<T> {
    /// A store over no memory.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            memory: FrameTable::EMPTY,
            _objects: PhantomData,
        }
    }

    /// Uses `memory` from now on (boot, before any object exists).
    pub fn set_memory(&mut self, memory: FrameTable) {
        self.memory = memory;
    }

    /// The frame table this store uses.
    #[must_use]
    pub const fn memory(&self) -> &FrameTable {
        &self.memory
    }

    #[inline]
    fn pointer<R: ObjectRef>(&self, r: R) -> Result<NonNull<T>, KernelError> {
        self.memory
            .object(r.page(), T::KIND, r.generation())
            .map(NonNull::cast)
            .ok_or(KernelError::Revoked)
    }

    /// The object `r` names.
    ///
    /// # Errors
    /// [`KernelError::Revoked`] when it was freed (or `r` names no object of this kind).
    #[inline]
    pub fn get<R: ObjectRef>(&self, r: R) -> Result<&T, KernelError> {
        let pointer = self.pointer(r)?;
        // SAFETY: the page holds a live `T` (module safety argument 2), aligned (page start,
        // contract 3); the shared borrow of `self` excludes `get_mut` on this store.
        Ok(unsafe { pointer.as_ref() })
    }

    /// The object `r` names, mutably.
    ///
    /// # Errors
    /// [`KernelError::Revoked`] when it was freed.
    #[inline]
    pub fn get_mut<R: ObjectRef>(&mut self, r: R) -> Result<&mut T, KernelError> {
        let mut pointer = self.pointer(r)?;
        // SAFETY: as in `get`; the exclusive borrow of `self` makes this the only reference to
        // any object of this store (argument 3).
        Ok(unsafe { pointer.as_mut() })
    }

    /// Stores `value` as a new object occupying `bytes` (a multiple of [`PAGE`], at least
    /// `size_of::<T>()`) at physical address `pa` (page-aligned, in covered memory, all free).
    ///
    /// # Errors
    /// [`KernelError::NotEnoughMemory`] for memory the table does not cover (device memory);
    /// [`KernelError::IllegalOperation`] when a page is not free; [`KernelError::RangeError`]
    /// for a bad size or alignment.
    pub fn create<R: ObjectRef>(
        &mut self,
        pa: PhysAddr,
        bytes: u64,
        value: T,
    ) -> Result<R, KernelError> {
        if !pa.raw().is_multiple_of(PAGE)
            || !bytes.is_multiple_of(PAGE)
            || bytes < size_of::<T>() as u64
        {
            return Err(KernelError::RangeError);
        }
        if !self.memory.covers(pa, bytes) {
            return Err(KernelError::NotEnoughMemory);
        }
        let page = self
            .memory
            .page_of(pa)
            .ok_or(KernelError::NotEnoughMemory)?;
        let pointer = self
            .memory
            .pointer(page)
            .ok_or(KernelError::NotEnoughMemory)?;
        let pages = u32::try_from(bytes / PAGE).map_err(|_| KernelError::RangeError)?;
        let generation = self.memory.claim(page, pages, T::KIND)?;
        // SAFETY: the pages were free and are now this object's (claimed above), so nothing
        // references them; the pointer is page-aligned and the object fits (`bytes` checked).
        unsafe { pointer.cast::<T>().as_ptr().write(value) };
        Ok(R::from_parts(page, generation))
    }

    /// Frees the object `r` names, returning its value; later lookups of `r` fail.
    pub fn free<R: ObjectRef>(&mut self, r: R) -> Option<T> {
        let pointer = self.pointer(r).ok()?;
        // SAFETY: the page holds a live `T` (argument 2); it is read out once and the pages are
        // marked free immediately, so it is never read again as a `T`.
        let value = unsafe { pointer.as_ptr().read() };
        self.memory.release(r.page());
        Some(value)
    }

    /// Every live object of this kind with its reference, in page order: a scan of the whole
    /// frame table, for the invariant checks of tests and the fuzz target only (never on a
    /// kernel path: its cost grows with RAM).
    pub fn iter<R: ObjectRef>(&self) -> impl Iterator<Item = (R, &T)> {
        (0..self.memory.pages).filter_map(move |page| {
            let info = self.memory.info(page);
            if info.kind != T::KIND {
                return None;
            }
            let r = R::from_parts(page, info.generation);
            self.get(r).ok().map(|object| (r, object))
        })
    }
}

impl<T: KernelObject> Default for Store<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// Fixed-size elements inside objects of one kind: element `i` of the object whose first page
/// is `page` lies at byte `i * size_of::<E>()` of it. Element 0 overlaps the object's own value
/// (its header), so it is never accessed: indices start at 1 (a CNode's slot 0 is the null
/// capability). Used for a CNode's slots.
#[derive(Debug)]
pub struct Elements<E> {
    memory: FrameTable,
    kind: PageKind,
    _elements: PhantomData<E>,
}

impl<E: Copy> Elements<E> {
    /// Elements of objects of `kind`, over no memory yet.
    #[must_use]
    pub const fn new(kind: PageKind) -> Self {
        Self {
            memory: FrameTable::EMPTY,
            kind,
            _elements: PhantomData,
        }
    }

    /// Uses `memory` from now on (boot, before any object exists).
    pub fn set_memory(&mut self, memory: FrameTable) {
        self.memory = memory;
    }

    /// A pointer to element `index` of the object of this kind and `generation` starting at
    /// `page`, if that object lives and `index` is in `1..count`. The caller passes the count
    /// that object was created with (a slot id records it with the generation): the generation
    /// names exactly that object, so the element lies inside it.
    #[inline(always)]
    fn pointer(&self, page: u32, generation: u32, index: u32, count: u32) -> Option<NonNull<E>> {
        if index == 0 || index >= count {
            return None;
        }
        let base = self.memory.object(page, self.kind, generation)?;
        // SAFETY: the element lies inside the object (index < count, the object's own element
        // count), whose pages the window maps contiguously.
        Some(unsafe { base.add(index as usize * size_of::<E>()) }.cast())
    }

    /// Element `index` (in `1..count`) of the object at `page` of `generation`.
    #[must_use]
    #[inline(always)]
    pub fn get(&self, page: u32, generation: u32, index: u32, count: u32) -> Option<&E> {
        let pointer = self.pointer(page, generation, index, count)?;
        // SAFETY: the element lies in a live object of this kind past its header (element 0
        // holds the header; `size_of::<E>()` is at least the header's size, asserted by the
        // user), initialised by `fill`; aligned because `E`'s size is a multiple of its
        // alignment and the object is page-aligned. `&self` excludes `get_mut`.
        Some(unsafe { pointer.as_ref() })
    }

    /// Element `index` (in `1..count`) of the object at `page` of `generation`, mutably.
    #[inline(always)]
    pub fn get_mut(
        &mut self,
        page: u32,
        generation: u32,
        index: u32,
        count: u32,
    ) -> Option<&mut E> {
        let mut pointer = self.pointer(page, generation, index, count)?;
        // SAFETY: as in `get`; `&mut self` makes this the only reference to any element.
        Some(unsafe { pointer.as_mut() })
    }

    /// Writes `value` into elements `1..count` of the object at `page` of `generation` (its
    /// creation; `count` is its element count). One lookup, then plain stores.
    pub fn fill(&mut self, page: u32, generation: u32, count: u32, value: E) {
        let Some(base) = self.memory.object(page, self.kind, generation) else {
            return;
        };
        let first = base.cast::<E>();
        // Word by word: a `memcpy` of each element would cost several times the stores (the
        // kernel's target has no vector registers, and CNodes have up to 4096 slots); volatile
        // stores, or LLVM turns the loop back into `memcpy` calls. Copied as `MaybeUninit`
        // words, so padding bytes are copied, never read as values.
        const { assert!(size_of::<E>().is_multiple_of(8) && align_of::<E>() >= 8) };
        let words = size_of::<E>() / 8;
        let source = (&raw const value).cast::<MaybeUninit<u64>>();
        for index in 1..count as usize {
            // SAFETY: the object lives (looked up above) and holds `count` elements, so element
            // `index < count` lies inside it; plain data is overwritten, word by word (`E` is a
            // whole number of aligned words, asserted above), from `value`'s own words.
            unsafe {
                let target = first.add(index).cast::<MaybeUninit<u64>>();
                for word in 0..words {
                    target.add(word).write_volatile(source.add(word).read());
                }
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod host {
    //! Simulated RAM for host tests: a page-aligned zeroed allocation and its frame table.

    use super::{FrameTable, PAGE, PageInfo};
    use std::alloc::{Layout, alloc_zeroed, dealloc};

    /// `bytes` of RAM at physical address `base`, with a frame table covering it.
    pub struct HostRam {
        layout: Layout,
        window: *mut u8,
        table: Box<[PageInfo]>,
        base: u64,
    }

    impl HostRam {
        /// Zeroed RAM (the allocation is lazily backed by the host's zero pages).
        pub fn new(base: u64, bytes: u64) -> Self {
            let layout = Layout::from_size_align(bytes as usize, PAGE as usize).unwrap();
            // SAFETY: the layout has a non-zero size.
            let window = unsafe { alloc_zeroed(layout) };
            assert!(!window.is_null(), "host RAM allocation failed");
            let pages = (bytes / PAGE) as usize;
            Self {
                layout,
                window,
                table: vec![PageInfo::FREE; pages].into_boxed_slice(),
                base,
            }
        }

        /// The frame table over this RAM, valid while `self` lives (the allocation and the boxed
        /// table stay where they are when `self` moves).
        pub fn table(&mut self) -> FrameTable {
            // SAFETY: the table and window are owned by `self` and used only through the
            // returned value while the caller keeps `self` alive; the allocation is
            // page-aligned.
            unsafe {
                FrameTable::new(
                    self.base,
                    self.table.len() as u32,
                    self.table.as_mut_ptr(),
                    self.window,
                )
            }
        }
    }

    impl Drop for HostRam {
        fn drop(&mut self) {
            // SAFETY: allocated in `new` with this layout.
            unsafe { dealloc(self.window, self.layout) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::host::HostRam;
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Thing(u64, u64);
    impl KernelObject for Thing {
        const KIND: PageKind = PageKind::Endpoint;
    }

    #[test]
    fn a_freed_reference_never_resolves_again() {
        let mut ram = HostRam::new(0x4000_0000, 16 * PAGE);
        let mut store: Store<Thing> = Store::new();
        store.set_memory(ram.table());
        let a: EndpointRef = store
            .create(PhysAddr::new(0x4000_1000), PAGE, Thing(1, 2))
            .unwrap();
        assert_eq!(store.get(a), Ok(&Thing(1, 2)));
        store.get_mut(a).unwrap().0 = 7;
        assert_eq!(store.free(a), Some(Thing(7, 2)));
        assert_eq!(store.get(a), Err(KernelError::Revoked));
        let b: EndpointRef = store
            .create(PhysAddr::new(0x4000_1000), PAGE, Thing(8, 0))
            .unwrap();
        assert_eq!(b.page(), a.page());
        assert_eq!(store.get(a), Err(KernelError::Revoked));
        assert_eq!(store.free(a), None);
        assert_eq!(store.get(b), Ok(&Thing(8, 0)));
    }

    #[test]
    fn objects_never_overlap_and_need_covered_memory() {
        let mut ram = HostRam::new(0x4000_0000, 16 * PAGE);
        let mut store: Store<Thing> = Store::new();
        store.set_memory(ram.table());
        let _: EndpointRef = store
            .create(PhysAddr::new(0x4000_0000), 3 * PAGE, Thing(1, 1))
            .unwrap();
        // Over its tail: refused.
        assert_eq!(
            store.create::<EndpointRef>(PhysAddr::new(0x4000_2000), PAGE, Thing(2, 2)),
            Err(KernelError::IllegalOperation)
        );
        // Beyond the table (device memory): refused.
        assert_eq!(
            store.create::<EndpointRef>(PhysAddr::new(0x0900_0000), PAGE, Thing(2, 2)),
            Err(KernelError::NotEnoughMemory)
        );
        assert_eq!(
            store.create::<EndpointRef>(PhysAddr::new(0x4000_f000), 2 * PAGE, Thing(2, 2)),
            Err(KernelError::NotEnoughMemory)
        );
        assert_eq!(
            store.create::<EndpointRef>(PhysAddr::new(0x4000_3800), PAGE, Thing(2, 2)),
            Err(KernelError::RangeError)
        );
        assert_eq!(store.iter::<EndpointRef>().count(), 1);
    }

    #[test]
    fn a_reference_of_another_kind_does_not_resolve() {
        #[derive(Debug)]
        struct Other;
        impl KernelObject for Other {
            const KIND: PageKind = PageKind::Thread;
        }
        let mut ram = HostRam::new(0x4000_0000, 4 * PAGE);
        let mut things: Store<Thing> = Store::new();
        let mut others: Store<Other> = Store::new();
        let _ = Other;
        things.set_memory(ram.table());
        others.set_memory(ram.table());
        let thing: EndpointRef = things
            .create(PhysAddr::new(0x4000_0000), PAGE, Thing(3, 3))
            .unwrap();
        let forged = ThreadRef::from_parts(thing.page(), thing.generation());
        assert!(others.get(forged).is_err());
    }
}

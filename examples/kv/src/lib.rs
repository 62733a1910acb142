//! Example: a key-value service, self-contained. One `protocol!` declaration gives the requests,
//! the replies, the client stub (`Client`) and the server's `serve` loop; [`Store`] is the
//! handler, pure logic that runs at EL0 (`main.rs`) and on the host under the hosted transport
//! (the tests below). Each client has its own keys: the store tells callers apart by the badge
//! of the endpoint capability they call through.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

use capvisor_ipc::cap::Badge;
use capvisor_ipc::protocol::{Context, Generation, ProtocolId, Version};

/// The server instance's generation (one instance that never restarts).
pub const GENERATION: Generation = Generation::new(1);
/// Entries the store holds, over all clients.
pub const CAPACITY: usize = 32;

capvisor_ipc::stable_codes! {
    /// Why the store refused a request.
    pub enum KvError: u16 {
        /// The caller has no value under that key.
        NotFound = 1,
        /// The store is full.
        Full = 2,
    }
}

capvisor_ipc::protocol! {
    /// The key-value protocol (ids from 0x100 are for services outside `ipc/`).
    protocol Kv {
        id: ProtocolId::new(0x120),
        version: Version::new(1, 0),
        error: KvError,
    }
    /// Stores `value` under `key`; returns the value it replaced, if any.
    fn put(key: u64, value: u64) -> Option<u64> as Put;
    /// The value under `key`.
    fn get(key: u64) -> u64 as Get;
    /// Removes `key`; returns its value.
    fn remove(key: u64) -> u64 as Remove;
    /// How many keys the caller has.
    fn count() -> u32 as Count;
}

/// One entry: whose, which key, what value.
#[derive(Debug, Clone, Copy)]
struct Entry {
    owner: Badge,
    key: u64,
    value: u64,
}

/// The store: a fixed table, no heap.
#[derive(Debug)]
pub struct Store {
    entries: [Option<Entry>; CAPACITY],
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    /// An empty store.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            entries: [None; CAPACITY],
        }
    }

    fn find(&mut self, owner: Badge, key: u64) -> Option<&mut Option<Entry>> {
        self.entries
            .iter_mut()
            .find(|slot| matches!(slot, Some(e) if e.owner == owner && e.key == key))
    }
}

impl Handler for Store {
    async fn put(
        &mut self,
        ctx: &mut Context,
        key: u64,
        value: u64,
    ) -> Result<Option<u64>, KvError> {
        let owner = ctx.badge();
        if let Some(Some(entry)) = self.find(owner, key) {
            return Ok(Some(core::mem::replace(&mut entry.value, value)));
        }
        let free = self
            .entries
            .iter_mut()
            .find(|slot| slot.is_none())
            .ok_or(KvError::Full)?;
        *free = Some(Entry { owner, key, value });
        Ok(None)
    }

    async fn get(&mut self, ctx: &mut Context, key: u64) -> Result<u64, KvError> {
        match self.find(ctx.badge(), key) {
            Some(Some(entry)) => Ok(entry.value),
            _ => Err(KvError::NotFound),
        }
    }

    async fn remove(&mut self, ctx: &mut Context, key: u64) -> Result<u64, KvError> {
        let slot = self.find(ctx.badge(), key).ok_or(KvError::NotFound)?;
        slot.take()
            .map(|entry| entry.value)
            .ok_or(KvError::NotFound)
    }

    async fn count(&mut self, ctx: &mut Context) -> Result<u32, KvError> {
        let owner = ctx.badge();
        Ok(self
            .entries
            .iter()
            .flatten()
            .filter(|e| e.owner == owner)
            .count() as u32)
    }
}

#[cfg(test)]
mod tests {
    use capvisor_ipc::cap::Badge;
    use capvisor_ipc::hosted::{self, HostedKernel};
    use capvisor_ipc::protocol::{Error, Generation};

    use super::{CAPACITY, Client, GENERATION, KvError, Store, serve};

    #[test]
    fn stores_replaces_and_removes_per_client() {
        let kernel = HostedKernel::new();
        let endpoint = kernel.endpoint();
        let mut server = endpoint.server();
        let _served = hosted::spawn(move || async move {
            serve(&mut server, &mut Store::new(), GENERATION).await
        });
        hosted::block_on(|_| async {
            let mut alice = Client::new(endpoint.client(Badge::new(1)), Generation::ANY);
            let mut bob = Client::new(endpoint.client(Badge::new(2)), Generation::ANY);
            assert_eq!(alice.put(7, 70).await, Ok(None));
            assert_eq!(alice.put(7, 71).await, Ok(Some(70)));
            assert_eq!(alice.get(7).await, Ok(71));
            // Bob has keys of his own.
            assert_eq!(bob.get(7).await, Err(Error::Service(KvError::NotFound)));
            assert_eq!(bob.put(7, 1).await, Ok(None));
            assert_eq!((alice.count().await, bob.count().await), (Ok(1), Ok(1)));
            assert_eq!(alice.remove(7).await, Ok(71));
            assert_eq!(
                alice.remove(7).await,
                Err(Error::Service(KvError::NotFound))
            );
            assert_eq!(bob.get(7).await, Ok(1));
        });
    }

    #[test]
    fn a_full_store_refuses_new_keys_but_replaces_old_ones() {
        let kernel = HostedKernel::new();
        let endpoint = kernel.endpoint();
        let mut server = endpoint.server();
        let _served = hosted::spawn(move || async move {
            serve(&mut server, &mut Store::new(), GENERATION).await
        });
        hosted::block_on(|_| async {
            let mut client = Client::new(endpoint.client(Badge::new(1)), Generation::ANY);
            for key in 0..CAPACITY as u64 {
                assert_eq!(client.put(key, key).await, Ok(None));
            }
            assert_eq!(client.put(99, 1).await, Err(Error::Service(KvError::Full)));
            assert_eq!(client.put(0, 5).await, Ok(Some(0)));
        });
    }
}

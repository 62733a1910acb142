//! Typed clients for the system services: the memory manager, the device broker, the nested
//! stage-2 walker and a guest's VMM, over the EL0 transport (or, in host tests, any
//! [`Transport`], such as `capvisor_ipc::hosted`'s).
//!
//! Each client is a thin wrapper over the protocol's generated `Client` (every method of the
//! protocol is reached through `Deref`, so the wrapper never lags behind the protocol), plus the
//! steps that involve capabilities done in one call: a frame lent with its request, a granted
//! capability taken (kind checked) from its reply.
//!
//! A service is named by a [`Service<P>`]: an endpoint capability typed by the protocol its server
//! speaks, with that server's generation. It is not an integer and not a bare endpoint, so a
//! memory manager's endpoint cannot be handed to an s2walk client by mistake:
//!
//! ```ignore
//! use capvisor_rt::clients::{S2WalkClient, Service};
//! let walker = Service::granted(Cap::from_cptr(CPtr::new(993)));  // Service<S2Walk>
//! let mut s2walk = S2WalkClient::connect(walker, ReceiveWindow::NONE);
//! s2walk.nest(vm, 40).await?;
//! s2walk.lend_frame(vm, Ipa::new(0x1000), frame).await?;
//! let outcome = s2walk.walk(vm, vtcr, vttbr, ipa, Access::Read).await?;
//! ```

use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};

use capvisor_ipc::cap::{Cap, DeviceFrame, Endpoint, Frame, IrqHandler};
use capvisor_ipc::protocol::{CallError, Error, Generation, Protocol, ServiceHandle, WireError};
use capvisor_ipc::protocols::{devbroker, memmgr, s2walk, vmm};
use capvisor_ipc::transport::Transport;
use capvisor_ipc::types::{Intid, Ipa, MemoryType, RegionId, VmId};

/// A service whose server speaks protocol `P`: its endpoint capability and the generation of the
/// server instance behind it.
pub struct Service<P> {
    endpoint: Cap<Endpoint>,
    generation: Generation,
    protocol: PhantomData<fn() -> P>,
}

impl<P> Clone for Service<P> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<P> Copy for Service<P> {}

impl<P> PartialEq for Service<P> {
    fn eq(&self, other: &Self) -> bool {
        self.endpoint == other.endpoint && self.generation == other.generation
    }
}

impl<P> Eq for Service<P> {}

impl<P: Protocol> core::fmt::Debug for Service<P> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Service")
            .field("protocol", &P::ID)
            .field("endpoint", &self.endpoint)
            .field("generation", &self.generation)
            .finish()
    }
}

impl<P: Protocol> Service<P> {
    /// The server instance `generation` behind `endpoint`, which speaks `P`.
    #[must_use]
    pub const fn new(endpoint: Cap<Endpoint>, generation: Generation) -> Self {
        Self {
            endpoint,
            generation,
            protocol: PhantomData,
        }
    }

    /// An endpoint a manifest grant gave (`caps = [{ endpoint = "…" }]`): whichever instance
    /// answers first ([`Generation::ANY`]; the first reply tells the client its generation).
    #[must_use]
    pub const fn granted(endpoint: Cap<Endpoint>) -> Self {
        Self::new(endpoint, Generation::ANY)
    }

    /// The handle a supervisor handed out, taken as a server of `P`.
    #[must_use]
    pub const fn from_handle(handle: ServiceHandle) -> Self {
        Self::new(handle.endpoint(), handle.generation())
    }

    /// The endpoint capability.
    #[must_use]
    pub const fn endpoint(&self) -> Cap<Endpoint> {
        self.endpoint
    }

    /// The generation the client starts with.
    #[must_use]
    pub const fn generation(&self) -> Generation {
        self.generation
    }
}

impl<P: Protocol> From<Service<P>> for ServiceHandle {
    fn from(service: Service<P>) -> Self {
        Self::new(service.endpoint, service.generation)
    }
}

/// Declares one client: the wrapper, its constructors and `Deref` to the generated client.
macro_rules! client {
    ($(#[$meta:meta])* $name:ident, $module:ident :: $protocol:ident) => {
        $(#[$meta])*
        #[derive(Debug)]
        pub struct $name<T> {
            client: $module::Client<T>,
        }

        impl<T: Transport> $name<T> {
            /// A client over `transport` (e.g. a hosted client in a host test) of the server
            /// instance `generation`.
            pub fn over(transport: T, generation: Generation) -> Self {
                Self {
                    client: $module::Client::new(transport, generation),
                }
            }

            /// The generated client, for what the wrapper does not add.
            pub fn inner(&mut self) -> &mut $module::Client<T> {
                &mut self.client
            }
        }

        #[cfg(target_os = "none")]
        impl $name<crate::ipc::EndpointClient> {
            /// A client of `service` over the EL0 transport; capabilities in replies land in
            /// `window`.
            #[must_use]
            pub fn connect(
                service: Service<$module::$protocol>,
                window: crate::ipc::ReceiveWindow,
            ) -> Self {
                Self::over(
                    crate::ipc::EndpointClient::new(service.endpoint(), window),
                    service.generation(),
                )
            }
        }

        impl<T> Deref for $name<T> {
            type Target = $module::Client<T>;

            fn deref(&self) -> &Self::Target {
                &self.client
            }
        }

        impl<T> DerefMut for $name<T> {
            fn deref_mut(&mut self) -> &mut Self::Target {
                &mut self.client
            }
        }
    };
}

client!(
    /// A client of the memory manager (`memmgr`, [`memmgr::MemMgr`]): guest RAM, stage-2
    /// faults, vCPU resets.
    MemMgrClient,
    memmgr::MemMgr
);

client!(
    /// A client of the device broker (`devbroker`, [`devbroker::DevBroker`]): device regions
    /// and interrupts, granted as capabilities.
    DevBrokerClient,
    devbroker::DevBroker
);

client!(
    /// A client of the nested stage-2 walker (`s2walk`, [`s2walk::S2Walk`]): walks of a guest
    /// hypervisor's stage-2 tables in the guest pages lent to it.
    S2WalkClient,
    s2walk::S2Walk
);

client!(
    /// A client of a guest's VMM (`vmm`, [`vmm::Vmm`]): start, stop, state, interrupt lines.
    VmmClient,
    vmm::Vmm
);

impl<T: Transport> DevBrokerClient<T> {
    /// Asks for device region `region` mapped as `memory_type`, `sharing` (only
    /// [`Sharing::Shared`](devbroker::Sharing::Shared) is ever granted: a private grant of
    /// device memory is refused, DESIGN.md rule 6), and takes the device-frame capability the
    /// reply carries; returns it with the region's size in bytes.
    ///
    /// # Errors
    /// The broker's refusal (`PrivateDeviceMapping` for a private grant), or a
    /// [`CallError`](capvisor_ipc::protocol::CallError) (including a reply whose capability is
    /// missing or not a device frame).
    pub async fn grant_region_frame(
        &mut self,
        region: RegionId,
        memory_type: MemoryType,
        sharing: devbroker::Sharing,
    ) -> Result<(Cap<DeviceFrame>, u64), Error<devbroker::BrokerError>> {
        let grant = self
            .client
            .grant_region(region, memory_type, sharing)
            .await?;
        let frame = self.client.core().take(grant.frame)?;
        Ok((frame, grant.size))
    }

    /// Asks for interrupt `intid` and takes the IRQ-handler capability the reply carries.
    ///
    /// # Errors
    /// As [`DevBrokerClient::grant_region_frame`].
    pub async fn grant_irq_handler(
        &mut self,
        intid: Intid,
    ) -> Result<Cap<IrqHandler>, Error<devbroker::BrokerError>> {
        let handler = self.client.grant_irq(intid).await?;
        Ok(self.client.core().take(handler)?)
    }
}

impl<T: Transport> S2WalkClient<T> {
    /// Lends the walker `frame`, the 4 KiB page of `vm`'s memory at `base` (`lend` with the
    /// frame attached). The walker maps it read-only; keep a copy to map it yourself. Revoking
    /// the frame (or what it was derived from) takes the page back.
    ///
    /// # Errors
    /// The walker's refusal (`UnknownVm`, `BadArgument`, `MissingFrame`, `Quota`, `Full`), or a
    /// [`CallError`] (`Encode(TooLarge)` when three capabilities were already attached).
    pub async fn lend_frame(
        &mut self,
        vm: VmId,
        base: Ipa,
        frame: Cap<Frame>,
    ) -> Result<(), Error<s2walk::WalkError>> {
        // Only a caller that attached three capabilities of its own first can fill the slots.
        let full = CallError::Encode(WireError::TooLarge);
        self.client.core().attach(frame).map_err(|_| full)?;
        self.client.lend(vm, base).await
    }
}

#[cfg(test)]
#[path = "clients_tests.rs"]
mod tests;

//! The `protocol!` macro: one declaration of an interface, from which its request and reply enums,
//! client stub, server `Handler` trait and dispatch all come (never hand-written twins).

/// Declares an IPC protocol in the current module.
///
/// ```
/// mod echo {
///     use capvisor_ipc::protocol::{Context, ProtocolId, Version};
///
///     capvisor_ipc::stable_codes! {
///         /// Echo's errors.
///         pub enum EchoError: u16 {
///             /// Zero is not echoed.
///             Zero = 1,
///         }
///     }
///
///     capvisor_ipc::protocol! {
///         /// The protocol marker's documentation.
///         protocol Echo {
///             id: ProtocolId::new(0x100),
///             version: Version::new(1, 0),
///             error: EchoError,
///         }
///         /// Documentation shared by the request variant, the client method and the handler method.
///         fn echo(value: u32) -> u32 as Echo;
///     }
///
///     /// A server implements the generated trait.
///     pub struct Server;
///
///     impl Handler for Server {
///         async fn echo(&mut self, _ctx: &mut Context, value: u32) -> Result<u32, EchoError> {
///             if value == 0 { Err(EchoError::Zero) } else { Ok(value) }
///         }
///     }
/// }
///
/// use capvisor_ipc::cap::Badge;
/// use capvisor_ipc::protocol::Context;
///
/// let mut ctx = Context::new(Badge::NONE, Default::default());
/// let request = echo::Request::Echo { value: 5 };
/// let reply = futures_lite::future::block_on(echo::dispatch(&mut echo::Server, &mut ctx, request));
/// assert_eq!(reply, echo::Reply::Echo(Ok(5)));
/// ```
///
/// generates, next to the declaration:
/// - `const ID` and `const VERSION`;
/// - `struct Echo` implementing [`Protocol`](crate::protocol::Protocol) (id, version, the two enums);
/// - `enum Request { Echo { value: u32 } }` and `enum Reply { Echo(Result<u32, EchoError>) }`, postcard
///   encoded (append methods only at the end within a major version: postcard numbers variants by position);
/// - `struct Client<T: Transport>` with `async fn echo(&mut self, value: u32) -> Result<u32, Error<EchoError>>`;
/// - `trait Handler` with `async fn echo(&mut self, ctx: &mut Context, value: u32) -> Result<u32, EchoError>`;
/// - `async fn dispatch` (a decoded request to the handler's method), `async fn handle` (one raw message
///   to one raw reply, malformed requests answered with a [`WireError`](crate::protocol::WireError)), and
///   `async fn serve` (the receive/dispatch/reply loop over a
///   [`ServerTransport`](crate::transport::ServerTransport)).
///
/// The invoking crate needs `serde` (with `derive`) as a dependency; argument and result types must be
/// `Serialize + DeserializeOwned + Debug + Clone + PartialEq`.
#[macro_export]
macro_rules! protocol {
    (
        $(#[$pmeta:meta])*
        protocol $protocol:ident {
            id: $id:expr,
            version: $version:expr,
            error: $error:ty $(,)?
        }
        $(
            $(#[$meta:meta])*
            fn $method:ident ( $( $arg:ident : $ty:ty ),* $(,)? ) -> $ret:ty as $variant:ident;
        )+
    ) => {
        $(#[$pmeta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $protocol;

        /// This protocol's id (its requests' label).
        pub const ID: $crate::protocol::ProtocolId = $id;
        /// This protocol's version.
        pub const VERSION: $crate::protocol::Version = $version;

        impl $crate::protocol::Protocol for $protocol {
            const ID: $crate::protocol::ProtocolId = ID;
            const VERSION: $crate::protocol::Version = VERSION;
            type Request = Request;
            type Reply = Reply;
        }

        /// The requests of this protocol, one variant per method.
        #[derive(Debug, Clone, PartialEq, ::serde::Serialize, ::serde::Deserialize)]
        pub enum Request {
            $( $(#[$meta])* $variant { $( #[allow(missing_docs)] $arg: $ty ),* } ),+
        }

        /// The replies of this protocol, one variant per method, each the method's result.
        #[derive(Debug, Clone, PartialEq, ::serde::Serialize, ::serde::Deserialize)]
        pub enum Reply {
            $( $(#[$meta])* $variant(::core::result::Result<$ret, $error>) ),+
        }

        /// The client stub: one async method per request.
        #[derive(Debug)]
        pub struct Client<T> {
            core: $crate::protocol::ClientCore<T>,
        }

        impl<T: $crate::transport::Transport> Client<T> {
            /// A client over `transport` of the server instance `generation`.
            pub fn new(transport: T, generation: $crate::protocol::Generation) -> Self {
                Self { core: $crate::protocol::ClientCore::new(transport, generation) }
            }

            /// The protocol-independent state: generation, capabilities to send and received.
            pub fn core(&mut self) -> &mut $crate::protocol::ClientCore<T> {
                &mut self.core
            }

            $(
                $(#[$meta])*
                ///
                /// # Errors
                /// The service's error, or a [`CallError`]($crate::protocol::CallError).
                pub async fn $method(&mut self $(, $arg: $ty)*)
                    -> ::core::result::Result<$ret, $crate::protocol::Error<$error>>
                {
                    let request = Request::$variant { $( $arg ),* };
                    #[allow(unreachable_patterns, reason = "a one-method protocol has one reply variant")]
                    match self.core.call::<$protocol>(&request).await? {
                        Reply::$variant(result) => result.map_err($crate::protocol::Error::Service),
                        _ => Err($crate::protocol::Error::Call($crate::protocol::CallError::ReplyMismatch)),
                    }
                }
            )+
        }

        /// The server side: implement one async method per request.
        #[allow(async_fn_in_trait, reason = "single-threaded executors; no Send bound wanted")]
        pub trait Handler {
            $(
                $(#[$meta])*
                ///
                /// # Errors
                /// The service's error, sent to the client in the reply.
                async fn $method(&mut self, ctx: &mut $crate::protocol::Context $(, $arg: $ty)*)
                    -> ::core::result::Result<$ret, $error>;
            )+
        }

        /// Calls the handler method that `request` names.
        pub async fn dispatch<H: Handler + ?Sized>(
            handler: &mut H,
            ctx: &mut $crate::protocol::Context,
            request: Request,
        ) -> Reply {
            match request {
                $( Request::$variant { $( $arg ),* } => Reply::$variant(handler.$method(ctx $(, $arg)*).await), )+
            }
        }

        /// Serves one raw message: decodes it (rejecting malformed ones with a typed error), dispatches
        /// it and encodes the reply into `buffer`, returning the reply's message-info word.
        pub async fn handle<H: Handler + ?Sized>(
            handler: &mut H,
            generation: $crate::protocol::Generation,
            info: $crate::abi::MessageInfo,
            buffer: &mut $crate::abi::IpcBuffer,
        ) -> $crate::abi::MessageInfo {
            match $crate::protocol::decode_request::<$protocol>(info, buffer, generation) {
                Ok((request, mut ctx)) => {
                    let reply = dispatch(handler, &mut ctx, request).await;
                    $crate::protocol::encode_reply::<$protocol>(Ok(&reply), ctx.reply_caps(), generation, buffer)
                }
                Err(error) => $crate::protocol::encode_reply::<$protocol>(Err(error), &[], generation, buffer),
            }
        }

        /// The server loop: receive, handle, reply and receive again, until the transport fails.
        pub async fn serve<S, H>(
            server: &mut S,
            handler: &mut H,
            generation: $crate::protocol::Generation,
        ) -> $crate::transport::TransportError
        where
            S: $crate::transport::ServerTransport,
            H: Handler + ?Sized,
        {
            let mut buffer = $crate::abi::IpcBuffer::default();
            let mut info = match server.recv(&mut buffer).await {
                Ok(info) => info,
                Err(error) => return error,
            };
            loop {
                let reply = handle(handler, generation, info, &mut buffer).await;
                info = match server.reply_recv(reply, &mut buffer).await {
                    Ok(info) => info,
                    Err(error) => return error,
                };
            }
        }
    };
}

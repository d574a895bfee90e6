//! ferry's wire.
//!
//! - [`ferry`] and [`ferry_ttrpc`]: the messages and ttRPC service generated
//!   from `proto/ferry.proto` (ttrpc-codegen, no protoc).
//! - [`addr`]: the transport addresses, spelled as Kata spells them.
//! - [`transport`]: connecting and listening over unix, vsock and hybrid vsock,
//!   with byte counters on every connection.
//! - [`wire`]: conversions between the wire messages and `Status` codes.

pub mod addr;
pub mod convert;
pub mod transport;
pub mod wire;

/// Generated protobuf messages of `proto/ferry.proto`.
#[allow(
    clippy::all,
    clippy::pedantic,
    unused,
    missing_docs,
    unsafe_code,
    nonstandard_style
)]
pub mod ferry {
    include!(concat!(env!("OUT_DIR"), "/ferry.rs"));
}

/// Generated ttRPC client and server glue of `proto/ferry.proto`.
#[allow(
    clippy::all,
    clippy::pedantic,
    unused,
    missing_docs,
    unsafe_code,
    nonstandard_style
)]
pub mod ferry_ttrpc {
    include!(concat!(env!("OUT_DIR"), "/ferry_ttrpc.rs"));
}

pub use addr::Address;

/// The protocol version this build speaks. A guest refuses a host whose
/// version differs; it is carried in `HelloRequest` and `HelloResponse`.
pub const PROTOCOL_VERSION: u32 = 1;

/// The largest content chunk in one `WriteChunk` (1 MiB, as Kata does), which
/// keeps every ttRPC message well under ttRPC's 4 MiB frame limit.
pub const MAX_CHUNK_BYTES: usize = 1 << 20;

/// A budget for one `PutEntries` or `GetManifest` message: entries (and their
/// inline data) are batched up to this many encoded bytes.
pub const MAX_BATCH_BYTES: usize = 1 << 20;

/// Files up to this size travel inline in their `Entry` instead of as chunks.
pub const MAX_INLINE_BYTES: u64 = 64 << 10;

/// The fully qualified ttRPC service name.
pub const SERVICE_NAME: &str = "ferry.v1.Ferry";

/// The default vsock port of ferry-agent (Kata's own agent listens on 1024).
pub const DEFAULT_VSOCK_PORT: u32 = 1025;

pub use protobuf;
/// Re-exports for users who build clients and servers.
pub use ttrpc;

//! skymap's wire format (`skymap.v1`) and the code every side shares about it.
//!
//! - `proto/skymap/v1/*.proto`: the source of truth for the wire.
//! - [`v1`]: the generated prost messages and tonic clients/servers
//!   (committed in `src/generated/`, checked by `tests/codegen.rs`).
//! - [`names`]: words for the numbers (verdicts, protocols, rcodes, ...) and
//!   [`names::sanitize`] for text that came from the network.
//! - [`jsonl`]: flows as JSON lines, Hubble's layout (`hubble observe -o json`)
//!   plus skymap's own fields; reads both.
//! - [`filter`]: flow filters in Hubble's vocabulary, shared by the relay,
//!   `skymap observe` and the explorer's `/`.
//! - [`metrics`]: Prometheus text exposition and the `/metrics` HTTP server
//!   the relay and the probe share.
//! - [`tls`] (feature `tls`): PEM certificates and keys with clear errors, and
//!   the client side of TLS to the relay, shared by the probe and `skymap`;
//!   [`test_pki`] (feature `test-pki`): certificates made on the spot for tests.

pub mod filter;
pub mod jsonl;
pub mod metrics;
pub mod names;
#[cfg(feature = "test-pki")]
pub mod test_pki;
#[cfg(feature = "tls")]
pub mod tls;

/// Generated types for `skymap.v1`.
#[allow(
    clippy::all,
    missing_docs,
    missing_debug_implementations,
    unused_qualifications
)]
pub mod v1 {
    include!("generated/skymap.v1.rs");

    /// Encoded `FileDescriptorSet` of every `skymap.v1` file, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!("generated/skymap_v1_descriptor.bin");
}

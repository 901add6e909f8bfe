//! The node-to-node media relay over QUIC (quinn): a track published on one node and wanted on
//! another crosses once per track per node, whatever the number of subscribers there.

pub(crate) mod client;
pub(crate) mod server;
pub(crate) mod tls;
pub mod wire;

//! junction-transport-api: what the server and every transport share above the engine — the
//! start contract ([`start`]: [`TransportContext`] in, [`Started`] out, the same for every
//! transport) and the HTTP pieces of every HTTP surface ([`http`]: the JSON error shape, a JSON
//! body extractor that names bad fields, bearer credentials) and reading TLS identities from PEM
//! files ([`pem`]).

pub mod http;
pub mod pem;
pub mod start;

pub use http::*;
pub use start::{AppLayer, IngressUrls, Link, Service, Started, TransportContext};

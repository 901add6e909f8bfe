//! junction-transport-api: what the server and every transport share above the engine. Today the
//! HTTP pieces of every HTTP surface ([`http`]: the JSON error shape, a JSON body extractor that
//! names bad fields, bearer credentials).

pub mod http;

pub use http::*;

//! What every route shares: the JSON extractor that names the offending field
//! ([`extract`]), the client's address behind trusted proxies ([`client_ip`]), the
//! service keys of `/v1` ([`service_key`]), the login flows' cookies and CSRF rule
//! ([`cookies`]), and request ids, logs, metrics and timeouts ([`telemetry`]).

pub mod client_ip;
pub mod cookies;
pub mod extract;
pub mod service_key;
pub mod telemetry;

//! What every `/v1` route can answer besides its own body, and the namespace of what `/v1`
//! creates.

use crate::error::Problem;

/// The namespace of what `/v1` creates: tokens, and the prefix of rate-limit keys (the
/// `/auth` flows count under `auth:`).
pub const APP_NAMESPACE: &str = "app";

/// The error answers every `/v1` route can give.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum ServiceErrors {
    /// No valid service key, or none configured: `unauthorized`.
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
    /// The store cannot be reached (`store_unavailable`) or the request took too long
    /// (`timeout`).
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
}

//! Service authentication for `/v1`: `Authorization: Bearer <key>` with a key from
//! `TESSERA_API_KEYS`, checked before anything else of the request is read.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use subtle::ConstantTimeEq;

use crate::error::AppError;

/// The configured service keys, kept as SHA-256 digests so that comparing them takes the
/// same time whatever the presented key's length or content.
#[derive(Clone, Default)]
pub struct ApiKeys(Arc<Vec<[u8; 32]>>);

impl ApiKeys {
    /// Keys from a comma-separated list; blanks are ignored.
    pub fn parse(list: &str) -> Self {
        ApiKeys(Arc::new(
            list.split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(|k| Sha256::digest(k.as_bytes()).into())
                .collect(),
        ))
    }

    /// Whether no key is configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `presented` is one of the keys. Every configured key is compared, in constant
    /// time, whatever matches first.
    pub fn accepts(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        self.0
            .iter()
            .fold(subtle::Choice::from(0), |found, k| found | k.ct_eq(&digest))
            .into()
    }
}

/// Refuses every `/v1` request without a valid service key, before its body is read.
pub async fn require_service_key(
    State(keys): State<ApiKeys>,
    req: Request,
    next: Next,
) -> Result<Response, AppError> {
    if keys.is_empty() {
        return Err(AppError::Unauthorized(
            "no service key is configured: set TESSERA_API_KEYS (or --api-keys) to a \
             comma-separated list of keys, and send one as `Authorization: Bearer <key>`"
                .into(),
        ));
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer)
        .map(str::trim);
    match presented {
        Some(key) if keys.accepts(key) => Ok(next.run(req).await),
        Some(_) => Err(AppError::Unauthorized(
            "the service key is not valid".into(),
        )),
        None => Err(AppError::Unauthorized(
            "send a service key as `Authorization: Bearer <key>`".into(),
        )),
    }
}

/// The credentials of an `Authorization: Bearer <key>` value; the scheme's name is
/// case-insensitive (RFC 9110, section 11.1).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, key) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_matched_exactly() {
        let keys = ApiKeys::parse(" alpha , beta,,");
        assert!(keys.accepts("alpha") && keys.accepts("beta"));
        assert!(!keys.accepts("alph") && !keys.accepts("alphaa") && !keys.accepts(""));
        assert!(ApiKeys::parse("").is_empty());
    }
}

//! Single-use tokens shared by every worker of a deployment.
//!
//! What this crate guarantees, on every backend:
//!
//! - **Only hashes are stored.** A token is stored under its SHA-256; its secret payload
//!   (nonce, PKCE verifier, code hash, data) is sealed with ChaCha20-Poly1305 under a key
//!   derived from the token itself by HKDF ([`seal`]). A dump or a replica of the store opens
//!   nothing, and a record copied under another token's hash does not open either. Sealing
//!   happens once, in [`Tokens`], before any backend sees the record.
//! - **Consume is atomic and single-use.** Of any number of concurrent consumers on any
//!   number of workers, exactly one gets the record.
//! - **No oracle.** Unknown, expired, consumed, wrong-kind and wrong-challenge tokens all get
//!   [`StoreError::InvalidOrExpired`]; a wrong or missing challenge does not burn the token.
//! - **The store's clock decides.** Expiry is judged by the database's clock, never by a
//!   worker's, so workers with skewed clocks agree.
//!
//! # Layout
//!
//! - [`TokenStore`]: the contract a backend implements, on hashes and sealed bytes.
//! - [`Tokens`]: the front every caller uses: generates, hashes, seals and opens.
//! - [`sql`]: the backend on SQLite and PostgreSQL (sea-orm); on PostgreSQL its consumes
//!   are gathered into shared statements under load (`gather`).
//! - [`redis`]: the backend on Redis or a Redis Cluster.
//! - [`seal`]: the AEAD sealing of payloads.

mod gather;
pub mod redis;
pub mod seal;
pub mod sql;
mod tokens;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::time::Duration;
use tessera_entity::{ChallengeHash, TokenHash, TokenType};

pub use redis::RedisTokenStore;
pub use sql::SqlTokenStore;
pub use tokens::{ConsumedToken, DEFAULT_PURGE_BATCH, IssuedToken, Tokens, UserToken};

/// What can go wrong with a token operation.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The token is unknown, expired, already consumed, of another kind, or the challenge
    /// does not match: one answer for all, so that it reveals nothing.
    #[error("invalid or expired token")]
    InvalidOrExpired,
    /// The backing store could not be reached or did not answer.
    #[error("token store unavailable: {0}")]
    Unavailable(#[source] tessera_backend::BackendError),
    /// The store answered something this build cannot read (for example a schema mismatch).
    #[error("token store error: {0}")]
    Backend(String),
}

impl From<tessera_backend::BackendError> for StoreError {
    /// A store that cannot be reached is [`StoreError::Unavailable`], its cause kept; any
    /// other failure is [`StoreError::Backend`].
    fn from(e: tessera_backend::BackendError) -> Self {
        if e.is_unreachable() {
            StoreError::Unavailable(e)
        } else {
            StoreError::Backend(e.to_string())
        }
    }
}

/// A sealed record ready to be stored: everything a backend sees of a new token.
#[derive(Debug, Clone)]
pub struct SealedToken {
    /// SHA-256 of the token: the key of the record.
    pub hash: TokenHash,
    /// The kind; part of every lookup.
    pub kind: TokenType,
    /// The user the token speaks for, in clear so that revoke can find it.
    pub username: Option<String>,
    /// The OIDC provider, in clear.
    pub provider_id: Option<String>,
    /// SHA-256 of the challenge the token is bound to.
    pub challenge_hash: Option<ChallengeHash>,
    /// The sealed payload.
    pub sealed: Vec<u8>,
    /// Lifetime, counted by the store's clock from the moment it stores the record.
    pub ttl: Duration,
}

/// A record as a backend returns it from consume or peek.
#[derive(Debug, Clone)]
pub struct StoredRecord {
    /// The kind (always the one asked for).
    pub kind: TokenType,
    /// The user.
    pub username: Option<String>,
    /// The OIDC provider.
    pub provider_id: Option<String>,
    /// The sealed payload, opened by [`Tokens`].
    pub sealed: Vec<u8>,
    /// When the token expires, by the store's clock.
    pub expires_at: DateTime<Utc>,
    /// When it was issued, by the store's clock.
    pub created_at: DateTime<Utc>,
}

/// Which stored record a consume or a peek asks for: the live record of `kind` whose hash
/// is `hash` and, for a record bound to a challenge, whose challenge hash is `challenge`.
#[derive(Debug, Clone, Copy)]
pub struct Lookup<'a> {
    /// The token's kind.
    pub kind: TokenType,
    /// The token's hash.
    pub hash: &'a TokenHash,
    /// The hash of the challenge presented with it.
    pub challenge: Option<&'a ChallengeHash>,
    /// Remove the record (single use); `false` only reads it.
    pub consume: bool,
}

/// The contract of a token backend.
///
/// - [`issue`](TokenStore::issue) stores a record; its expiry is the store's clock at that
///   moment plus the record's `ttl`.
/// - [`consume`](TokenStore::consume) removes and returns the record whose hash, kind and
///   challenge hash all match and that has not expired by the store's clock, in **one atomic
///   step**: under any concurrency, on any number of workers, at most one caller gets
///   `Some` for a given record. A challenge mismatch (including a missing or an extra
///   challenge) matches nothing and leaves the record in place.
/// - [`peek`](TokenStore::peek) answers like consume without removing anything.
/// - [`revoke`](TokenStore::revoke) removes every record of a kind for a user.
/// - [`purge`](TokenStore::purge) removes one batch of at most `batch` expired records in
///   one short statement, and is safe to run on every worker at once; [`Tokens::purge`]
///   repeats it until a batch comes back short.
#[async_trait]
pub trait TokenStore: Send + Sync + 'static {
    /// Stores a new record and answers its expiry.
    async fn issue(&self, token: SealedToken) -> Result<DateTime<Utc>, StoreError>;

    /// Returns the live record that `lookup` matches, removing it atomically when
    /// `lookup.consume` is set: a consumed record is returned to exactly one caller.
    async fn take(&self, lookup: Lookup<'_>) -> Result<Option<StoredRecord>, StoreError>;

    /// Removes all records of `kind` for `username`; answers how many.
    async fn revoke(&self, kind: TokenType, username: &str) -> Result<u64, StoreError>;

    /// Claims `hash` for `ttl_ms` if no live claim holds it: atomic on every backend, so of
    /// any number of concurrent claims of one hash exactly one answers `true`. A claim that
    /// has expired may be made again.
    async fn claim(&self, hash: &TokenHash, ttl_ms: i64) -> Result<bool, StoreError>;

    /// Removes at most about `batch` expired records; answers how many (fewer than `batch`
    /// when no more are left).
    async fn purge(&self, batch: u32) -> Result<u64, StoreError>;

    /// Answers `Ok` when the store is reachable.
    async fn ping(&self) -> Result<(), StoreError>;
}

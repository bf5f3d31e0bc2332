//! The front of the token store: the only place tokens are generated, hashed, sealed and
//! opened, whatever the backend.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use std::fmt;
use std::sync::Arc;
use tessera_backend::pace::Pace;
use tessera_entity::{
    AuthEphemeralToken, Challenge, Payload, Token, TokenHash, TokenType, Username,
};

use crate::seal::{self, Binding};
use crate::{Lookup, SealedToken, StoreError, StoredRecord, TokenStore};

/// Default number of rows one purge statement deletes.
pub const DEFAULT_PURGE_BATCH: u32 = 1000;

/// A freshly issued token: the secret to hand out once, and its expiry.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    /// The token; its secret is shown only by [`Token::expose`].
    pub token: Token,
    /// When it expires, by the store's clock.
    pub expires_at: DateTime<Utc>,
}

/// What a consumed or peeked token carried.
#[derive(Clone, PartialEq)]
pub struct ConsumedToken {
    /// The kind.
    pub kind: TokenType,
    /// The user.
    pub username: Option<String>,
    /// The OIDC provider.
    pub provider_id: Option<String>,
    /// The opened payload (nonce, code_verifier, code_hash, data).
    pub payload: Payload,
    /// When it expires (or would have), by the store's clock.
    pub expires_at: DateTime<Utc>,
    /// When it was issued, by the store's clock.
    pub created_at: DateTime<Utc>,
}

/// A consumed or peeked token that speaks for a user (`pre_auth`, `mfa_enforce`,
/// `password_reset`, `email_otp_setup`, `totp_setup`, `oidc_exchange`, ...): its user is a
/// checked [`Username`], never a missing or raw one. Made from a [`ConsumedToken`] with
/// `UserToken::try_from`, as in `tokens.consume(..).await.and_then(UserToken::try_from)`.
#[derive(Clone, PartialEq)]
pub struct UserToken {
    /// The kind.
    pub kind: TokenType,
    /// The user.
    pub username: Username,
    /// The opened payload.
    pub payload: Payload,
    /// When it expires (or would have), by the store's clock.
    pub expires_at: DateTime<Utc>,
}

impl fmt::Debug for UserToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserToken")
            .field("kind", &self.kind)
            .field("username", &self.username)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl TryFrom<ConsumedToken> for UserToken {
    type Error = StoreError;

    /// Refuses a token that names no user: of a kind without one, it is not what the
    /// caller asked for; of a kind with one, the store holds something this build did not
    /// write.
    fn try_from(t: ConsumedToken) -> Result<Self, StoreError> {
        let username = t
            .username
            .ok_or(StoreError::InvalidOrExpired)
            .and_then(|u| {
                Username::parse(u).map_err(|e| StoreError::Backend(format!("stored username: {e}")))
            })?;
        Ok(UserToken {
            kind: t.kind,
            username,
            payload: t.payload,
            expires_at: t.expires_at,
        })
    }
}

impl fmt::Debug for ConsumedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsumedToken")
            .field("kind", &self.kind)
            .field("username", &self.username)
            .field("provider_id", &self.provider_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// Issues, consumes, peeks and revokes tokens on any [`TokenStore`].
///
/// A front may be bound to a namespace ([`Tokens::in_namespace`]): its tokens are stored
/// under a hash and a username that no other namespace (nor the front without one) can
/// produce, so fronts in different namespaces can neither consume, peek at nor revoke each
/// other's tokens, whatever kinds they share.
#[derive(Clone)]
pub struct Tokens {
    store: Arc<dyn TokenStore>,
    purge_batch: u32,
    namespace: Option<&'static str>,
}

/// Between a namespace and a username in the stored username: a control character, which
/// no [`Username`] contains, so a namespaced name never equals a plain one.
const NAMESPACE_SEPARATOR: char = '\u{1f}';

impl Tokens {
    /// A front over `store`.
    pub fn new(store: Arc<dyn TokenStore>) -> Self {
        Tokens {
            store,
            purge_batch: DEFAULT_PURGE_BATCH,
            namespace: None,
        }
    }

    /// The same store, with tokens kept apart in `namespace` (for example `app` for the
    /// tokens other services manage through `/v1`).
    pub fn in_namespace(&self, namespace: &'static str) -> Self {
        Tokens {
            namespace: Some(namespace),
            ..self.clone()
        }
    }

    /// The hash a token is stored under in this front's namespace.
    fn hash_of(&self, token: &Token) -> TokenHash {
        match self.namespace {
            None => token.hash(),
            Some(ns) => {
                let mut h = Sha256::new();
                h.update(ns.as_bytes());
                h.update([0]);
                h.update(token.expose().as_bytes());
                TokenHash(h.finalize().into())
            }
        }
    }

    /// The username as stored in this front's namespace.
    fn stored_name(&self, username: &str) -> String {
        match self.namespace {
            None => username.to_owned(),
            Some(ns) => format!("{ns}{NAMESPACE_SEPARATOR}{username}"),
        }
    }

    /// The username of a stored record, if the record belongs to this namespace.
    fn own_name(&self, stored: Option<String>) -> Result<Option<String>, StoreError> {
        let Some(stored) = stored else {
            return Ok(None);
        };
        match (self.namespace, stored.split_once(NAMESPACE_SEPARATOR)) {
            (None, None) => Ok(Some(stored)),
            (Some(ns), Some((found, name))) if found == ns => Ok(Some(name.to_owned())),
            _ => Err(StoreError::InvalidOrExpired),
        }
    }

    /// Sets how many rows one purge statement may delete.
    pub fn with_purge_batch(mut self, batch: u32) -> Self {
        self.purge_batch = batch.max(1);
        self
    }

    /// How many rows one purge statement deletes at most.
    pub fn purge_batch(&self) -> u32 {
        self.purge_batch
    }

    /// The backend.
    pub fn store(&self) -> &Arc<dyn TokenStore> {
        &self.store
    }

    /// Issues a token: a fresh secret, stored only as its hash with its payload sealed.
    pub async fn issue(&self, new: AuthEphemeralToken) -> Result<IssuedToken, StoreError> {
        let token = Token::generate(new.kind());
        let challenge_hash = new.challenge().map(Challenge::hash);
        let username = new.username().map(|u| self.stored_name(u.as_str()));
        let binding = Binding {
            kind: new.kind(),
            username: username.as_deref(),
            provider_id: new.provider_id(),
            challenge_hash: challenge_hash.as_ref(),
        };
        let sealed = seal::seal(&token, &binding, new.payload());
        let expires_at = self
            .store
            .issue(SealedToken {
                hash: self.hash_of(&token),
                kind: new.kind(),
                username,
                provider_id: new.provider_id().map(str::to_owned),
                challenge_hash,
                sealed,
                ttl: new.ttl(),
            })
            .await?;
        Ok(IssuedToken { token, expires_at })
    }

    /// Consumes a token: at most once, by exactly one caller, on any worker.
    pub async fn consume(
        &self,
        kind: TokenType,
        presented: &str,
        challenge: Option<&Challenge>,
    ) -> Result<ConsumedToken, StoreError> {
        self.take(kind, presented, challenge, true).await
    }

    /// Reads a token without consuming it.
    pub async fn peek(
        &self,
        kind: TokenType,
        presented: &str,
        challenge: Option<&Challenge>,
    ) -> Result<ConsumedToken, StoreError> {
        self.take(kind, presented, challenge, false).await
    }

    async fn take(
        &self,
        kind: TokenType,
        presented: &str,
        challenge: Option<&Challenge>,
        consume: bool,
    ) -> Result<ConsumedToken, StoreError> {
        let token = Token::parse(kind, presented).ok_or(StoreError::InvalidOrExpired)?;
        let challenge_hash = challenge.map(Challenge::hash);
        let hash = self.hash_of(&token);
        let lookup = Lookup {
            kind,
            hash: &hash,
            challenge: challenge_hash.as_ref(),
            consume,
        };
        let record = self.store.take(lookup).await?;
        self.open(&token, challenge_hash.as_ref(), record)
    }

    /// Claims `key` for `ttl` unless a live claim of it exists in this front's namespace:
    /// `true` for exactly one of any number of concurrent claims, on any worker (an app's
    /// replay guard: `once` on `user:window:code`). Only a hash of the key is stored.
    pub async fn claim_once(
        &self,
        key: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, StoreError> {
        let mut h = Sha256::new();
        h.update(self.namespace.unwrap_or("").as_bytes());
        h.update([0]);
        h.update(b"once");
        h.update([0]);
        h.update(key.as_bytes());
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1);
        self.store
            .claim(&TokenHash(h.finalize().into()), ttl_ms)
            .await
    }

    /// Removes every token of `kind` for `username`.
    pub async fn revoke(&self, kind: TokenType, username: &Username) -> Result<u64, StoreError> {
        self.store
            .revoke(kind, &self.stored_name(username.as_str()))
            .await
    }

    /// Removes expired tokens in bounded batches, pausing between them as `pace` says.
    pub async fn purge(&self, pace: Pace) -> Result<u64, StoreError> {
        pace.batches(self.purge_batch, || self.store.purge(self.purge_batch))
            .await
    }

    /// Answers `Ok` when the store is reachable.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.store.ping().await
    }

    fn open(
        &self,
        token: &Token,
        challenge_hash: Option<&tessera_entity::ChallengeHash>,
        record: Option<StoredRecord>,
    ) -> Result<ConsumedToken, StoreError> {
        let record = record.ok_or(StoreError::InvalidOrExpired)?;
        let binding = Binding {
            kind: record.kind,
            username: record.username.as_deref(),
            provider_id: record.provider_id.as_deref(),
            challenge_hash,
        };
        let Some(payload) = seal::open(token, &binding, &record.sealed) else {
            // The hash matched but the seal did not: the record was edited or moved in the
            // store. Treat it as unknown, and say so to the operator.
            tracing::warn!(kind = %record.kind, "a token record failed to open: edited or moved in the store");
            return Err(StoreError::InvalidOrExpired);
        };
        Ok(ConsumedToken {
            kind: record.kind,
            username: self.own_name(record.username)?,
            provider_id: record.provider_id,
            payload,
            expires_at: record.expires_at,
            created_at: record.created_at,
        })
    }
}

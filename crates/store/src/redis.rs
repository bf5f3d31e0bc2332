//! The Redis backend, for one server or a Redis Cluster.
//!
//! A token is one hash, `tessera:tok:{HASH}`, with a native TTL, so Redis forgets it by
//! itself and purge has nothing to do; its expiry is the key's own (`PEXPIRETIME`), not a
//! field. Consume is one Lua script on that one key: it checks kind and challenge hash and
//! deletes in the same atomic step, so of concurrent consumers exactly one gets the record,
//! and a wrong challenge leaves it in place. Revoke reads a per-user index,
//! `tessera:tok:ix:{KIND:USER}`, instead of scanning the keyspace: a hash from each token
//! hash to its expiry in seconds, small enough for Redis's compact listpack encoding. The
//! index lives in another slot than the tokens, so it is maintained by separate commands.
//! Consume leaves the token's entry in the index (one round trip, not two); each issue
//! drops expired entries from a sample of the index, so the entries of a user who is
//! issued tokens without pause stay bounded by their live tokens, and revoke skips
//! entries whose token is gone.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use redis::{RedisError, Script};
use std::sync::Arc;
use tessera_backend::redis::RedisConnection;
use tessera_entity::{TokenHash, TokenType, hex};

use crate::{Lookup, SealedToken, StoreError, StoredRecord, TokenStore};

/// Stores a token with its TTL; answers {created_ms, expires_ms} by Redis's clock. Fields
/// with nothing to say (no user, provider or challenge) are left out, and so is the
/// expiry: it is the key's.
/// KEYS[1] token key; ARGV kind, username, provider, challenge hash (32 bytes), sealed,
/// ttl_ms.
const ISSUE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[6])
local f = {'k', ARGV[1], 's', ARGV[5], 't', now}
if ARGV[2] ~= '' then f[#f + 1] = 'u'; f[#f + 1] = ARGV[2] end
if ARGV[3] ~= '' then f[#f + 1] = 'p'; f[#f + 1] = ARGV[3] end
if ARGV[4] ~= '' then f[#f + 1] = 'c'; f[#f + 1] = ARGV[4] end
redis.call('HSET', KEYS[1], unpack(f))
redis.call('PEXPIREAT', KEYS[1], now + ttl)
return {now, now + ttl}
"#;

/// Returns and (with ARGV[3] = '1') deletes the token if kind and challenge match.
/// KEYS[1] token key; ARGV kind, challenge hash ('' for none), delete, and the challenge
/// hash in hex (how tokens issued before it was kept as bytes hold it). Tokens issued
/// before the expiry was left to the key carry it as field `e`.
const TAKE: &str = r#"
local v = redis.call('HMGET', KEYS[1], 'k', 'c', 'u', 'p', 's', 'e', 't')
local c = v[2] or ''
if not v[1] or v[1] ~= ARGV[1] or (c ~= ARGV[2] and c ~= ARGV[4]) then return false end
local e = v[6] or redis.call('PEXPIRETIME', KEYS[1])
if ARGV[3] == '1' then redis.call('DEL', KEYS[1]) end
return {v[3] or '', v[4] or '', v[5], e, v[7]}
"#;

/// Adds a token to a user's index with its expiry (unix seconds, rounded up) and keeps the
/// index alive as long as its newest token. Before that it drops the expired entries among
/// up to 16 random ones: all of a small index, and of a large one enough that expired
/// entries stay a small share of it. KEYS[1] index key; ARGV token hash (32 bytes), ttl_ms.
const INDEX: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
local expires = math.ceil((now + ttl) / 1000)
local sample = redis.call('HRANDFIELD', KEYS[1], 16, 'WITHVALUES')
for i = 1, #sample, 2 do
  if tonumber(sample[i + 1]) * 1000 <= now then redis.call('HDEL', KEYS[1], sample[i]) end
end
redis.call('HSET', KEYS[1], ARGV[1], expires)
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1
"#;

/// Tokens in Redis or a Redis Cluster.
#[derive(Clone)]
pub struct RedisTokenStore {
    conn: RedisConnection,
    prefix: Arc<str>,
    issue: Arc<Script>,
    take: Arc<Script>,
    index: Arc<Script>,
}

impl RedisTokenStore {
    /// A store on `conn`, with keys under `tessera:tok:`.
    pub fn new(conn: RedisConnection) -> Self {
        RedisTokenStore {
            conn,
            prefix: Arc::from("tessera:tok:"),
            issue: Arc::new(Script::new(ISSUE)),
            take: Arc::new(Script::new(TAKE)),
            index: Arc::new(Script::new(INDEX)),
        }
    }

    /// The same store with keys under another prefix (tests use one each).
    pub fn with_prefix(mut self, prefix: &str) -> Self {
        self.prefix = Arc::from(prefix);
        self
    }

    /// The key of the token with `hash`.
    pub fn token_key(&self, hash: &TokenHash) -> String {
        format!("{}{{{}}}", self.prefix, hash.to_hex())
    }

    /// The user's index of tokens of `kind`: `ix:` for the hash kept now, `idx:` for the set
    /// that versions before it kept (still read by revoke for the tokens those issued).
    fn index_key(&self, which: &str, kind: TokenType, username: &str) -> String {
        let user = username
            .replace('%', "%25")
            .replace('{', "%7B")
            .replace('}', "%7D");
        format!("{}{which}:{{{}:{}}}", self.prefix, kind.as_ref(), user)
    }

    async fn run_take(&self, lookup: Lookup<'_>) -> Result<Option<StoredRecord>, StoreError> {
        let mut conn = self.conn.clone();
        let reply: Option<(String, String, Vec<u8>, i64, i64)> = self
            .take
            .key(self.token_key(lookup.hash))
            .arg(lookup.kind.as_ref())
            .arg(lookup.challenge.map(|c| c.0.to_vec()).unwrap_or_default())
            .arg(if lookup.consume { "1" } else { "0" })
            .arg(lookup.challenge.map(|c| hex(&c.0)).unwrap_or_default())
            .invoke_async(&mut conn)
            .await
            .map_err(map_err)?;
        let Some((username, provider_id, sealed, expires_ms, created_ms)) = reply else {
            return Ok(None);
        };
        let opt = |s: String| (!s.is_empty()).then_some(s);
        Ok(Some(StoredRecord {
            kind: lookup.kind,
            username: opt(username),
            provider_id: opt(provider_id),
            sealed,
            expires_at: ms_to_time(expires_ms)?,
            created_at: ms_to_time(created_ms)?,
        }))
    }
}

fn ms_to_time(ms: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| StoreError::Backend(format!("bad timestamp {ms} in Redis")))
}

#[async_trait]
impl TokenStore for RedisTokenStore {
    async fn issue(&self, t: SealedToken) -> Result<DateTime<Utc>, StoreError> {
        let ttl_ms = i64::try_from(t.ttl.as_millis()).unwrap_or(i64::MAX).max(1);
        let mut conn = self.conn.clone();
        // Index first: a token that exists is always revocable.
        if let Some(user) = &t.username {
            self.index
                .key(self.index_key("ix", t.kind, user))
                .arg(t.hash.as_bytes())
                .arg(ttl_ms)
                .invoke_async::<i64>(&mut conn)
                .await
                .map_err(map_err)?;
        }
        let (_created, expires): (i64, i64) = self
            .issue
            .key(self.token_key(&t.hash))
            .arg(t.kind.as_ref())
            .arg(t.username.unwrap_or_default())
            .arg(t.provider_id.unwrap_or_default())
            .arg(t.challenge_hash.map(|c| c.0.to_vec()).unwrap_or_default())
            .arg(t.sealed)
            .arg(ttl_ms)
            .invoke_async(&mut conn)
            .await
            .map_err(map_err)?;
        ms_to_time(expires)
    }

    async fn take(&self, lookup: Lookup<'_>) -> Result<Option<StoredRecord>, StoreError> {
        self.run_take(lookup).await
    }

    async fn revoke(&self, kind: TokenType, username: &str) -> Result<u64, StoreError> {
        let mut conn = self.conn.clone();
        let index = self.index_key("ix", kind, username);
        let legacy = self.index_key("idx", kind, username);
        // Entries are the token hashes' 32 bytes (or, in the set of earlier versions, also
        // their hex).
        let (entries, legacy_entries): (Vec<Vec<u8>>, Vec<Vec<u8>>) = redis::pipe()
            .cmd("HKEYS")
            .arg(&index)
            .cmd("SMEMBERS")
            .arg(&legacy)
            .query_async(&mut conn)
            .await
            .map_err(map_err)?;
        let mut total = 0;
        // Each index with the command that removes its entries.
        for (index, remove, entries) in
            [(&index, "HDEL", entries), (&legacy, "SREM", legacy_entries)]
        {
            let mut revoked = Vec::new();
            for entry in &entries {
                let h = match entry.len() {
                    32 => hex(entry),
                    _ => String::from_utf8_lossy(entry).into_owned(),
                };
                // Token keys live in other slots: one DEL each, checking the kind so that an
                // index can never delete a token of another kind.
                let key = format!("{}{{{h}}}", self.prefix);
                let stored_kind: Option<String> = redis::cmd("HGET")
                    .arg(&key)
                    .arg("k")
                    .query_async(&mut conn)
                    .await
                    .map_err(map_err)?;
                if stored_kind.as_deref() == Some(kind.as_ref()) {
                    let n: u64 = redis::cmd("DEL")
                        .arg(&key)
                        .query_async(&mut conn)
                        .await
                        .map_err(map_err)?;
                    if n == 1 {
                        revoked.push(entry);
                    }
                }
            }
            // Only the tokens deleted above leave the index. An entry whose token is not
            // there may belong to a token being issued right now (issue indexes first), so
            // it stays for the next revoke, like every entry added while this one ran; the
            // stale ones go as later issues sample the index, or when it expires with the
            // user's newest token.
            if !revoked.is_empty() {
                let _: i64 = redis::cmd(remove)
                    .arg(index)
                    .arg(&revoked)
                    .query_async(&mut conn)
                    .await
                    .map_err(map_err)?;
            }
            total += revoked.len() as u64;
        }
        Ok(total)
    }

    async fn claim(&self, hash: &TokenHash, ttl_ms: i64) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let key = format!("{}once:{{{}}}", self.prefix, hash.to_hex());
        let set: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms.max(1))
            .query_async(&mut conn)
            .await
            .map_err(map_err)?;
        Ok(set.is_some())
    }

    async fn purge(&self, _batch: u32) -> Result<u64, StoreError> {
        // Every token key carries its own TTL.
        Ok(0)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.conn.ping().await.map_err(map_err)
    }
}

fn map_err(e: RedisError) -> StoreError {
    tessera_backend::BackendError::from(e).into()
}

//! The Redis backend, for one server or a Redis Cluster.
//!
//! Each decision is one round trip: a Lua script run with EVALSHA (the client falls back to
//! loading it on NOSCRIPT), which Redis executes atomically. The time is read from Redis
//! `TIME` inside the script, so every worker uses the same clock. A decision touches one
//! key, named `tessera:rl:{EVENT:KEY}`: the braces are a hash tag, so anything a decision
//! ever reads lives in one Cluster slot, and braces in the key are escaped so that they
//! cannot move the tag. Keys expire by themselves when their window is over.

use async_trait::async_trait;
use redis::{RedisError, Script, Value};
use std::sync::Arc;
use std::time::Duration;
pub use tessera_backend::redis::RedisConnection;

use crate::{Algorithm, Clock, Decision, Event, Hit, LimiterError, LimiterStore, Policy};

/// The preamble of both scripts: the arguments they share and "now" — Redis `TIME`, read
/// inside the script so every worker uses the same clock, unless a test's manual clock
/// passes it in ARGV[4].
const PREAMBLE: &str = r#"
local limit, cost = tonumber(ARGV[1]), tonumber(ARGV[3])
local now
if ARGV[4] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
else
  now = tonumber(ARGV[4])
end
"#;

/// Sliding log in a sorted set: one member per admitted unit, scored by its time.
/// ARGV: limit, window_ms, cost, now_ms ("" = Redis TIME), an id unique to this hit,
/// record (1/0).
/// An admitted hit, the common case, returns only the count it found (an integer): the
/// rest of its decision follows from the policy, and a bare integer is the cheapest reply.
/// Anything else returns {allowed, remaining, reset_after_ms, retry_after_ms}. The
/// arithmetic is that of `algorithm::sliding_log`.
const SLIDING_LOG: &str = r#"
local window = tonumber(ARGV[2])
local record = ARGV[6] == '1'
local floor = now - window
local n
if record then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', floor)
  n = redis.call('ZCARD', KEYS[1])
else
  n = redis.call('ZCOUNT', KEYS[1], '(' .. floor, '+inf')
end
local allowed = n + cost <= limit
if allowed and record then
  if cost == 1 then
    redis.call('ZADD', KEYS[1], now, ARGV[5])
  else
    local members = {}
    for i = 1, cost do
      members[#members + 1] = now
      members[#members + 1] = ARGV[5] .. ':' .. i
    end
    redis.call('ZADD', KEYS[1], unpack(members))
  end
  redis.call('PEXPIRE', KEYS[1], window)
  return n
end
local remaining = limit - n
if remaining < 0 then remaining = 0 end
local reset_after = 0
if n > 0 then
  local newest = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. floor, '+inf', 'WITHSCORES', 'LIMIT', n - 1, 1)
  reset_after = tonumber(newest[2]) + window - now
end
if allowed then return {1, remaining, reset_after, 0} end
local need = n + cost - limit
local oldest = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. floor, '+inf', 'WITHSCORES', 'LIMIT', need - 1, 1)
return {0, remaining, reset_after, tonumber(oldest[2]) + window - now}
"#;

/// Sliding-window counter in a hash {s: window start, p: previous count, c: current count}.
/// Same ARGV and reply as the log; the arithmetic is that of `algorithm::sliding_counter`.
const SLIDING_COUNTER: &str = r#"
local w = tonumber(ARGV[2])
local record = ARGV[6] == '1'
local start = now - (now % w)
local s = redis.call('HMGET', KEYS[1], 's', 'p', 'c')
local p, c = 0, 0
if s[1] then
  local ws = tonumber(s[1])
  if ws == start then p, c = tonumber(s[2]), tonumber(s[3])
  elseif ws == start - w then p, c = tonumber(s[3]), 0 end
end
local elapsed = now - start
local weight = w - elapsed
local allowed = p * weight + (c + cost) * w <= limit * w
if allowed and record then c = c + cost end
local free = limit * w - (p * weight + c * w)
if free < 0 then free = 0 end
local remaining = math.floor(free / w)
local retry = 0
if not allowed then
  if c + cost <= limit then
    retry = (w - math.floor(((limit - c - cost) * w) / p)) - elapsed
  else
    retry = (start + w - now) + (w - math.floor(((limit - cost) * w) / c))
  end
end
local reset = 0
if c > 0 then reset = start + 2 * w - now elseif p > 0 then reset = start + w - now end
if record then
  redis.call('HSET', KEYS[1], 's', start, 'p', p, 'c', c)
  redis.call('PEXPIRE', KEYS[1], 2 * w)
end
if allowed then return {1, remaining, reset, 0} end
return {0, remaining, reset, retry}
"#;

/// Rate limits in Redis or a Redis Cluster.
#[derive(Clone)]
pub struct RedisLimiter {
    conn: RedisConnection,
    prefix: Arc<str>,
    log: Arc<Script>,
    counter: Arc<Script>,
    clock: Clock,
    instance: Arc<str>,
    seq: Arc<std::sync::atomic::AtomicU64>,
}

impl RedisLimiter {
    /// A limiter on `conn`, with keys under `tessera:rl:`.
    pub fn new(conn: RedisConnection) -> Self {
        RedisLimiter {
            conn,
            prefix: Arc::from("tessera:rl:"),
            log: Arc::new(Script::new(&[PREAMBLE, SLIDING_LOG].concat())),
            counter: Arc::new(Script::new(&[PREAMBLE, SLIDING_COUNTER].concat())),
            clock: Clock::Store,
            instance: Arc::from(format!("{:x}.", uuid::Uuid::new_v4().as_u64_pair().0)),
            seq: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        }
    }

    /// The same limiter with keys under another prefix (tests use one each).
    pub fn with_prefix(mut self, prefix: &str) -> Self {
        self.prefix = Arc::from(prefix);
        self
    }

    /// The same limiter on another clock (tests).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The Redis key of `(event, key, algorithm)`.
    pub fn redis_key(&self, event: &Event, key: &str, algorithm: Algorithm) -> String {
        let kind = match algorithm {
            Algorithm::SlidingLog => "log",
            Algorithm::SlidingWindowCounter => "ctr",
        };
        format!("{}{kind}:{{{}:{}}}", self.prefix, event, escape_tag(key))
    }

    async fn run(&self, hit: Hit<'_>) -> Result<Decision, LimiterError> {
        let script = match hit.policy.algorithm {
            Algorithm::SlidingLog => &self.log,
            Algorithm::SlidingWindowCounter => &self.counter,
        };
        let now = self
            .clock
            .manual_ms()
            .map(|m| m.to_string())
            .unwrap_or_default();
        // Sorted-set members must differ between hits of the same millisecond: this
        // process's random instance id and a counter make them unique without asking the OS
        // for randomness on every hit.
        let id = if hit.record {
            format!(
                "{}{:x}",
                self.instance,
                self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            )
        } else {
            String::new()
        };
        let mut conn = self.conn.clone();
        let reply: Value = script
            .key(self.redis_key(hit.event, hit.key, hit.policy.algorithm))
            .arg(hit.policy.limit.get())
            .arg(hit.policy.window_ms())
            .arg(hit.cost)
            .arg(now)
            .arg(id)
            .arg(if hit.record { "1" } else { "0" })
            .invoke_async(&mut conn)
            .await
            .map_err(map_err)?;
        decision_of(&reply, hit.policy, hit.cost)
    }
}

/// Reads a script's reply: a bare count for an admitted hit of the log, else
/// `{allowed, remaining, reset_after_ms, retry_after_ms}`.
fn decision_of(reply: &Value, policy: &Policy, cost: u32) -> Result<Decision, LimiterError> {
    let limit = policy.limit.get();
    let ms = |v: i64| Duration::from_millis(u64::try_from(v).unwrap_or(0));
    match reply {
        // Same as `algorithm::sliding_log` for an admitted, recorded hit.
        Value::Int(n) => Ok(Decision {
            allowed: true,
            limit,
            remaining: u32::try_from(i64::from(limit) - n - i64::from(cost)).unwrap_or(0),
            reset_after: ms(policy.window_ms()),
            retry_after: Duration::ZERO,
        }),
        Value::Array(items) => match items.as_slice() {
            [
                Value::Int(allowed),
                Value::Int(remaining),
                Value::Int(reset_ms),
                Value::Int(retry_ms),
            ] => Ok(Decision {
                allowed: *allowed == 1,
                limit,
                remaining: u32::try_from(*remaining).unwrap_or(0),
                reset_after: ms(*reset_ms),
                retry_after: ms(*retry_ms),
            }),
            _ => Err(unexpected(reply)),
        },
        _ => Err(unexpected(reply)),
    }
}

fn unexpected(reply: &Value) -> LimiterError {
    LimiterError::Backend(format!(
        "unexpected reply from the limiter script: {reply:?}"
    ))
}

fn escape_tag(key: &str) -> String {
    if !key.contains(['%', '{', '}']) {
        return key.to_owned();
    }
    key.replace('%', "%25")
        .replace('{', "%7B")
        .replace('}', "%7D")
}

#[async_trait]
impl LimiterStore for RedisLimiter {
    async fn decide(&self, hit: Hit<'_>) -> Result<Decision, LimiterError> {
        self.run(hit).await
    }

    async fn reset(&self, event: &Event, key: &str) -> Result<(), LimiterError> {
        let mut conn = self.conn.clone();
        // Two keys of one hash tag: one slot, so one DEL even on a Cluster.
        redis::cmd("DEL")
            .arg(self.redis_key(event, key, Algorithm::SlidingLog))
            .arg(self.redis_key(event, key, Algorithm::SlidingWindowCounter))
            .query_async::<i64>(&mut conn)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn purge(&self, _longest_window_ms: i64, _batch: u32) -> Result<u64, LimiterError> {
        // Every key carries its own expiry.
        Ok(0)
    }

    async fn ping(&self) -> Result<(), LimiterError> {
        self.conn.ping().await.map_err(map_err)
    }
}

/// Sorts Redis errors into "cannot reach the store" and everything else.
pub fn map_err(e: RedisError) -> LimiterError {
    tessera_backend::BackendError::from(e).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn braces_in_keys_cannot_move_the_hash_tag() {
        assert_eq!(escape_tag("a{b}c%"), "a%7Bb%7Dc%25");
    }
}

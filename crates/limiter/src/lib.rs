//! Sliding-window rate limits that hold across every worker of a deployment.
//!
//! What this crate guarantees, on every backend:
//!
//! - **Exact mode** (sliding log, the default): for any window of length `window`, the
//!   number of admitted units never exceeds `limit`, under any concurrency, on any number
//!   of workers. `hit` is one atomic check-and-record.
//! - **Approximate mode** (sliding-window counter): constant memory per key. It weights the
//!   previous fixed window by how much of it still overlaps the sliding one, which assumes
//!   the previous window's events were spread evenly. Worst case: when they were all at its
//!   very end, a sliding window can hold up to (but never) `2 × limit` events; with evenly
//!   spread traffic it admits `limit`. Use it for high-volume keys (per IP), never for the
//!   small limits of second factors.
//! - **The store's clock decides** (Postgres `clock_timestamp()`, SQLite `'now'`, Redis
//!   `TIME` inside the script), so workers with skewed clocks agree. Tests inject a
//!   [`ManualClock`] instead, the same for every backend.
//! - An event at `t` counts while `now < t + window`, and not from `t + window` on.
//!
//! # Layout
//!
//! - [`LimiterStore`]: the contract a backend implements; [`Limiter`]: the front that
//!   looks up policies and checks input.
//! - [`policy`]: [`Policy`], [`Algorithm`], [`Policies`] with Tessera's defaults, [`Event`].
//! - [`decision`]: [`Decision`] and its rendering as `RateLimit` headers.
//! - [`algorithm`]: the two algorithms as pure functions, shared by memory and SQL.
//! - [`memory`], [`sql`], [`redis`]: the backends; on PostgreSQL, hits that wait together
//!   share a statement (`gather`).

pub mod algorithm;
pub mod clock;
pub mod decision;
mod gather;
pub mod memory;
pub mod policy;
pub mod redis;
pub mod sql;

use async_trait::async_trait;
use std::sync::Arc;
use tessera_backend::pace::Pace;

pub use clock::{Clock, ManualClock};
pub use decision::Decision;
pub use memory::MemoryLimiter;
pub use policy::{Algorithm, Event, InvalidEvent, Policies, Policy, PolicyParseError};
pub use redis::RedisLimiter;
pub use sql::SqlLimiter;

/// What can go wrong with a rate-limit operation.
#[derive(Debug, thiserror::Error)]
pub enum LimiterError {
    /// No policy is configured for this event.
    #[error("no rate-limit policy for event `{0}`")]
    UnknownEvent(String),
    /// The cost is zero or larger than the limit, so it could never be admitted.
    #[error("cost {cost} is outside 1..={limit}")]
    InvalidCost {
        /// The cost asked for.
        cost: u32,
        /// The policy's limit.
        limit: u32,
    },
    /// The key is empty, longer than 320 characters, or holds a control character (a NUL
    /// would not even fit a PostgreSQL text column).
    #[error("a rate-limit key is 1 to 320 characters without control characters")]
    InvalidKey,
    /// The backing store could not be reached or did not answer.
    #[error("rate-limit store unavailable: {0}")]
    Unavailable(#[source] tessera_backend::BackendError),
    /// The store answered something unexpected.
    #[error("rate-limit store error: {0}")]
    Backend(String),
}

impl From<tessera_backend::BackendError> for LimiterError {
    /// A store that cannot be reached is [`LimiterError::Unavailable`], its cause kept; any
    /// other failure is [`LimiterError::Backend`].
    fn from(e: tessera_backend::BackendError) -> Self {
        if e.is_unreachable() {
            LimiterError::Unavailable(e)
        } else {
            LimiterError::Backend(e.to_string())
        }
    }
}

/// One decision asked of a backend: `cost` units of `event` for `key` under `policy`,
/// recorded when admitted if `record` is set. A peek is a hit of cost 1 that records
/// nothing.
#[derive(Debug, Clone, Copy)]
pub struct Hit<'a> {
    /// The event counted.
    pub event: &'a Event,
    /// Whom it is counted for.
    pub key: &'a str,
    /// The event's policy.
    pub policy: &'a Policy,
    /// Units asked for: 1 to the policy's limit.
    pub cost: u32,
    /// Record the units when admitted; `false` asks only what a hit would get now.
    pub record: bool,
}

/// The contract of a limiter backend.
///
/// - [`decide`](LimiterStore::decide) with `record` decides and records in **one atomic
///   step** per `(event, key)`: under any concurrency, across processes, the units
///   admitted inside any window never exceed the policy's limit (exactly so in
///   [`Algorithm::SlidingLog`]). Without `record` it answers what the hit would get now,
///   and writes nothing.
/// - [`reset`](LimiterStore::reset) forgets every event of `(event, key)`.
/// - [`purge`](LimiterStore::purge) removes one batch of at most about `batch` events older
///   than `longest_window_ms` (SQL), and with the last (short) batch the stale counters;
///   [`Limiter::purge`] repeats it until a batch comes back short. Stores whose keys expire
///   by themselves answer 0.
///
/// Time is the store's own clock, or the backend's [`Clock::Manual`] in tests.
#[async_trait]
pub trait LimiterStore: Send + Sync + 'static {
    /// The decision on `hit`, recorded atomically when `hit.record` is set.
    async fn decide(&self, hit: Hit<'_>) -> Result<Decision, LimiterError>;

    /// Forgets the key's events.
    async fn reset(&self, event: &Event, key: &str) -> Result<(), LimiterError>;

    /// Removes one batch of stale events; answers how many.
    async fn purge(&self, longest_window_ms: i64, batch: u32) -> Result<u64, LimiterError>;

    /// Answers `Ok` when the store is reachable.
    async fn ping(&self) -> Result<(), LimiterError>;
}

/// Rate limits by policy, on any [`LimiterStore`].
#[derive(Clone)]
pub struct Limiter {
    store: Arc<dyn LimiterStore>,
    policies: Arc<Policies>,
}

impl Limiter {
    /// A limiter applying `policies` on `store`.
    pub fn new(store: Arc<dyn LimiterStore>, policies: Policies) -> Self {
        Limiter {
            store,
            policies: Arc::new(policies),
        }
    }

    /// The policies in force.
    pub fn policies(&self) -> &Policies {
        &self.policies
    }

    /// The policy of `event`.
    pub fn policy(&self, event: &Event) -> Result<&Policy, LimiterError> {
        self.policies
            .get(event)
            .ok_or_else(|| LimiterError::UnknownEvent(event.to_string()))
    }

    /// Checks and records `cost` units of `event` for `key`.
    pub async fn hit(&self, event: &Event, key: &str, cost: u32) -> Result<Decision, LimiterError> {
        let policy = self.policy(event)?;
        check_key(key)?;
        if cost == 0 || cost > policy.limit.get() {
            return Err(LimiterError::InvalidCost {
                cost,
                limit: policy.limit.get(),
            });
        }
        self.store
            .decide(Hit {
                event,
                key,
                policy,
                cost,
                record: true,
            })
            .await
    }

    /// The current state of `key` for `event`, recording nothing.
    pub async fn peek(&self, event: &Event, key: &str) -> Result<Decision, LimiterError> {
        let policy = self.policy(event)?;
        check_key(key)?;
        self.store
            .decide(Hit {
                event,
                key,
                policy,
                cost: 1,
                record: false,
            })
            .await
    }

    /// Forgets `key`'s events of `event`.
    pub async fn reset(&self, event: &Event, key: &str) -> Result<(), LimiterError> {
        self.policy(event)?;
        check_key(key)?;
        self.store.reset(event, key).await
    }

    /// Removes events older than the longest window of any policy, `batch` at a time,
    /// pausing between batches as `pace` says.
    pub async fn purge(&self, batch: u32, pace: Pace) -> Result<u64, LimiterError> {
        let longest = self
            .policies
            .iter()
            .map(|(_, p)| p)
            .chain(self.policies.default_policy())
            .map(Policy::window_ms)
            .max()
            .unwrap_or(0);
        let batch = batch.max(1);
        pace.batches(batch, || self.store.purge(longest, batch))
            .await
    }

    /// Answers `Ok` when the store is reachable.
    pub async fn ping(&self) -> Result<(), LimiterError> {
        self.store.ping().await
    }
}

fn check_key(key: &str) -> Result<(), LimiterError> {
    if key.is_empty() || key.chars().count() > 320 || key.chars().any(char::is_control) {
        Err(LimiterError::InvalidKey)
    } else {
        Ok(())
    }
}

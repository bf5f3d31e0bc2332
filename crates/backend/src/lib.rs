//! Tessera's connections to its stores: opening SQL pools ([`sql`]) and the shared Redis
//! connection ([`redis`]), and the one error that says a store cannot be reached
//! ([`BackendError`]), with its cause kept as the source.
//!
//! This crate knows no other Tessera crate: the token store, the limiter and the login
//! domain all open their connections here and sort their failures with
//! [`sql::is_unreachable`] and [`redis::is_unreachable`], so "unavailable, try again" means
//! the same everywhere.
//!
//! # Layout
//!
//! - [`sql`]: [`sql::connect`] with the pool settings Tessera relies on, SQLite files
//!   created private.
//! - [`redis`]: [`redis::RedisConnection`], one server or a Cluster.
//! - [`writer`]: SQLite's single writer, which batches the stores' writes into shared
//!   transactions.
//! - [`direct`]: PostgreSQL's pool for the stores' single statements, which gives
//!   connections back without a round trip.
//! - [`gather`]: lanes of statements in flight, and the jobs that wait for one and go out
//!   together.
//! - [`pace`]: how a purge spreads its batches out.

pub mod direct;
pub mod gather;
pub mod pace;
pub mod redis;
pub mod sql;
pub mod writer;

/// Which store an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// The SQL database.
    Database,
    /// Redis or a Redis Cluster.
    Redis,
}

impl std::fmt::Display for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Store::Database => "the database",
            Store::Redis => "Redis",
        })
    }
}

/// A store failed.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The store cannot be reached: refused, dropped, timed out, pool exhausted. Callers
    /// answer "unavailable, try again".
    #[error("{store} cannot be reached: {source}")]
    Unreachable {
        /// Which store.
        store: Store,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The store answered, but refused what was asked of it or what it said cannot be read.
    #[error("{store} failed: {source}")]
    Failed {
        /// Which store.
        store: Store,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl BackendError {
    /// Whether the store could not be reached (as opposed to a refusal).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, BackendError::Unreachable { .. })
    }

    /// `source`, an error of `store`, sorted by whether it means the store cannot be
    /// reached.
    fn sorted(
        store: Store,
        unreachable: bool,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        let source = Box::new(source);
        if unreachable {
            BackendError::Unreachable { store, source }
        } else {
            BackendError::Failed { store, source }
        }
    }
}

impl From<sea_orm::DbErr> for BackendError {
    fn from(e: sea_orm::DbErr) -> Self {
        BackendError::sorted(Store::Database, sql::is_unreachable(&e), e)
    }
}

impl From<::redis::RedisError> for BackendError {
    fn from(e: ::redis::RedisError) -> Self {
        BackendError::sorted(Store::Redis, redis::is_unreachable(&e), e)
    }
}

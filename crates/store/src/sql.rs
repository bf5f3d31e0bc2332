//! The SQL backend: SQLite (the embedded default) and PostgreSQL, through sea-orm.
//!
//! Every operation is one statement, so its atomicity is the database's: consume is a
//! `DELETE ... RETURNING` that matches hash, kind, challenge and expiry at once. Two
//! concurrent consumers of one row serialise on its row lock (PostgreSQL) or on the
//! database write lock (SQLite); the second finds nothing to delete. On PostgreSQL, consumes
//! that arrive together share one such statement (`gather`). Time is the database's
//! (`now()`, SQLite's `'now'`), never the worker's.
//!
//! SQLite keeps timestamps as UTC text in one fixed-width format,
//! `YYYY-MM-DD HH:MM:SS.SSS`, written only by SQLite's own `strftime`, so that comparing
//! them as text compares instants.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, DbErr, QueryResult, Statement, Value,
};
use tessera_backend::direct::{self, Direct};
use tessera_backend::sql::PgSync;
use tessera_backend::writer::{Row, Writer};
use tessera_entity::{TokenHash, TokenType};

use crate::gather::{self, Consume, Gather};
use crate::{Lookup, SealedToken, StoreError, StoredRecord, TokenStore};

/// One dialect's statements. Each is a single statement; the comment on each says why
/// that is enough. Public so that benchmarks can run the bare statements as a baseline.
pub struct Statements {
    /// Expiry computed by the database: its clock plus the TTL in milliseconds (`$7`).
    pub issue: &'static str,
    /// The same insert committed without waiting for the flush (PostgreSQL with
    /// [`PgSync::Relaxed`]): a token lost in a crash is only asked for again.
    pub issue_relaxed: Option<&'static str>,
    /// Delete-and-return in one statement: the row lock (PostgreSQL) or the write lock
    /// (SQLite) lets exactly one of concurrent deleters see the row.
    pub consume: &'static str,
    /// The same match as consume, read-only.
    pub peek: &'static str,
    /// One statement per kind and user.
    pub revoke: &'static str,
    /// Set if absent, or if the row there has expired: one upsert whose update applies
    /// only to an expired row, so a row comes back to exactly one claimer.
    pub claim: &'static str,
    /// A bounded batch of expired rows; PostgreSQL skips rows another purger holds, so
    /// purgers on every worker never wait for each other.
    pub purge: &'static str,
}

/// The statements of `backend`, if the token store supports it.
pub fn statements(backend: DbBackend) -> Option<&'static Statements> {
    match backend {
        DbBackend::Postgres => Some(&POSTGRES),
        DbBackend::Sqlite => Some(&SQLITE),
        _ => None,
    }
}

pub(crate) const POSTGRES: Statements = Statements {
    issue: "INSERT INTO auth_ephemeral_tokens \
            (token_hash, token_type, username, provider_id, challenge_hash, sealed, expires_at, created_at) \
            VALUES ($1, $2, $3, $4, $5, $6, now() + $7::float8 * interval '1 millisecond', now()) \
            RETURNING expires_at",
    issue_relaxed: Some(
        "WITH relax AS (SELECT set_config('synchronous_commit', 'off', true)) \
         INSERT INTO auth_ephemeral_tokens \
         (token_hash, token_type, username, provider_id, challenge_hash, sealed, expires_at, created_at) \
         SELECT $1, $2, $3, $4, $5, $6, now() + $7::float8 * interval '1 millisecond', now() \
         FROM relax RETURNING expires_at",
    ),
    consume: "DELETE FROM auth_ephemeral_tokens \
              WHERE token_hash = $1 AND token_type = $2 \
              AND challenge_hash IS NOT DISTINCT FROM $3 AND expires_at > now() \
              RETURNING username, provider_id, sealed, expires_at, created_at",
    peek: "SELECT username, provider_id, sealed, expires_at, created_at \
           FROM auth_ephemeral_tokens \
           WHERE token_hash = $1 AND token_type = $2 \
           AND challenge_hash IS NOT DISTINCT FROM $3 AND expires_at > now()",
    revoke: "DELETE FROM auth_ephemeral_tokens WHERE token_type = $1 AND username = $2",
    claim: "INSERT INTO auth_ephemeral_tokens \
            (token_hash, token_type, sealed, expires_at, created_at) \
            VALUES ($1, 'once', $2, now() + $3::float8 * interval '1 millisecond', now()) \
            ON CONFLICT (token_hash) DO UPDATE SET token_type = 'once', username = NULL, \
              provider_id = NULL, challenge_hash = NULL, sealed = EXCLUDED.sealed, \
              expires_at = EXCLUDED.expires_at, created_at = EXCLUDED.created_at \
            WHERE auth_ephemeral_tokens.expires_at <= now() \
            RETURNING token_hash",
    purge: "DELETE FROM auth_ephemeral_tokens WHERE id IN ( \
              SELECT id FROM auth_ephemeral_tokens WHERE expires_at <= now() \
              ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED)",
};

const SQLITE: Statements = Statements {
    issue: "INSERT INTO auth_ephemeral_tokens \
            (token_hash, token_type, username, provider_id, challenge_hash, sealed, expires_at, created_at) \
            VALUES (?1, ?2, ?3, ?4, ?5, ?6, \
              strftime('%Y-%m-%d %H:%M:%f', 'now', (?7 / 1000.0) || ' seconds'), \
              strftime('%Y-%m-%d %H:%M:%f', 'now')) \
            RETURNING expires_at",
    issue_relaxed: None,
    consume: "DELETE FROM auth_ephemeral_tokens \
              WHERE token_hash = ?1 AND token_type = ?2 \
              AND challenge_hash IS ?3 AND expires_at > strftime('%Y-%m-%d %H:%M:%f', 'now') \
              RETURNING username, provider_id, sealed, expires_at, created_at",
    peek: "SELECT username, provider_id, sealed, expires_at, created_at \
           FROM auth_ephemeral_tokens \
           WHERE token_hash = ?1 AND token_type = ?2 \
           AND challenge_hash IS ?3 AND expires_at > strftime('%Y-%m-%d %H:%M:%f', 'now')",
    revoke: "DELETE FROM auth_ephemeral_tokens WHERE token_type = ?1 AND username = ?2",
    claim: "INSERT INTO auth_ephemeral_tokens \
            (token_hash, token_type, sealed, expires_at, created_at) \
            VALUES (?1, 'once', ?2, \
              strftime('%Y-%m-%d %H:%M:%f', 'now', (?3 / 1000.0) || ' seconds'), \
              strftime('%Y-%m-%d %H:%M:%f', 'now')) \
            ON CONFLICT (token_hash) DO UPDATE SET token_type = 'once', username = NULL, \
              provider_id = NULL, challenge_hash = NULL, sealed = excluded.sealed, \
              expires_at = excluded.expires_at, created_at = excluded.created_at \
            WHERE auth_ephemeral_tokens.expires_at <= strftime('%Y-%m-%d %H:%M:%f', 'now') \
            RETURNING token_hash",
    purge: "DELETE FROM auth_ephemeral_tokens WHERE id IN ( \
              SELECT id FROM auth_ephemeral_tokens \
              WHERE expires_at <= strftime('%Y-%m-%d %H:%M:%f', 'now') \
              ORDER BY expires_at LIMIT ?1)",
};

/// Tokens in `auth_ephemeral_tokens`, on SQLite or PostgreSQL.
#[derive(Clone)]
pub struct SqlTokenStore {
    db: DatabaseConnection,
    backend: DbBackend,
    sql: &'static Statements,
    issue: &'static str,
    /// SQLite's writer, which batches writes into shared transactions.
    writer: Option<Writer>,
    /// PostgreSQL's pool for single statements (see `tessera_backend::direct`).
    direct: Option<Direct>,
    /// PostgreSQL's consumes, gathered into shared statements on `direct` (see
    /// [`crate::gather`]).
    gather: Option<Gather>,
}

impl SqlTokenStore {
    /// A store on an open (and migrated) connection.
    pub fn new(db: DatabaseConnection) -> Result<Self, StoreError> {
        let backend = db.get_database_backend();
        let sql = statements(backend).ok_or_else(|| {
            StoreError::Backend(format!(
                "the token store supports PostgreSQL and SQLite, not {backend:?}"
            ))
        })?;
        // SQLite's writes queue for one writer (see `tessera_backend::writer`).
        let writer = Writer::for_sqlite(&db);
        let direct = Direct::for_postgres(&db);
        Ok(SqlTokenStore {
            db,
            backend,
            sql,
            issue: sql.issue_relaxed.unwrap_or(sql.issue),
            writer,
            gather: direct.clone().map(gather::gather),
            direct,
        })
    }

    /// The same store with its PostgreSQL statements going through `direct`, shared with
    /// the limiter.
    pub fn with_direct(mut self, direct: Option<Direct>) -> Self {
        if self.backend == DbBackend::Postgres && direct.is_some() {
            self.gather = direct.clone().map(gather::gather);
            self.direct = direct;
        }
        self
    }

    /// A statement that answers at most one row, on PostgreSQL's direct pool when there
    /// is one.
    async fn query_one(&self, stmt: Statement) -> Result<Option<QueryResult>, StoreError> {
        direct::query_one(self.direct.as_ref(), &self.db, stmt)
            .await
            .map_err(map_err)
    }

    /// The same store with its SQLite writes going through `writer`, shared with the
    /// limiter so that the two never wait for each other's lock.
    pub fn with_writer(mut self, writer: Option<Writer>) -> Self {
        if self.backend == DbBackend::Sqlite && writer.is_some() {
            self.writer = writer;
        }
        self
    }

    /// Which writes wait for the flush on PostgreSQL ([`PgSync::Relaxed`] unless told).
    pub fn with_sync(mut self, sync: PgSync) -> Self {
        self.issue = match sync {
            PgSync::Relaxed => self.sql.issue_relaxed.unwrap_or(self.sql.issue),
            PgSync::All => self.sql.issue,
        };
        self
    }

    /// The connection, for callers that share it.
    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    fn stmt(&self, sql: &str, values: Vec<Value>) -> Statement {
        Statement::from_sql_and_values(self.backend, sql, values)
    }

    /// A write that answers at most one row, through the writer when there is one.
    async fn write_one(
        &self,
        sql: &'static str,
        values: Vec<Value>,
    ) -> Result<Option<Written>, StoreError> {
        Ok(match &self.writer {
            Some(w) => w
                .query_one(sql, values)
                .await
                .map_err(map_err)?
                .map(Written::Writer),
            None => self
                .query_one(self.stmt(sql, values))
                .await?
                .map(Written::Pool),
        })
    }
}

/// A row a statement returned: from SQLite's writer, or from the pool.
enum Written {
    Writer(Row),
    Pool(QueryResult),
}

impl Written {
    fn expires_at(&self) -> Result<DateTime<Utc>, StoreError> {
        match self {
            Written::Writer(row) => row.time("expires_at"),
            Written::Pool(row) => row.try_get("", "expires_at"),
        }
        .map_err(map_err)
    }

    fn record(&self, kind: TokenType) -> Result<StoredRecord, StoreError> {
        Ok(match self {
            Written::Writer(row) => StoredRecord {
                kind,
                username: row.text("username").map_err(map_err)?,
                provider_id: row.text("provider_id").map_err(map_err)?,
                sealed: row.blob("sealed").map_err(map_err)?.unwrap_or_default(),
                expires_at: row.time("expires_at").map_err(map_err)?,
                created_at: row.time("created_at").map_err(map_err)?,
            },
            Written::Pool(row) => StoredRecord {
                kind,
                username: row.try_get("", "username").map_err(map_err)?,
                provider_id: row.try_get("", "provider_id").map_err(map_err)?,
                sealed: row.try_get("", "sealed").map_err(map_err)?,
                expires_at: row.try_get("", "expires_at").map_err(map_err)?,
                created_at: row.try_get("", "created_at").map_err(map_err)?,
            },
        })
    }
}

#[async_trait]
impl TokenStore for SqlTokenStore {
    async fn issue(&self, t: SealedToken) -> Result<DateTime<Utc>, StoreError> {
        let ttl_ms = i64::try_from(t.ttl.as_millis()).unwrap_or(i64::MAX);
        let values = vec![
            t.hash.as_bytes().to_vec().into(),
            t.kind.as_ref().into(),
            t.username.into(),
            t.provider_id.into(),
            t.challenge_hash.map(|c| c.0.to_vec()).into(),
            t.sealed.into(),
            ttl_ms.into(),
        ];
        let row = self
            .write_one(self.issue, values)
            .await?
            .ok_or_else(|| StoreError::Backend("INSERT ... RETURNING returned no row".into()))?;
        row.expires_at()
    }

    async fn take(&self, lookup: Lookup<'_>) -> Result<Option<StoredRecord>, StoreError> {
        let sql = if lookup.consume {
            self.sql.consume
        } else {
            self.sql.peek
        };
        if let (true, Some(gather)) = (lookup.consume, &self.gather) {
            let row = gather.run(Consume::of(&lookup)).await.map_err(map_err)?;
            return row
                .map(|r| Written::Pool(r).record(lookup.kind))
                .transpose();
        }
        let values = vec![
            lookup.hash.as_bytes().to_vec().into(),
            lookup.kind.as_ref().into(),
            lookup.challenge.map(|c| c.0.to_vec()).into(),
        ];
        let row = if lookup.consume {
            self.write_one(sql, values).await?
        } else {
            self.query_one(self.stmt(sql, values))
                .await?
                .map(Written::Pool)
        };
        row.map(|r| r.record(lookup.kind)).transpose()
    }

    async fn claim(&self, hash: &TokenHash, ttl_ms: i64) -> Result<bool, StoreError> {
        let values = vec![
            hash.as_bytes().to_vec().into(),
            Vec::<u8>::new().into(),
            ttl_ms.into(),
        ];
        Ok(self.write_one(self.sql.claim, values).await?.is_some())
    }

    async fn revoke(&self, kind: TokenType, username: &str) -> Result<u64, StoreError> {
        let values = vec![kind.as_ref().into(), username.into()];
        match &self.writer {
            Some(w) => w.execute(self.sql.revoke, values).await.map_err(map_err),
            None => Ok(self
                .db
                .execute_raw(self.stmt(self.sql.revoke, values))
                .await
                .map_err(map_err)?
                .rows_affected()),
        }
    }

    async fn purge(&self, batch: u32) -> Result<u64, StoreError> {
        let stmt = self.stmt(self.sql.purge, vec![i64::from(batch).into()]);
        Ok(self
            .db
            .execute_raw(stmt)
            .await
            .map_err(map_err)?
            .rows_affected())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.db.ping().await.map_err(map_err)
    }
}

/// Sorts database errors into "cannot reach the store" and everything else.
pub fn map_err(e: DbErr) -> StoreError {
    tessera_backend::BackendError::from(e).into()
}

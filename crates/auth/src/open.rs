//! Opening what the login domain runs on, from plain values: the database (with its
//! schema checked), the token store and limiter on the database or on Redis, and the key
//! ring for secrets at rest. The service's startup and the command line both use it.

use sea_orm::DatabaseConnection;
use std::sync::Arc;
use tessera_backend::direct::Direct;
use tessera_backend::redis::RedisConnection;
pub use tessera_backend::sql::PgSync;
use tessera_backend::writer::Writer;
use tessera_limiter::{Limiter, LimiterError, LimiterStore, Policies, RedisLimiter, SqlLimiter};
use tessera_migration::{Migrator, MigratorTrait, SchemaState, schema_state};
use tessera_store::{RedisTokenStore, SqlTokenStore, StoreError, TokenStore, Tokens};

use crate::secrets::{self, KeyRing};

/// Why a store, the schema or the key ring could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The database could not be opened.
    #[error("cannot open the database: {0}")]
    Database(#[from] StoreError),
    /// A store could not be opened or reached.
    #[error("{0}")]
    Backend(#[from] tessera_backend::BackendError),
    /// The rate limiter could not be set up.
    #[error("rate limiter: {0}")]
    Limiter(#[from] LimiterError),
    /// The key for secrets at rest is missing or refused.
    #[error("invalid setting: {0}")]
    Key(String),
    /// The schema is not the one this build knows, and migrating was not asked for.
    #[error("{0}")]
    Schema(String),
    /// Applying migrations failed.
    #[error("migration failed: {0}")]
    Migration(String),
    /// Redis could not be reached.
    #[error("cannot reach Redis at {url}: {source}")]
    Redis {
        /// The configured URL(s).
        url: String,
        /// Why.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The key ring for secrets at rest: `TESSERA_SECRET_KEY` (with the previous keys); unset,
/// the key file beside an embedded SQLite database, generated on first use. Any other
/// database without a key is refused: several workers must share one key, and a key made
/// up by one of them would strand every secret it sealed.
pub fn key_ring(
    database_url: &str,
    secret_key: Option<&str>,
    previous_secret_keys: &str,
) -> Result<KeyRing, OpenError> {
    let previous: Vec<&str> = previous_secret_keys
        .split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .collect();
    let ring = |current: &str| {
        KeyRing::new(current, &previous)
            .map_err(|e| OpenError::Key(format!("TESSERA_SECRET_KEY: {e}")))
    };
    if let Some(key) = secret_key.filter(|k| !k.is_empty()) {
        return ring(key);
    }
    match secrets::key_file_for(database_url) {
        Some(path) => {
            let (key, created) = secrets::load_or_create_key_file(&path)
                .map_err(|e| OpenError::Key(e.to_string()))?;
            if created {
                tracing::warn!(path = %path.display(), "no TESSERA_SECRET_KEY: generated a secret key beside the database (mode 0600); keep it with the database, and set TESSERA_SECRET_KEY before running several workers");
            }
            ring(&key)
        }
        None => Err(OpenError::Key(
            "TESSERA_SECRET_KEY is required with this database: every worker must share one \
             key to read the secrets the others encrypted (generate one with \
             `openssl rand -base64 32`)"
                .into(),
        )),
    }
}

/// Opens the database at `url` with at most `max_connections` pooled connections.
pub async fn database(url: &str, max_connections: u32) -> Result<DatabaseConnection, OpenError> {
    Ok(tessera_backend::sql::connect(url, max_connections).await?)
}

/// The token store and limiter: on Redis (or a Cluster) at `redis_url` when given, else in
/// the database, where `sync` says which writes wait for the flush (PostgreSQL).
pub async fn stores(
    db: DatabaseConnection,
    redis_url: Option<&str>,
    policies: Policies,
    purge_batch: u32,
    sync: PgSync,
) -> Result<(Tokens, Limiter), OpenError> {
    let (store, limiter): (Arc<dyn TokenStore>, Arc<dyn LimiterStore>) = match redis_url {
        Some(url) => {
            let conn = RedisConnection::connect(url)
                .await
                .map_err(|source| OpenError::Redis {
                    url: url.to_owned(),
                    source: Box::new(source),
                })?;
            (
                Arc::new(RedisTokenStore::new(conn.clone())),
                Arc::new(RedisLimiter::new(conn)),
            )
        }
        None => {
            // On SQLite the store and the limiter share one writer; on PostgreSQL one pool
            // for their single statements.
            let writer = Writer::for_sqlite(&db);
            let direct = Direct::for_postgres(&db);
            (
                Arc::new(
                    SqlTokenStore::new(db.clone())?
                        .with_sync(sync)
                        .with_writer(writer.clone())
                        .with_direct(direct.clone()),
                ),
                Arc::new(
                    SqlLimiter::new(db)?
                        .with_sync(sync)
                        .with_writer(writer)
                        .with_direct(direct),
                ),
            )
        }
    };
    Ok((
        Tokens::new(store).with_purge_batch(purge_batch),
        Limiter::new(limiter, policies),
    ))
}

/// Applies pending migrations (`tessera migrate`); idempotent. Refuses a schema migrated
/// by a newer build.
pub async fn migrate(db: &DatabaseConnection) -> Result<usize, OpenError> {
    match check_schema(db).await? {
        SchemaState::UpToDate => Ok(0),
        SchemaState::Behind(pending) => {
            Migrator::up(db, None)
                .await
                .map_err(|e| OpenError::Migration(e.to_string()))?;
            Ok(pending.len())
        }
        SchemaState::Ahead(_) => unreachable!("check_schema refuses a newer schema"),
    }
}

async fn check_schema(db: &DatabaseConnection) -> Result<SchemaState, OpenError> {
    let state = schema_state(db)
        .await
        .map_err(|e| OpenError::Backend(e.into()))?;
    if let SchemaState::Ahead(unknown) = &state {
        return Err(OpenError::Schema(format!(
            "the database schema is newer than this build of Tessera (unknown migrations: {}); \
             run a Tessera version that knows them",
            unknown.join(", ")
        )));
    }
    Ok(state)
}

/// Checks the schema: migrates it when `auto_migrate` (the embedded SQLite default, or
/// `--migrate`), refuses it otherwise with a message that names `tessera migrate`.
pub async fn prepare_schema(db: &DatabaseConnection, auto_migrate: bool) -> Result<(), OpenError> {
    match check_schema(db).await? {
        SchemaState::UpToDate => Ok(()),
        SchemaState::Behind(_) if auto_migrate => {
            let n = migrate(db).await?;
            tracing::info!(applied = n, "migrations applied");
            Ok(())
        }
        SchemaState::Behind(pending) => Err(OpenError::Schema(format!(
            "the database schema is not migrated (pending: {}); run `tessera migrate` first, \
             or start with --migrate (TESSERA_AUTO_MIGRATE=true)",
            pending.join(", ")
        ))),
        SchemaState::Ahead(_) => unreachable!("check_schema refuses a newer schema"),
    }
}

//! Building and running the service.

use sea_orm::DatabaseConnection;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tessera_backend::redis::RedisConnection;
use tessera_limiter::{Limiter, LimiterError, LimiterStore, Policies, RedisLimiter, SqlLimiter};
use tessera_migration::{Migrator, MigratorTrait, SchemaState, schema_state};
use tessera_store::{RedisTokenStore, SqlTokenStore, StoreError, TokenStore, Tokens};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{DatabaseArgs, KeyArgs, ServeConfig};
use crate::http::service_key::ApiKeys;
use crate::router::router;
use crate::state::{AppState, Limits};
use tessera_auth::Purged;
use tessera_auth::secrets::{self, KeyRing};

/// Why the service did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The database could not be opened.
    #[error("cannot open the database: {0}")]
    Database(#[from] StoreError),
    /// A store could not be opened or reached.
    #[error("{}: {}", .0, source_text(.0))]
    Backend(#[from] tessera_backend::BackendError),
    /// The rate limiter could not be set up.
    #[error("rate limiter: {0}")]
    Limiter(#[from] LimiterError),
    /// A setting has an invalid value.
    #[error("invalid setting: {0}")]
    Config(String),
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
        source: redis::RedisError,
    },
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// The cause of a backend error, for the one line `serve` prints when it cannot start.
fn source_text(e: &tessera_backend::BackendError) -> String {
    std::error::Error::source(e).map_or_else(String::new, |s| s.to_string())
}

/// The key ring for secrets at rest: `TESSERA_SECRET_KEY` (with the previous keys); unset,
/// the key file beside an embedded SQLite database, generated on first use. Any other
/// database without a key is refused: several workers must share one key, and a key made
/// up by one of them would strand every secret it sealed.
pub fn key_ring(db: &DatabaseArgs, keys: &KeyArgs) -> Result<KeyRing, StartupError> {
    let previous: Vec<&str> = keys
        .previous_secret_keys
        .split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .collect();
    let ring = |current: &str| {
        KeyRing::new(current, &previous)
            .map_err(|e| StartupError::Config(format!("TESSERA_SECRET_KEY: {e}")))
    };
    if let Some(key) = keys.secret_key.as_deref().filter(|k| !k.is_empty()) {
        return ring(key);
    }
    match secrets::key_file_for(&db.database_url) {
        Some(path) => {
            let (key, created) = secrets::load_or_create_key_file(&path)
                .map_err(|e| StartupError::Config(e.to_string()))?;
            if created {
                tracing::warn!(path = %path.display(), "no TESSERA_SECRET_KEY: generated a secret key beside the database (mode 0600); keep it with the database, and set TESSERA_SECRET_KEY before running several workers");
            }
            ring(&key)
        }
        None => Err(StartupError::Config(
            "TESSERA_SECRET_KEY is required with this database: every worker must share one \
             key to read the secrets the others encrypted (generate one with \
             `openssl rand -base64 32`)"
                .into(),
        )),
    }
}

/// Opens the database named by `args`.
pub async fn open_database(args: &DatabaseArgs) -> Result<DatabaseConnection, StartupError> {
    Ok(tessera_backend::sql::connect(&args.database_url, args.db_max_connections).await?)
}

/// The token store and limiter the configuration selects: Redis (or a Cluster) when
/// `TESSERA_REDIS_URL` is set, else the database.
pub async fn open_stores(
    db: DatabaseConnection,
    args: &DatabaseArgs,
    policies: Policies,
    purge_batch: u32,
) -> Result<(Tokens, Limiter), StartupError> {
    let (store, limiter): (Arc<dyn TokenStore>, Arc<dyn LimiterStore>) = match &args.redis_url {
        Some(url) => {
            let conn =
                RedisConnection::connect(url)
                    .await
                    .map_err(|source| StartupError::Redis {
                        url: url.clone(),
                        source,
                    })?;
            (
                Arc::new(RedisTokenStore::new(conn.clone())),
                Arc::new(RedisLimiter::new(conn)),
            )
        }
        None => (
            Arc::new(SqlTokenStore::new(db.clone())?),
            Arc::new(SqlLimiter::new(db)?),
        ),
    };
    Ok((
        Tokens::new(store).with_purge_batch(purge_batch),
        Limiter::new(limiter, policies),
    ))
}

/// Applies pending migrations (`tessera migrate`); idempotent. Refuses a schema migrated
/// by a newer build.
pub async fn migrate(db: &DatabaseConnection) -> Result<usize, StartupError> {
    match check_schema(db).await? {
        SchemaState::UpToDate => Ok(0),
        SchemaState::Behind(pending) => {
            Migrator::up(db, None)
                .await
                .map_err(|e| StartupError::Migration(e.to_string()))?;
            Ok(pending.len())
        }
        SchemaState::Ahead(_) => unreachable!("check_schema refuses a newer schema"),
    }
}

async fn check_schema(db: &DatabaseConnection) -> Result<SchemaState, StartupError> {
    let state = schema_state(db)
        .await
        .map_err(|e| StartupError::Backend(e.into()))?;
    if let SchemaState::Ahead(unknown) = &state {
        return Err(StartupError::Schema(format!(
            "the database schema is newer than this build of Tessera (unknown migrations: {}); \
             run a Tessera version that knows them",
            unknown.join(", ")
        )));
    }
    Ok(state)
}

/// Checks the schema before serving: migrates it when allowed (SQLite, or `--migrate`),
/// refuses it otherwise with a message that names `tessera migrate`.
pub async fn prepare_schema(
    db: &DatabaseConnection,
    args: &DatabaseArgs,
    auto_migrate: bool,
) -> Result<(), StartupError> {
    match check_schema(db).await? {
        SchemaState::UpToDate => Ok(()),
        SchemaState::Behind(_) if auto_migrate || args.is_sqlite() => {
            let n = migrate(db).await?;
            tracing::info!(applied = n, "migrations applied");
            Ok(())
        }
        SchemaState::Behind(pending) => Err(StartupError::Schema(format!(
            "the database schema is not migrated (pending: {}); run `tessera migrate` first, \
             or start with --migrate (TESSERA_AUTO_MIGRATE=true)",
            pending.join(", ")
        ))),
        SchemaState::Ahead(_) => unreachable!("check_schema refuses a newer schema"),
    }
}

/// A built service, bound and ready to run.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    purge_every: Option<Duration>,
    connections: ConnectionLimits,
}

/// What one connection may hold.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Time to send a request's headers.
    pub header_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
}

impl Application {
    /// Opens the store, prepares the schema and binds the listener.
    pub async fn build(config: ServeConfig) -> Result<Application, StartupError> {
        let keys = key_ring(&config.database, &config.keys)?;
        let db = open_database(&config.database).await?;
        prepare_schema(&db, &config.database, config.auto_migrate).await?;
        let policies = config
            .limits
            .policies()
            .map_err(|e| StartupError::Config(e.to_string()))?;
        let (tokens, limiter) =
            open_stores(db.clone(), &config.database, policies, config.purge_batch).await?;
        let mut state = AppState::new(db, tokens, limiter, ApiKeys::parse(&config.api_keys));
        state.auth.settings = std::sync::Arc::new(
            config
                .auth
                .settings(keys, config.listen_addr())
                .map_err(StartupError::Config)?,
        );
        state.limits = Limits {
            body_bytes: config.body_limit,
            request_timeout: Duration::from_secs(config.request_timeout.max(1)),
        };
        state.proxies = crate::http::client_ip::TrustedProxies::parse(&config.trusted_proxies)
            .map_err(|e| StartupError::Config(format!("TESSERA_TRUSTED_PROXIES: {e}")))?
            .with_ipv6_prefix(config.ipv6_prefix)
            .map_err(|e| StartupError::Config(format!("TESSERA_IPV6_PREFIX: {e}")))?;
        if state.api_keys.is_empty() {
            tracing::warn!("no TESSERA_API_KEYS configured: /v1 refuses every request");
        }
        tokio::task::spawn_blocking(tessera_auth::hashing::prewarm)
            .await
            .map_err(|e| StartupError::Config(format!("reserving hashing memory: {e}")))?;
        let addr = config.listen_addr();
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartupError::Bind { addr, source })?;
        Ok(Application {
            listener,
            state,
            purge_every: config.purge_every(),
            connections: ConnectionLimits {
                header_timeout: Duration::from_secs(config.header_timeout.max(1)),
                max_connections: config.max_connections.max(1),
            },
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` resolves, then stops accepting and finishes the requests in
    /// flight. The periodic purge runs alongside and stops with it.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let purge = self
            .purge_every
            .map(|every| tokio::spawn(purge_loop(self.state.clone(), every, stop_rx)));
        tracing::info!(addr = %self.local_addr(), "listening");
        let served = serve(
            self.listener,
            router(self.state),
            self.connections,
            shutdown,
        )
        .await;
        stop_tx.send(true).ok();
        if let Some(task) = purge {
            task.await.ok();
        }
        served
    }
}

/// Serves `app` on `listener` until `shutdown`, then stops accepting, lets each connection
/// finish the request it is on, and returns once they have closed.
///
/// hyper directly rather than `axum::serve`, which sets neither a header timeout nor a
/// connection limit: each connection holds a permit of `max_connections` until it closes
/// (further ones wait in the kernel's listen queue), and must send each request's headers
/// within `header_timeout`.
async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt as _;
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let (close_tx, close_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: wait a moment rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = app.clone().map_request(
            move |mut req: axum::extract::Request<hyper::body::Incoming>| {
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                req
            },
        );
        let mut close = close_rx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .serve_connection(
                    TokioIo::new(stream),
                    hyper_util::service::TowerToHyperService::new(service),
                )
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = close.changed() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await.ok();
                }
            }
        });
    }
    close_tx.send(true).ok();
    // Every permit back means every connection closed.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    permits.acquire_many(all).await.ok();
    Ok(())
}

/// Purges every `every`, on every worker.
async fn purge_loop(state: AppState, every: Duration, mut stop: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => return,
        }
        match state.auth.purge().await {
            Ok(p) if p == Purged::default() => {}
            Ok(p) => tracing::info!(
                tokens = p.tokens,
                events = p.events,
                login_rows = p.login_rows,
                "purged expired state"
            ),
            Err(e) => tracing::warn!(error = %e, "purge failed; retrying at the next interval"),
        }
    }
}

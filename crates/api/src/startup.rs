//! Building and running the service.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::ServeConfig;
use crate::http::service_key::ApiKeys;
use crate::router::router;
use crate::state::{AppState, Limits};
use tessera_auth::Purged;
use tessera_auth::open::{self, OpenError};

/// Why the service did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// A store, the schema or the key ring could not be opened.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// A setting has an invalid value.
    #[error("invalid setting: {0}")]
    Config(String),
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
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
        let keys = config.keys.ring(&config.database)?;
        let db = config.database.open().await?;
        open::prepare_schema(&db, config.auto_migrate || config.database.is_sqlite()).await?;
        let policies = config
            .limits
            .policies()
            .map_err(|e| StartupError::Config(e.to_string()))?;
        let redis_url = config.database.redis_url.as_deref();
        let (tokens, limiter) = open::stores(
            db.clone(),
            redis_url,
            policies,
            config.purge_batch,
            config.database.pg_sync,
        )
        .await?;
        let mut state = AppState::new(db, tokens, limiter, ApiKeys::parse(&config.api_keys));
        state.auth.set_settings(
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
        if config.auth.public_url.is_none() && (redis_url.is_some() || !config.database.is_sqlite())
        {
            tracing::warn!(
                public_url = %state.auth.settings.public_url,
                "TESSERA_PUBLIC_URL is not set on a shared store: this worker builds mail links \
                 and the CSRF origin from its own listen address; set it to the URL users reach, \
                 the same on every worker"
            );
        }
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

/// Purges every `every`, on one worker at a time (see [`tessera_auth::purge`]).
async fn purge_loop(state: AppState, every: Duration, mut stop: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => return,
        }
        match state.auth.purge_in_background().await {
            Ok(None) => {}
            Ok(Some(p)) if p == Purged::default() => {}
            Ok(Some(p)) => tracing::info!(
                tokens = p.tokens,
                events = p.events,
                login_rows = p.login_rows,
                "purged expired state"
            ),
            Err(e) => tracing::warn!(error = %e, "purge failed; retrying at the next interval"),
        }
    }
}

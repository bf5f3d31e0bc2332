//! SQL pools: PostgreSQL, and SQLite for the embedded default.

use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbErr, RuntimeErr};
use std::time::Duration;

use crate::BackendError;

/// A pooled server connection idle for this long is pinged before it is handed out. A busy
/// worker reuses its connections within milliseconds and never pays for the ping; after a
/// quiet second, one ping finds a connection that a database restart has cut.
pub const PING_AFTER_IDLE: Duration = Duration::from_secs(1);

/// Opens a pool on `url` with the settings Tessera relies on: for SQLite, WAL (readers do
/// not block the writer) and a busy timeout (writers queue instead of failing); for an
/// in-memory SQLite database a single connection, since each connection would otherwise
/// see its own empty database.
pub async fn connect(url: &str, max_connections: u32) -> Result<DatabaseConnection, BackendError> {
    if let Some(path) = sqlite_file(url) {
        create_private(&path)?;
    }
    let mut opts = ConnectOptions::new(url.to_owned());
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    opts.max_connections(if in_memory { 1 } else { max_connections })
        .min_connections(if in_memory { 1 } else { 0 })
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(5))
        .sqlx_logging(false);
    if url.starts_with("sqlite:") {
        // In-process: there is no server or network that could drop a connection.
        opts.test_before_acquire(false);
    } else {
        // A server restart or a dropped link leaves dead connections in the pool; only a
        // connection that has been idle for a while is tested before use, not each one,
        // which would cost every statement a second round trip.
        opts.test_before_acquire_if_idle_for(PING_AFTER_IDLE);
    }
    opts.map_sqlx_sqlite_opts(move |o| {
        let o = o
            .busy_timeout(Duration::from_secs(10))
            .synchronous(SqliteSynchronous::Normal);
        if in_memory {
            o
        } else {
            o.journal_mode(SqliteJournalMode::Wal)
        }
    });
    if in_memory {
        opts.idle_timeout(None::<Duration>)
            .max_lifetime(None::<Duration>);
    }
    Ok(Database::connect(opts).await?)
}

/// The file of a `sqlite:` URL, if it names one (not `:memory:`).
pub fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    let rest = url.strip_prefix("sqlite:")?;
    let path = rest.trim_start_matches("//").split('?').next()?;
    if path.is_empty() || path == ":memory:" || url.contains("mode=memory") {
        return None;
    }
    Some(std::path::PathBuf::from(path))
}

/// Creates a database file readable by its owner only, before SQLite would create it with
/// the process's umask (commonly world-readable): it holds password hashes and sessions.
/// SQLite gives its `-wal` and `-shm` files the database file's permissions.
fn create_private(path: &std::path::Path) -> Result<(), BackendError> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        // A missing folder and the like: SQLite says it better when it opens the file.
        Err(_) => Ok(()),
    }
}

/// Whether a database error means the database cannot be reached (refused, dropped, timed
/// out, pool exhausted), as opposed to a statement it refused. Callers answer the first
/// with "unavailable, try again", the second as a server fault.
pub fn is_unreachable(e: &DbErr) -> bool {
    use sea_orm::sqlx::Error as X;
    match e {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(x)) | DbErr::Query(RuntimeErr::SqlxError(x)) => {
            matches!(
                x.as_ref(),
                X::Io(_) | X::Tls(_) | X::PoolTimedOut | X::PoolClosed | X::WorkerCrashed
            )
        }
        _ => false,
    }
}

/// Which PostgreSQL writes wait for their commit to reach the disk (`TESSERA_PG_SYNC`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PgSync {
    /// Writes whose loss in a database crash is harmless — rate-limit events and newly
    /// issued tokens — commit without waiting for the flush: a crash can lose the last few
    /// hundred milliseconds of them, which forces a retry and never allows a second use.
    /// Consumes, revokes, `once` claims and the login tables stay synchronous.
    #[default]
    Relaxed,
    /// Every write waits for its flush.
    All,
}

impl PgSync {
    /// Whether harmless writes may commit without waiting for the flush.
    pub fn relaxed(self) -> bool {
        self == PgSync::Relaxed
    }
}

impl std::str::FromStr for PgSync {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "relaxed" => Ok(PgSync::Relaxed),
            "all" => Ok(PgSync::All),
            other => Err(format!("`{other}`: expected `relaxed` or `all`")),
        }
    }
}

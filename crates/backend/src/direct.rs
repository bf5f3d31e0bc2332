//! PostgreSQL connections for the token store's and the limiter's one-statement calls.
//!
//! sqlx's pool sends every connection it takes back a `Sync` and waits for the server's
//! answer before the next caller may have it: a second round trip, and a second wake-up of
//! the server's backend, for each statement. For a consume of an unknown token that is
//! about as much work again as the `DELETE` itself. These calls run on a pool of their own
//! instead ([`deadpool`]), where giving a connection back costs nothing: a connection is
//! only pinged when it has been idle for [`PING_AFTER_IDLE`] (a restarted server is found
//! by the first caller after a quiet second, as on the main pool), and one whose statement
//! was cancelled halfway (a dropped request) or broke the link is closed instead of reused.
//!
//! Its size is the main pool's (`TESSERA_DB_MAX_CONNECTIONS`); connections are opened as
//! needed and closed when broken or, on their next reuse, after 30 minutes.

use deadpool::managed::{self, Metrics, Object, PoolError, RecycleError, RecycleResult};
use sea_orm::sqlx::postgres::{PgArguments, PgConnectOptions, PgConnection};
use sea_orm::sqlx::{self, AssertSqlSafe, Connection};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, DbErr, QueryResult, RuntimeErr, Statement,
};
use sea_query_sqlx::SqlxValues;
use std::sync::Arc;
use std::time::Duration;

use crate::sql::PING_AFTER_IDLE;

/// How long a caller waits for a connection, as on the main pool.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection older than this is closed when it comes up for reuse (sqlx's pool's
/// default), so that a server-side setting or a proxy's rebalancing reaches every
/// connection in time.
const MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);

/// A pool of PostgreSQL connections for single statements; clones share it.
#[derive(Clone)]
pub struct Direct {
    pool: managed::Pool<Manager>,
}

impl std::fmt::Debug for Direct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.pool.status();
        write!(f, "Direct({} of {} open)", s.size, s.max_size)
    }
}

struct Manager {
    options: PgConnectOptions,
}

/// A connection, and whether its last statement finished.
struct Conn {
    raw: PgConnection,
    clean: bool,
}

impl managed::Manager for Manager {
    type Type = Conn;
    type Error = sqlx::Error;

    async fn create(&self) -> Result<Conn, sqlx::Error> {
        let raw = tokio::time::timeout(ACQUIRE_TIMEOUT, PgConnection::connect_with(&self.options))
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)??;
        Ok(Conn { raw, clean: true })
    }

    async fn recycle(&self, conn: &mut Conn, metrics: &Metrics) -> RecycleResult<sqlx::Error> {
        if !conn.clean {
            return Err(RecycleError::message("its last statement did not finish"));
        }
        if metrics.age() >= MAX_LIFETIME {
            return Err(RecycleError::message("it has reached its maximum lifetime"));
        }
        if metrics.last_used() >= PING_AFTER_IDLE {
            conn.raw.ping().await?;
        }
        Ok(())
    }
}

impl Direct {
    /// A pool beside `db`'s, with its connection settings and size, when `db` is
    /// PostgreSQL; `None` otherwise.
    pub fn for_postgres(db: &DatabaseConnection) -> Option<Self> {
        if db.get_database_backend() != DbBackend::Postgres {
            return None;
        }
        let main = db.get_postgres_connection_pool();
        let manager = Manager {
            options: main.connect_options().as_ref().clone(),
        };
        let pool = managed::Pool::builder(manager)
            .max_size(main.options().get_max_connections().max(1) as usize)
            .wait_timeout(Some(ACQUIRE_TIMEOUT))
            .create_timeout(Some(ACQUIRE_TIMEOUT))
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            .ok()?;
        Some(Direct { pool })
    }

    /// How many connections the pool may open.
    pub fn max_size(&self) -> usize {
        self.pool.status().max_size
    }

    /// Runs `stmt` and answers its first row, if any.
    pub async fn query_one(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        let row = self
            .on_conn(async |c| query(stmt).fetch_optional(c).await)
            .await?;
        Ok(row.map(QueryResult::from))
    }

    /// Runs `sql` with `args` (sqlx's own binds, arrays among them) and answers every
    /// row.
    pub async fn fetch_all(
        &self,
        sql: &'static str,
        args: PgArguments,
    ) -> Result<Vec<QueryResult>, DbErr> {
        let rows = self
            .on_conn(async |c| sqlx::query_with(sql, args).fetch_all(c).await)
            .await?;
        Ok(rows.into_iter().map(QueryResult::from).collect())
    }

    /// Runs `run` on a pooled connection; one that `run` left unfit for the next statement
    /// (cut off halfway, or broken) is closed instead of reused.
    async fn on_conn<T>(
        &self,
        run: impl AsyncFnOnce(&mut PgConnection) -> Result<T, sqlx::Error>,
    ) -> Result<T, DbErr> {
        let mut conn = self.conn().await?;
        conn.clean = false;
        let result = run(&mut conn.raw).await;
        conn.clean = !result.as_ref().is_err_and(breaks_connection);
        result.map_err(query_err)
    }

    async fn conn(&self) -> Result<Object<Manager>, DbErr> {
        self.pool.get().await.map_err(|e| match e {
            PoolError::Backend(e) => DbErr::Conn(RuntimeErr::SqlxError(Arc::new(e))),
            PoolError::Timeout(_) => DbErr::ConnectionAcquire(sea_orm::ConnAcquireErr::Timeout),
            PoolError::Closed => {
                DbErr::ConnectionAcquire(sea_orm::ConnAcquireErr::ConnectionClosed)
            }
            other => DbErr::Conn(RuntimeErr::Internal(other.to_string())),
        })
    }
}

/// Runs `stmt` on `direct` when there is one, on `db`'s pool otherwise: the one choice the
/// token store and the limiter both make for their single statements.
pub async fn query_one(
    direct: Option<&Direct>,
    db: &DatabaseConnection,
    stmt: Statement,
) -> Result<Option<QueryResult>, DbErr> {
    match direct {
        Some(d) => d.query_one(stmt).await,
        None => db.query_one_raw(stmt).await,
    }
}

fn query(stmt: Statement) -> sqlx::query::Query<'static, sqlx::Postgres, SqlxValues> {
    let values = stmt.values.unwrap_or(sea_orm::Values(Vec::new()));
    sqlx::query_with(AssertSqlSafe(stmt.sql), SqlxValues(values))
}

/// Whether an error leaves the connection unfit for the next statement (a statement the
/// server refused leaves it ready).
fn breaks_connection(e: &sqlx::Error) -> bool {
    !matches!(
        e,
        sqlx::Error::Database(_)
            | sqlx::Error::RowNotFound
            | sqlx::Error::ColumnNotFound(_)
            | sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::Decode(_)
            | sqlx::Error::TypeNotFound { .. }
    )
}

fn query_err(e: sqlx::Error) -> DbErr {
    DbErr::Query(RuntimeErr::SqlxError(Arc::new(e)))
}

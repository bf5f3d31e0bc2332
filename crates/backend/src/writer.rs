//! SQLite's writer: one task through which the token store's and the limiter's writes pass,
//! many to a transaction.
//!
//! SQLite lets one connection write at a time. Left to a pool, concurrent writers collide
//! on the database lock and wait in SQLite's busy handler, which sleeps; and every
//! autocommit statement writes the pages it changed to the log on its own. Here writes
//! queue instead: the task takes every job waiting, runs them one after another in one
//! `BEGIN IMMEDIATE` transaction, commits once, and only then tells each caller its result,
//! so no caller hears of a write that did not commit. A batch is as large as the queue was
//! (at most [`MAX_BATCH`]): under no load a job runs alone, at once.
//!
//! Each job must leave nothing half-done when it fails: its last statement is its only
//! write (a consume's `DELETE ... RETURNING`, a hit's `INSERT`), so a failing job writes
//! nothing and its batch still commits.

use futures::future::BoxFuture;
use sea_orm::{
    DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, SqliteTransactionMode,
    SqlxSqliteConnector, TransactionOptions, TransactionTrait,
};
use tokio::sync::{mpsc, oneshot};

/// The most jobs one transaction takes.
pub const MAX_BATCH: usize = 64;

/// What a job tells its caller once the batch's commit is known.
type Deliver = Box<dyn FnOnce(Result<(), String>) + Send>;

/// A job: runs on the batch's transaction (or is told the transaction could not begin),
/// and answers how to deliver its result after the commit.
type Job =
    Box<dyn for<'a> FnOnce(Option<&'a DatabaseTransaction>) -> BoxFuture<'a, Deliver> + Send>;

/// A handle on the writer task; clones share it. The task ends when the last handle goes.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::UnboundedSender<Job>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Writer")
    }
}

impl Writer {
    /// Starts the writer task for `db`'s database, on a connection of its own (its page
    /// cache stays warm, since no other connection writes the pages it reads), or on `db`'s
    /// pool when that pool is the database's only connection (an in-memory database).
    /// Must be called within a Tokio runtime.
    pub fn start(db: DatabaseConnection) -> Self {
        let db = own_connection(&db).unwrap_or(db);
        let (jobs, queue) = mpsc::unbounded_channel();
        tokio::spawn(run(db, queue));
        Writer { jobs }
    }

    /// A writer for `db` when it is SQLite and a Tokio runtime is there to run the task;
    /// `None` otherwise (writes then go to the pool).
    pub fn for_sqlite(db: &DatabaseConnection) -> Option<Self> {
        (db.get_database_backend() == DbBackend::Sqlite
            && tokio::runtime::Handle::try_current().is_ok())
        .then(|| Writer::start(db.clone()))
    }

    /// Runs `f` in the writer's next transaction and answers its result once that
    /// transaction has committed (or the error that stopped it).
    pub async fn run<T, F>(&self, f: F) -> Result<T, DbErr>
    where
        T: Send + 'static,
        F: for<'a> FnOnce(&'a DatabaseTransaction) -> BoxFuture<'a, Result<T, DbErr>>
            + Send
            + 'static,
    {
        let (answer, result) = oneshot::channel::<Result<T, DbErr>>();
        let job: Job = Box::new(move |txn| {
            Box::pin(async move {
                let outcome = match txn {
                    Some(txn) => f(txn).await,
                    None => Err(DbErr::Custom("the transaction did not begin".into())),
                };
                Box::new(move |commit: Result<(), String>| {
                    let r = match (outcome, commit) {
                        (Ok(v), Ok(())) => Ok(v),
                        (Err(e), _) => Err(e),
                        (Ok(_), Err(e)) => Err(DbErr::Custom(format!("commit failed: {e}"))),
                    };
                    answer.send(r).ok();
                }) as Deliver
            })
        });
        self.jobs
            .send(job)
            .map_err(|_| DbErr::Custom("the SQLite writer has stopped".into()))?;
        result
            .await
            .map_err(|_| DbErr::Custom("the SQLite writer has stopped".into()))?
    }
}

/// A pool of one connection to the database of `db`, with its settings, opened on first
/// use; `None` unless `db` is a SQLite pool of several connections (a file).
fn own_connection(db: &DatabaseConnection) -> Option<DatabaseConnection> {
    use sea_orm::sqlx::sqlite::SqlitePoolOptions;
    if db.get_database_backend() != DbBackend::Sqlite {
        return None;
    }
    let shared = db.get_sqlite_connection_pool();
    if shared.options().get_max_connections() < 2 {
        return None;
    }
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        // In-process: nothing can cut the connection.
        .test_before_acquire(false)
        .idle_timeout(None)
        .max_lifetime(None)
        .acquire_timeout(shared.options().get_acquire_timeout())
        .connect_lazy_with((*shared.connect_options()).clone());
    Some(SqlxSqliteConnector::from_sqlx_sqlite_pool(pool))
}

async fn run(db: DatabaseConnection, mut queue: mpsc::UnboundedReceiver<Job>) {
    let options = TransactionOptions {
        isolation_level: None,
        access_mode: None,
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
    };
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        match db.begin_with_options(options).await {
            Ok(txn) => {
                let mut delivers = Vec::with_capacity(batch.len());
                for job in batch.drain(..) {
                    delivers.push(job(Some(&txn)).await);
                }
                let commit = txn.commit().await.map_err(|e| e.to_string());
                for deliver in delivers {
                    deliver(commit.clone());
                }
            }
            Err(e) => {
                let e = e.to_string();
                for job in batch.drain(..) {
                    (job(None).await)(Err(e.clone()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::{ConnectionTrait, Statement};

    fn insert(n: i64) -> Statement {
        Statement::from_sql_and_values(
            DbBackend::Sqlite,
            "INSERT INTO t (n) VALUES (?1)",
            [n.into()],
        )
    }

    /// 200 callers at once: each hears its own result, the failing ones fail alone, and what
    /// succeeded is there.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_jobs_each_get_their_result_and_a_failure_stays_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("w.db").display());
        let db = crate::sql::connect(&url, 4).await.unwrap();
        db.execute_unprepared("CREATE TABLE t (n INTEGER PRIMARY KEY)")
            .await
            .unwrap();
        let writer = Writer::start(db.clone());
        let calls = (0..200i64).map(|i| {
            let writer = writer.clone();
            tokio::spawn(async move {
                // Every tenth caller inserts a number another caller also inserts.
                let n = if i % 10 == 9 { i - 1 } else { i };
                writer
                    .run(move |txn| Box::pin(async move { txn.execute_raw(insert(n)).await }))
                    .await
                    .map(|r| r.rows_affected())
            })
        });
        let results = futures::future::join_all(calls).await;
        let ok = results.iter().filter(|r| matches!(r, Ok(Ok(1)))).count();
        let failed = results.iter().filter(|r| matches!(r, Ok(Err(_)))).count();
        assert_eq!(ok + failed, 200);
        let rows = db
            .query_one_raw(Statement::from_string(
                DbBackend::Sqlite,
                "SELECT count(*) AS c FROM t",
            ))
            .await
            .unwrap()
            .unwrap()
            .try_get::<i64>("", "c")
            .unwrap();
        assert_eq!(rows, ok as i64);
        assert_eq!(rows, 180, "{failed} failed");
    }
}

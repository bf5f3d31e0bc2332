//! SQLite's writer: one thread, with a connection of its own, through which the token
//! store's and the limiter's writes pass, many to a transaction.
//!
//! SQLite lets one connection write at a time. Left to a pool, concurrent writers collide
//! on the database lock and wait in SQLite's busy handler, which sleeps; and every
//! autocommit statement writes the pages it changed to the log on its own. Here writes
//! queue instead: the thread takes every job waiting, runs them one after another in one
//! `BEGIN IMMEDIATE` transaction, commits once, and only then tells each caller its result,
//! so no caller hears of a write that did not commit. A batch is as large as the queue was
//! (at most [`MAX_BATCH`]): under no load a job runs alone, at once.
//!
//! The thread owns its connection (rusqlite) and runs each job's statements itself, so a
//! batch costs two hand-offs between threads (the jobs in, the answers out) whatever its
//! statements. Through the pool's driver, which runs each statement on a thread of its own
//! and answers over a channel, every statement cost two, and on two cores the switches
//! between threads were most of the time a write took.
//!
//! Each job must leave nothing half-done when it fails: its last statement is its only
//! write (a consume's `DELETE ... RETURNING`, a hit's `INSERT`), so a failing job writes
//! nothing and its batch still commits.

use chrono::{DateTime, NaiveDateTime, Utc};
pub use rusqlite::Connection;
use rusqlite::OpenFlags;
pub use rusqlite::types::Value as SqlValue;
use sea_orm::{DatabaseConnection, DbBackend, DbErr, RuntimeErr, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// The most jobs one transaction takes.
pub const MAX_BATCH: usize = 64;

/// How long a write waits for another process's lock on the database (as the pool does).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// What a job tells its caller once the batch's commit is known.
type Deliver = Box<dyn FnOnce(Result<(), String>) + Send>;

/// A job: runs on the batch's connection, inside its transaction (or is told why the
/// transaction could not begin), and answers how to deliver its result after the commit.
type Job = Box<dyn FnOnce(Result<&Connection, &str>) -> Deliver + Send>;

/// A handle on the writer thread; clones share it. The thread ends when the last handle
/// goes.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::UnboundedSender<Job>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Writer")
    }
}

/// A row a write returned: its columns by name.
#[derive(Debug)]
pub struct Row(Vec<(String, SqlValue)>);

impl Row {
    fn get(&self, column: &str) -> Result<&SqlValue, DbErr> {
        self.0
            .iter()
            .find(|(name, _)| name == column)
            .map(|(_, v)| v)
            .ok_or_else(|| DbErr::Custom(format!("no column {column:?} in the row")))
    }

    /// A text column, `None` when NULL.
    pub fn text(&self, column: &str) -> Result<Option<String>, DbErr> {
        match self.get(column)? {
            SqlValue::Null => Ok(None),
            SqlValue::Text(t) => Ok(Some(t.clone())),
            other => Err(mismatch(column, "text", other)),
        }
    }

    /// A blob column, `None` when NULL.
    pub fn blob(&self, column: &str) -> Result<Option<Vec<u8>>, DbErr> {
        match self.get(column)? {
            SqlValue::Null => Ok(None),
            SqlValue::Blob(b) => Ok(Some(b.clone())),
            other => Err(mismatch(column, "blob", other)),
        }
    }

    /// An integer column.
    pub fn int(&self, column: &str) -> Result<i64, DbErr> {
        match self.get(column)? {
            SqlValue::Integer(i) => Ok(*i),
            other => Err(mismatch(column, "integer", other)),
        }
    }

    /// A timestamp column, kept as SQLite's UTC text (`YYYY-MM-DD HH:MM:SS.SSS`).
    pub fn time(&self, column: &str) -> Result<DateTime<Utc>, DbErr> {
        let text = self
            .text(column)?
            .ok_or_else(|| DbErr::Custom(format!("column {column:?} is NULL")))?;
        parse_time(&text)
    }
}

/// SQLite's UTC text timestamp (`YYYY-MM-DD HH:MM:SS.SSS`, the fraction optional).
pub fn parse_time(text: &str) -> Result<DateTime<Utc>, DbErr> {
    NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
        .map(|t| t.and_utc())
        .map_err(|e| DbErr::Custom(format!("bad timestamp {text:?}: {e}")))
}

fn mismatch(column: &str, wanted: &str, got: &SqlValue) -> DbErr {
    DbErr::Custom(format!(
        "column {column:?}: expected {wanted}, found {:?}",
        got.data_type()
    ))
}

/// A statement's values as SQLite binds them.
fn bind(values: Vec<Value>) -> Result<Vec<SqlValue>, DbErr> {
    values
        .into_iter()
        .map(|v| {
            Ok(match v {
                Value::String(s) => s.map_or(SqlValue::Null, SqlValue::Text),
                Value::Bytes(b) => b.map_or(SqlValue::Null, SqlValue::Blob),
                Value::BigInt(i) => i.map_or(SqlValue::Null, SqlValue::Integer),
                Value::Int(i) => i.map_or(SqlValue::Null, |i| SqlValue::Integer(i.into())),
                Value::Bool(b) => b.map_or(SqlValue::Null, |b| SqlValue::Integer(b.into())),
                Value::Double(d) => d.map_or(SqlValue::Null, SqlValue::Real),
                other => {
                    return Err(DbErr::Custom(format!(
                        "the SQLite writer binds no {other:?}"
                    )));
                }
            })
        })
        .collect()
}

fn sql_err(e: rusqlite::Error) -> DbErr {
    DbErr::Custom(format!("SQLite: {e}"))
}

/// The database could not take the write at all (the file would not open, its lock stayed
/// taken past the busy timeout, the commit failed): "unavailable, try again"
/// ([`crate::sql::is_unreachable`]), and nothing was written.
fn unavailable(why: impl std::fmt::Display) -> DbErr {
    DbErr::Conn(RuntimeErr::Internal(format!("SQLite writer: {why}")))
}

impl Writer {
    /// Starts the writer thread on the SQLite database file at `path` (which must exist),
    /// with the settings of Tessera's pools: WAL, `synchronous=NORMAL`, a busy timeout.
    pub fn open(path: &Path) -> Self {
        let path = path.to_owned();
        let (jobs, queue) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || run(&path, queue))
            // Without its thread, the writer answers every job that it has stopped.
            .ok();
        Writer { jobs }
    }

    /// A writer for `db` when it is a SQLite database in a file; `None` otherwise (writes
    /// then go to the pool: on PostgreSQL, or on an in-memory database, whose one
    /// connection no other could share).
    pub fn for_sqlite(db: &DatabaseConnection) -> Option<Self> {
        if db.get_database_backend() != DbBackend::Sqlite {
            return None;
        }
        let pool = db.get_sqlite_connection_pool();
        if pool.options().get_max_connections() < 2 {
            return None;
        }
        Some(Writer::open(pool.connect_options().get_filename()))
    }

    /// Runs `f` in the writer's next transaction and answers its result once that
    /// transaction has committed (or the error that stopped it).
    pub async fn run<T, F>(&self, f: F) -> Result<T, DbErr>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, DbErr> + Send + 'static,
    {
        let (answer, result) = oneshot::channel::<Result<T, DbErr>>();
        let job: Job = Box::new(move |conn| {
            let outcome = match conn {
                Ok(conn) => f(conn),
                Err(why) => Err(unavailable(format_args!(
                    "the transaction did not begin: {why}"
                ))),
            };
            Box::new(move |commit: Result<(), String>| {
                let r = match (outcome, commit) {
                    (Ok(v), Ok(())) => Ok(v),
                    (Err(e), _) => Err(e),
                    (Ok(_), Err(e)) => Err(unavailable(format_args!("commit failed: {e}"))),
                };
                answer.send(r).ok();
            })
        });
        self.jobs
            .send(job)
            .map_err(|_| unavailable("it has stopped"))?;
        result.await.map_err(|_| unavailable("the job was lost"))?
    }

    /// One statement with `values`, in the next transaction: the first row it returns.
    pub async fn query_one(
        &self,
        sql: &'static str,
        values: Vec<Value>,
    ) -> Result<Option<Row>, DbErr> {
        self.run(move |c| query_one(c, sql, values)).await
    }

    /// One statement with `values`, in the next transaction: how many rows it changed.
    pub async fn execute(&self, sql: &'static str, values: Vec<Value>) -> Result<u64, DbErr> {
        self.run(move |c| execute(c, sql, values)).await
    }
}

/// `sql` with `values` on `c`: the first row it returns, its columns by name.
pub fn query_one(c: &Connection, sql: &str, values: Vec<Value>) -> Result<Option<Row>, DbErr> {
    let values = bind(values)?;
    let mut stmt = c.prepare_cached(sql).map_err(sql_err)?;
    let names: Vec<String> = stmt.column_names().iter().map(|n| n.to_string()).collect();
    let mut rows = stmt
        .query(rusqlite::params_from_iter(values))
        .map_err(sql_err)?;
    let row = match rows.next().map_err(sql_err)? {
        None => None,
        Some(r) => Some(Row(names
            .into_iter()
            .enumerate()
            .map(|(i, n)| Ok((n, r.get::<_, SqlValue>(i)?)))
            .collect::<Result<_, rusqlite::Error>>()
            .map_err(sql_err)?)),
    };
    // Run the statement to its end (a DELETE ... RETURNING deletes as it steps).
    while rows.next().map_err(sql_err)?.is_some() {}
    Ok(row)
}

/// `sql` with `values` on `c`: every row's first column.
pub fn query_column(c: &Connection, sql: &str, values: Vec<Value>) -> Result<Vec<SqlValue>, DbErr> {
    let values = bind(values)?;
    let mut stmt = c.prepare_cached(sql).map_err(sql_err)?;
    let rows = stmt
        .query_map(rusqlite::params_from_iter(values), |r| {
            r.get::<_, SqlValue>(0)
        })
        .map_err(sql_err)?;
    rows.collect::<Result<_, _>>().map_err(sql_err)
}

/// `sql` with `values` on `c`: how many rows it changed.
pub fn execute(c: &Connection, sql: &str, values: Vec<Value>) -> Result<u64, DbErr> {
    let values = bind(values)?;
    let mut stmt = c.prepare_cached(sql).map_err(sql_err)?;
    stmt.execute(rusqlite::params_from_iter(values))
        .map(|n| n as u64)
        .map_err(sql_err)
}

fn open_connection(path: &PathBuf) -> Result<Connection, rusqlite::Error> {
    let c = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    c.busy_timeout(BUSY_TIMEOUT)?;
    c.pragma_update(None, "journal_mode", "WAL")?;
    c.pragma_update(None, "synchronous", "NORMAL")?;
    c.set_prepared_statement_cache_capacity(32);
    Ok(c)
}

fn run(path: &PathBuf, mut queue: mpsc::UnboundedReceiver<Job>) {
    // Opened with the first job: a writer replaced by a shared one before it wrote (as the
    // stores' own are at start-up) never opens a connection.
    let mut conn = None;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = queue.blocking_recv() {
        let conn = conn.get_or_insert_with(|| {
            open_connection(path).map_err(|e| format!("cannot open {}: {e}", path.display()))
        });
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let began = match &conn {
            Ok(c) => c
                .execute_batch("BEGIN IMMEDIATE")
                .map(|()| c)
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.clone()),
        };
        match began {
            Ok(c) => {
                // A job that panics loses its own answer (its caller hears so), not the
                // batch's nor the thread.
                let delivers: Vec<Deliver> = batch
                    .drain(..)
                    .filter_map(|job| {
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(Ok(c)))).ok()
                    })
                    .collect();
                let commit = c.execute_batch("COMMIT").map_err(|e| {
                    c.execute_batch("ROLLBACK").ok();
                    e.to_string()
                });
                for deliver in delivers {
                    deliver(commit.clone());
                }
            }
            Err(e) => {
                for job in batch.drain(..) {
                    job(Err(&e))(Err(e.clone()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::{ConnectionTrait, Statement};

    /// A SQLite file in a fresh directory with the table `ddl` makes, and its writer.
    async fn file_with(ddl: &str) -> (tempfile::TempDir, DatabaseConnection, Writer) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("w.db").display());
        let db = crate::sql::connect(&url, 4).await.unwrap();
        db.execute_unprepared(ddl).await.unwrap();
        let writer = Writer::for_sqlite(&db).expect("a file has a writer");
        (dir, db, writer)
    }

    /// 200 callers at once: each hears its own result, the failing ones fail alone, and what
    /// succeeded is there.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_jobs_each_get_their_result_and_a_failure_stays_its_own() {
        let (_dir, db, writer) = file_with("CREATE TABLE t (n INTEGER PRIMARY KEY)").await;
        let calls = (0..200i64).map(|i| {
            let writer = writer.clone();
            tokio::spawn(async move {
                // Every tenth caller inserts a number another caller also inserts.
                let n = if i % 10 == 9 { i - 1 } else { i };
                writer
                    .execute("INSERT INTO t (n) VALUES (?1)", vec![n.into()])
                    .await
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

    #[tokio::test]
    async fn rows_come_back_by_name_and_an_in_memory_database_has_no_writer() {
        let (_dir, _db, writer) =
            file_with("CREATE TABLE t (n INTEGER, s TEXT, b BLOB, at TEXT)").await;
        let row = writer
            .query_one(
                "INSERT INTO t VALUES (?1, ?2, ?3, strftime('%Y-%m-%d %H:%M:%f', '2026-01-02 03:04:05.678')) \
                 RETURNING n, s, b, at",
                vec![7i64.into(), Option::<String>::None.into(), vec![1u8, 2].into()],
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.int("n").unwrap(), 7);
        assert_eq!(row.text("s").unwrap(), None);
        assert_eq!(row.blob("b").unwrap(), Some(vec![1, 2]));
        assert_eq!(
            row.time("at").unwrap(),
            "2026-01-02T03:04:05.678Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert!(row.int("s").is_err() && row.text("missing").is_err());
        let none = writer
            .query_one("DELETE FROM t WHERE n = ?1 RETURNING n", vec![8i64.into()])
            .await
            .unwrap();
        assert!(none.is_none());

        // A job that panics fails alone; the writer goes on.
        let lost = writer
            .run(|_| -> Result<(), DbErr> { panic!("a job's bug") })
            .await;
        assert!(crate::sql::is_unreachable(&lost.unwrap_err()));
        let n = writer
            .execute("DELETE FROM t WHERE n = ?1", vec![7i64.into()])
            .await
            .unwrap();
        assert_eq!(n, 1);

        let memory = crate::sql::connect("sqlite::memory:", 4).await.unwrap();
        assert!(Writer::for_sqlite(&memory).is_none());
    }
}

//! The SQL backend on sea-orm: PostgreSQL and SQLite.
//!
//! A hit is one short transaction per `(event, key)`: serialise, read the key's state,
//! decide in Rust ([`crate::algorithm`]), record. What makes count-then-insert atomic
//! across workers is the first statement: on PostgreSQL a transaction-scoped advisory lock
//! on the key (released by COMMIT; every later statement of the transaction takes a fresh
//! snapshot under READ COMMITTED, so it sees the previous holder's rows); on SQLite
//! `BEGIN IMMEDIATE`, which takes the database's write lock before reading.
//!
//! On PostgreSQL the sliding log (the default algorithm, and the one the login flows hit)
//! does all of that in one round trip: the migrations install `tessera_rate_limit_window`,
//! a PL/pgSQL function that locks, reads the clock and the window's events, records when
//! the hit fits and answers one row. Rust still derives the decision from what it read.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_orm::{
    AccessMode, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr,
    IsolationLevel, SqliteTransactionMode, Statement, TransactionOptions, TransactionTrait, Value,
};

use tessera_backend::direct::Direct;
use tessera_backend::sql::PgSync;
use tessera_backend::writer::{self, Connection, SqlValue, Writer};

use crate::algorithm::{CounterState, sliding_counter, sliding_log};
use crate::gather::{self, Call, Gather, Window};
use crate::{Algorithm, Clock, Decision, Event, Hit, LimiterError, LimiterStore, Policy};

/// One dialect's statements.
struct Statements {
    /// Serialises hits on one key until COMMIT (PostgreSQL only; SQLite's BEGIN IMMEDIATE
    /// already holds the write lock).
    lock: Option<&'static str>,
    /// The store's clock in milliseconds since the epoch.
    now_ms: Option<&'static str>,
    /// The key's events still inside the window, oldest first.
    events: &'static str,
    /// Records `$4` events at `$3`.
    record: &'static str,
    /// The approximate counter of a key.
    counter: &'static str,
    /// Stores the approximate counter of a key.
    store_counter: &'static str,
    /// A bounded batch of events older than `$1`; PostgreSQL skips rows another purger holds.
    purge_events: &'static str,
    /// Counters whose windows both ended before `$1`.
    purge_counters: &'static str,
    /// Forgets a key's events.
    reset_events: &'static str,
    /// Forgets a key's counter.
    reset_counters: &'static str,
}

const POSTGRES: Statements = Statements {
    lock: Some("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))"),
    now_ms: Some("SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint AS now_ms"),
    events: "SELECT occurred_at FROM auth_rate_limit_events \
             WHERE event_type = $1 AND key = $2 AND occurred_at > $3 ORDER BY occurred_at",
    record: "INSERT INTO auth_rate_limit_events (event_type, key, occurred_at) \
             SELECT $1, $2, $3 FROM generate_series(1, $4)",
    counter: "SELECT window_start, prev_count, cur_count FROM auth_rate_limit_counters \
              WHERE event_type = $1 AND key = $2",
    store_counter: "INSERT INTO auth_rate_limit_counters \
                    (event_type, key, window_start, prev_count, cur_count) VALUES ($1, $2, $3, $4, $5) \
                    ON CONFLICT (event_type, key) DO UPDATE SET window_start = excluded.window_start, \
                    prev_count = excluded.prev_count, cur_count = excluded.cur_count",
    purge_events: "DELETE FROM auth_rate_limit_events WHERE id IN ( \
                   SELECT id FROM auth_rate_limit_events WHERE occurred_at <= $1 \
                   LIMIT $2 FOR UPDATE SKIP LOCKED)",
    purge_counters: "DELETE FROM auth_rate_limit_counters WHERE window_start <= $1",
    reset_events: "DELETE FROM auth_rate_limit_events WHERE event_type = $1 AND key = $2",
    reset_counters: "DELETE FROM auth_rate_limit_counters WHERE event_type = $1 AND key = $2",
};

/// PostgreSQL's lock statement that also lets the transaction commit without waiting for
/// the flush ([`PgSync::Relaxed`]).
const RELAXED_LOCK: &str = "SELECT pg_advisory_xact_lock(hashtextextended($1, 0)), \
                            set_config('synchronous_commit', 'off', true)";

const SQLITE: Statements = Statements {
    lock: None,
    // SQLite's 'now' is this process's own reading of the host's clock (an embedded
    // database has no other), so the limiter reads it without a statement.
    now_ms: None,
    events: "SELECT occurred_at FROM auth_rate_limit_events \
             WHERE event_type = ?1 AND key = ?2 AND occurred_at > ?3 ORDER BY occurred_at",
    record: "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?4) \
             INSERT INTO auth_rate_limit_events (event_type, key, occurred_at) \
             SELECT ?1, ?2, ?3 FROM n",
    counter: "SELECT window_start, prev_count, cur_count FROM auth_rate_limit_counters \
              WHERE event_type = ?1 AND key = ?2",
    store_counter: "INSERT INTO auth_rate_limit_counters \
                    (event_type, key, window_start, prev_count, cur_count) VALUES (?1, ?2, ?3, ?4, ?5) \
                    ON CONFLICT (event_type, key) DO UPDATE SET window_start = excluded.window_start, \
                    prev_count = excluded.prev_count, cur_count = excluded.cur_count",
    purge_events: "DELETE FROM auth_rate_limit_events WHERE id IN ( \
                   SELECT id FROM auth_rate_limit_events WHERE occurred_at <= ?1 LIMIT ?2)",
    purge_counters: "DELETE FROM auth_rate_limit_counters WHERE window_start <= ?1",
    reset_events: "DELETE FROM auth_rate_limit_events WHERE event_type = ?1 AND key = ?2",
    reset_counters: "DELETE FROM auth_rate_limit_counters WHERE event_type = ?1 AND key = ?2",
};

/// What a hit read: the events in its window (sliding log) or the key's counter.
enum Found {
    Events(Vec<i64>),
    Counter(Option<CounterState>),
}

/// A statement and its values.
type Sql = (&'static str, Vec<Value>);

/// Rate limits in `auth_rate_limit_events` / `auth_rate_limit_counters`.
#[derive(Clone)]
pub struct SqlLimiter {
    db: DatabaseConnection,
    backend: DbBackend,
    sql: &'static Statements,
    clock: Clock,
    /// Recorded events commit without waiting for the flush (PostgreSQL, `PgSync::Relaxed`).
    relaxed: bool,
    /// SQLite's writer, which batches hits into shared transactions.
    writer: Option<Writer>,
    /// PostgreSQL's sliding-log hits, on the pool for single statements (see
    /// `tessera_backend::direct`), gathered into shared statements under load.
    gather: Option<Gather>,
}

impl SqlLimiter {
    /// A limiter on an open, migrated connection, on the database's clock.
    pub fn new(db: DatabaseConnection) -> Result<Self, LimiterError> {
        let backend = db.get_database_backend();
        let sql = match backend {
            DbBackend::Postgres => &POSTGRES,
            DbBackend::Sqlite => &SQLITE,
            other => {
                return Err(LimiterError::Backend(format!(
                    "the limiter supports PostgreSQL and SQLite, not {other:?}"
                )));
            }
        };
        // SQLite's writes queue for one writer (see `tessera_backend::writer`).
        let writer = Writer::for_sqlite(&db);
        let direct = Direct::for_postgres(&db);
        Ok(SqlLimiter {
            db,
            backend,
            sql,
            clock: Clock::Store,
            relaxed: backend == DbBackend::Postgres,
            writer,
            gather: direct.map(gather::gather),
        })
    }

    /// The same limiter with its one-statement PostgreSQL hits going through `direct`,
    /// shared with the token store.
    pub fn with_direct(mut self, direct: Option<Direct>) -> Self {
        if self.backend == DbBackend::Postgres && direct.is_some() {
            self.gather = direct.map(gather::gather);
        }
        self
    }

    /// The same limiter with its SQLite writes going through `writer`, shared with the
    /// token store so that the two never wait for each other's lock.
    pub fn with_writer(mut self, writer: Option<Writer>) -> Self {
        if self.backend == DbBackend::Sqlite && writer.is_some() {
            self.writer = writer;
        }
        self
    }

    /// Which writes wait for the flush on PostgreSQL ([`PgSync::Relaxed`] unless told): a
    /// relaxed hit commits its events without waiting, so a database crash can forget the
    /// last few hundred milliseconds of attempts.
    pub fn with_sync(mut self, sync: PgSync) -> Self {
        self.relaxed = self.backend == DbBackend::Postgres && sync.relaxed();
        self
    }

    /// The same limiter on another clock (tests).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    fn stmt(&self, sql: &str, values: Vec<Value>) -> Statement {
        Statement::from_sql_and_values(self.backend, sql, values)
    }

    /// A timestamp as this dialect stores it: `timestamptz` on PostgreSQL; on SQLite the
    /// fixed-width UTC text that compares as time.
    fn ts(&self, ms: i64) -> Value {
        let t = DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default();
        match self.backend {
            DbBackend::Sqlite => t.format("%Y-%m-%d %H:%M:%S%.3f").to_string().into(),
            _ => t.into(),
        }
    }

    async fn now(&self, c: &impl ConnectionTrait) -> Result<i64, LimiterError> {
        if let Some(ms) = self.clock.manual_ms() {
            return Ok(ms);
        }
        let Some(now_ms) = self.sql.now_ms else {
            return Ok(Utc::now().timestamp_millis());
        };
        let row = c
            .query_one_raw(self.stmt(now_ms, vec![]))
            .await
            .map_err(map_err)?
            .ok_or_else(|| LimiterError::Backend("no clock row".into()))?;
        row.try_get("", "now_ms").map_err(map_err)
    }

    async fn begin(&self) -> Result<DatabaseTransaction, LimiterError> {
        let options = TransactionOptions {
            isolation_level: (self.backend == DbBackend::Postgres)
                .then_some(IsolationLevel::ReadCommitted),
            access_mode: (self.backend == DbBackend::Postgres).then_some(AccessMode::ReadWrite),
            sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        };
        self.db.begin_with_options(options).await.map_err(map_err)
    }

    /// A sliding-log decision on PostgreSQL in one round trip (see the module's doc),
    /// gathered with others under load ([`crate::gather`]).
    async fn log_in_one_trip(&self, hit: Hit<'_>) -> Result<Decision, LimiterError> {
        let call = Call {
            event: hit.event.as_str().to_owned(),
            key: hit.key.to_owned(),
            limit: i64::from(hit.policy.limit.get()),
            window_ms: hit.policy.window_ms(),
            cost: i64::from(hit.cost),
            at_ms: self.clock.manual_ms(),
            record: hit.record,
            relaxed: self.relaxed,
        };
        let window = match &self.gather {
            Some(gather) => gather.run(call).await,
            None => self
                .db
                .query_one_raw(call.alone())
                .await
                .and_then(Window::read),
        }
        .map_err(map_err)?;
        let events = window
            .events
            .as_deref()
            .map(|l| {
                l.split(',')
                    .map(|t| {
                        t.parse::<i64>().map_err(|_| {
                            LimiterError::Backend(format!("bad event time {t:?} from the limiter"))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?
            .unwrap_or_default();
        Ok(sliding_log(
            window.now_ms,
            hit.policy,
            &events,
            hit.cost,
            hit.record,
        ))
    }

    /// Whether this hit goes through [`Self::log_in_one_trip`].
    fn one_trip(&self, policy: &Policy) -> bool {
        self.backend == DbBackend::Postgres && policy.algorithm == Algorithm::SlidingLog
    }

    /// The statement that reads what `hit` is decided on: the events in its window (sliding
    /// log) or the key's counter.
    fn read_for(&self, hit: &Hit<'_>, now: i64) -> Sql {
        let (ev, k) = (Value::from(hit.event.as_str()), Value::from(hit.key));
        match hit.policy.algorithm {
            Algorithm::SlidingLog => (
                self.sql.events,
                vec![ev, k, self.ts(now - hit.policy.window_ms())],
            ),
            Algorithm::SlidingWindowCounter => (self.sql.counter, vec![ev, k]),
        }
    }

    /// The decision on what [`Self::read_for`] found, and the write that records it, if any.
    fn settle(&self, hit: &Hit<'_>, now: i64, found: Found) -> (Decision, Option<Sql>) {
        let (ev, k) = (Value::from(hit.event.as_str()), Value::from(hit.key));
        match found {
            Found::Events(events) => {
                let d = sliding_log(now, hit.policy, &events, hit.cost, hit.record);
                let write = (d.allowed && hit.record).then(|| {
                    let values = vec![ev, k, self.ts(now), i64::from(hit.cost).into()];
                    (self.sql.record, values)
                });
                (d, write)
            }
            Found::Counter(prior) => {
                let (d, next) = sliding_counter(now, hit.policy, prior, hit.cost, hit.record);
                let write = (hit.record && Some(next) != prior).then(|| {
                    let values = vec![
                        ev,
                        k,
                        next.window_start.into(),
                        (next.prev as i64).into(),
                        (next.cur as i64).into(),
                    ];
                    (self.sql.store_counter, values)
                });
                (d, write)
            }
        }
    }

    async fn decide_on(
        &self,
        c: &impl ConnectionTrait,
        hit: Hit<'_>,
    ) -> Result<Decision, LimiterError> {
        let now = self.now(c).await?;
        let (sql, values) = self.read_for(&hit, now);
        let read = self.stmt(sql, values);
        let found = match hit.policy.algorithm {
            Algorithm::SlidingLog => {
                let rows = c.query_all_raw(read).await.map_err(map_err)?;
                let events = rows
                    .iter()
                    .map(|r| {
                        r.try_get::<DateTime<Utc>>("", "occurred_at")
                            .map(|t| t.timestamp_millis())
                    })
                    .collect::<Result<Vec<i64>, _>>();
                Found::Events(events.map_err(map_err)?)
            }
            Algorithm::SlidingWindowCounter => {
                let row = c.query_one_raw(read).await.map_err(map_err)?;
                let prior = row.map(|r| -> Result<CounterState, DbErr> {
                    Ok(CounterState {
                        window_start: r.try_get("", "window_start")?,
                        prev: r.try_get::<i64>("", "prev_count")? as u64,
                        cur: r.try_get::<i64>("", "cur_count")? as u64,
                    })
                });
                Found::Counter(prior.transpose().map_err(map_err)?)
            }
        };
        let (d, write) = self.settle(&hit, now, found);
        if let Some((sql, values)) = write {
            c.execute_raw(self.stmt(sql, values))
                .await
                .map_err(map_err)?;
        }
        Ok(d)
    }

    /// [`Self::decide_on`] on SQLite's writer thread, in its transaction (which holds the
    /// database's write lock).
    fn decide_on_writer(&self, c: &Connection, hit: Hit<'_>) -> Result<Decision, LimiterError> {
        let now = self
            .clock
            .manual_ms()
            .unwrap_or_else(|| Utc::now().timestamp_millis());
        let (sql, values) = self.read_for(&hit, now);
        let found = match hit.policy.algorithm {
            Algorithm::SlidingLog => {
                let times = writer::query_column(c, sql, values).map_err(map_err)?;
                let events = times
                    .iter()
                    .map(|t| match t {
                        SqlValue::Text(t) => writer::parse_time(t).map(|t| t.timestamp_millis()),
                        other => Err(DbErr::Custom(format!("an event time of {other:?}"))),
                    })
                    .collect::<Result<Vec<i64>, _>>();
                Found::Events(events.map_err(map_err)?)
            }
            Algorithm::SlidingWindowCounter => {
                let row = writer::query_one(c, sql, values).map_err(map_err)?;
                let prior = row.map(|r| -> Result<CounterState, DbErr> {
                    Ok(CounterState {
                        window_start: r.int("window_start")?,
                        prev: r.int("prev_count")? as u64,
                        cur: r.int("cur_count")? as u64,
                    })
                });
                Found::Counter(prior.transpose().map_err(map_err)?)
            }
        };
        let (d, write) = self.settle(&hit, now, found);
        if let Some((sql, values)) = write {
            writer::execute(c, sql, values).map_err(map_err)?;
        }
        Ok(d)
    }
}

#[async_trait]
impl LimiterStore for SqlLimiter {
    async fn decide(&self, hit: Hit<'_>) -> Result<Decision, LimiterError> {
        if self.one_trip(hit.policy) {
            return self.log_in_one_trip(hit).await;
        }
        if !hit.record {
            return self.decide_on(&self.db, hit).await;
        }
        if let Some(writer) = &self.writer {
            // The writer's transaction already holds SQLite's write lock.
            let limiter = self.clone();
            let (event, key, policy, cost) =
                (hit.event.clone(), hit.key.to_owned(), *hit.policy, hit.cost);
            return writer
                .run(move |c| {
                    let hit = Hit {
                        event: &event,
                        key: &key,
                        policy: &policy,
                        cost,
                        record: true,
                    };
                    Ok(limiter.decide_on_writer(c, hit))
                })
                .await
                .map_err(map_err)?;
        }
        let txn = self.begin().await?;
        if let Some(lock) = self.sql.lock {
            let lock = if self.relaxed { RELAXED_LOCK } else { lock };
            let lock_key = format!("{}\u{1f}{}", hit.event, hit.key);
            txn.execute_raw(self.stmt(lock, vec![lock_key.into()]))
                .await
                .map_err(map_err)?;
        }
        let d = self.decide_on(&txn, hit).await?;
        txn.commit().await.map_err(map_err)?;
        Ok(d)
    }

    async fn reset(&self, event: &Event, key: &str) -> Result<(), LimiterError> {
        for sql in [self.sql.reset_events, self.sql.reset_counters] {
            self.db
                .execute_raw(self.stmt(sql, vec![event.as_str().into(), key.into()]))
                .await
                .map_err(map_err)?;
        }
        Ok(())
    }

    async fn purge(&self, longest_window_ms: i64, batch: u32) -> Result<u64, LimiterError> {
        let now = self.now(&self.db).await?;
        let before = self.ts(now - longest_window_ms);
        let n = self
            .db
            .execute_raw(self.stmt(self.sql.purge_events, vec![before, i64::from(batch).into()]))
            .await
            .map_err(map_err)?
            .rows_affected();
        if n < u64::from(batch) {
            // The last batch: the counters too. A counter matters for two windows after
            // its start.
            self.db
                .execute_raw(self.stmt(
                    self.sql.purge_counters,
                    vec![(now - 2 * longest_window_ms).into()],
                ))
                .await
                .map_err(map_err)?;
        }
        Ok(n)
    }

    async fn ping(&self) -> Result<(), LimiterError> {
        self.db.ping().await.map_err(map_err)
    }
}

fn map_err(e: DbErr) -> LimiterError {
    tessera_backend::BackendError::from(e).into()
}

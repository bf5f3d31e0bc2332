//! Sliding-log hits on PostgreSQL, gathered into shared statements.
//!
//! A hit is one call of `tessera_rate_limit_window` (see [`crate::sql`]). Under load many
//! hits wait at once, so those that arrive while the statements before them run are sent
//! together (see [`tessera_backend::gather`]): one statement calls the function once per
//! hit, in one transaction,
//!
//! ```sql
//! SELECT r.n, w.now_ms, w.events
//! FROM (SELECT ... FROM unnest($1::text[], ...) WITH ORDINALITY AS u(...) ORDER BY ...) r
//! CROSS JOIN LATERAL tessera_rate_limit_window(r.event, r.key, ...) AS w
//! ```
//!
//! with one round trip and one commit for the batch, at most [`MAX_LANES`] statements in
//! flight. A hit that finds a lane free and nobody waiting goes out at once, alone.
//!
//! What stays true:
//!
//! - **Exact.** Each call takes its key's advisory lock, which it holds until the batch
//!   commits, and reads the key's events with a snapshot taken after the lock: it sees every
//!   event committed by another worker and those recorded before it in the same batch. Two
//!   hits of one key in a batch are decided one after the other, in the order they came.
//! - **No hit pays for another's.** The calls run in the order of their locks' keys (then of
//!   arrival), the same order in every batch, so two batches never wait for each other in a
//!   cycle. If a batch still fails for a reason of its own (a deadlock with a transaction
//!   elsewhere, or anything the server refuses), it recorded nothing, and each of its hits
//!   runs again alone, so that one hit's failure is its own. A server that cannot be reached
//!   fails the batch, as it would each of them.
//! - **A hit given up is not run.** A request dropped before its batch is sent records
//!   nothing.
//! - **Durability as the single statement's.** A batch of hits commits without waiting for
//!   the flush when every hit in it that records may ([`tessera_backend::sql::PgSync`]).

use sea_orm::sqlx::Arguments;
use sea_orm::sqlx::error::BoxDynError;
use sea_orm::sqlx::postgres::PgArguments;
use sea_orm::{DbBackend, DbErr, QueryResult, Statement};
use tessera_backend::direct::Direct;
use tessera_backend::gather::Batched;

/// At most this many hits per statement.
const MAX_BATCH: usize = 64;

/// At most this many statements in flight at once.
const MAX_LANES: usize = 4;

/// One hit's call.
const ONE: &str =
    "SELECT now_ms, events FROM tessera_rate_limit_window($1, $2, $3, $4, $5, $6, $7)";

/// The same call in a transaction whose commit does not wait for the flush.
const ONE_RELAXED: &str = "WITH relax AS (SELECT set_config('synchronous_commit', 'off', true)) \
     SELECT w.now_ms, w.events \
     FROM relax, tessera_rate_limit_window($1, $2, $3, $4, $5, $6, $7) AS w";

/// Many hits' calls, in the order of their locks' keys, then of their numbers `n`; `$8`
/// lets the commit skip waiting for the flush. The select list is computed before the
/// commit, so `set_config` there applies to it.
const MANY: &str = "SELECT r.n, w.now_ms, w.events, \
     CASE WHEN $8 THEN set_config('synchronous_commit', 'off', true) END AS relaxed \
     FROM (SELECT u.* FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[], $5::int8[], \
     $6::int8[], $7::bool[]) WITH ORDINALITY AS u(event, key, lim, window_ms, cost, at_ms, record, n) \
     ORDER BY hashtextextended(u.event || chr(31) || u.key, 0), u.n) r \
     CROSS JOIN LATERAL tessera_rate_limit_window(r.event, r.key, r.lim, r.window_ms, r.cost, \
     r.at_ms, r.record) AS w";

/// One hit as `tessera_rate_limit_window` takes it.
pub(crate) struct Call {
    pub(crate) event: String,
    pub(crate) key: String,
    pub(crate) limit: i64,
    pub(crate) window_ms: i64,
    pub(crate) cost: i64,
    /// The manual clock's time, or `None` for the database's.
    pub(crate) at_ms: Option<i64>,
    pub(crate) record: bool,
    /// Its commit need not wait for the flush.
    pub(crate) relaxed: bool,
}

/// What the function answered: the store's time and the events in the window, oldest
/// first, comma-separated.
pub(crate) struct Window {
    pub(crate) now_ms: i64,
    pub(crate) events: Option<String>,
}

impl Call {
    /// The call as a statement of its own.
    pub(crate) fn alone(&self) -> Statement {
        let sql = if self.relaxed && self.record {
            ONE_RELAXED
        } else {
            ONE
        };
        Statement::from_sql_and_values(
            DbBackend::Postgres,
            sql,
            [
                self.event.as_str().into(),
                self.key.as_str().into(),
                self.limit.into(),
                self.window_ms.into(),
                self.cost.into(),
                self.at_ms.into(),
                self.record.into(),
            ],
        )
    }
}

impl Window {
    pub(crate) fn read(row: Option<QueryResult>) -> Result<Self, DbErr> {
        let row = row.ok_or_else(|| DbErr::Custom("no row from the limiter".into()))?;
        Ok(Window {
            now_ms: row.try_get("", "now_ms")?,
            events: row.try_get("", "events")?,
        })
    }
}

/// Sliding-log hits on PostgreSQL as [`Batched`] requests.
pub(crate) struct Hits;

/// PostgreSQL's hits, gathered into shared statements.
pub(crate) type Gather = tessera_backend::gather::Gather<Hits>;

/// Hits gathered on `direct`.
pub(crate) fn gather(direct: Direct) -> Gather {
    Gather::new(direct, MAX_LANES, MAX_BATCH)
}

impl Batched for Hits {
    type Job = Call;
    type Answer = Window;
    const NAME: &'static str = "hit";

    fn alone(call: Call) -> Statement {
        call.alone()
    }

    /// `MANY` puts the calls in lock order itself.
    fn many(calls: &[&Call]) -> (&'static str, Result<PgArguments, BoxDynError>) {
        (MANY, arguments(calls))
    }

    fn answer(row: Option<QueryResult>) -> Result<Window, DbErr> {
        Window::read(row)
    }
}

fn arguments(calls: &[&Call]) -> Result<PgArguments, BoxDynError> {
    let calls = || calls.iter();
    let mut args = PgArguments::default();
    args.add(calls().map(|c| c.event.as_str()).collect::<Vec<_>>())?;
    args.add(calls().map(|c| c.key.as_str()).collect::<Vec<_>>())?;
    args.add(calls().map(|c| c.limit).collect::<Vec<_>>())?;
    args.add(calls().map(|c| c.window_ms).collect::<Vec<_>>())?;
    args.add(calls().map(|c| c.cost).collect::<Vec<_>>())?;
    args.add(calls().map(|c| c.at_ms).collect::<Vec<_>>())?;
    args.add(calls().map(|c| c.record).collect::<Vec<_>>())?;
    args.add(calls().all(|c| c.relaxed || !c.record))?;
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::{ConnectionTrait, TransactionTrait};
    use std::time::Duration;
    use tessera_backend::gather::{Queued, run_batch};
    use tessera_testkit::TestDb;
    use tokio::sync::oneshot;

    type Answer = oneshot::Receiver<Result<Window, DbErr>>;
    type Job = Queued<Hits>;

    fn job(key: &str, limit: i64, record: bool) -> (Job, Answer) {
        Queued::new(Call {
            event: "e".into(),
            key: key.into(),
            limit,
            window_ms: 3_600_000,
            cost: 1,
            at_ms: None,
            record,
            relaxed: true,
        })
    }

    /// How many events the call found in its window before it decided.
    async fn seen(answer: Answer) -> usize {
        let window = answer.await.unwrap().unwrap();
        window.events.map_or(0, |e| e.split(',').count())
    }

    async fn recorded(db: &TestDb, key: &str) -> i64 {
        let row = db
            .db
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT count(*) AS n FROM auth_rate_limit_events WHERE key = $1",
                [key.into()],
            ))
            .await
            .unwrap()
            .unwrap();
        row.try_get("", "n").unwrap()
    }

    /// Keys in the order their advisory locks are taken in.
    async fn lock_order(db: &TestDb, keys: &[&str]) -> Vec<String> {
        let rows = db
            .db
            .query_all_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT k FROM unnest($1::text[]) AS k \
                 ORDER BY hashtextextended('e' || chr(31) || k, 0)",
                [keys
                    .iter()
                    .map(|k| k.to_string())
                    .collect::<Vec<_>>()
                    .into()],
            ))
            .await
            .unwrap();
        rows.iter().map(|r| r.try_get("", "k").unwrap()).collect()
    }

    /// Hits of one key in a batch are decided one after another, in the order they came,
    /// each seeing what those before it recorded; a peek records nothing.
    #[tokio::test]
    async fn a_batch_decides_each_hit_after_the_ones_before_it() {
        let db = TestDb::postgres().await;
        let direct = Direct::for_postgres(&db.db).unwrap();
        let (a1, sa1) = job("a", 2, true);
        let (b1, sb1) = job("b", 1, true);
        let (a2, sa2) = job("a", 2, true);
        let (peek, speek) = job("a", 2, false);
        let (a3, sa3) = job("a", 2, true);
        let (b2, sb2) = job("b", 1, true);
        run_batch(&direct, vec![a1, b1, a2, peek, a3, b2]).await;
        assert_eq!(seen(sa1).await, 0);
        assert_eq!(seen(sa2).await, 1);
        assert_eq!(seen(speek).await, 2);
        assert_eq!(
            seen(sa3).await,
            2,
            "the third hit of a limit of 2 finds it full"
        );
        assert_eq!(seen(sb1).await, 0);
        assert_eq!(seen(sb2).await, 1);
        assert_eq!(
            recorded(&db, "a").await,
            2,
            "only the hits that fit are recorded"
        );
        assert_eq!(recorded(&db, "b").await, 1);
        db.finish().await;
    }

    /// A batch calls the function in the order of the keys' locks, whatever the order of
    /// its hits, so that two batches never wait for each other in a cycle.
    #[tokio::test]
    async fn a_batch_takes_its_locks_in_one_order() {
        let db = TestDb::postgres().await;
        let direct = Direct::for_postgres(&db.db).unwrap();
        let keys = ["k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8"];
        let order = lock_order(&db, &keys).await;
        let mut jobs = Vec::new();
        let mut answers = Vec::new();
        for key in order.iter().rev() {
            let (j, a) = job(key, 5, true);
            jobs.push(j);
            answers.push(a);
        }
        run_batch(&direct, jobs).await;
        for a in answers {
            assert_eq!(seen(a).await, 0);
        }
        let rows = db
            .db
            .query_all_raw(Statement::from_string(
                DbBackend::Postgres,
                "SELECT key FROM auth_rate_limit_events ORDER BY id",
            ))
            .await
            .unwrap();
        let recorded: Vec<String> = rows.iter().map(|r| r.try_get("", "key").unwrap()).collect();
        assert_eq!(recorded, order, "recorded in lock order, not arrival order");
        db.finish().await;
    }

    /// A batch the server aborts (here a deadlock with a transaction that holds one of its
    /// keys' locks and then asks for another) records nothing, and each of its hits then
    /// runs alone and is recorded once.
    #[tokio::test]
    async fn a_batch_that_fails_decides_each_hit_alone() {
        let db = TestDb::postgres().await;
        let direct = Direct::for_postgres(&db.db).unwrap();
        let order = lock_order(&db, &["x", "y"]).await;
        let (first, second) = (order[0].as_str(), order[1].as_str());
        let lock = |key: &str| {
            Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT pg_advisory_xact_lock(hashtextextended('e' || chr(31) || $1, 0))",
                [key.into()],
            )
        };
        // Another transaction holds the second key's lock; the batch takes the first's and
        // waits for the second's.
        let other = db.db.begin().await.unwrap();
        other.execute_raw(lock(second)).await.unwrap();
        let (j1, a1) = job(first, 5, true);
        let (j2, a2) = job(second, 5, true);
        let batch = tokio::spawn(async move { run_batch(&direct, vec![j2, j1]).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Now it asks for the first's: a deadlock, which the batch's backend (waiting
        // longest) finds and answers by aborting the batch, so this lock is granted.
        other.execute_raw(lock(first)).await.unwrap();
        assert_eq!(
            recorded(&db, first).await,
            0,
            "the aborted batch recorded nothing"
        );
        other.rollback().await.unwrap();

        batch.await.unwrap();
        assert_eq!(seen(a1).await, 0);
        assert_eq!(seen(a2).await, 0);
        assert_eq!(recorded(&db, first).await, 1);
        assert_eq!(recorded(&db, second).await, 1);
        db.finish().await;
    }

    /// A hit whose caller went away before its batch was sent records nothing.
    #[tokio::test]
    async fn a_hit_given_up_is_not_run() {
        let db = TestDb::postgres().await;
        let direct = Direct::for_postgres(&db.db).unwrap();
        let (jx, ax) = job("x", 5, true);
        let (jy, ay) = job("y", 5, true);
        let (jz, az) = job("z", 5, true);
        drop(ay);
        run_batch(&direct, vec![jx, jy, jz]).await;
        assert_eq!(seen(ax).await, 0);
        assert_eq!(seen(az).await, 0);
        assert_eq!(recorded(&db, "y").await, 0);
        assert_eq!(recorded(&db, "x").await, 1);
        assert_eq!(recorded(&db, "z").await, 1);
        db.finish().await;
    }
}

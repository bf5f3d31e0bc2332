//! Consumes on PostgreSQL, gathered into shared statements.
//!
//! A consume is one `DELETE ... RETURNING`; what it costs beyond the index lookup is the
//! round trip: a write and a read on the worker, a wake-up of the server's backend, and for
//! a real token a commit that waits for the flush. Under load many consumes are waiting at
//! once, so they are sent together: the consumes that arrive while the statements before
//! them run are taken as one batch and deleted by one statement,
//!
//! ```sql
//! DELETE FROM auth_ephemeral_tokens t
//! USING unnest($1::bytea[], $2::text[], $3::bytea[]) WITH ORDINALITY AS r(...)
//! WHERE t.token_hash = r.hash AND ... RETURNING r.n, ...
//! ```
//!
//! with the same match per token as the single statement (hash, kind, challenge, expiry),
//! one round trip and one commit for the batch, at most [`MAX_LANES`] statements in flight.
//! A consume that finds a lane free and nobody waiting goes out at once, from its own
//! task, as the single statement: nothing waits for company, and a quiet worker's consume
//! costs what it did before.
//!
//! What stays true:
//!
//! - **Exactly once.** A row is deleted once by one statement, and `RETURNING` names it
//!   once, with the number of the consume that matched it: two consumes of one token in
//!   one batch get it once between them; in two batches (or on two workers), the row lock
//!   makes the second find nothing, as before.
//! - **No consume pays for another's.** Rows are locked in hash order, the same in every
//!   batch. If a batch still fails for a reason of its own (a deadlock with a transaction
//!   elsewhere, say, or anything the server refuses), nothing of it was deleted, and each of
//!   its consumes is run again alone, so that one consume's failure is its own. A server
//!   that cannot be reached fails the batch, as it would each of them.
//! - **A consume given up is not run.** A request dropped before its batch is sent (the
//!   client went away) is left out of it, so its token stays unspent; one dropped after is
//!   as a dropped single statement: the token may be spent.
//! - **Durability as before.** The statement commits synchronously (a consume lost in a
//!   crash would let its token be used twice); a batch's consumes share the commit.

use sea_orm::sqlx::Arguments;
use sea_orm::sqlx::error::BoxDynError;
use sea_orm::sqlx::postgres::PgArguments;
use sea_orm::{DbBackend, DbErr, QueryResult, Statement};
use tessera_backend::direct::Direct;
use tessera_backend::gather::Batched;
use tessera_entity::TokenType;

use crate::Lookup;

/// At most this many consumes per statement.
const MAX_BATCH: usize = 64;

/// At most this many batches in flight at once, however large the pool: more would only
/// make each batch smaller.
const MAX_LANES: usize = 4;

/// The consume of many tokens in one statement; `n` is the consume's number in the batch,
/// from 1.
const CONSUME_MANY: &str = "DELETE FROM auth_ephemeral_tokens t \
     USING unnest($1::bytea[], $2::text[], $3::bytea[]) WITH ORDINALITY AS r(hash, kind, challenge, n) \
     WHERE t.token_hash = r.hash AND t.token_type = r.kind \
     AND t.challenge_hash IS NOT DISTINCT FROM r.challenge AND t.expires_at > now() \
     RETURNING r.n, t.username, t.provider_id, t.sealed, t.expires_at, t.created_at";

/// One consume.
pub(crate) struct Consume {
    hash: Vec<u8>,
    kind: TokenType,
    challenge: Option<Vec<u8>>,
}

impl Consume {
    pub(crate) fn of(lookup: &Lookup<'_>) -> Self {
        Consume {
            hash: lookup.hash.as_bytes().to_vec(),
            kind: lookup.kind,
            challenge: lookup.challenge.map(|c| c.0.to_vec()),
        }
    }
}

/// Consumes on PostgreSQL as [`Batched`] requests: the answer is the record's row, or
/// `None`, as the single statement gives it.
pub(crate) struct Consumes;

/// PostgreSQL's consumes, gathered into shared statements.
pub(crate) type Gather = tessera_backend::gather::Gather<Consumes>;

/// Consumes gathered on `direct`.
pub(crate) fn gather(direct: Direct) -> Gather {
    Gather::new(direct, MAX_LANES, MAX_BATCH)
}

impl Batched for Consumes {
    type Job = Consume;
    type Answer = Option<QueryResult>;
    const NAME: &'static str = "consume";

    fn alone(job: Consume) -> Statement {
        Statement::from_sql_and_values(
            DbBackend::Postgres,
            crate::sql::POSTGRES.consume,
            [
                job.hash.into(),
                job.kind.as_ref().into(),
                job.challenge.into(),
            ],
        )
    }

    /// One lock order for every batch: the rows' hashes.
    fn lock_order(a: &Consume, b: &Consume) -> std::cmp::Ordering {
        a.hash.cmp(&b.hash)
    }

    fn many(jobs: &[&Consume]) -> (&'static str, Result<PgArguments, BoxDynError>) {
        (CONSUME_MANY, arguments(jobs))
    }

    fn answer(row: Option<QueryResult>) -> Result<Option<QueryResult>, DbErr> {
        Ok(row)
    }
}

fn arguments(jobs: &[&Consume]) -> Result<PgArguments, BoxDynError> {
    let mut args = PgArguments::default();
    args.add(jobs.iter().map(|j| j.hash.clone()).collect::<Vec<_>>())?;
    args.add(jobs.iter().map(|j| j.kind.as_ref()).collect::<Vec<&str>>())?;
    args.add(jobs.iter().map(|j| j.challenge.clone()).collect::<Vec<_>>())?;
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SealedToken, SqlTokenStore, TokenStore};
    use sea_orm::{ConnectionTrait, TransactionTrait};
    use std::time::Duration;
    use tessera_backend::gather::{Queued, run_batch};
    use tessera_entity::TokenHash;
    use tessera_testkit::TestDb;
    use tokio::sync::oneshot;

    type Answer = oneshot::Receiver<Result<Option<QueryResult>, DbErr>>;
    type Job = Queued<Consumes>;

    fn hash(first: u8) -> [u8; 32] {
        let mut h = [9u8; 32];
        h[0] = first;
        h
    }

    async fn issue(db: &TestDb, h: [u8; 32]) {
        let store = SqlTokenStore::new(db.db.clone()).unwrap();
        store
            .issue(SealedToken {
                hash: TokenHash(h),
                kind: TokenType::PasswordReset,
                username: Some("ana".into()),
                provider_id: None,
                challenge_hash: None,
                sealed: vec![h[0]],
                ttl: Duration::from_secs(60),
            })
            .await
            .unwrap();
    }

    fn job(h: [u8; 32]) -> (Job, Answer) {
        Queued::new(Consume {
            hash: h.to_vec(),
            kind: TokenType::PasswordReset,
            challenge: None,
        })
    }

    fn by_hash(h: [u8; 32]) -> Statement {
        Statement::from_sql_and_values(
            DbBackend::Postgres,
            "DELETE FROM auth_ephemeral_tokens WHERE token_hash = $1",
            [h.to_vec().into()],
        )
    }

    fn sealed(row: QueryResult) -> Vec<u8> {
        row.try_get("", "sealed").unwrap()
    }

    /// A batch whose statement the server aborts (here a deadlock with a transaction that
    /// holds one of its rows and then asks for another) deletes nothing, and each of its
    /// consumes then runs alone and gets its own token.
    #[tokio::test]
    async fn a_batch_that_fails_answers_each_consume_alone() {
        let db = TestDb::postgres().await;
        let (x, y) = (hash(1), hash(2));
        issue(&db, x).await;
        issue(&db, y).await;
        let direct = Direct::for_postgres(&db.db).unwrap();

        // Another transaction holds y; the batch deletes x (first in hash order) and waits
        // for y.
        let other = db.db.begin().await.unwrap();
        other
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT 1 AS one FROM auth_ephemeral_tokens WHERE token_hash = $1 FOR UPDATE",
                [y.to_vec().into()],
            ))
            .await
            .unwrap();
        let (jx, ax) = job(x);
        let (jy, ay) = job(y);
        let batch = tokio::spawn(async move { run_batch(&direct, vec![jy, jx]).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Now it asks for x: a deadlock, which the batch's backend (waiting longest) finds
        // and answers by aborting the batch, so this delete goes through.
        let deleted = other.execute_raw(by_hash(x)).await.unwrap();
        assert_eq!(deleted.rows_affected(), 1, "the batch was the one aborted");
        other.rollback().await.unwrap();

        batch.await.unwrap();
        assert_eq!(sealed(ax.await.unwrap().unwrap().unwrap()), vec![1]);
        assert_eq!(sealed(ay.await.unwrap().unwrap().unwrap()), vec![2]);
        assert_eq!(db.count("auth_ephemeral_tokens").await, 0);
        db.finish().await;
    }

    /// A consume whose caller went away before its batch was sent is left out of it: its
    /// token stays unspent, and the others in the batch are answered.
    #[tokio::test]
    async fn a_consume_given_up_is_not_run() {
        let db = TestDb::postgres().await;
        let (x, y, z) = (hash(1), hash(2), hash(3));
        for h in [x, y, z] {
            issue(&db, h).await;
        }
        let direct = Direct::for_postgres(&db.db).unwrap();
        let (jx, ax) = job(x);
        let (jy, ay) = job(y);
        let (jz, az) = job(z);
        drop(ay);
        run_batch(&direct, vec![jx, jy, jz]).await;
        assert_eq!(sealed(ax.await.unwrap().unwrap().unwrap()), vec![1]);
        assert_eq!(sealed(az.await.unwrap().unwrap().unwrap()), vec![3]);
        assert_eq!(db.count("auth_ephemeral_tokens").await, 1);
        assert_eq!(
            db.db.execute_raw(by_hash(y)).await.unwrap().rows_affected(),
            1,
            "the given-up token is still there"
        );
        db.finish().await;
    }
}

//! PostgreSQL's consumes, many to a statement.
//!
//! Alone, a consume costs a pooled connection, a round trip, a commit and the ping sqlx
//! sends when the connection goes back to the pool; under load, those dwarf the index
//! lookup itself. Here consumes queue for one task that sends every consume waiting (at
//! most [`MAX_BATCH`]) as one `DELETE ... USING unnest(...)`, with at most [`IN_FLIGHT`]
//! such statements at once. A consume that arrives while a slot is free goes out at once,
//! alone, as the plain one-row statement: batching only ever gathers what would otherwise
//! have waited.
//!
//! Single use holds as it does for one consume per statement. A row is deleted by one
//! statement only (its row lock; a concurrent statement finds it gone), and a row that
//! several consumes of one batch ask for is deleted once and answered to one of them: the
//! statement returns the ordinal of the request it joined, and only that caller hears of
//! the row. The commit waits for the flush, as every consume's does. A batch cannot fail
//! for what one caller sent: its values are hashes and kind names, compared and never
//! stored, so no caller's input can make another's consume fail.

use chrono::{DateTime, Utc};
use sea_orm::sqlx::{self, PgPool, Row};
use sea_orm::{DatabaseConnection, DbBackend, DbErr, RuntimeErr};
use std::sync::Arc;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::sql::map_err;
use crate::{Lookup, StoreError, StoredRecord};
use tessera_entity::TokenType;

/// The most consumes one statement takes.
pub const MAX_BATCH: usize = 64;

/// How many batch statements may run at once, each on its own pooled connection.
pub const IN_FLIGHT: usize = 4;

/// Deletes the rows that match a request of the batch (hash, kind, challenge, unexpired)
/// and answers, for each, the ordinal of the request it matched.
pub const CONSUME_MANY: &str = "DELETE FROM auth_ephemeral_tokens t \
    USING unnest($1::bytea[], $2::text[], $3::bytea[]) \
      WITH ORDINALITY AS q(token_hash, token_type, challenge_hash, i) \
    WHERE t.token_hash = q.token_hash AND t.token_type = q.token_type \
      AND t.challenge_hash IS NOT DISTINCT FROM q.challenge_hash AND t.expires_at > now() \
    RETURNING q.i, t.username, t.provider_id, t.sealed, t.expires_at, t.created_at";

/// One consume, as [`crate::sql::Statements::consume`] with the ordinal of the batch's.
const ONE: &str = "DELETE FROM auth_ephemeral_tokens \
    WHERE token_hash = $1 AND token_type = $2 \
      AND challenge_hash IS NOT DISTINCT FROM $3 AND expires_at > now() \
    RETURNING 1::bigint AS i, username, provider_id, sealed, expires_at, created_at";

type Answer = Result<Option<StoredRecord>, StoreError>;

struct Job {
    hash: Vec<u8>,
    kind: TokenType,
    challenge: Option<Vec<u8>>,
    answer: oneshot::Sender<Answer>,
}

/// A handle on the consume task; clones share it. The task ends when the last handle goes.
#[derive(Clone)]
pub struct Consumer {
    jobs: mpsc::UnboundedSender<Job>,
}

impl Consumer {
    /// A consumer for `db` when it is PostgreSQL and a Tokio runtime is there to run the
    /// task; `None` otherwise (consumes then run one statement each).
    pub fn for_postgres(db: &DatabaseConnection) -> Option<Self> {
        if db.get_database_backend() != DbBackend::Postgres
            || tokio::runtime::Handle::try_current().is_err()
        {
            return None;
        }
        let (jobs, queue) = mpsc::unbounded_channel();
        tokio::spawn(run(db.get_postgres_connection_pool().clone(), queue));
        Some(Consumer { jobs })
    }

    /// Consumes the record `lookup` names, in the next batch.
    pub async fn consume(&self, lookup: Lookup<'_>) -> Answer {
        let (answer, answered) = oneshot::channel();
        let stopped = || StoreError::Backend("the consume task has stopped".into());
        self.jobs
            .send(Job {
                hash: lookup.hash.as_bytes().to_vec(),
                kind: lookup.kind,
                challenge: lookup.challenge.map(|c| c.0.to_vec()),
                answer,
            })
            .map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }
}

async fn run(pool: PgPool, mut queue: mpsc::UnboundedReceiver<Job>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        // Wait for a free slot first: what arrives meanwhile goes out together.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = Vec::with_capacity(MAX_BATCH);
        if queue.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        let pool = pool.clone();
        tokio::spawn(async move {
            consume_batch(&pool, batch).await;
            drop(slot);
        });
    }
}

async fn consume_batch(pool: &PgPool, batch: Vec<Job>) {
    let mut hashes = Vec::with_capacity(batch.len());
    let mut kinds = Vec::with_capacity(batch.len());
    let mut challenges = Vec::with_capacity(batch.len());
    let mut waiting = Vec::with_capacity(batch.len());
    for job in batch {
        hashes.push(job.hash);
        kinds.push(job.kind.as_ref().to_owned());
        challenges.push(job.challenge);
        waiting.push((job.kind, Some(job.answer)));
    }
    let rows =
        if let ([hash], [kind], [challenge]) = (&mut hashes[..], &kinds[..], &mut challenges[..]) {
            // Alone, the plain statement: PostgreSQL plans the batch statement anew for each
            // call (its custom plans win for a parameter array), which costs more than one
            // consume saves.
            sqlx::query(ONE)
                .bind(std::mem::take(hash))
                .bind(kind.as_str())
                .bind(challenge.take())
                .fetch_all(pool)
                .await
        } else {
            sqlx::query(CONSUME_MANY)
                .bind(hashes)
                .bind(kinds)
                .bind(challenges)
                .fetch_all(pool)
                .await
        };
    let rows = match rows {
        Ok(rows) => rows,
        Err(e) => {
            let e = DbErr::Query(RuntimeErr::SqlxError(Arc::new(e)));
            for answer in waiting.into_iter().filter_map(|(_, a)| a) {
                answer.send(Err(map_err(e.clone()))).ok();
            }
            return;
        }
    };
    for row in rows {
        let Some((kind, answer)) = row
            .try_get::<i64, _>("i")
            .ok()
            .and_then(|i| usize::try_from(i).ok()?.checked_sub(1))
            .and_then(|i| waiting.get_mut(i))
        else {
            continue;
        };
        if let Some(answer) = answer.take() {
            answer.send(record(*kind, &row).map(Some)).ok();
        }
    }
    // Those whose request matched no row: unknown, expired, used, or not theirs.
    for answer in waiting.into_iter().filter_map(|(_, a)| a) {
        answer.send(Ok(None)).ok();
    }
}

fn record(kind: TokenType, row: &sqlx::postgres::PgRow) -> Result<StoredRecord, StoreError> {
    let decode = |e: sqlx::Error| StoreError::Backend(format!("a consumed row: {e}"));
    Ok(StoredRecord {
        kind,
        username: row
            .try_get::<Option<String>, _>("username")
            .map_err(decode)?,
        provider_id: row
            .try_get::<Option<String>, _>("provider_id")
            .map_err(decode)?,
        sealed: row.try_get::<Vec<u8>, _>("sealed").map_err(decode)?,
        expires_at: row
            .try_get::<DateTime<Utc>, _>("expires_at")
            .map_err(decode)?,
        created_at: row
            .try_get::<DateTime<Utc>, _>("created_at")
            .map_err(decode)?,
    })
}

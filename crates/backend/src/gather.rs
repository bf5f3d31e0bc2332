//! Statements that wait together go out together.
//!
//! A store's single statement on PostgreSQL costs, beyond its own work, a round trip: a
//! write and a read on the worker, a wake-up of the server's backend, a commit. Under load
//! many of them wait at once, so the stores send those that wait as one statement over
//! arrays (`unnest(...) WITH ORDINALITY`). A store describes its kind of request
//! ([`Batched`]: the single statement, the batch statement, the answer) and sends each
//! through a [`Gather`], which does the rest; [`Lanes`] is the queue under it.
//!
//! A store keeps at most a few statements at the server at once, one per lane. A call that
//! finds a lane free and nobody queued takes it ([`Lanes::now`]) and sends its single
//! statement itself, so a quiet worker pays nothing for the batching. Otherwise it queues a
//! job ([`Lanes::queue`]); whenever a lane frees, everything queued (up to a batch's size)
//! is handed to the store's batch function, in its own task, with the lane held until it
//! returns. The job carries its own reply channel; a batch function answers every job it
//! was given and leaves out those whose caller went away.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use futures::future::BoxFuture;
use sea_orm::sqlx::error::BoxDynError;
use sea_orm::sqlx::postgres::PgArguments;
use sea_orm::{DbErr, QueryResult, RuntimeErr, Statement};
use tokio::sync::{Semaphore, SemaphorePermit, mpsc, oneshot};

use crate::direct::Direct;

/// What runs a batch of jobs.
type RunBatch<J> = Arc<dyn Fn(Vec<J>) -> BoxFuture<'static, ()> + Send + Sync>;

/// Lanes of statements in flight, and the queue of jobs waiting for one. Clones share both;
/// the queue's task starts with the first job queued, on the runtime of the caller, and
/// ends when the last clone is dropped.
pub struct Lanes<J> {
    /// One permit per statement in flight, lone or batched.
    lanes: Arc<Semaphore>,
    /// Jobs queued and not yet taken into a batch.
    waiting: Arc<AtomicUsize>,
    queue: Arc<OnceLock<mpsc::UnboundedSender<J>>>,
    max_batch: usize,
    run: RunBatch<J>,
}

impl<J> Clone for Lanes<J> {
    fn clone(&self) -> Self {
        Lanes {
            lanes: self.lanes.clone(),
            waiting: self.waiting.clone(),
            queue: self.queue.clone(),
            max_batch: self.max_batch,
            run: self.run.clone(),
        }
    }
}

impl<J: Send + 'static> Lanes<J> {
    /// `lanes` statements in flight at most (at least one), batches of up to `max_batch`
    /// jobs handed to `run`.
    pub fn new(
        lanes: usize,
        max_batch: usize,
        run: impl Fn(Vec<J>) -> BoxFuture<'static, ()> + Send + Sync + 'static,
    ) -> Self {
        Lanes {
            lanes: Arc::new(Semaphore::new(lanes.max(1))),
            waiting: Arc::new(AtomicUsize::new(0)),
            queue: Arc::new(OnceLock::new()),
            max_batch: max_batch.max(1),
            run: Arc::new(run),
        }
    }

    /// A lane for a statement sent at once, when one is free and nobody is queued.
    pub fn now(&self) -> Option<SemaphorePermit<'_>> {
        if self.waiting.load(Ordering::Acquire) != 0 {
            return None;
        }
        self.lanes.try_acquire().ok()
    }

    /// Queues `job` for the next batch; hands it back when the queue's task is gone (its
    /// runtime shut down).
    pub fn queue(&self, job: J) -> Result<(), J> {
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            let runner = Runner {
                lanes: self.lanes.clone(),
                waiting: self.waiting.clone(),
                max_batch: self.max_batch,
                run: self.run.clone(),
            };
            tokio::spawn(runner.run(rx));
            tx
        });
        self.waiting.fetch_add(1, Ordering::AcqRel);
        queue.send(job).map_err(|e| {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            e.0
        })
    }
}

/// The queue's task: takes what is queued as one batch whenever a lane is free, until
/// every sender is gone.
struct Runner<J> {
    lanes: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    max_batch: usize,
    run: RunBatch<J>,
}

impl<J: Send + 'static> Runner<J> {
    async fn run(self, mut queue: mpsc::UnboundedReceiver<J>) {
        while let Some(first) = queue.recv().await {
            let Ok(lane) = self.lanes.clone().acquire_owned().await else {
                break;
            };
            // Everything that queued while the lanes were busy goes in this batch.
            let mut jobs = vec![first];
            while jobs.len() < self.max_batch {
                match queue.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            self.waiting.fetch_sub(jobs.len(), Ordering::AcqRel);
            let batch = (self.run)(jobs);
            tokio::spawn(async move {
                batch.await;
                drop(lane);
            });
        }
    }
}

/// A kind of request that [`Gather`] sends alone or in batches: its single statement, its
/// batch statement over arrays, and how a row becomes its answer.
pub trait Batched: Send + Sync + 'static {
    /// One request.
    type Job: Send + 'static;
    /// What its caller gets.
    type Answer: Send + 'static;
    /// What the requests are called in logs and errors ("consume", "hit").
    const NAME: &'static str;

    /// The request as a statement of its own.
    fn alone(job: Self::Job) -> Statement;

    /// The order requests go into a batch in (their rows' lock order, say); by default
    /// the order they came in.
    fn lock_order(_a: &Self::Job, _b: &Self::Job) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }

    /// The statement for many requests and its arrays. Each row it answers names its
    /// request by its place in `jobs`, from 1, as column `n` (`WITH ORDINALITY`). When the
    /// statement fails, it changed nothing.
    fn many(jobs: &[&Self::Job]) -> (&'static str, Result<PgArguments, BoxDynError>);

    /// The answer from the row a request's statement, alone or batched, gave it.
    fn answer(row: Option<QueryResult>) -> Result<Self::Answer, DbErr>;
}

/// A request waiting for its batch, with the channel its answer goes back on.
pub struct Queued<B: Batched> {
    job: B::Job,
    reply: oneshot::Sender<Result<B::Answer, DbErr>>,
}

impl<B: Batched> Queued<B> {
    /// `job` queued, and where its answer arrives.
    pub fn new(job: B::Job) -> (Self, oneshot::Receiver<Result<B::Answer, DbErr>>) {
        let (reply, answer) = oneshot::channel();
        (Queued { job, reply }, answer)
    }
}

/// Requests of kind `B` on `direct`: alone when a lane is free and nobody waits, else
/// gathered into batches. Clones share the lanes and the queue.
pub struct Gather<B: Batched> {
    direct: Direct,
    lanes: Lanes<Queued<B>>,
}

impl<B: Batched> Clone for Gather<B> {
    fn clone(&self) -> Self {
        Gather {
            direct: self.direct.clone(),
            lanes: self.lanes.clone(),
        }
    }
}

impl<B: Batched> Gather<B> {
    /// At most `max_lanes` statements in flight (fewer if the pool is smaller), at most
    /// `max_batch` requests per statement.
    pub fn new(direct: Direct, max_lanes: usize, max_batch: usize) -> Self {
        let batch_on = direct.clone();
        let lanes = Lanes::new(
            direct.max_size().min(max_lanes),
            max_batch,
            move |jobs: Vec<Queued<B>>| {
                let direct = batch_on.clone();
                Box::pin(async move { run_batch(&direct, jobs).await })
            },
        );
        Gather { direct, lanes }
    }

    /// Runs `job`, alone or in a batch, and answers as its single statement would.
    pub async fn run(&self, job: B::Job) -> Result<B::Answer, DbErr> {
        // A lane free and nobody waiting: out at once, from this task, alone.
        if let Some(_lane) = self.lanes.now() {
            return alone::<B>(&self.direct, job).await;
        }
        let (queued, answer) = Queued::new(job);
        if self.lanes.queue(queued).is_err() {
            return Err(gone::<B>());
        }
        answer.await.unwrap_or_else(|_| Err(gone::<B>()))
    }
}

/// The queue's task is gone: its runtime shut down.
fn gone<B: Batched>() -> DbErr {
    DbErr::Conn(RuntimeErr::Internal(format!(
        "the {} queue has stopped",
        B::NAME
    )))
}

async fn alone<B: Batched>(direct: &Direct, job: B::Job) -> Result<B::Answer, DbErr> {
    B::answer(direct.query_one(B::alone(job)).await?)
}

/// Runs `jobs` as one statement and answers each; those whose caller went away are left
/// out. A batch the server refuses changed nothing, so each of its requests then runs
/// alone and its failure stays its own; a server that cannot be reached fails them all, as
/// it would each.
pub async fn run_batch<B: Batched>(direct: &Direct, mut queued: Vec<Queued<B>>) {
    queued.retain(|q| !q.reply.is_closed());
    if queued.len() <= 1 {
        if let Some(q) = queued.pop() {
            let _ = q.reply.send(alone::<B>(direct, q.job).await);
        }
        return;
    }
    // A stable sort: requests the order does not tell apart keep their arrival order.
    queued.sort_by(|a, b| B::lock_order(&a.job, &b.job));
    let (sql, args) = B::many(&queued.iter().map(|q| &q.job).collect::<Vec<_>>());
    let result = match args {
        Ok(args) => direct.fetch_all(sql, args).await,
        Err(e) => Err(DbErr::Query(RuntimeErr::SqlxError(Arc::new(
            sea_orm::sqlx::Error::Encode(e),
        )))),
    };
    match result.and_then(|rows| by_number(rows, queued.len())) {
        Ok(rows) => {
            for (q, row) in queued.into_iter().zip(rows) {
                let _ = q.reply.send(B::answer(row));
            }
        }
        Err(e) if crate::sql::is_unreachable(&e) => {
            for q in queued {
                let _ = q.reply.send(Err(e.clone()));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, requests = queued.len(), kind = B::NAME, "a batch failed; running each of its requests alone");
            for q in queued {
                let _ = q.reply.send(alone::<B>(direct, q.job).await);
            }
        }
    }
}

/// A batch's rows in the order of its jobs: each row names its job by its number in the
/// batch (the `n` of `WITH ORDINALITY`, from 1); a job no row named gets `None`.
fn by_number(rows: Vec<QueryResult>, jobs: usize) -> Result<Vec<Option<QueryResult>>, DbErr> {
    let mut found: Vec<Option<QueryResult>> = (0..jobs).map(|_| None).collect();
    for row in rows {
        let n: i64 = row.try_get("", "n")?;
        let slot = usize::try_from(n)
            .ok()
            .and_then(|n| n.checked_sub(1))
            .and_then(|i| found.get_mut(i))
            .ok_or_else(|| DbErr::Custom(format!("a batch of {jobs} answered row {n}")))?;
        *slot = Some(row);
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Duration;
    use tokio::sync::oneshot;

    /// While every lane is taken, jobs queue; when one frees, they go out together, in the
    /// order they came, no more than a batch's size at a time.
    #[tokio::test]
    async fn jobs_queued_behind_busy_lanes_go_out_together() {
        let batches = Arc::new(Mutex::new(Vec::<Vec<u32>>::new()));
        let seen = batches.clone();
        let lanes = Lanes::new(1, 3, move |jobs: Vec<(u32, oneshot::Sender<()>)>| {
            let seen = seen.clone();
            Box::pin(async move {
                seen.lock()
                    .unwrap()
                    .push(jobs.iter().map(|(n, _)| *n).collect());
                for (_, reply) in jobs {
                    let _ = reply.send(());
                }
            }) as BoxFuture<'static, ()>
        });
        let held = lanes.now().expect("a free lane");
        assert!(lanes.now().is_none(), "the only lane is taken");
        let mut answers = Vec::new();
        for n in 0..5 {
            let (reply, answer) = oneshot::channel();
            assert!(lanes.queue((n, reply)).is_ok());
            answers.push(answer);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            batches.lock().unwrap().is_empty(),
            "nothing runs without a lane"
        );
        assert!(lanes.now().is_none(), "nobody jumps the queue");
        drop(held);
        for answer in answers {
            answer.await.unwrap();
        }
        assert_eq!(*batches.lock().unwrap(), vec![vec![0, 1, 2], vec![3, 4]]);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(lanes.now().is_some(), "the lane is free again");
    }
}

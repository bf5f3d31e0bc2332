//! Statements that wait together go out together.
//!
//! A store's single statement on PostgreSQL costs, beyond its own work, a round trip: a
//! write and a read on the worker, a wake-up of the server's backend, a commit. Under load
//! many of them wait at once, so the stores send those that wait as one statement over
//! arrays (`unnest(...) WITH ORDINALITY`): [`Lanes`] is the part they share.
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
use sea_orm::{DbErr, QueryResult, RuntimeErr};
use tokio::sync::{Semaphore, SemaphorePermit, mpsc};

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

/// A batch's rows in the order of its jobs: each row names its job by its number in the
/// batch (the `n` of `WITH ORDINALITY`, from 1); a job no row named gets `None`.
pub fn by_number(rows: Vec<QueryResult>, jobs: usize) -> Result<Vec<Option<QueryResult>>, DbErr> {
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

/// A batch's arrays could not be encoded.
pub fn encode_error(e: BoxDynError) -> DbErr {
    DbErr::Query(RuntimeErr::SqlxError(Arc::new(
        sea_orm::sqlx::Error::Encode(e),
    )))
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

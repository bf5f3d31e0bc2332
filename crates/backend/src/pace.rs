//! How a purge spreads its batches out, so that the rows it deletes do not take the
//! database from the requests being served meanwhile.

use std::time::{Duration, Instant};

/// The share of its time a purge spends in its statements: after a batch that took `t`, a
/// purge at `Pace::share(n)` pauses `(n - 1) × t` before the next one.
///
/// On a PostgreSQL server with two cores, deleting a million expired tokens at full speed
/// takes about one core for ten seconds and raises the 99th percentile of the requests
/// served meanwhile about fivefold; at a quarter of the time it takes about four times as
/// long and leaves them within a third of their quiet figure (`bench/scale`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pace {
    pause: u32,
}

impl Pace {
    /// No pause: an explicit purge (`tessera purge`, `/v1/admin/purge`).
    pub const FULL: Pace = Pace { pause: 0 };

    /// The background purge's pace: its statements take at most a quarter of its time.
    pub const BACKGROUND: Pace = Pace::share(4);

    /// Statements for at most `1/n` of the time (`n` of 0 or 1 is [`Pace::FULL`]).
    pub const fn share(n: u32) -> Pace {
        Pace {
            pause: n.saturating_sub(1),
        }
    }

    /// Waits out the pause after a batch that took `busy`.
    pub async fn after(self, busy: Duration) {
        if self.pause > 0 {
            tokio::time::sleep(busy.saturating_mul(self.pause)).await;
        }
    }

    /// Runs `step` (one batch of at most `batch` rows, answering how many it deleted) until
    /// a batch comes back short, pausing between batches; answers the total.
    pub async fn batches<E, F, Fut>(self, batch: u32, mut step: F) -> Result<u64, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<u64, E>>,
    {
        let mut total = 0;
        loop {
            let started = Instant::now();
            let n = step().await?;
            total += n;
            if n < u64::from(batch) {
                return Ok(total);
            }
            self.after(started.elapsed()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_share_pauses_in_proportion_to_the_batch() {
        let start = Instant::now();
        Pace::share(4).after(Duration::from_millis(50)).await;
        assert!(start.elapsed() >= Duration::from_millis(150));
        let start = Instant::now();
        Pace::FULL.after(Duration::from_secs(1)).await;
        Pace::share(1).after(Duration::from_secs(1)).await;
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn batches_run_until_one_comes_back_short() {
        let mut left = vec![1u64, 2, 2];
        let mut calls = 0;
        let total = Pace::share(2)
            .batches(2, || {
                calls += 1;
                let n = left.pop().unwrap_or(0);
                async move { Ok::<_, ()>(n) }
            })
            .await
            .unwrap();
        assert_eq!((total, calls), (5, 3));
        let failed = Pace::FULL
            .batches(2, || async { Err::<u64, _>("gone") })
            .await;
        assert_eq!(failed, Err("gone"));
    }
}

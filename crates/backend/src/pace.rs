//! How a purge spreads its batches out, so that the rows it deletes do not take the
//! database from the requests being served meanwhile.

use std::time::Duration;

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
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

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
}

//! The two algorithms as pure functions of the stored state and "now" (milliseconds).
//!
//! The memory and SQL backends call these under their own lock; the Redis backend runs the
//! same arithmetic in Lua (and the property tests hold the two to the same answers).

use std::time::Duration;

use crate::{Decision, Policy};

fn ms(v: i64) -> Duration {
    Duration::from_millis(u64::try_from(v).unwrap_or(0))
}

/// Sliding log. `events` are the key's events still inside the window (`t > now - window`),
/// oldest first. With `record`, an admitted hit adds `cost` events at `now` (the caller
/// stores them); without, this is a peek of `cost` units.
pub fn sliding_log(now: i64, policy: &Policy, events: &[i64], cost: u32, record: bool) -> Decision {
    let limit = u64::from(policy.limit.get());
    let window = policy.window_ms();
    let n = events.len() as u64;
    let allowed = n + u64::from(cost) <= limit;
    if allowed && record {
        return Decision {
            allowed,
            limit: policy.limit.get(),
            remaining: (limit - n - u64::from(cost)) as u32,
            // The newest event is now; the window clears when it leaves.
            reset_after: ms(window),
            retry_after: Duration::ZERO,
        };
    }
    let retry_after = if allowed {
        Duration::ZERO
    } else {
        // Wait until enough of the oldest events have left for `cost` more to fit.
        let need = (n + u64::from(cost) - limit) as usize;
        ms(events[need - 1] + window - now)
    };
    Decision {
        allowed,
        limit: policy.limit.get(),
        remaining: limit.saturating_sub(n) as u32,
        reset_after: events
            .last()
            .map_or(Duration::ZERO, |t| ms(t + window - now)),
        retry_after,
    }
}

/// The state of the approximate counter of one key: two fixed windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CounterState {
    /// Start of the current fixed window (a multiple of the window length).
    pub window_start: i64,
    /// Units counted in the previous fixed window.
    pub prev: u64,
    /// Units counted in the current fixed window.
    pub cur: u64,
}

/// Sliding-window counter. The estimate is `prev × (window − elapsed) / window + cur`,
/// compared in integers (everything scaled by `window`) so that every backend rounds alike.
/// Answers the decision and the state to store.
pub fn sliding_counter(
    now: i64,
    policy: &Policy,
    state: Option<CounterState>,
    cost: u32,
    record: bool,
) -> (Decision, CounterState) {
    let w = policy.window_ms();
    let limit = i64::from(policy.limit.get());
    let cost = i64::from(cost);
    let start = now - now.rem_euclid(w);
    let (p, mut c) = match state {
        Some(s) if s.window_start == start => (s.prev as i64, s.cur as i64),
        Some(s) if s.window_start == start - w => (s.cur as i64, 0),
        _ => (0, 0),
    };
    let elapsed = now - start;
    let weight = w - elapsed;
    let allowed = p * weight + (c + cost) * w <= limit * w;
    if allowed && record {
        c += cost;
    }
    let used = p * weight + c * w;
    let remaining = ((limit * w - used).max(0) / w) as u32;
    let retry_after = if allowed {
        0
    } else if c + cost <= limit {
        // Within this window, the previous window's weight shrinks until we fit.
        let needed = w - ((limit - c - cost) * w) / p;
        needed - elapsed
    } else {
        // Only the next window can fit us, once this window's count weighs little enough.
        let needed = w - ((limit - cost) * w) / c;
        (start + w - now) + needed
    };
    let reset_after = if c > 0 {
        start + 2 * w - now
    } else if p > 0 {
        start + w - now
    } else {
        0
    };
    (
        Decision {
            allowed,
            limit: policy.limit.get(),
            remaining,
            reset_after: ms(reset_after),
            retry_after: ms(retry_after),
        },
        CounterState {
            window_start: start,
            prev: p as u64,
            cur: c as u64,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_admits_up_to_the_limit_and_says_when_to_retry() {
        let p = Policy::per_seconds(3, 10);
        let d = sliding_log(1_000, &p, &[], 1, true);
        assert!(d.allowed && d.remaining == 2 && d.reset_after == Duration::from_secs(10));
        let d = sliding_log(5_000, &p, &[1_000, 2_000, 3_000], 1, true);
        assert!(!d.allowed);
        assert_eq!(d.remaining, 0);
        assert_eq!(d.retry_after, Duration::from_millis(6_000)); // 1_000 leaves at 11_000
        assert_eq!(d.reset_after, Duration::from_millis(8_000)); // 3_000 leaves at 13_000
        let d = sliding_log(5_000, &p, &[1_000, 2_000], 3, true);
        assert_eq!(d.retry_after, Duration::from_millis(7_000)); // two must leave
    }

    #[test]
    fn counter_weights_the_previous_window() {
        let p = Policy::per_seconds(10, 10).approximate();
        // 10 in the previous window, 30% into the current one: estimate 7.
        let s = CounterState {
            window_start: 0,
            prev: 0,
            cur: 10,
        };
        let (d, s2) = sliding_counter(13_000, &p, Some(s), 3, true);
        assert!(d.allowed, "{d:?}");
        assert_eq!((s2.prev, s2.cur, d.remaining), (10, 3, 0));
        let (d, _) = sliding_counter(13_000, &p, Some(s2), 1, true);
        assert!(!d.allowed);
        // 10×(10−e)/10 + 4 ≤ 10 ⇔ e ≥ 4 s: retry 1 s later.
        assert_eq!(d.retry_after, Duration::from_secs(1));
    }
}

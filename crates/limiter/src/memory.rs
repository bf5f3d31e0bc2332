//! The memory backend: the reference model of the conformance and property tests, and a
//! limiter for unit tests. Never selected by a deployment (it is per process).

use async_trait::async_trait;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::algorithm::{CounterState, sliding_counter, sliding_log};
use crate::{Algorithm, Clock, Decision, Event, Hit, LimiterError, LimiterStore};

enum State {
    Log(VecDeque<i64>),
    Counter(CounterState),
}

/// Limits kept in this process's memory.
#[derive(Default)]
pub struct MemoryLimiter {
    // A std Mutex, not a Tokio one: nothing awaits while it is held.
    state: Mutex<HashMap<(Event, String), State>>,
    clock: Clock,
}

impl MemoryLimiter {
    /// An empty limiter on `clock` ([`Clock::Store`] is the process's clock here).
    pub fn new(clock: Clock) -> Self {
        MemoryLimiter {
            state: Mutex::new(HashMap::new()),
            clock,
        }
    }

    fn now(&self) -> i64 {
        self.clock.manual_ms().unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64)
        })
    }

    fn decide_now(&self, hit: Hit<'_>) -> Decision {
        let now = self.now();
        let mut map = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let slot = (hit.event.clone(), hit.key.to_owned());
        match hit.policy.algorithm {
            Algorithm::SlidingLog => {
                let entry = map
                    .entry(slot)
                    .or_insert_with(|| State::Log(VecDeque::new()));
                if !matches!(entry, State::Log(_)) {
                    *entry = State::Log(VecDeque::new());
                }
                let State::Log(events) = entry else {
                    unreachable!()
                };
                while events
                    .front()
                    .is_some_and(|&t| t <= now - hit.policy.window_ms())
                {
                    events.pop_front();
                }
                let d = sliding_log(
                    now,
                    hit.policy,
                    events.make_contiguous(),
                    hit.cost,
                    hit.record,
                );
                if d.allowed && hit.record {
                    events.extend(std::iter::repeat_n(now, hit.cost as usize));
                }
                d
            }
            Algorithm::SlidingWindowCounter => {
                let prior = match map.get(&slot) {
                    Some(State::Counter(s)) => Some(*s),
                    _ => None,
                };
                let (d, next) = sliding_counter(now, hit.policy, prior, hit.cost, hit.record);
                if hit.record {
                    map.insert(slot, State::Counter(next));
                }
                d
            }
        }
    }
}

#[async_trait]
impl LimiterStore for MemoryLimiter {
    async fn decide(&self, hit: Hit<'_>) -> Result<Decision, LimiterError> {
        Ok(self.decide_now(hit))
    }

    async fn reset(&self, event: &Event, key: &str) -> Result<(), LimiterError> {
        let mut map = self.state.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&(event.clone(), key.to_owned()));
        Ok(())
    }

    async fn purge(&self, longest_window_ms: i64, _batch: u32) -> Result<u64, LimiterError> {
        let now = self.now();
        let mut map = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut removed = 0u64;
        map.retain(|_, s| match s {
            State::Log(events) => {
                let before = events.len();
                events.retain(|&t| t > now - longest_window_ms);
                removed += (before - events.len()) as u64;
                !events.is_empty()
            }
            State::Counter(c) => c.window_start + 2 * longest_window_ms > now,
        });
        Ok(removed)
    }

    async fn ping(&self) -> Result<(), LimiterError> {
        Ok(())
    }
}

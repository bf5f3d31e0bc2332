//! Where "now" comes from.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// The time source of a backend.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    /// The store's own clock (the database's, Redis's; the process's for memory): what
    /// production uses.
    #[default]
    Store,
    /// A clock that tests set and advance; every backend honours it the same way.
    Manual(ManualClock),
}

impl Clock {
    /// The manual time, if this is a manual clock.
    pub fn manual_ms(&self) -> Option<i64> {
        match self {
            Clock::Store => None,
            Clock::Manual(m) => Some(m.now_ms()),
        }
    }
}

/// Milliseconds that only move when told to. Clones share the same time.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock reading `start_ms` (milliseconds since the Unix epoch).
    pub fn new(start_ms: i64) -> Self {
        ManualClock(Arc::new(AtomicI64::new(start_ms)))
    }

    /// The current reading.
    pub fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(
            i64::try_from(by.as_millis()).unwrap_or(i64::MAX),
            Ordering::SeqCst,
        );
    }
}

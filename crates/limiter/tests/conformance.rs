//! The limiter's specification: one suite of cases, written once, run against every
//! backend — memory (the reference), SQLite (file), PostgreSQL, Redis, and a Redis Cluster
//! of three masters started by the harness — plus a property test that holds every
//! backend to the memory model's answers.

use futures::future::join_all;
use proptest::prelude::*;
use std::sync::Arc;
use std::time::Duration;
use tessera_backend::pace::Pace;
use tessera_limiter::redis::RedisConnection;
use tessera_limiter::{
    Clock, Decision, Event, Limiter, LimiterError, LimiterStore, ManualClock, MemoryLimiter,
    Policies, Policy, RedisLimiter, SqlLimiter,
};
use tessera_testkit::{RedisCluster, TestDb, require_redis, unique_prefix};

const START_MS: i64 = 1_800_000_000_000;

/// A backend under test: a limiter on the manual clock, and one on the store's own clock.
struct Harness {
    manual: Arc<dyn LimiterStore>,
    real: Arc<dyn LimiterStore>,
    clock: ManualClock,
    db: Option<TestDb>,
}

impl Harness {
    fn new(make: impl Fn(Clock) -> Arc<dyn LimiterStore>, db: Option<TestDb>) -> Harness {
        let clock = ManualClock::new(START_MS);
        Harness {
            manual: make(Clock::Manual(clock.clone())),
            real: make(Clock::Store),
            clock,
            db,
        }
    }

    async fn memory() -> Harness {
        Harness::new(|c| Arc::new(MemoryLimiter::new(c)), None)
    }

    async fn sql(db: TestDb) -> Harness {
        let conn = db.db.clone();
        Harness::new(
            move |c| Arc::new(SqlLimiter::new(conn.clone()).unwrap().with_clock(c)),
            Some(db),
        )
    }

    async fn sqlite() -> Harness {
        Harness::sql(TestDb::sqlite_file().await).await
    }

    async fn postgres() -> Harness {
        Harness::sql(TestDb::postgres().await).await
    }

    /// PostgreSQL with every recorded event waiting for the flush (`TESSERA_PG_SYNC=all`).
    async fn postgres_sync_all() -> Harness {
        let db = TestDb::postgres().await;
        let conn = db.db.clone();
        Harness::new(
            move |c| {
                Arc::new(
                    SqlLimiter::new(conn.clone())
                        .unwrap()
                        .with_sync(tessera_backend::sql::PgSync::All)
                        .with_clock(c),
                )
            },
            Some(db),
        )
    }

    async fn redis_on(urls: &str) -> Harness {
        let conn = RedisConnection::connect(urls)
            .await
            .expect("Redis connects");
        let prefix = unique_prefix();
        Harness::new(
            move |c| {
                Arc::new(
                    RedisLimiter::new(conn.clone())
                        .with_prefix(&prefix)
                        .with_clock(c),
                )
            },
            None,
        )
    }

    async fn redis() -> Harness {
        Harness::redis_on(&require_redis()).await
    }

    async fn redis_cluster() -> Harness {
        Harness::redis_on(&RedisCluster::shared_urls().await).await
    }

    fn limiter(&self, policies: Policies) -> Limiter {
        Limiter::new(self.manual.clone(), policies)
    }

    fn real_limiter(&self, policies: Policies) -> Limiter {
        Limiter::new(self.real.clone(), policies)
    }

    async fn finish(self) {
        if let Some(db) = self.db {
            db.finish().await;
        }
    }
}

fn ev(name: &str) -> Event {
    Event::custom(name).unwrap()
}

fn one(name: &str, policy: Policy) -> Policies {
    let mut p = Policies::empty();
    p.set(ev(name), policy);
    p
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

mod cases {
    use super::*;

    pub async fn admits_up_to_the_limit_then_denies(h: &Harness) {
        for policy in [
            Policy::per_seconds(3, 10),
            Policy::per_seconds(3, 10).approximate(),
        ] {
            let l = h.limiter(one("e", policy));
            let e = ev("e");
            let key = format!("k-{policy}");
            for remaining in [2, 1, 0] {
                let d = l.hit(&e, &key, 1).await.unwrap();
                assert!(
                    d.allowed && d.remaining == remaining && d.limit == 3,
                    "{d:?}"
                );
                assert_eq!(d.retry_after, Duration::ZERO);
            }
            h.clock.advance(ms(4_000));
            let d = l.hit(&e, &key, 1).await.unwrap();
            assert!(!d.allowed && d.remaining == 0, "{d:?}");
            assert!(
                d.retry_after > Duration::ZERO && d.retry_after <= ms(20_000),
                "{d:?}"
            );
            h.clock.advance(d.retry_after);
            assert!(
                l.hit(&e, &key, 1).await.unwrap().allowed,
                "admitted after retry_after"
            );
            h.clock.advance(ms(60_000));
        }
    }

    pub async fn the_window_slides_exactly(h: &Harness) {
        let l = h.limiter(one("e", Policy::per_seconds(2, 60)));
        let e = ev("e");
        assert!(l.hit(&e, "k", 1).await.unwrap().allowed);
        h.clock.advance(ms(30_000));
        assert!(l.hit(&e, "k", 1).await.unwrap().allowed);
        let d = l.hit(&e, "k", 1).await.unwrap();
        assert!(!d.allowed);
        assert_eq!(
            d.retry_after,
            ms(30_000),
            "the first event leaves 60 s after it"
        );
        assert_eq!(d.reset_after, ms(60_000), "the second leaves 60 s after it");
        h.clock.advance(ms(29_999));
        assert!(
            !l.hit(&e, "k", 1).await.unwrap().allowed,
            "1 ms early: still inside"
        );
        h.clock.advance(ms(1));
        let d = l.hit(&e, "k", 1).await.unwrap();
        assert!(d.allowed, "exactly `window` after it, the event has left");
        assert_eq!(d.remaining, 0);
    }

    pub async fn cost_counts_units(h: &Harness) {
        let l = h.limiter(one("e", Policy::per_seconds(5, 60)));
        let e = ev("e");
        assert_eq!(l.hit(&e, "k", 3).await.unwrap().remaining, 2);
        h.clock.advance(ms(1_000));
        let d = l.hit(&e, "k", 3).await.unwrap();
        assert!(!d.allowed && d.remaining == 2);
        assert_eq!(d.retry_after, ms(59_000));
        let d = l.hit(&e, "k", 2).await.unwrap();
        assert!(d.allowed && d.remaining == 0);
    }

    pub async fn peek_records_nothing(h: &Harness) {
        for policy in [
            Policy::per_seconds(2, 60),
            Policy::per_seconds(2, 60).approximate(),
        ] {
            let l = h.limiter(one("e", policy));
            let e = ev("e");
            let key = format!("p-{policy}");
            for _ in 0..5 {
                let d = l.peek(&e, &key).await.unwrap();
                assert!(d.allowed && d.remaining == 2, "{d:?}");
            }
            l.hit(&e, &key, 2).await.unwrap();
            for _ in 0..3 {
                let d = l.peek(&e, &key).await.unwrap();
                assert!(
                    !d.allowed && d.remaining == 0 && d.retry_after > Duration::ZERO,
                    "{d:?}"
                );
            }
        }
    }

    pub async fn reset_forgets(h: &Harness) {
        for policy in [
            Policy::per_seconds(1, 60),
            Policy::per_seconds(1, 60).approximate(),
        ] {
            let l = h.limiter(one("e", policy));
            let e = ev("e");
            let key = format!("r-{policy}");
            assert!(l.hit(&e, &key, 1).await.unwrap().allowed);
            assert!(!l.hit(&e, &key, 1).await.unwrap().allowed);
            l.reset(&e, &key).await.unwrap();
            assert!(l.hit(&e, &key, 1).await.unwrap().allowed);
        }
    }

    pub async fn keys_and_events_are_independent(h: &Harness) {
        let mut p = one("a", Policy::per_seconds(1, 60));
        p.set(ev("b"), Policy::per_seconds(1, 60));
        let l = h.limiter(p);
        assert!(l.hit(&ev("a"), "alice", 1).await.unwrap().allowed);
        assert!(l.hit(&ev("a"), "bob", 1).await.unwrap().allowed);
        assert!(l.hit(&ev("b"), "alice", 1).await.unwrap().allowed);
        assert!(!l.hit(&ev("a"), "alice", 1).await.unwrap().allowed);
        // Keys that would collide if the hash tag or separator were naive.
        assert!(l.hit(&ev("a"), "x}{y", 1).await.unwrap().allowed);
        assert!(l.hit(&ev("a"), "x:y", 1).await.unwrap().allowed);
        assert!(l.hit(&ev("a"), "x", 1).await.unwrap().allowed);
    }

    /// An event nobody configured takes the default policy, when there is one, and is
    /// counted on its own.
    pub async fn unconfigured_events_take_the_default(h: &Harness) {
        let mut p = one("known", Policy::per_seconds(5, 60));
        p.set_default(Policy::per_seconds(2, 60));
        let l = h.limiter(p);
        for event in ["an_apps_event", "another"] {
            assert!(l.hit(&ev(event), "k", 1).await.unwrap().allowed);
            assert!(l.hit(&ev(event), "k", 1).await.unwrap().allowed);
            let third = l.hit(&ev(event), "k", 1).await.unwrap();
            assert!(!third.allowed);
            assert_eq!(third.limit, 2);
        }
        assert_eq!(l.hit(&ev("known"), "k", 1).await.unwrap().limit, 5);
    }

    pub async fn bad_input_is_refused(h: &Harness) {
        let l = h.limiter(one("e", Policy::per_seconds(3, 60)));
        let e = ev("e");
        assert!(matches!(
            l.hit(&ev("unknown"), "k", 1).await,
            Err(LimiterError::UnknownEvent(_))
        ));
        assert!(matches!(
            l.hit(&e, "k", 0).await,
            Err(LimiterError::InvalidCost { .. })
        ));
        assert!(matches!(
            l.hit(&e, "k", 4).await,
            Err(LimiterError::InvalidCost { .. })
        ));
        assert!(matches!(
            l.hit(&e, "", 1).await,
            Err(LimiterError::InvalidKey)
        ));
        assert!(matches!(
            l.hit(&e, &"x".repeat(321), 1).await,
            Err(LimiterError::InvalidKey)
        ));
        // A NUL does not fit a PostgreSQL text column; no control character makes sense in
        // a key.
        for key in ["a\0b", "line\nbreak"] {
            assert!(matches!(
                l.hit(&e, key, 1).await,
                Err(LimiterError::InvalidKey)
            ));
        }
        assert_eq!(
            l.peek(&e, "k").await.unwrap().remaining,
            3,
            "nothing was recorded"
        );
    }

    pub async fn exact_under_concurrency(h: &Harness) {
        for policy in [
            Policy::per_seconds(7, 3600),
            Policy::per_seconds(7, 3600).approximate(),
        ] {
            let l = h.real_limiter(one("e", policy));
            let key = format!("c-{}", uuid_like());
            let tasks = (0..200).map(|_| {
                let l = l.clone();
                let key = key.clone();
                tokio::spawn(async move { l.hit(&ev("e"), &key, 1).await.unwrap().allowed })
            });
            let admitted = join_all(tasks)
                .await
                .into_iter()
                .filter(|r| *r.as_ref().unwrap())
                .count();
            assert_eq!(admitted, 7, "{policy}: 200 concurrent hits, limit 7");
        }
    }

    pub async fn the_store_clock_slides_the_window(h: &Harness) {
        let l = h.real_limiter(one("e", Policy::new(2.try_into().unwrap(), ms(400))));
        let e = ev("e");
        let key = format!("t-{}", uuid_like());
        assert!(l.hit(&e, &key, 1).await.unwrap().allowed);
        assert!(l.hit(&e, &key, 1).await.unwrap().allowed);
        let d = l.hit(&e, &key, 1).await.unwrap();
        assert!(!d.allowed && d.retry_after <= ms(400), "{d:?}");
        tokio::time::sleep(d.retry_after + ms(30)).await;
        assert!(l.hit(&e, &key, 1).await.unwrap().allowed);
    }

    pub async fn purge_keeps_what_a_window_still_needs(h: &Harness) {
        let mut p = one("short", Policy::per_seconds(5, 10));
        p.set(ev("long"), Policy::per_seconds(5, 100));
        let l = h.limiter(p);
        for _ in 0..3 {
            l.hit(&ev("short"), "k", 1).await.unwrap();
            l.hit(&ev("long"), "k", 1).await.unwrap();
        }
        h.clock.advance(ms(50_000));
        let purged = l.purge(2, Pace::FULL).await.unwrap();
        // Nothing is older than the longest window yet.
        assert_eq!(purged, 0);
        assert_eq!(l.peek(&ev("long"), "k").await.unwrap().remaining, 2);
        h.clock.advance(ms(50_000));
        let purged = l.purge(2, Pace::share(2)).await.unwrap();
        // Stores whose keys expire by themselves purge nothing; the others purge all six.
        assert!(purged == 6 || purged == 0, "{purged}");
        assert_eq!(l.peek(&ev("long"), "k").await.unwrap().remaining, 5);
    }
}

fn uuid_like() -> String {
    unique_prefix()
}

macro_rules! every_backend {
    ($($backend:ident),*) => {
        $(
            tessera_testkit::backend_cases!($backend: [
                admits_up_to_the_limit_then_denies,
                the_window_slides_exactly,
                cost_counts_units,
                peek_records_nothing,
                reset_forgets,
                keys_and_events_are_independent,
                bad_input_is_refused,
                unconfigured_events_take_the_default,
                exact_under_concurrency,
                the_store_clock_slides_the_window,
                purge_keeps_what_a_window_still_needs,
            ]
                #[test]
                fn agrees_with_the_memory_model() {
                    super::model_check(stringify!($backend));
                });
        )*
    };
}

every_backend!(
    memory,
    sqlite,
    postgres,
    postgres_sync_all,
    redis,
    redis_cluster
);

#[derive(Debug, Clone)]
enum Op {
    Hit { event: usize, key: usize, cost: u32 },
    Peek { event: usize, key: usize },
    Reset { event: usize, key: usize },
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..2usize, 0..2usize, 1..=3u32).prop_map(|(event, key, cost)| Op::Hit { event, key, cost }),
        2 => (0..2usize, 0..2usize).prop_map(|(event, key)| Op::Peek { event, key }),
        1 => (0..2usize, 0..2usize).prop_map(|(event, key)| Op::Reset { event, key }),
        3 => prop_oneof![0..2_000u64, 0..12_000u64, Just(10_000u64), Just(9_999u64), Just(1u64)]
            .prop_map(Op::Advance),
    ]
}

/// Drives `backend` and the memory model with the same random operations on one manual
/// clock, and requires identical decisions.
fn model_check(backend: &'static str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let h = rt.block_on(async {
        match backend {
            "memory" => Harness::memory().await,
            "sqlite" => Harness::sqlite().await,
            "postgres" => Harness::postgres().await,
            "redis" => Harness::redis().await,
            _ => Harness::redis_cluster().await,
        }
    });
    let events = [ev("log"), ev("ctr")];
    let mut policies = Policies::empty();
    policies.set(events[0].clone(), Policy::per_seconds(4, 10));
    policies.set(events[1].clone(), Policy::per_seconds(5, 10).approximate());
    let config = ProptestConfig {
        cases: 24,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let case = std::sync::atomic::AtomicU32::new(0);
    runner
        .run(&proptest::collection::vec(op(), 1..40), |ops| {
            let case = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let model = Limiter::new(
                Arc::new(MemoryLimiter::new(Clock::Manual(h.clock.clone()))),
                policies.clone(),
            );
            let subject = h.limiter(policies.clone());
            let keys = [
                format!("a{case}-{}", uuid_like()),
                format!("b{case}-{}", uuid_like()),
            ];
            rt.block_on(async {
                for op in &ops {
                    let (expected, got): (Option<Decision>, Option<Decision>) = match op {
                        Op::Hit { event, key, cost } => (
                            Some(
                                model
                                    .hit(&events[*event], &keys[*key], *cost)
                                    .await
                                    .unwrap(),
                            ),
                            Some(
                                subject
                                    .hit(&events[*event], &keys[*key], *cost)
                                    .await
                                    .unwrap(),
                            ),
                        ),
                        Op::Peek { event, key } => (
                            Some(model.peek(&events[*event], &keys[*key]).await.unwrap()),
                            Some(subject.peek(&events[*event], &keys[*key]).await.unwrap()),
                        ),
                        Op::Reset { event, key } => {
                            model.reset(&events[*event], &keys[*key]).await.unwrap();
                            subject.reset(&events[*event], &keys[*key]).await.unwrap();
                            (None, None)
                        }
                        Op::Advance(by) => {
                            h.clock.advance(ms(*by));
                            (None, None)
                        }
                    };
                    prop_assert_eq!(got, expected, "after {:?}", op);
                }
                Ok(())
            })
        })
        .unwrap();
    rt.block_on(h.finish());
}

/// Redis keeps no events past their window: every key carries its own expiry.
mod redis_keys {
    use super::*;
    use tessera_limiter::Algorithm;

    #[tokio::test]
    async fn keys_expire_with_their_window() {
        let url = require_redis();
        let conn = RedisConnection::connect(&url).await.unwrap();
        let prefix = unique_prefix();
        let store = RedisLimiter::new(conn.clone()).with_prefix(&prefix);
        let mut policies = Policies::empty();
        policies.set(ev("log"), Policy::per_seconds(3, 60));
        policies.set(ev("ctr"), Policy::per_seconds(3, 60).approximate());
        let l = Limiter::new(Arc::new(store.clone()), policies);
        l.hit(&ev("log"), "k", 1).await.unwrap();
        l.hit(&ev("ctr"), "k", 1).await.unwrap();
        let mut c = conn.clone();
        for (event, algorithm, max_ms) in [
            ("log", Algorithm::SlidingLog, 60_000),
            ("ctr", Algorithm::SlidingWindowCounter, 120_000),
        ] {
            let key = store.redis_key(&ev(event), "k", algorithm);
            let ttl: i64 = ::redis::cmd("PTTL")
                .arg(&key)
                .query_async(&mut c)
                .await
                .unwrap();
            assert!(ttl > 0 && ttl <= max_ms, "{key} expires in {ttl} ms");
        }
    }
}

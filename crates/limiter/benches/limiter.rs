//! Limiter hits per second at 1 and 32 concurrent callers, against a baseline measured in
//! the same run through the same client: one bare EVALSHA of a trivial script (Redis) and
//! one bare INSERT into the events table (PostgreSQL).
//!
//! `cargo bench -p tessera-limiter --bench limiter`. Criterion reports time per operation
//! across all callers, and the throughput in operations per second.

use criterion::measurement::WallTime;
use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main,
};
use futures::future::join_all;
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tessera_limiter::redis::RedisConnection;
use tessera_limiter::{Event, Limiter, Policies, Policy, RedisLimiter, SqlLimiter};
use tessera_testkit::{TestDb, require_redis, unique_prefix};
use tokio::runtime::Runtime;

const CALLERS: [u64; 2] = [1, 32];

/// Runs `iters` operations split over `callers` tasks; answers the wall time.
async fn concurrently<F, Fut>(callers: u64, iters: u64, op: F) -> Duration
where
    F: Fn(u64, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let per = iters.div_ceil(callers);
    let start = Instant::now();
    let tasks = (0..callers).map(|c| {
        let op = op.clone();
        tokio::spawn(async move {
            for i in 0..per {
                op(c, i).await;
            }
        })
    });
    join_all(tasks).await;
    start
        .elapsed()
        .mul_f64(iters as f64 / (per * callers) as f64)
}

fn policies() -> Policies {
    let mut p = Policies::empty();
    // Auth-sized limits (tens per window) on many keys, as per-IP limits see them: each
    // caller spreads its hits over 64 keys, few enough per key per second that nearly
    // every hit is admitted and recorded, the costly path.
    p.set(Event::custom("bench").unwrap(), Policy::per_seconds(50, 1));
    p
}

fn key(caller: u64, i: u64) -> String {
    format!("caller-{caller}-{}", i % 64)
}

/// A benchmark group measuring operations per second.
fn group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(1));
    g
}

/// Limiter hits from `callers` concurrent callers, whatever the backend.
fn bench_hits(g: &mut BenchmarkGroup<'_, WallTime>, rt: &Runtime, limiter: &Limiter, callers: u64) {
    g.bench_with_input(
        BenchmarkId::new("limiter_hit", callers),
        &callers,
        |b, &n| {
            b.to_async(rt).iter_custom(|iters| {
                let limiter = limiter.clone();
                concurrently(n, iters, move |c, i| {
                    let limiter = limiter.clone();
                    async move {
                        let event = Event::custom("bench").unwrap();
                        limiter.hit(&event, &key(c, i), 1).await.unwrap();
                    }
                })
            })
        },
    );
}

fn bench_redis(c: &mut Criterion, rt: &Runtime) {
    let url = require_redis();
    let conn = rt.block_on(RedisConnection::connect(&url)).unwrap();
    let prefix = unique_prefix();
    let limiter = Limiter::new(
        Arc::new(RedisLimiter::new(conn.clone()).with_prefix(&prefix)),
        policies(),
    );
    // Three baselines. `bare_evalsha`: a script that does nothing. `evalsha_time`: one that
    // only reads Redis TIME, which the limiter's script must do (DESIGN: time comes from
    // the store). `evalsha_floor`: the least any decision script can do under DESIGN's
    // rules: read the clock, read the key's state, write it back with an expiry, and no
    // arithmetic at all. The limiter cannot be faster than the floor.
    let baselines = [
        ("bare_evalsha", Arc::new(redis::Script::new("return 1"))),
        (
            "evalsha_time",
            Arc::new(redis::Script::new("local t = redis.call('TIME') return 1")),
        ),
        (
            "evalsha_floor",
            Arc::new(redis::Script::new(
                "local t = redis.call('TIME') local s = redis.call('GET', KEYS[1]) \
                 redis.call('SET', KEYS[1], 'x', 'PX', 1000) return 1",
            )),
        ),
    ];
    let mut g = group(c, "redis");
    for callers in CALLERS {
        for (name, script) in &baselines {
            g.bench_with_input(BenchmarkId::new(*name, callers), &callers, |b, &n| {
                b.to_async(rt).iter_custom(|iters| {
                    let conn = conn.clone();
                    let script = script.clone();
                    let prefix = prefix.clone();
                    let name = *name;
                    concurrently(n, iters, move |c, i| {
                        let mut conn = conn.clone();
                        let script = script.clone();
                        let key = format!("{prefix}{name}:{{{}}}", key(c, i));
                        async move {
                            let _: i64 = script.key(key).invoke_async(&mut conn).await.unwrap();
                        }
                    })
                })
            });
        }
        bench_hits(&mut g, rt, &limiter, callers);
    }
    g.finish();
}

async fn bare_insert(db: &DatabaseConnection, key: String) {
    db.execute_raw(Statement::from_sql_and_values(
        db.get_database_backend(),
        "INSERT INTO auth_rate_limit_events (event_type, key, occurred_at) VALUES ($1, $2, now())",
        ["bench".into(), key.into()],
    ))
    .await
    .unwrap();
}

fn bench_postgres(c: &mut Criterion, rt: &Runtime) {
    let db = rt.block_on(TestDb::postgres());
    let conn = rt.block_on(pool(&db.url));
    let limiter = Limiter::new(Arc::new(SqlLimiter::new(conn.clone()).unwrap()), policies());
    let mut g = group(c, "postgres");
    for callers in CALLERS {
        g.bench_with_input(
            BenchmarkId::new("bare_insert", callers),
            &callers,
            |b, &n| {
                b.to_async(rt).iter_custom(|iters| {
                    let conn = conn.clone();
                    concurrently(n, iters, move |c, i| {
                        let conn = conn.clone();
                        async move { bare_insert(&conn, key(c, i)).await }
                    })
                })
            },
        );
        bench_hits(&mut g, rt, &limiter, callers);
    }
    g.finish();
    rt.block_on(db.finish());
}

/// A pool large enough for 32 callers.
async fn pool(url: &str) -> DatabaseConnection {
    let mut opts = sea_orm::ConnectOptions::new(url.to_owned());
    opts.max_connections(32).sqlx_logging(false);
    sea_orm::Database::connect(opts).await.unwrap()
}

fn benches(c: &mut Criterion) {
    let rt = tessera_testkit::bench_runtime();
    bench_redis(c, &rt);
    bench_postgres(c, &rt);
}

criterion_group!(limiter, benches);
criterion_main!(limiter);

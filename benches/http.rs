//! HTTP load against three `tessera serve` workers, with the rate of a trivial route
//! (`GET /healthz`) measured in the same run as the baseline.
//!
//! `cargo bench --bench http` runs it on Redis and on PostgreSQL (a fresh database from
//! `TESSERA_TEST_POSTGRES_URL`). The routes are measured in interleaved one-second
//! slices, `TESSERA_BENCH_SECONDS` (default 8) rounds of them, with
//! `TESSERA_BENCH_CONCURRENCY` (default 64) requests in flight; each route prints requests
//! per second and its ratio to the trivial route.

use futures::future::join_all;
use serde_json::json;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tessera_testkit::{TestDb, require_redis, unique_prefix};

const KEY: &str = "bench-service-key";

struct Worker(Child, SocketAddr);

impl Drop for Worker {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

fn start_workers(args: &[&str]) -> Vec<Worker> {
    let workers: Vec<Worker> = (0..3)
        .map(|_| {
            // A directory each: on Redis every worker keeps its own embedded SQLite schema.
            let dir = tempfile::tempdir().unwrap().keep();
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let child = Command::new(env!("CARGO_BIN_EXE_tessera"))
                .current_dir(&dir)
                .args(["serve", "--port", &port.to_string(), "--api-keys", KEY])
                .args(["--rate-limits", "bench=1000000/1s"])
                .args(args)
                .env("TESSERA_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("tessera starts");
            Worker(child, SocketAddr::from(([127, 0, 0, 1], port)))
        })
        .collect();
    for w in &workers {
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(w.1).is_err() {
            assert!(Instant::now() < deadline, "a worker did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    workers
}

/// Runs `op(0)`, `op(1)`, ... from `concurrency` tasks for `dur` or until `max` calls;
/// answers the calls made and the time they took.
async fn phase<F, Fut>(concurrency: usize, dur: Duration, max: usize, op: F) -> (usize, Duration)
where
    F: Fn(usize) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let end = start + dur;
    let tasks = (0..concurrency).map(|_| {
        let op = op.clone();
        let next = next.clone();
        tokio::spawn(async move {
            while Instant::now() < end {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= max {
                    break;
                }
                op(i).await;
            }
        })
    });
    join_all(tasks).await;
    (next.load(Ordering::Relaxed).min(max), start.elapsed())
}

/// Requests and time, summed over rounds.
#[derive(Default, Clone, Copy)]
struct Tally {
    requests: usize,
    time: Duration,
}

impl Tally {
    fn add(&mut self, (requests, time): (usize, Duration)) {
        self.requests += requests;
        self.time += time;
    }

    fn rate(&self) -> f64 {
        self.requests as f64 / self.time.as_secs_f64()
    }
}

/// Measures the routes in rounds of one second each, interleaved, so that the load this
/// shared machine sees from elsewhere falls on every route alike.
async fn run(name: &str, workers: &[Worker], concurrency: usize, secs: u64) {
    let addrs: Arc<Vec<SocketAddr>> = Arc::new(workers.iter().map(|w| w.1).collect());
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap();
    let url = {
        let addrs = addrs.clone();
        move |i: usize, path: &str| format!("http://{}{path}", addrs[i % addrs.len()])
    };
    let slice = Duration::from_secs(1);
    let prefix = unique_prefix();
    let [mut trivial, mut hit, mut issue, mut consume] = [Tally::default(); 4];
    for _ in 0..secs {
        let (c, u) = (client.clone(), url.clone());
        trivial.add(
            phase(concurrency, slice, usize::MAX, move |i| {
                let req = c.get(u(i, "/healthz"));
                async move {
                    assert!(req.send().await.unwrap().status().is_success());
                }
            })
            .await,
        );

        let (c, u, p) = (client.clone(), url.clone(), prefix.clone());
        hit.add(
            phase(concurrency, slice, usize::MAX, move |i| {
                let req = c
                    .post(u(i, "/v1/ratelimit/hit"))
                    .bearer_auth(KEY)
                    .json(&json!({"event": "bench", "key": format!("{p}{}", i % 1024)}));
                async move {
                    assert!(req.send().await.unwrap().status().is_success());
                }
            })
            .await,
        );

        // The tokens this round's consume slice uses.
        let tokens = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let (c, u, t) = (client.clone(), url.clone(), tokens.clone());
        issue.add(
            phase(concurrency, slice, usize::MAX, move |i| {
                let req = c.post(u(i, "/v1/tokens")).bearer_auth(KEY).json(
                    &json!({"kind": "pre_auth", "username": format!("u{i}"), "challenge": "cookie"}),
                );
                let t = t.clone();
                async move {
                    let res = req.send().await.unwrap();
                    assert_eq!(res.status(), 201);
                    let body: serde_json::Value = res.json().await.unwrap();
                    t.lock()
                        .unwrap()
                        .push(body["token"].as_str().unwrap().to_owned());
                }
            })
            .await,
        );
        let tokens = Arc::new(std::mem::take(&mut *tokens.lock().unwrap()));

        let (c, u, t) = (client.clone(), url.clone(), tokens.clone());
        consume.add(
            phase(concurrency, slice, tokens.len(), move |i| {
                let req = c
                    .post(u(i, "/v1/tokens/consume"))
                    .bearer_auth(KEY)
                    .json(&json!({"kind": "pre_auth", "token": t[i], "challenge": "cookie"}));
                async move {
                    assert_eq!(req.send().await.unwrap().status(), 200);
                }
            })
            .await,
        );
    }
    assert!(consume.requests > 0);

    let base = trivial.rate();
    println!("{name}: {concurrency} requests in flight, 3 workers, {secs} rounds of 1 s per route");
    println!("  GET /healthz (baseline)   {base:>9.0} req/s");
    for (label, t) in [
        ("POST /v1/ratelimit/hit", hit),
        ("POST /v1/tokens (issue)", issue),
        ("POST /v1/tokens/consume", consume),
    ] {
        println!(
            "  {label:<26}{:>9.0} req/s  {:>5.1}% of baseline",
            t.rate(),
            100.0 * t.rate() / base
        );
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing: only a bench run
    // does the work.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let secs: u64 = std::env::var("TESSERA_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    let concurrency: usize = std::env::var("TESSERA_BENCH_CONCURRENCY")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let redis = require_redis();
    let workers = start_workers(&["--redis-url", &redis]);
    rt.block_on(run("redis", &workers, concurrency, secs));
    drop(workers);
    let db = rt.block_on(TestDb::postgres());
    let workers = start_workers(&["--database-url", &db.url, "--db-max-connections", "32"]);
    rt.block_on(run("postgres", &workers, concurrency, secs));
    drop(workers);
    rt.block_on(db.finish());
}

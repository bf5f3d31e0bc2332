//! Three `tessera serve` processes on one store, driven over HTTP as a client service
//! would: tokens issued on one worker are consumed exactly once across all of them, a rate
//! limit holds across them, a worker killed with SIGKILL loses nothing, and a store that
//! goes away gives 503 until it is back.

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};
use tessera_testkit::{TestDb, require_redis, unique_prefix};

use crate::helpers::{OwnRedis, Worker, free_port, start_workers};

pub const KEY: &str = "e2e-service-key";

/// Starts `n` workers with `args` plus a service key and an `e2e` policy of 10 per hour.
pub async fn workers(n: usize, mut args: Vec<String>) -> Vec<Worker> {
    args.extend(["--api-keys", KEY, "--rate-limits", "e2e=10/1h"].map(String::from));
    start_workers(n, args).await.0
}

pub async fn post(
    client: &reqwest::Client,
    addr: SocketAddr,
    path: &str,
    body: Value,
) -> (StatusCode, Value) {
    let res = client
        .post(format!("http://{addr}{path}"))
        .bearer_auth(KEY)
        .json(&body)
        .send()
        .await
        .expect("the worker answers");
    let status = res.status();
    let body = res.json().await.unwrap_or(Value::Null);
    (status, body)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// (a) 200 tokens issued on the first address, each consumed by one racer per address at
/// once: exactly 200 successes.
pub async fn tokens_are_consumed_once_across_workers(addrs: &[SocketAddr]) {
    let c = client();
    let issued = join_all((0..200).map(|i| {
        let c = c.clone();
        let addr = addrs[0];
        async move {
            let (s, b) = post(
                &c,
                addr,
                "/v1/tokens",
                json!({"kind": "pre_auth", "username": format!("u{i}"), "challenge": "cookie"}),
            )
            .await;
            assert_eq!(s, StatusCode::CREATED, "{b}");
            b["token"].as_str().unwrap().to_owned()
        }
    }))
    .await;
    let mut races = Vec::new();
    for token in &issued {
        for &addr in addrs {
            for _ in 0..2 {
                let c = c.clone();
                let token = token.clone();
                races.push(async move {
                    let (s, b) = post(
                        &c,
                        addr,
                        "/v1/tokens/consume",
                        json!({"kind": "pre_auth", "token": token, "challenge": "cookie"}),
                    )
                    .await;
                    match s {
                        StatusCode::OK => true,
                        StatusCode::NOT_FOUND => {
                            assert_eq!(b["code"], "invalid_or_expired_token");
                            false
                        }
                        other => panic!("consume answered {other}: {b}"),
                    }
                });
            }
        }
    }
    let wins = join_all(races).await.into_iter().filter(|&w| w).count();
    assert_eq!(wins, 200, "each of 200 tokens consumed exactly once");
}

/// (b) 300 concurrent hits on one key spread over the addresses, limit 10: exactly 10.
pub async fn a_limit_holds_across_workers(addrs: &[SocketAddr]) {
    let c = client();
    let key = unique_prefix();
    let hits = (0..300).map(|i| {
        let c = c.clone();
        let addr = addrs[i % addrs.len()];
        let key = key.clone();
        async move {
            let (s, b) = post(
                &c,
                addr,
                "/v1/ratelimit/hit",
                json!({"event": "e2e", "key": key}),
            )
            .await;
            assert_eq!(s, StatusCode::OK, "{b}");
            b["allowed"].as_bool().unwrap()
        }
    });
    let allowed = join_all(hits).await.into_iter().filter(|&a| a).count();
    assert_eq!(
        allowed,
        10,
        "300 hits over {} addresses, limit 10",
        addrs.len()
    );
}

/// (c) Issue on worker 0, kill it with SIGKILL, consume on worker 1.
async fn a_killed_worker_loses_nothing(ws: &mut [Worker]) {
    let c = client();
    let (s, b) = post(
        &c,
        ws[0].addr,
        "/v1/tokens",
        json!({"kind": "password_reset", "username": "kim"}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let token = b["token"].as_str().unwrap().to_owned();
    ws[0].child.kill().unwrap();
    ws[0].child.wait().unwrap();
    let (s, b) = post(
        &c,
        ws[1].addr,
        "/v1/tokens/consume",
        json!({"kind": "password_reset", "token": token}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["username"], "kim");
}

fn addrs(ws: &[Worker]) -> Vec<SocketAddr> {
    ws.iter().map(|w| w.addr).collect()
}

/// Three workers on PostgreSQL, with tokens and limits on `redis` when given: each token
/// consumed once, one limit, nothing lost with a killed worker.
async fn three_workers(redis: Option<String>) {
    let db = TestDb::postgres().await;
    let mut args = vec!["--database-url".into(), db.url.clone()];
    args.extend(redis.into_iter().flat_map(|r| ["--redis-url".into(), r]));
    let mut ws = workers(3, args).await;
    tokens_are_consumed_once_across_workers(&addrs(&ws)).await;
    a_limit_holds_across_workers(&addrs(&ws)).await;
    a_killed_worker_loses_nothing(&mut ws).await;
    drop(ws);
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_workers_on_postgres() {
    three_workers(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_workers_on_redis() {
    three_workers(Some(require_redis())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_answers_503_while_redis_is_down_and_recovers_by_itself() {
    let redis = OwnRedis::start(free_port(), tempfile::tempdir().unwrap());
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let ws = workers(1, vec!["--redis-url".into(), url]).await;
    let addr = ws[0].addr;
    let c = client();
    let hit = json!({"event": "e2e", "key": "outage"});
    assert_eq!(
        post(&c, addr, "/v1/ratelimit/hit", hit.clone()).await.0,
        StatusCode::OK
    );

    let (port, dir) = redis.stop();
    let started = Instant::now();
    let (s, b) = post(&c, addr, "/v1/ratelimit/hit", hit.clone()).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{b}");
    assert_eq!(b["code"], "store_unavailable");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "no hang: {:?}",
        started.elapsed()
    );
    let (s, b) = post(
        &c,
        addr,
        "/v1/tokens",
        json!({"kind": "password_reset", "username": "z"}),
    )
    .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{b}");
    assert_eq!(
        reqwest::get(format!("http://{addr}/readyz"))
            .await
            .unwrap()
            .status(),
        StatusCode::SERVICE_UNAVAILABLE
    );

    let _redis = OwnRedis::start(port, dir);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (s, _) = post(&c, addr, "/v1/ratelimit/hit", hit.clone()).await;
        if s == StatusCode::OK {
            break;
        }
        assert!(Instant::now() < deadline, "the worker did not recover");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (s, _) = post(
        &c,
        addr,
        "/v1/tokens",
        json!({"kind": "password_reset", "username": "z"}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_store_gets_a_timeout_answer_not_a_hang() {
    let redis = OwnRedis::start(free_port(), tempfile::tempdir().unwrap());
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let ws = workers(
        1,
        vec![
            "--redis-url".into(),
            url,
            "--request-timeout".into(),
            "1".into(),
        ],
    )
    .await;
    let c = client();
    let hit = json!({"event": "e2e", "key": "stall"});
    assert_eq!(
        post(&c, ws[0].addr, "/v1/ratelimit/hit", hit.clone())
            .await
            .0,
        StatusCode::OK
    );
    // Redis stops answering anyone for 4 s.
    let paused = Command::new("redis-cli")
        .args([
            "-p",
            &redis.port.to_string(),
            "CLIENT",
            "PAUSE",
            "4000",
            "ALL",
        ])
        .output()
        .unwrap();
    assert!(paused.status.success());
    let started = Instant::now();
    let (s, b) = post(&c, ws[0].addr, "/v1/ratelimit/hit", hit.clone()).await;
    let took = started.elapsed();
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{b}");
    assert_eq!(b["code"], "timeout");
    assert!(
        took < Duration::from_millis(2500),
        "answered after {took:?}"
    );
}

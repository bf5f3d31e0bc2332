//! Three OS processes hit one key at once, sharing PostgreSQL or Redis: the limit holds
//! across them exactly.
//!
//! The test binary is its own child: each copy runs [`child_hitter`], which fires its hits
//! concurrently once told to go, and reports how many were admitted.

use futures::future::join_all;
use std::sync::Arc;
use tessera_limiter::redis::RedisConnection;
use tessera_limiter::{Event, Limiter, LimiterStore, Policies, Policy, RedisLimiter, SqlLimiter};
use tessera_testkit::{TestDb, require_redis, unique_prefix};

use crate::helpers::{race_children, wait_for_go};

const PROCESSES: usize = 3;
const HITS_PER_PROCESS: usize = 70;
const LIMIT: u32 = 7;

fn policies() -> Policies {
    let mut p = Policies::empty();
    p.set(
        Event::custom("race").unwrap(),
        Policy::per_seconds(LIMIT, 3600),
    );
    p
}

/// Starts the children on `backend` (`postgres URL` or `redis URL PREFIX`) and answers the
/// total admitted.
fn race(backend: &[&str]) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let backend = backend.join(" ");
    let children = race_children(
        dir.path(),
        "limits::child_hitter",
        PROCESSES,
        &[("TESSERA_RACE_BACKEND", &backend)],
    );
    let mut total = 0;
    for (mut child, out) in children {
        assert!(child.wait().unwrap().success(), "a hitting process failed");
        total += std::fs::read_to_string(out)
            .unwrap()
            .trim()
            .parse::<usize>()
            .unwrap();
    }
    total
}

#[tokio::test]
async fn three_processes_on_postgres_admit_exactly_the_limit() {
    let db = TestDb::postgres().await;
    let url = db.url.clone();
    let admitted = tokio::task::spawn_blocking(move || race(&["postgres", &url]))
        .await
        .unwrap();
    assert_eq!(
        admitted,
        LIMIT as usize,
        "{} hits, limit {LIMIT}",
        PROCESSES * HITS_PER_PROCESS
    );
    db.finish().await;
}

#[tokio::test]
async fn three_processes_on_redis_admit_exactly_the_limit() {
    let url = require_redis();
    let prefix = unique_prefix();
    let admitted = tokio::task::spawn_blocking(move || race(&["redis", &url, &prefix]))
        .await
        .unwrap();
    assert_eq!(admitted, LIMIT as usize);
}

/// The child side; does nothing unless started by the tests above.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "started as a child process by the limit races"]
async fn child_hitter() {
    let Ok(backend) = std::env::var("TESSERA_RACE_BACKEND") else {
        return;
    };
    let args: Vec<&str> = backend.split(' ').collect();
    let store: Arc<dyn LimiterStore> = match args[0] {
        "postgres" => {
            let db = tessera_backend::sql::connect(args[1], 16).await.unwrap();
            Arc::new(SqlLimiter::new(db).unwrap())
        }
        _ => {
            let conn = RedisConnection::connect(args[1]).await.unwrap();
            Arc::new(RedisLimiter::new(conn).with_prefix(args[2]))
        }
    };
    let limiter = Limiter::new(store, policies());
    limiter.ping().await.unwrap();
    let out = wait_for_go().await;
    let event = Event::custom("race").unwrap();
    let hits = (0..HITS_PER_PROCESS).map(|_| {
        let limiter = limiter.clone();
        let event = event.clone();
        tokio::spawn(async move { limiter.hit(&event, "one-key", 1).await.unwrap().allowed })
    });
    let admitted = join_all(hits)
        .await
        .into_iter()
        .filter(|r| *r.as_ref().unwrap())
        .count();
    std::fs::write(out, admitted.to_string()).unwrap();
}

//! The password-hashing bound under a burst of anonymous requests. A binary of its own:
//! the bound is per process, and a burst would spill into tests running beside it.

mod common;

use axum::http::header;
use common::*;
use serde_json::json;
use std::time::Duration;

/// Findings 14 and 4: 300 anonymous registrations at once, with a request timeout of 1 s.
/// The hashes they started go on past their requests, but never more run at once than
/// there are CPUs; the queue beyond its length answers 503 `overloaded` at once; nothing
/// answers 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn timed_out_requests_cannot_run_more_hashes_than_cpus() {
    let (mut state, _db, _o) = app_state(|_| {}).await;
    state.limits.request_timeout = Duration::from_secs(1);
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut most = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                most = most.max(tessera_auth::hashing::running());
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            most
        })
    };
    let burst = (0..300).map(|i| {
        let state = state.clone();
        async move {
            from(
                &state,
                &format!("10.1.{}.{}", i / 200, i % 200 + 1),
                "/auth/register",
                json!({"username": format!("u{i}"), "email": "x@example.com", "password": "a long password"}),
                &[],
            )
            .await
        }
    });
    let answers = futures::future::join_all(burst).await;
    // Let the hashes of timed-out requests finish.
    while tessera_auth::hashing::queued() > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let most = watcher.await.unwrap();
    let mut by_status = std::collections::BTreeMap::new();
    for a in &answers {
        *by_status
            .entry((a.status.as_u16(), a.body["code"].to_string()))
            .or_insert(0) += 1;
    }
    eprintln!("answers: {by_status:?}; most hashes at once: {most}");
    assert!(
        most <= tessera_auth::hashing::max_running(),
        "{most} hashes ran at once on {} CPUs",
        tessera_auth::hashing::max_running()
    );
    assert!(
        answers.iter().all(|a| a.status.as_u16() != 500),
        "{by_status:?}"
    );
    assert!(
        answers
            .iter()
            .any(|a| a.body["code"] == "overloaded" && a.headers.contains_key(header::RETRY_AFTER)),
        "a full queue answers overloaded: {by_status:?}"
    );
}

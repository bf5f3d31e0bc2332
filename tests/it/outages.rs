//! The login flows while a store is down: they fail closed, with 503, and come back by
//! themselves.

use serde_json::json;
use std::time::{Duration, Instant};
use tessera_testkit::TestDb;

use crate::helpers::*;

/// When the store behind the limiter is down, throttled routes answer 503 — no attempt
/// goes through unthrottled — and they work again once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn throttled_routes_fail_closed_while_the_limiter_store_is_down() {
    let db = TestDb::postgres().await;
    let redis = crate::helpers::OwnRedis::start(free_port(), tempfile::tempdir().unwrap());
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let (ws, _dir) = start_workers(
        1,
        vec![
            "--database-url".into(),
            db.url.clone(),
            "--redis-url".into(),
            url,
        ],
    )
    .await;
    let w = ws[0].addr;
    let mut b = Browser::new();
    let user = unique("frank");
    let pw = "correct horse battery";
    b.register(w, &user, pw).await;
    let (port, dir) = redis.stop();
    for (path, body) in [
        ("/auth/login", json!({"username": user, "password": pw})),
        (
            "/auth/login",
            json!({"username": user, "password": "wrong password!"}),
        ),
        (
            "/auth/password-reset/request",
            json!({"email": format!("{user}@example.com")}),
        ),
    ] {
        let r = b.post(w, path, body).await;
        assert_eq!(r.status, 503, "{path}: {}", r.body);
        assert_eq!(r.body["code"], "store_unavailable");
    }
    let _redis = crate::helpers::OwnRedis::start(port, dir);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = b
            .post(w, "/auth/login", json!({"username": user, "password": pw}))
            .await;
        if r.status == 200 {
            assert_eq!(r.body["authenticated"], true);
            break;
        }
        assert!(Instant::now() < deadline, "no recovery: {}", r.body);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(ws);
    db.finish().await;
}

/// When PostgreSQL goes away, the login routes answer 503 `store_unavailable`, never 500
/// and never 401 for a valid session, and they work again once it is back, without a
/// restart. The outage is a forwarder in front of the shared server, cut and restored.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn login_fails_closed_while_postgres_is_down() {
    let db = TestDb::postgres().await;
    let mut gate = crate::helpers::TcpGate::open("127.0.0.1:5432".parse().unwrap()).await;
    assert!(db.url.contains("127.0.0.1:5432/"), "{}", db.url);
    let url = db
        .url
        .replace("127.0.0.1:5432/", &format!("127.0.0.1:{}/", gate.port));
    let (ws, _dir) = start_workers(1, vec!["--database-url".into(), url]).await;
    let w = ws[0].addr;
    let mut b = Browser::new();
    let user = unique("gail");
    let pw = "correct horse battery";
    b.register(w, &user, pw).await;
    let r = b
        .post(w, "/auth/login", json!({"username": user, "password": pw}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(b.get(w, "/auth/me").await.status, 200);

    gate.cut().await;
    let me = b.get(w, "/auth/me").await;
    assert_eq!(
        me.status, 503,
        "a valid session is not signed out: {}",
        me.body
    );
    assert_eq!(me.body["code"], "store_unavailable");
    for (path, body) in [
        ("/auth/login", json!({"username": user, "password": pw})),
        (
            "/auth/login",
            json!({"username": user, "password": "wrong password!"}),
        ),
        (
            "/auth/register",
            json!({"username": unique("hank"), "email": "h@example.com", "password": pw}),
        ),
        (
            "/auth/password-reset/request",
            json!({"email": format!("{user}@example.com")}),
        ),
    ] {
        let started = Instant::now();
        let r = b.post(w, path, body).await;
        assert_eq!(r.status, 503, "{path}: {}", r.body);
        assert_eq!(r.body["code"], "store_unavailable", "{path}");
        // The pool gives up on a connection after 5 s; nothing waits longer.
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{path} answered after {:?}",
            started.elapsed()
        );
    }

    gate.restore().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = b.get(w, "/auth/me").await;
        if r.status == 200 {
            assert_eq!(r.body["username"], user.as_str());
            break;
        }
        assert!(Instant::now() < deadline, "no recovery: {}", r.body);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The wrong password during the outage was never counted, and the account works.
    let mut fresh = Browser::new();
    let r = fresh
        .post(w, "/auth/login", json!({"username": user, "password": pw}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["authenticated"], true);
    drop(ws);
    db.finish().await;
}

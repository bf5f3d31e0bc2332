//! What the workers log: JSON lines when asked, an audit event for every sign-in, failure,
//! factor change and session end (with the request's id and address, never a secret), and
//! a warning when a shared store runs without a public URL.

use serde_json::{Value, json};
use tessera_testkit::TestDb;

use crate::helpers::*;

/// The audit events in a JSON log, as `(event, outcome, user, the line)`.
fn audit_events(log: &str) -> Vec<(String, String, String, Value)> {
    log.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .filter(|v| v["target"] == "tessera::audit")
        .map(|v| {
            let f = &v["fields"];
            let s = |k: &str| f[k].as_str().unwrap_or_default().to_owned();
            (s("event"), s("outcome"), s("user"), v)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sign_in_and_factor_change_is_one_json_audit_event() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    let w = tokio::task::spawn_blocking(move || {
        let db = format!("sqlite://{}/t.db?mode=rwc", path.display());
        Worker::start_env(
            &path,
            &["--database-url", &db],
            &[("TESSERA_LOG_FORMAT", "json"), ("TESSERA_LOG", "info")],
        )
    })
    .await
    .unwrap();
    let pw = "the audited password";
    let mut b = Browser::new();
    b.register(w.addr, "audrey", pw).await;
    let wrong = Browser::new()
        .post(
            w.addr,
            "/auth/login",
            json!({"username": "audrey", "password": "not the password"}),
        )
        .await;
    assert_eq!(wrong.status, 401);
    let ok = b
        .post(
            w.addr,
            "/auth/login",
            json!({"username": "audrey", "password": pw}),
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let setup = b.post(w.addr, "/auth/totp/setup", json!({})).await;
    let secret = setup.body["secret"].as_str().unwrap().to_owned();
    let now = fresh_window().await;
    let bad = b
        .post(w.addr, "/auth/totp/confirm", json!({"code": "000000"}))
        .await;
    assert_eq!(bad.status, 401, "{}", bad.body);
    let on = b
        .post(
            w.addr,
            "/auth/totp/confirm",
            json!({"code": pyotp(&secret, now)}),
        )
        .await;
    assert_eq!(on.status, 200, "{}", on.body);
    assert_eq!(b.post(w.addr, "/auth/logout", json!({})).await.status, 204);
    let metrics = b.get(w.addr, "/metrics").await.text;
    let log_path = w.log.clone();
    drop(w);

    let log = std::fs::read_to_string(&log_path).unwrap();
    let events = audit_events(&log);
    let seen: Vec<(&str, &str, &str)> = events
        .iter()
        .map(|(e, o, u, _)| (e.as_str(), o.as_str(), u.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("register", "success", "audrey"),
            ("sign_in", "failure", "audrey"),
            ("sign_in", "success", "audrey"),
            ("second_factor", "failure", "audrey"),
            ("second_factor", "success", "audrey"),
            ("totp_enabled", "success", "audrey"),
            ("session_ended", "success", "audrey"),
        ],
        "{log}"
    );
    for (_, _, _, line) in &events {
        let span = &line["span"];
        assert!(
            span["request_id"].as_str().is_some_and(|id| id.len() >= 32),
            "{line}"
        );
        assert_eq!(span["client_ip"], "127.0.0.1", "{line}");
    }
    for secret_text in [pw, "not the password", secret.as_str()] {
        assert!(
            !log.contains(secret_text),
            "the log shows a secret: {secret_text}"
        );
    }
    for counted in [
        r#"tessera_audit_events_total{event="sign_in",outcome="failure"} 1"#,
        r#"tessera_audit_events_total{event="sign_in",outcome="success"} 1"#,
        r#"tessera_audit_events_total{event="totp_enabled",outcome="success"} 1"#,
    ] {
        assert!(metrics.contains(counted), "{counted} not in\n{metrics}");
    }
}

/// A worker on a shared store without TESSERA_PUBLIC_URL says so at start; on the embedded
/// default, or with the setting, it does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_store_without_a_public_url_is_warned_about() {
    let db = TestDb::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let start = |extra: &'static [&'static str]| {
        let (url, path) = (db.url.clone(), dir.path().to_owned());
        tokio::task::spawn_blocking(move || {
            let mut args = vec!["--database-url", url.as_str(), "--migrate"];
            args.extend_from_slice(extra);
            let w = Worker::start(&path, &args);
            let log = std::fs::read_to_string(&w.log).unwrap();
            drop(w);
            log
        })
    };
    let warned = start(&[]).await.unwrap();
    assert!(warned.contains("TESSERA_PUBLIC_URL is not set"), "{warned}");
    let set = start(&["--public-url", "https://auth.example.com"])
        .await
        .unwrap();
    assert!(!set.contains("TESSERA_PUBLIC_URL is not set"), "{set}");
    let d = tempfile::tempdir().unwrap();
    let path = d.path().to_owned();
    let sqlite = tokio::task::spawn_blocking(move || {
        let w = Worker::on_sqlite(&path, &[]);
        std::fs::read_to_string(&w.log).unwrap()
    })
    .await
    .unwrap();
    assert!(
        !sqlite.contains("TESSERA_PUBLIC_URL is not set"),
        "{sqlite}"
    );
    db.finish().await;
}

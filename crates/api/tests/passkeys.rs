//! Passkey ceremonies through the router: the rows an anonymous address can make the
//! store keep, the same answer for any name, and passkeys off when the public URL names
//! no host. (The ceremonies themselves, with a real authenticator, are in tests/it.)

mod common;

use axum::http::StatusCode;
use common::*;
use serde_json::json;

async fn start(state: &tessera_api::AppState, ip: &str) -> Answer {
    at(state, ip)
        .post("/auth/passkeys/login/start", json!({}))
        .await
}

#[tokio::test]
async fn an_address_keeps_at_most_fifty_ceremonies() {
    let (state, db, _o) = app_state(|_| {}).await;
    for _ in 0..50 {
        let r = start(&state, "198.51.100.7").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert!(r.body["publicKey"]["challenge"].is_string(), "{}", r.body);
    }
    let over = start(&state, "198.51.100.7").await;
    problem(&over, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    assert!(over.headers.contains_key("retry-after"));
    assert_eq!(db.count("auth_ephemeral_tokens").await, 50, "one row each");
    let other = start(&state, "198.51.100.8").await;
    assert_eq!(
        other.status,
        StatusCode::OK,
        "another address has its own budget"
    );
}

#[tokio::test]
async fn a_name_is_answered_alike_whether_it_exists_or_not() {
    let (state, _db, _o) = app_state(|_| {}).await;
    register(&state, "pam", "correct horse").await;
    let ask = |name: &'static str| {
        let state = state.clone();
        async move {
            let r = browser(&state)
                .post("/auth/passkeys/login/start", json!({ "username": name }))
                .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
            r.body["publicKey"]["allowCredentials"].clone()
        }
    };
    let (pam, nobody) = (ask("pam").await, ask("nobody").await);
    assert_eq!(pam.as_array().unwrap().len(), 1, "{pam}");
    assert_eq!(nobody.as_array().unwrap().len(), 1, "{nobody}");
    assert_ne!(pam, nobody);
    assert_eq!(ask("PAM").await, pam, "one decoy per name, in any spelling");
}

#[tokio::test]
async fn a_public_url_without_a_host_name_turns_passkeys_off() {
    let (state, _db, _o) = app_state(|s| s.public_url = "http://127.0.0.1:8080".into()).await;
    let r = browser(&state)
        .post("/auth/passkeys/login/start", json!({}))
        .await;
    problem(&r, StatusCode::CONFLICT, "passkeys_unavailable");
    let r = browser(&state)
        .post("/auth/passkeys/login/finish", json!({"credential": {}}))
        .await;
    problem(&r, StatusCode::CONFLICT, "passkeys_unavailable");
}

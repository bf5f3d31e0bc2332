//! Sessions as others see them, through the router: the forward-auth check a proxy makes,
//! the introspection a backend asks for, and the sessions a person lists and ends.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::*;
use serde_json::json;
use tessera_api::ApiKeys;
use tessera_auth::factors::codes as mfa;

const PW: &str = "correct horse";

/// `GET /auth/verify` with `cookie` and a proxy's headers.
async fn verify(
    state: &tessera_api::AppState,
    query: &str,
    cookie: Option<&str>,
    uri: Option<&str>,
) -> Answer {
    let mut req = Request::get(format!("/auth/verify{query}"));
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, c);
    }
    if let Some(u) = uri {
        req = req.header("x-forwarded-uri", u);
    }
    send(state, req.body(Body::empty()).unwrap()).await
}

#[tokio::test]
async fn a_proxy_learns_who_is_signed_in_or_sends_them_to_sign_in() {
    let (state, _db, _o) = app_state(|_| {}).await;
    let none = verify(&state, "", None, None).await;
    problem(&none, StatusCode::UNAUTHORIZED, "unauthenticated");
    let to_login = verify(&state, "?redirect=1", None, Some("/app/page?x=1&y=%C3%A9")).await;
    assert_eq!(to_login.status, StatusCode::FOUND);
    assert_eq!(
        to_login.headers[header::LOCATION],
        "/login?return_to=/app/page%3Fx%3D1%26y%3D%25C3%25A9"
    );
    for foreign in ["https://evil.example/", "//evil.example/x"] {
        let a = verify(&state, "?redirect=1", None, Some(foreign)).await;
        problem(&a, StatusCode::UNAUTHORIZED, "unauthenticated");
    }

    register(&state, "vic", PW).await;
    let session = sign_in(&state, "vic", PW).await;
    let ok = verify(&state, "?redirect=1", Some(&session), Some("/app")).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    assert_eq!(ok.headers["remote-user"], "vic");
    assert_eq!(ok.headers["remote-email"], "vic@example.com");
    assert_eq!(ok.headers["remote-second-factor"], "false");
    assert_eq!(ok.body, serde_json::Value::Null, "an empty body");

    // Signed in with TOTP: the session says so.
    let (secret, step, _) = confirm_totp(&state, &session).await;
    let (pending, challenge) = {
        let r = at(&state, "203.0.113.3").login("vic", PW).await;
        let c = cookie_value(&set_cookie(&r, "tessera_challenge").unwrap());
        (r.body["mfa_token"].as_str().unwrap().to_owned(), c)
    };
    let r = at(&state, "203.0.113.3")
        .with(&challenge)
        .verify(&pending, &mfa::code_at(&secret, step + 1))
        .await;
    r.ok();
    let strong = cookie_value(&set_cookie(&r, "tessera_session").unwrap());
    let ok = verify(&state, "", Some(&strong), None).await;
    assert_eq!(ok.headers["remote-second-factor"], "true");
}

#[tokio::test]
async fn a_person_sees_their_sessions_and_ends_them() {
    let (state, _db, _o) = app_state(|_| {}).await;
    register(&state, "sam", PW).await;
    register(&state, "other", PW).await;
    let here = sign_in(&state, "sam", PW).await;
    let there = sign_in(&state, "sam", PW).await;
    let third = sign_in(&state, "sam", PW).await;
    let theirs = sign_in(&state, "other", PW).await;
    let me = browser(&state).with(&here);

    let listed = me.get("/auth/sessions").await;
    listed.ok();
    let items = listed.body.as_array().unwrap().clone();
    assert_eq!(items.len(), 3, "{}", listed.body);
    assert_eq!(items.iter().filter(|s| s["current"] == true).count(), 1);
    assert!(items.iter().all(|s| s["last_seen_at"].is_null()));
    for s in &items {
        let id = s["id"].as_str().unwrap();
        assert!(
            !here.contains(id) && !there.contains(id) && id.len() >= 20,
            "{id}"
        );
    }
    // Seen by a proxy: written once, not again within the minute.
    verify(&state, "", Some(&here), None).await.ok();
    let seen = me.get("/auth/sessions").await.body;
    let current = |v: &serde_json::Value| {
        v.as_array()
            .unwrap()
            .iter()
            .find(|s| s["current"] == true)
            .unwrap()
            .clone()
    };
    let first_seen = current(&seen)["last_seen_at"].clone();
    assert!(first_seen.is_string(), "{seen}");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    verify(&state, "", Some(&here), None).await.ok();
    assert_eq!(
        current(&me.get("/auth/sessions").await.body)["last_seen_at"],
        first_seen
    );

    // Ending one: that browser is signed out; another person's sessions cannot be named.
    let other_id = items.iter().find(|s| s["current"] == false).unwrap()["id"].clone();
    let ended = me
        .post("/auth/sessions/revoke", json!({"id": other_id}))
        .await;
    assert_eq!(ended.status, StatusCode::NO_CONTENT, "{}", ended.body);
    let theirs_id = browser(&state)
        .with(&theirs)
        .get("/auth/sessions")
        .await
        .body[0]["id"]
        .clone();
    let not_mine = me
        .post("/auth/sessions/revoke", json!({"id": theirs_id}))
        .await;
    problem(
        &not_mine,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    browser(&state).with(&theirs).get("/auth/me").await.ok();
    let ended_one = browser(&state).with(&there).get("/auth/me").await;
    let ended_one = if ended_one.status == StatusCode::OK {
        &third
    } else {
        &there
    };
    problem(
        &browser(&state).with(ended_one).get("/auth/me").await,
        StatusCode::UNAUTHORIZED,
        "not_authenticated",
    );
    let others = me.post("/auth/sessions/revoke-others", json!({})).await;
    others.ok();
    assert_eq!(others.body, json!({"revoked": 1}));
    me.get("/auth/me").await.ok();
    for gone in [&there, &third] {
        let a = browser(&state).with(gone).get("/auth/me").await;
        problem(&a, StatusCode::UNAUTHORIZED, "not_authenticated");
    }
}

#[tokio::test]
async fn a_backend_introspects_a_session_with_its_service_key() {
    let (mut state, _db, _o) = app_state(|_| {}).await;
    state.api_keys = ApiKeys::parse("backend-key");
    register(&state, "ivy", PW).await;
    let session = sign_in(&state, "ivy", PW).await;
    let value = session.split_once('=').unwrap().1.to_owned();
    let ask = |body: serde_json::Value, key: &'static str| {
        Request::post("/v1/sessions/introspect")
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::AUTHORIZATION, format!("Bearer {key}"))
            .body(Body::from(body.to_string()))
            .unwrap()
    };
    let live = send(&state, ask(json!({"session": value}), "backend-key")).await;
    live.ok();
    assert_eq!(live.body["active"], true);
    assert_eq!(live.body["username"], "ivy");
    assert_eq!(live.body["email"], "ivy@example.com");
    assert_eq!(live.body["second_factor"], false);
    assert!(live.body["session_id"].is_string() && live.body["expires_at"].is_string());
    let unknown = send(
        &state,
        ask(json!({"session": "tsr_se_unknown"}), "backend-key"),
    )
    .await;
    unknown.ok();
    assert_eq!(unknown.body, json!({"active": false}));
    let no_key = send(&state, ask(json!({"session": value}), "wrong")).await;
    problem(&no_key, StatusCode::UNAUTHORIZED, "unauthorized");
}

/// Checks of one session that arrive together share lookups; still, no check that starts
/// after the sign-out has been answered is told the person is signed in.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn checks_of_one_session_at_once_never_outlive_its_end() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};
    use std::time::{Duration, Instant};
    let (state, _db, _o) = app_state(|_| {}).await;
    register(&state, "ana", PW).await;
    let session = sign_in(&state, "ana", PW).await;
    let ended = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let (live, gone) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let checkers: Vec<_> = (0..32)
        .map(|_| {
            let (state, session) = (state.clone(), session.clone());
            let (ended, stop) = (ended.clone(), stop.clone());
            let (live, gone) = (live.clone(), gone.clone());
            tokio::spawn(async move {
                while !stop.load(SeqCst) {
                    let after_end = ended.load(SeqCst);
                    let a = verify(&state, "", Some(&session), None).await;
                    match a.status {
                        StatusCode::OK => {
                            assert!(!after_end, "a check begun after the sign-out saw it live");
                            live.fetch_add(1, SeqCst);
                        }
                        StatusCode::UNAUTHORIZED => {
                            gone.fetch_add(1, SeqCst);
                        }
                        s => panic!("{s}: {}", a.body),
                    }
                }
            })
        })
        .collect();
    // However slow the machine: many checks live, the sign-out, many checks after it.
    let until = |count: Arc<AtomicU32>, above: u32| async move {
        let deadline = Instant::now() + Duration::from_secs(60);
        while count.load(SeqCst) <= above {
            assert!(Instant::now() < deadline, "the checks did not go on");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    until(live.clone(), 32).await;
    let out = browser(&state)
        .with(&session)
        .post("/auth/logout", json!({}))
        .await;
    assert!(out.status.is_success(), "{}", out.body);
    ended.store(true, SeqCst);
    until(gone.clone(), gone.load(SeqCst) + 32).await;
    stop.store(true, SeqCst);
    for c in checkers {
        c.await.unwrap();
    }
    assert!(
        live.load(SeqCst) > 32,
        "checks saw the session live before its end"
    );
}

/// A browser holding two session cookies (one left by an older cookie domain, say) is the
/// same person to forward auth as to `/auth/me`: the last one sent.
#[tokio::test]
async fn forward_auth_reads_a_doubled_cookie_as_the_other_routes_do() {
    let (state, _db, _o) = app_state(|_| {}).await;
    register(&state, "first", PW).await;
    register(&state, "second", PW).await;
    let first = sign_in(&state, "first", PW).await;
    let second = sign_in(&state, "second", PW).await;
    let both = format!("{first}; {second}");
    let checked = verify(&state, "", Some(&both), None).await;
    assert_eq!(checked.status, StatusCode::OK, "{}", checked.body);
    let me = browser(&state).with(&both).get("/auth/me").await;
    assert_eq!(me.body["username"], "second", "{}", me.body);
    assert_eq!(checked.headers["remote-user"], "second");
}

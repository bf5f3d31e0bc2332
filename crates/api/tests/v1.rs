//! `/v1` driven through the router without a socket, on a fresh SQLite database per test:
//! every route's happy path and its error cases.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::{Answer, problem, send};
use serde_json::{Value, json};
use std::sync::Arc;
use tessera_api::{ApiKeys, AppState, router};
use tessera_limiter::{Limiter, SqlLimiter};
use tessera_store::{SqlTokenStore, Tokens};
use tessera_testkit::TestDb;
use tower::ServiceExt;

const KEY: &str = "test-service-key";

async fn state(keys: &str) -> (AppState, TestDb) {
    let db = TestDb::sqlite_file().await;
    let tokens = Tokens::new(Arc::new(SqlTokenStore::new(db.db.clone()).unwrap()));
    let mut policies = tessera_auth::throttle::default_policies();
    policies.apply_overrides("demo=3/1m").unwrap();
    let limiter = Limiter::new(Arc::new(SqlLimiter::new(db.db.clone()).unwrap()), policies);
    (
        AppState::new(db.db.clone(), tokens, limiter, ApiKeys::parse(keys)),
        db,
    )
}

/// A POST to `path` with `auth` as the Authorization header.
async fn call(
    state: &AppState,
    path: &str,
    auth: Option<&str>,
    content_type: &str,
    body: Vec<u8>,
) -> Answer {
    let mut req = Request::post(path).header(header::CONTENT_TYPE, content_type);
    if let Some(a) = auth {
        req = req.header(header::AUTHORIZATION, a);
    }
    send(state, req.body(Body::from(body)).unwrap()).await
}

async fn post(state: &AppState, path: &str, body: Value) -> Answer {
    call(
        state,
        path,
        Some(&format!("Bearer {KEY}")),
        "application/json",
        body.to_string().into_bytes(),
    )
    .await
}

/// A valid body for each route, and a field each route refuses.
fn routes() -> Vec<(&'static str, Value, Value)> {
    vec![
        (
            "/v1/tokens",
            json!({"kind": "password_reset", "username": "ann"}),
            json!({"kind": "pre_auth"}),
        ),
        (
            "/v1/tokens/consume",
            json!({"kind": "download", "token": "tsr_dl_x"}),
            json!({"kind": "download"}),
        ),
        (
            "/v1/tokens/peek",
            json!({"kind": "download", "token": "tsr_dl_x"}),
            json!({"token": "tsr_dl_x"}),
        ),
        (
            "/v1/tokens/revoke",
            json!({"kind": "download", "username": "ann"}),
            json!({"kind": "download"}),
        ),
        (
            "/v1/ratelimit/hit",
            json!({"event": "demo", "key": "k"}),
            json!({"event": "demo"}),
        ),
        (
            "/v1/ratelimit/peek",
            json!({"event": "demo", "key": "k"}),
            json!({"key": "k"}),
        ),
        (
            "/v1/ratelimit/reset",
            json!({"event": "demo", "key": "k"}),
            json!({"event": "demo"}),
        ),
        (
            "/v1/once",
            json!({"key": "k", "ttl_seconds": 60}),
            json!({"key": "k"}),
        ),
        (
            "/v1/sessions/introspect",
            json!({"session": "tsr_se_x"}),
            json!({}),
        ),
    ]
}

#[tokio::test]
async fn every_route_refuses_a_missing_or_wrong_key_and_touches_nothing() {
    let (s, db) = state(KEY).await;
    let mut paths: Vec<(&str, Value)> = routes().into_iter().map(|(p, ok, _)| (p, ok)).collect();
    paths.push(("/v1/admin/purge", json!({})));
    for (path, body) in paths {
        for auth in [
            None,
            Some("Bearer wrong-key"),
            Some("Basic dGVzdA=="),
            Some(KEY),
        ] {
            let a = call(
                &s,
                path,
                auth,
                "application/json",
                body.to_string().into_bytes(),
            )
            .await;
            problem(&a, StatusCode::UNAUTHORIZED, "unauthorized");
            assert_eq!(a.headers[header::WWW_AUTHENTICATE], "Bearer");
        }
    }
    let a = call(
        &s,
        "/v1/tokens",
        Some("Bearer nope"),
        "application/json",
        json!({"kind": "password_reset", "username": "ann"})
            .to_string()
            .into_bytes(),
    )
    .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    let n = db.count("auth_ephemeral_tokens").await;
    assert_eq!(n, 0, "an unauthorised request stores nothing");
    db.finish().await;
}

#[tokio::test]
async fn with_no_key_configured_v1_is_closed_and_says_how_to_open_it() {
    let (s, db) = state("").await;
    let a = post(
        &s,
        "/v1/tokens",
        json!({"kind": "password_reset", "username": "ann"}),
    )
    .await;
    problem(&a, StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(
        a.body["detail"]
            .as_str()
            .unwrap()
            .contains("TESSERA_API_KEYS")
    );
    db.finish().await;
}

#[tokio::test]
async fn every_route_answers_bad_bodies_with_problems() {
    let (s, db) = state(KEY).await;
    let auth = format!("Bearer {KEY}");
    for (path, ok, missing) in routes() {
        // Malformed JSON.
        let a = call(
            &s,
            path,
            Some(&auth),
            "application/json",
            b"{\"kind\": ".to_vec(),
        )
        .await;
        problem(&a, StatusCode::BAD_REQUEST, "malformed_json");
        // Not JSON at all.
        let a = call(
            &s,
            path,
            Some(&auth),
            "application/x-www-form-urlencoded",
            b"kind=x".to_vec(),
        )
        .await;
        problem(
            &a,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        );
        // An unknown field, named.
        let mut extra = ok.clone();
        extra["surprise"] = json!(1);
        let a = post(&s, path, extra).await;
        problem(&a, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert_eq!(a.body["field"], "surprise", "{path}");
        // A missing field, named.
        let a = post(&s, path, missing).await;
        problem(&a, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert!(a.body["field"].is_string(), "{path}: {}", a.body);
        // A wrong type, named.
        let mut wrong = ok.clone();
        let first = wrong.as_object().unwrap().keys().next().unwrap().clone();
        wrong[&first] = json!([1, 2]);
        let a = post(&s, path, wrong).await;
        problem(&a, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert_eq!(a.body["field"], first.as_str(), "{path}");
        // Over the size limit.
        let mut big = ok.clone();
        big["pad"] = json!("x".repeat(70 * 1024));
        let a = post(&s, path, big).await;
        problem(&a, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
    }
    db.finish().await;
}

/// What a new user sends by mistake gets an answer that says what to fix: every offending
/// field at once, no Rust type names, problems for wrong methods too.
#[tokio::test]
async fn mistakes_get_answers_that_say_what_to_fix() {
    let (s, db) = state(KEY).await;
    // The scheme's name is case-insensitive.
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let a = call(
            &s,
            "/v1/ratelimit/peek",
            Some(&format!("{scheme} {KEY}")),
            "application/json",
            json!({"event": "demo", "key": "k"})
                .to_string()
                .into_bytes(),
        )
        .await;
        a.ok();
    }
    // Not an object: said so, without the request type's Rust name.
    for body in [json!([]), json!("x"), json!(3), Value::Null] {
        let a = post(&s, "/v1/tokens", body.clone()).await;
        problem(&a, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert_eq!(a.body["field"], ".", "{body}");
        assert_eq!(a.body["detail"], "expected a JSON object", "{body}");
        let text = a.body.to_string();
        assert!(
            !text.contains("Request") && !text.contains("struct"),
            "{text}"
        );
    }
    // Every offending field, the first also in `field`.
    let a = post(
        &s,
        "/v1/ratelimit/hit",
        json!({"event": 5, "surprise": true, "cost": "three"}),
    )
    .await;
    problem(&a, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    let fields: Vec<&str> = a.body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors array: {}", a.body))
        .iter()
        .map(|e| {
            assert!(e["detail"].as_str().is_some_and(|d| !d.is_empty()), "{e}");
            e["field"].as_str().unwrap()
        })
        .collect();
    assert_eq!(a.body["field"], fields[0]);
    let mut sorted = fields.clone();
    sorted.sort();
    assert_eq!(sorted, ["cost", "event", "key", "surprise"], "{}", a.body);
    // One offending field: an errors array of one.
    let a = post(&s, "/v1/tokens", json!({"kind": "pre_auth"})).await;
    assert_eq!(
        a.body["errors"],
        json!([{"field": "username", "detail": a.body["detail"]}])
    );
    // A wrong method: a problem, with the methods the route answers.
    let a = send(
        &s,
        Request::get("/v1/tokens/consume")
            .header(header::AUTHORIZATION, format!("Bearer {KEY}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    problem(&a, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    assert_eq!(a.headers[header::ALLOW], "POST");
    let a = send(
        &s,
        Request::delete("/auth/login").body(Body::empty()).unwrap(),
    )
    .await;
    problem(&a, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    db.finish().await;
}

/// The seed apps give `provider_id` as an integer: it is taken, and answered as given.
#[tokio::test]
async fn provider_ids_are_answered_in_the_type_they_were_given() {
    let (s, db) = state(KEY).await;
    for given in [json!(42), json!("42"), json!("corp"), json!(-7)] {
        let body =
            json!({"kind": "oidc_state", "provider_id": given, "nonce": "n", "code_verifier": "v"});
        let issued = post(&s, "/v1/tokens", body).await;
        assert_eq!(issued.status, StatusCode::CREATED, "{}", issued.body);
        let token = issued.body["token"].clone();
        let consumed = post(
            &s,
            "/v1/tokens/consume",
            json!({"kind": "oidc_state", "token": token}),
        )
        .await;
        consumed.ok();
        assert_eq!(consumed.body["provider_id"], given);
    }
    for wrong in [json!(4.2), json!(true), json!({"id": 1})] {
        let body =
            json!({"kind": "oidc_state", "provider_id": wrong, "nonce": "n", "code_verifier": "v"});
        let a = post(&s, "/v1/tokens", body).await;
        problem(&a, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert_eq!(a.body["field"], "provider_id");
        assert!(
            !a.body["detail"].as_str().unwrap().contains("ProviderId"),
            "{}",
            a.body
        );
    }
    db.finish().await;
}

/// An app's own event that nobody configured is limited at 10 per 15 minutes.
#[tokio::test]
async fn an_unconfigured_event_takes_the_default_policy() {
    let (s, db) = state(KEY).await;
    let hit = json!({"event": "an_apps_own_event", "key": "k"});
    let first = post(&s, "/v1/ratelimit/hit", hit.clone()).await;
    first.ok();
    assert_eq!(first.body["limit"], 10, "{}", first.body);
    let policy = first.headers["ratelimit-policy"].to_str().unwrap();
    assert_eq!(policy, "\"an_apps_own_event\";q=10;w=900");
    for _ in 0..9 {
        post(&s, "/v1/ratelimit/hit", hit.clone()).await.ok();
    }
    let over = post(&s, "/v1/ratelimit/hit", hit).await;
    assert_eq!(over.body["allowed"], false, "{}", over.body);
    db.finish().await;
}

/// `/v1/once`: the first claim of a key wins until it expires, with its bounds checked.
#[tokio::test]
async fn once_claims_a_key_once() {
    let (s, db) = state(KEY).await;
    let claim = |key: &str, ttl: u64| json!({"key": key, "ttl_seconds": ttl});
    let first = post(&s, "/v1/once", claim("ann:59:123456", 90)).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    assert_eq!(first.body, json!({"claimed": true}));
    let again = post(&s, "/v1/once", claim("ann:59:123456", 90)).await;
    problem(&again, StatusCode::CONFLICT, "already_claimed");
    let other = post(&s, "/v1/once", claim("ann:60:123456", 90)).await;
    assert_eq!(other.status, StatusCode::CREATED, "{}", other.body);
    for (bad, field) in [
        (claim("", 90), "key"),
        (claim(&"k".repeat(513), 90), "key"),
        (claim("k", 0), "ttl_seconds"),
    ] {
        let a = post(&s, "/v1/once", bad).await;
        problem(&a, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert_eq!(a.body["field"], field);
    }
    db.finish().await;
}

/// An application's own kinds (`x_NAME`) carry a username, a challenge and data, and are
/// kept apart from each other; anything else is refused naming the field.
#[tokio::test]
async fn custom_kinds_carry_username_challenge_and_data() {
    let (s, db) = state(KEY).await;
    let issued = post(
        &s,
        "/v1/tokens",
        json!({"kind": "x_invite", "username": "ann", "challenge": "c1",
               "data": {"team": 7}, "ttl_seconds": 60}),
    )
    .await;
    assert_eq!(issued.status, StatusCode::CREATED, "{}", issued.body);
    assert_eq!(issued.body["kind"], "x_invite");
    let token = issued.body["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("tsr_x_"), "{token}");
    let take =
        |kind: &str, challenge: &str| json!({"kind": kind, "token": token, "challenge": challenge});
    for refused in [
        take("x_other", "c1"),
        take("x_invite", "c2"),
        take("pre_auth", "c1"),
    ] {
        let a = post(&s, "/v1/tokens/peek", refused).await;
        problem(&a, StatusCode::NOT_FOUND, "invalid_or_expired_token");
    }
    let peeked = post(&s, "/v1/tokens/peek", take("x_invite", "c1")).await;
    peeked.ok();
    assert_eq!(peeked.body["username"], "ann");
    assert_eq!(peeked.body["data"], json!({"team": 7}));
    let revoked = post(
        &s,
        "/v1/tokens/revoke",
        json!({"kind": "x_other", "username": "ann"}),
    )
    .await;
    assert_eq!(revoked.body["revoked"], 0, "{}", revoked.body);
    post(&s, "/v1/tokens/consume", take("x_invite", "c1"))
        .await
        .ok();
    let again = post(&s, "/v1/tokens/consume", take("x_invite", "c1")).await;
    problem(&again, StatusCode::NOT_FOUND, "invalid_or_expired_token");

    // No username: the token alone finds it.
    let bare = post(&s, "/v1/tokens", json!({"kind": "x_a"})).await;
    assert_eq!(bare.status, StatusCode::CREATED, "{}", bare.body);
    let consumed = post(
        &s,
        "/v1/tokens/consume",
        json!({"kind": "x_a", "token": bare.body["token"]}),
    )
    .await;
    consumed.ok();
    assert_eq!(consumed.body["username"], Value::Null);

    let long = format!("x_{}", "z".repeat(33));
    for (body, field) in [
        (json!({"kind": "x_"}), "kind"),
        (json!({"kind": "x_Invite"}), "kind"),
        (json!({"kind": long}), "kind"),
        (json!({"kind": "y_invite"}), "kind"),
        (json!({"kind": "x_invite", "nonce": "n"}), "nonce"),
        (json!({"kind": "x_invite", "provider_id": 1}), "provider_id"),
        (json!({"kind": "x_invite", "code_hash": "h"}), "code_hash"),
        (json!({"kind": "x_invite", "username": ""}), "username"),
    ] {
        let a = post(&s, "/v1/tokens", body.clone()).await;
        problem(&a, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert_eq!(a.body["field"], field, "{body}: {}", a.body);
    }
    db.finish().await;
}

#[tokio::test]
async fn issue_requires_exactly_the_fields_of_the_kind() {
    let (s, db) = state(KEY).await;
    let cases = [
        (json!({"kind": "pre_auth"}), "username"),
        (
            json!({"kind": "oidc_state", "provider_id": "1", "nonce": "n"}),
            "code_verifier",
        ),
        (
            json!({"kind": "oidc_state", "provider_id": "1", "code_verifier": "v"}),
            "nonce",
        ),
        (
            json!({"kind": "oidc_state", "nonce": "n", "code_verifier": "v"}),
            "provider_id",
        ),
        (
            json!({"kind": "email_otp_setup", "username": "ann"}),
            "code_hash",
        ),
        (json!({"kind": "download", "username": "ann"}), "data"),
        (
            json!({"kind": "mfa_enforce", "username": "ann"}),
            "challenge",
        ),
        (
            json!({"kind": "password_reset", "username": "ann", "nonce": "n"}),
            "nonce",
        ),
        (
            json!({"kind": "password_reset", "username": ""}),
            "username",
        ),
        (
            json!({"kind": "password_reset", "username": "ann", "ttl_seconds": 0}),
            "ttl_seconds",
        ),
        (json!({"kind": "no_such_kind", "username": "ann"}), "kind"),
    ];
    for (body, field) in cases {
        let a = post(&s, "/v1/tokens", body.clone()).await;
        problem(&a, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert_eq!(a.body["field"], field, "{body}");
    }
    db.finish().await;
}

#[tokio::test]
async fn tokens_issue_consume_peek_revoke() {
    let (s, db) = state(KEY).await;
    let a = post(
        &s,
        "/v1/tokens",
        json!({
            "kind": "oidc_state", "provider_id": "7", "nonce": "n1", "code_verifier": "v1",
            "challenge": "cookie", "data": {"return_to": "/app"}, "ttl_seconds": 60
        }),
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let token = a.body["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("tsr_os_"));
    assert_eq!(a.body["kind"], "oidc_state");

    let wrong = post(
        &s,
        "/v1/tokens/peek",
        json!({"kind": "oidc_state", "token": token, "challenge": "other"}),
    )
    .await;
    problem(&wrong, StatusCode::NOT_FOUND, "invalid_or_expired_token");
    let peeked = post(
        &s,
        "/v1/tokens/peek",
        json!({"kind": "oidc_state", "token": token, "challenge": "cookie"}),
    )
    .await;
    assert_eq!(peeked.status, StatusCode::OK);
    assert_eq!(peeked.body["code_verifier"], "v1");
    let got = post(
        &s,
        "/v1/tokens/consume",
        json!({"kind": "oidc_state", "token": token, "challenge": "cookie"}),
    )
    .await;
    got.ok();
    assert_eq!(got.body["provider_id"], "7");
    assert_eq!(got.body["nonce"], "n1");
    assert_eq!(got.body["data"]["return_to"], "/app");
    let again = post(
        &s,
        "/v1/tokens/consume",
        json!({"kind": "oidc_state", "token": token, "challenge": "cookie"}),
    )
    .await;
    problem(&again, StatusCode::NOT_FOUND, "invalid_or_expired_token");

    for _ in 0..2 {
        let a = post(
            &s,
            "/v1/tokens",
            json!({"kind": "password_reset", "username": "ann"}),
        )
        .await;
        assert_eq!(a.status, StatusCode::CREATED);
    }
    let r = post(
        &s,
        "/v1/tokens/revoke",
        json!({"kind": "password_reset", "username": "ann"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["revoked"], 2);
    db.finish().await;
}

#[tokio::test]
async fn ratelimit_hit_peek_reset_with_headers() {
    let (s, db) = state(KEY).await;
    for remaining in [2, 1, 0] {
        let a = post(
            &s,
            "/v1/ratelimit/hit",
            json!({"event": "demo", "key": "ip-1"}),
        )
        .await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.body["allowed"], true);
        assert_eq!(a.body["remaining"], remaining);
        assert_eq!(a.headers["ratelimit-policy"], "\"demo\";q=3;w=60");
        assert!(a.headers.get("retry-after").is_none());
    }
    let denied = post(
        &s,
        "/v1/ratelimit/hit",
        json!({"event": "demo", "key": "ip-1"}),
    )
    .await;
    assert_eq!(
        denied.status,
        StatusCode::OK,
        "a denial is an answer, not an error"
    );
    assert_eq!(denied.body["allowed"], false);
    assert!(denied.body["retry_after_ms"].as_u64().unwrap() > 0);
    let retry: u64 = denied.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry));
    assert!(
        denied.headers["ratelimit"]
            .to_str()
            .unwrap()
            .starts_with("\"demo\";r=0;t=")
    );

    let peek = post(
        &s,
        "/v1/ratelimit/peek",
        json!({"event": "demo", "key": "ip-1"}),
    )
    .await;
    assert_eq!(peek.body["allowed"], false);
    assert_eq!(peek.body["remaining"], 0);
    let reset = post(
        &s,
        "/v1/ratelimit/reset",
        json!({"event": "demo", "key": "ip-1"}),
    )
    .await;
    assert_eq!(reset.status, StatusCode::NO_CONTENT);
    let peek = post(
        &s,
        "/v1/ratelimit/peek",
        json!({"event": "demo", "key": "ip-1"}),
    )
    .await;
    assert_eq!(peek.body["remaining"], 3);

    // A name that is not a valid event is refused (an unconfigured but valid one takes
    // the default policy: see an_unconfigured_event_takes_the_default_policy).
    let unknown = post(
        &s,
        "/v1/ratelimit/hit",
        json!({"event": "not a name!", "key": "k"}),
    )
    .await;
    problem(
        &unknown,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    assert_eq!(unknown.body["field"], "event");
    let cost = post(
        &s,
        "/v1/ratelimit/hit",
        json!({"event": "demo", "key": "k", "cost": 4}),
    )
    .await;
    assert_eq!(cost.body["field"], "cost");
    let key = post(&s, "/v1/ratelimit/hit", json!({"event": "demo", "key": ""})).await;
    assert_eq!(key.body["field"], "key");
    db.finish().await;
}

#[tokio::test]
async fn purge_and_unknown_routes() {
    let (s, db) = state(KEY).await;
    let a = post(&s, "/v1/admin/purge", json!({})).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body, json!({"tokens": 0, "events": 0, "login_rows": 0}));
    let a = post(&s, "/v1/nothing-here", json!({})).await;
    problem(&a, StatusCode::NOT_FOUND, "not_found");
    db.finish().await;
}

#[tokio::test]
async fn the_openapi_document_lists_every_route_and_validates() {
    let (s, db) = state(KEY).await;
    let res = router(s.clone())
        .oneshot(Request::get("/openapi.json").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    let doc: Value = serde_json::from_slice(&bytes).unwrap();
    let with_body = [
        "/v1/tokens",
        "/v1/tokens/consume",
        "/v1/tokens/peek",
        "/v1/tokens/revoke",
        "/v1/ratelimit/hit",
        "/v1/ratelimit/peek",
        "/v1/ratelimit/reset",
    ];
    for path in with_body.iter().chain(&["/v1/admin/purge"]) {
        let responses = &doc["paths"][path]["post"]["responses"];
        assert!(responses.is_object(), "{path} is documented");
        let mut codes = vec!["401", "503"];
        if with_body.contains(path) {
            codes.extend(["400", "413", "415", "422"]);
        }
        for code in codes {
            assert!(responses[code].is_object(), "{path} documents {code}");
        }
        assert_eq!(
            doc["paths"][path]["post"]["security"][0]["service_key"],
            json!([])
        );
    }
    for path in ["/healthz", "/readyz"] {
        assert!(doc["paths"][path]["get"].is_object(), "{path}");
    }
    // An independent validator of the OpenAPI specification.
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &bytes).unwrap();
    let out = std::process::Command::new("python3")
        .args(["-m", "openapi_spec_validator"])
        .arg(file.path())
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "openapi-spec-validator (pip install openapi-spec-validator) rejects the document: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let docs = router(s)
        .oneshot(Request::get("/docs/").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(docs.status(), StatusCode::OK, "the docs page is served");
    db.finish().await;
}

#[tokio::test]
async fn metrics_count_requests_tokens_and_decisions() {
    let (s, db) = state(KEY).await;
    let a = post(
        &s,
        "/v1/tokens",
        json!({"kind": "download", "username": "ann", "data": "/f"}),
    )
    .await;
    let token = a.body["token"].as_str().unwrap().to_owned();
    post(
        &s,
        "/v1/tokens/consume",
        json!({"kind": "download", "token": token}),
    )
    .await;
    post(
        &s,
        "/v1/tokens/consume",
        json!({"kind": "download", "token": token}),
    )
    .await;
    post(
        &s,
        "/v1/ratelimit/hit",
        json!({"event": "demo", "key": "m"}),
    )
    .await;
    let res = router(s)
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let text = String::from_utf8(
        axum::body::to_bytes(res.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    for needle in [
        "tessera_http_requests_total{",
        "route=\"/v1/tokens/consume\"",
        "tessera_http_request_duration_seconds_bucket{",
        "tessera_tokens_total{kind=\"download\",op=\"consume\",outcome=\"ok\"}",
        "tessera_tokens_total{kind=\"download\",op=\"consume\",outcome=\"invalid\"}",
        "tessera_ratelimit_decisions_total{event=\"demo\",allowed=\"true\"}",
    ] {
        assert!(text.contains(needle), "/metrics lacks {needle}:\n{text}");
    }
    db.finish().await;
}

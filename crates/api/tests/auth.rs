//! `/auth` driven through the router without a socket, on a fresh SQLite database per test:
//! the refusals a browser or an attacker meets (CSRF, media types, bad fields, cookies),
//! the secrets at rest, and the account rules that need no second process.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::*;
use serde_json::json;
use tessera_auth::factors::codes as mfa;

#[tokio::test]
async fn cross_site_and_non_json_requests_are_refused() {
    let (state, _db, _o) = app_state(|_| {}).await;
    register(&state, "alice", "correct horse").await;
    let body = json!({"username": "alice", "password": "correct horse"}).to_string();

    let evil = Request::post("/auth/login")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ORIGIN, "https://evil.example")
        .body(Body::from(body.clone()))
        .unwrap();
    problem(
        &send(&state, evil).await,
        StatusCode::FORBIDDEN,
        "csrf_rejected",
    );

    let form = Request::post("/auth/login")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from("username=alice&password=correct+horse"))
        .unwrap();
    problem(
        &send(&state, form).await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    // Routes without a body are held to it too: a cross-site form cannot log anyone out.
    let logout = Request::post("/auth/logout")
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::empty())
        .unwrap();
    problem(
        &send(&state, logout).await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );

    let same = Request::post("/auth/login")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ORIGIN, "https://auth.example.com")
        .body(Body::from(body))
        .unwrap();
    let ok = send(&state, same).await;
    ok.ok();
    let session = set_cookie(&ok, "tessera_session").expect("a session cookie");
    for attr in ["HttpOnly", "SameSite=Lax", "Secure", "Path=/"] {
        assert!(session.contains(attr), "{session} lacks {attr}");
    }
}

#[tokio::test]
async fn bad_bodies_name_their_field() {
    let (state, _db, _o) = app_state(|_| {}).await;
    for (path, body, field) in [
        (
            "/auth/register",
            json!({"username": "bob", "email": "bob@example.com", "password": "short"}),
            "password",
        ),
        (
            "/auth/register",
            json!({"username": "", "email": "bob@example.com", "password": "long enough"}),
            "username",
        ),
        (
            "/auth/register",
            json!({"username": "bob", "email": "nope", "password": "long enough"}),
            "email",
        ),
        ("/auth/login", json!({"username": "bob"}), "password"),
        (
            "/auth/login",
            json!({"username": "bob", "password": "x", "extra": 1}),
            "extra",
        ),
        (
            "/auth/2fa/verify",
            json!({"mfa_token": "x", "code": "1", "backup_code": "2"}),
            "code",
        ),
        (
            "/auth/password-reset/confirm",
            json!({"token": "x", "new_password": "short"}),
            "new_password",
        ),
        ("/auth/password-reset/request", json!({"email": 5}), "email"),
    ] {
        let r = json_post(&state, path, body, None).await;
        problem(&r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert_eq!(r.body["field"], field, "{path}: {}", r.body);
    }
    let malformed = send(
        &state,
        post("/auth/login").body(Body::from("{nope")).unwrap(),
    )
    .await;
    problem(&malformed, StatusCode::BAD_REQUEST, "malformed_json");
}

#[tokio::test]
async fn registration_can_be_switched_off_and_names_are_unique() {
    let (state, _db, _o) = app_state(|_| {}).await;
    register(&state, "carol", "correct horse").await;
    let again = browser(&state)
        .post(
            "/auth/register",
            json!({"username": "carol", "email": "c@example.com", "password": "another one"}),
        )
        .await;
    problem(&again, StatusCode::CONFLICT, "username_taken");

    let (closed, _db2, _o2) = app_state(|s| s.registration = false).await;
    let r = browser(&closed)
        .post(
            "/auth/register",
            json!({"username": "dave", "email": "d@example.com", "password": "long enough"}),
        )
        .await;
    problem(&r, StatusCode::FORBIDDEN, "registration_disabled");
}

#[tokio::test]
async fn sessions_and_second_factor_sessions_need_their_cookies() {
    let (state, _db, _o) = app_state(|_| {}).await;
    let me = send(
        &state,
        Request::get("/auth/me").body(Body::empty()).unwrap(),
    )
    .await;
    problem(&me, StatusCode::UNAUTHORIZED, "not_authenticated");
    let forged = send(
        &state,
        Request::get("/auth/me")
            .header(header::COOKIE, "tessera_session=tsr_se_forged")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    problem(&forged, StatusCode::UNAUTHORIZED, "not_authenticated");
    let r = browser(&state)
        .post(
            "/auth/2fa/verify",
            json!({"mfa_token": "tsr_pa_nope", "code": "123456"}),
        )
        .await;
    problem(&r, StatusCode::UNAUTHORIZED, "mfa_session_expired");
    let r = browser(&state)
        .post(
            "/auth/password-reset/confirm",
            json!({"token": "tsr_pr_nope", "new_password": "long enough"}),
        )
        .await;
    problem(&r, StatusCode::BAD_REQUEST, "invalid_or_expired_token");
}

/// Setup, a code, logout, and a login with the second factor, all on one router; then the
/// database holds the TOTP secret only encrypted and the backup codes only hashed.
#[tokio::test]
async fn totp_secrets_and_backup_codes_are_never_stored_in_clear() {
    let (state, db, _o) = app_state(|_| {}).await;
    register(&state, "erin", "correct horse").await;
    let login = browser(&state).login("erin", "correct horse").await;
    let session = cookie_value(&set_cookie(&login, "tessera_session").unwrap());
    let setup = json_post(&state, "/auth/totp/setup", json!({}), Some(&session)).await;
    setup.ok();
    let secret_b32 = setup.body["secret"].as_str().unwrap().to_owned();
    assert!(
        setup.body["otpauth_uri"]
            .as_str()
            .unwrap()
            .starts_with("otpauth://totp/Tessera:erin?")
    );
    let codes: Vec<String> = setup.body["backup_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    let status = send(
        &state,
        Request::get("/auth/totp/status")
            .header(header::COOKIE, &session)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(
        status.body,
        json!({"enabled": false, "backup_codes_remaining": 0})
    );

    let secret = base32_decode(&secret_b32);
    let confirming = with_setup_cookie(&session, &setup);
    let now = chrono::Utc::now().timestamp() as u64;
    let code = mfa::code_at(&secret, now / mfa::STEP);
    let wrong = browser(&state)
        .with(&confirming)
        .post("/auth/totp/confirm", json!({"code": "000000"}))
        .await;
    if code != "000000" {
        problem(&wrong, StatusCode::UNAUTHORIZED, "invalid_code");
    }
    let ok = browser(&state)
        .with(&confirming)
        .post("/auth/totp/confirm", json!({"code": code}))
        .await;
    ok.ok();
    let again = json_post(&state, "/auth/totp/setup", json!({}), Some(&session)).await;
    problem(&again, StatusCode::CONFLICT, "totp_already_enabled");

    // Disable needs the password and a fresh code; the one just used is spent.
    let replay = browser(&state)
        .with(&session)
        .post(
            "/auth/totp/disable",
            json!({"password": "correct horse", "code": code}),
        )
        .await;
    problem(&replay, StatusCode::UNAUTHORIZED, "invalid_code");

    // The database files themselves, write-ahead log included: what a stolen disk shows.
    let path = db
        .url
        .trim_start_matches("sqlite://")
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    let mut raw = std::fs::read(&path).unwrap();
    raw.extend(std::fs::read(format!("{path}-wal")).unwrap_or_default());
    let dump = String::from_utf8_lossy(&raw).into_owned();
    assert!(dump.contains("argon2id"));
    assert!(
        !dump.contains(&secret_b32),
        "the base32 secret is not stored"
    );
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    assert!(
        !dump.to_lowercase().contains(&hex),
        "the raw secret is not stored"
    );
    for c in &codes {
        assert!(
            !dump.contains(c.as_str()) && !dump.contains(&c.replace('-', "")),
            "{c}"
        );
    }
    assert!(
        !dump.contains(&session["tessera_session=".len()..]),
        "the session id is not stored"
    );
}

/// Disable and regenerate need the password and an unused code; regenerated codes replace
/// the old ones.
#[tokio::test]
async fn disable_and_regenerate_need_the_password_and_a_fresh_code() {
    let (state, _db, _o) = app_state(|_| {}).await;
    register(&state, "gina", "correct horse").await;
    let session = sign_in(&state, "gina", "correct horse").await;
    let (secret, step, old_codes) = confirm_totp(&state, &session).await;
    let at = |s: u64| mfa::code_at(&secret, s);

    let bad_pw = browser(&state)
        .with(&session)
        .post(
            "/auth/totp/backup-codes/regenerate",
            json!({"password": "wrong horse", "code": at(step + 1)}),
        )
        .await;
    problem(&bad_pw, StatusCode::UNAUTHORIZED, "invalid_credentials");
    let regen = browser(&state)
        .with(&session)
        .post(
            "/auth/totp/backup-codes/regenerate",
            json!({"password": "correct horse", "code": at(step + 1)}),
        )
        .await;
    regen.ok();
    assert_eq!(regen.body["backup_codes"].as_array().unwrap().len(), 10);
    assert_ne!(regen.body["backup_codes"], old_codes);

    // The old codes no longer sign in; a new one does.
    let login = browser(&state).login("gina", "correct horse").await;
    let challenge = cookie_value(&set_cookie(&login, "tessera_challenge").unwrap());
    let token = login.body["mfa_token"].as_str().unwrap().to_owned();
    let old = browser(&state)
        .with(&challenge)
        .post(
            "/auth/2fa/verify",
            json!({"mfa_token": token, "backup_code": old_codes[0]}),
        )
        .await;
    problem(&old, StatusCode::UNAUTHORIZED, "invalid_code");
    let new = browser(&state)
        .with(&challenge)
        .post(
            "/auth/2fa/verify",
            json!({"mfa_token": token, "backup_code": regen.body["backup_codes"][0]}),
        )
        .await;
    new.ok();

    let off = browser(&state)
        .with(&session)
        .post(
            "/auth/totp/disable",
            json!({"password": "correct horse", "code": at(step - 1)}),
        )
        .await;
    off.ok();
    assert_eq!(
        off.body,
        json!({"enabled": false, "backup_codes_remaining": 0})
    );
    let login = browser(&state).login("gina", "correct horse").await;
    assert_eq!(
        login.body["authenticated"], true,
        "no second factor any more"
    );
}

/// An account without a password (as an OIDC login creates them) proves itself to disable
/// and regenerate with the code alone; one with a password still needs it.
#[tokio::test]
async fn an_account_without_a_password_reauthenticates_with_the_code_alone() {
    use sea_orm::ConnectionTrait;
    let (state, _db, _o) = app_state(|_| {}).await;
    register(&state, "olga", "correct horse").await;
    let session = sign_in(&state, "olga", "correct horse").await;
    let (secret, step, _) = confirm_totp(&state, &session).await;
    let at = |s: u64| mfa::code_at(&secret, s);
    // With a password on the account, leaving it out is refused.
    let without = browser(&state)
        .with(&session)
        .post(
            "/auth/totp/backup-codes/regenerate",
            json!({"code": at(step + 1)}),
        )
        .await;
    problem(&without, StatusCode::UNAUTHORIZED, "invalid_credentials");

    state
        .auth
        .db
        .execute_unprepared("UPDATE users SET password_hash = NULL WHERE username = 'olga'")
        .await
        .unwrap();
    // Without one, any password sent is wrong, and the code alone works, once.
    let with = browser(&state)
        .with(&session)
        .post(
            "/auth/totp/backup-codes/regenerate",
            json!({"password": "correct horse", "code": at(step + 1)}),
        )
        .await;
    problem(&with, StatusCode::UNAUTHORIZED, "invalid_credentials");
    let regen = browser(&state)
        .with(&session)
        .post(
            "/auth/totp/backup-codes/regenerate",
            json!({"code": at(step + 1)}),
        )
        .await;
    regen.ok();
    let replay = browser(&state)
        .with(&session)
        .post("/auth/totp/disable", json!({"code": at(step + 1)}))
        .await;
    problem(&replay, StatusCode::UNAUTHORIZED, "invalid_code");
    let off = browser(&state)
        .with(&session)
        .post("/auth/totp/disable", json!({"code": at(step - 1)}))
        .await;
    off.ok();
    assert_eq!(off.body["enabled"], false);
}

/// A reset revokes the user's other reset links and ends their sessions; the link points
/// at the public URL with the token in the fragment.
#[tokio::test]
async fn a_password_reset_revokes_the_other_links_and_every_session() {
    let (state, _db, outbox) = app_state(|_| {}).await;
    register(&state, "hana", "correct horse").await;
    let session = sign_in(&state, "hana", "correct horse").await;
    for _ in 0..2 {
        let r = browser(&state)
            .post(
                "/auth/password-reset/request",
                json!({"email": "hana@example.com"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED);
        outbox_mails(outbox.path(), 1).await;
    }
    let mails = outbox_mails(outbox.path(), 2).await;
    assert!(mails[0].contains("https://auth.example.com/reset-password#token=tsr_pr_"));
    let (first, second) = (token_in(&mails[0]), token_in(&mails[1]));
    assert_ne!(first, second);
    let done = browser(&state)
        .post(
            "/auth/password-reset/confirm",
            json!({"token": first, "new_password": "new horse staple"}),
        )
        .await;
    done.ok();
    assert_eq!(done.body["sessions_ended"], 1);
    let other = browser(&state)
        .post(
            "/auth/password-reset/confirm",
            json!({"token": second, "new_password": "another horse"}),
        )
        .await;
    problem(&other, StatusCode::BAD_REQUEST, "invalid_or_expired_token");
    let me = send(
        &state,
        Request::get("/auth/me")
            .header(header::COOKIE, &session)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    problem(&me, StatusCode::UNAUTHORIZED, "not_authenticated");
    sign_in(&state, "hana", "new horse staple").await;
}

/// An unknown user costs one argon2id check too: the two failures take about as long.
#[tokio::test]
async fn an_unknown_user_takes_as_long_as_a_wrong_password() {
    let (state, _db, _o) = app_state(|_| {}).await;
    register(&state, "ivan", "correct horse").await;
    let time = |user: &'static str, round: usize| {
        let state = state.clone();
        async move {
            let mut all = Vec::new();
            // 4 × 2 rounds: below the login_attempt limit; each from its own address, below
            // the per-username-and-address limit.
            for i in 0..4 {
                let t = std::time::Instant::now();
                let r = from(
                    &state,
                    &format!("198.51.100.{}", 10 * round + i),
                    "/auth/login",
                    json!({"username": user, "password": "wrong horse"}),
                    &[],
                )
                .await;
                problem(&r, StatusCode::UNAUTHORIZED, "invalid_credentials");
                all.push(t.elapsed());
            }
            all.sort();
            all[2]
        }
    };
    // Interleaved, so both see the same background load.
    let (mut unknown, mut wrong) = (Vec::new(), Vec::new());
    for round in 0..2 {
        unknown.push(time("nobody", round).await);
        wrong.push(time("ivan", round).await);
    }
    let (u, w) = (
        unknown.iter().sum::<std::time::Duration>(),
        wrong.iter().sum::<std::time::Duration>(),
    );
    let ratio = u.as_secs_f64() / w.as_secs_f64();
    eprintln!("median login failure: unknown user {u:?}, wrong password {w:?} (ratio {ratio:.2})");
    assert!((0.5..2.0).contains(&ratio), "unknown {u:?} vs wrong {w:?}");
}

/// A browser app on another origin: only a configured one gets its preflight answered and
/// its credentialed requests through the CSRF check; cookies carry the configured domain.
#[tokio::test]
async fn another_origin_gets_in_only_when_configured() {
    let app = "https://app.example.com";
    let (state, _db, _o) = app_state(|s| {
        s.public_url = "https://auth.example.com".into();
        s.public_origin = "https://auth.example.com".into();
        s.cors_origins = vec![app.into()];
        s.cookie_domain = Some("example.com".into());
    })
    .await;
    register(&state, "cora", "correct horse").await;
    let preflight = |origin: &'static str| {
        Request::options("/auth/login")
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "content-type")
            .body(Body::empty())
            .unwrap()
    };
    let ok = send(&state, preflight(app)).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    assert_eq!(ok.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], app);
    assert_eq!(ok.headers[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
    let methods = ok.headers[header::ACCESS_CONTROL_ALLOW_METHODS]
        .to_str()
        .unwrap();
    assert!(methods.contains("POST"), "{methods}");
    let evil = send(&state, preflight("https://evil.example")).await;
    assert!(
        !evil
            .headers
            .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN)
    );

    let login = |origin: &'static str| {
        Request::post("/auth/login")
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ORIGIN, origin)
            .body(Body::from(
                json!({"username": "cora", "password": "correct horse"}).to_string(),
            ))
            .unwrap()
    };
    let r = send(&state, login(app)).await;
    r.ok();
    assert_eq!(r.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], app);
    let session = set_cookie(&r, "tessera_session").unwrap();
    assert!(session.contains("Domain=example.com"), "{session}");
    assert!(
        session.contains("Secure") && session.contains("HttpOnly"),
        "{session}"
    );
    problem(
        &send(&state, login("https://evil.example")).await,
        StatusCode::FORBIDDEN,
        "csrf_rejected",
    );
    let out = json_post(
        &state,
        "/auth/logout",
        json!({}),
        Some(&cookie_value(&session)),
    )
    .await;
    let cleared = set_cookie(&out, "tessera_session").unwrap();
    assert!(cleared.contains("Domain=example.com"), "{cleared}");

    // Without TESSERA_CORS_ORIGINS: no CORS answer for anyone, and the preflight is a 405
    // problem like any method a route does not have.
    let (plain, _db2, _o2) = app_state(|_| {}).await;
    let none = send(&plain, preflight(app)).await;
    problem(&none, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    assert!(
        !none
            .headers
            .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN)
    );
}

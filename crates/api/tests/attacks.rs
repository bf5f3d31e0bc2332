//! The login flows tried as an attacker would, through the router on a fresh SQLite
//! database per test, with time on a manual clock shared by the limiter, the locks and the
//! TOTP windows: each test plays one attack and asserts what it gets.

mod common;

use axum::http::{HeaderMap, StatusCode, header};
use common::*;
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};
use std::time::Duration;
use tessera_api::AppState;
use tessera_auth::factors::codes as mfa;
use tessera_limiter::{Clock, ManualClock};

const PW: &str = "correct horse";

fn manual_clock() -> ManualClock {
    ManualClock::new(chrono::Utc::now().timestamp_millis())
}

/// A service whose locks, windows and TOTP time all read one manual clock.
async fn on_manual_clock() -> (
    ManualClock,
    AppState,
    tessera_testkit::TestDb,
    tempfile::TempDir,
) {
    let clock = manual_clock();
    let (state, db, outbox) = app_state_on(Clock::Manual(clock.clone()), |_| {}).await;
    (clock, state, db, outbox)
}

/// A reset link asked for `email` from `ip`, read from the `nth` mail (1-based) of the
/// outbox, and used to set the password `new horse staple`: the confirmation's answer.
async fn reset_by_mail(
    state: &AppState,
    outbox: &std::path::Path,
    nth: usize,
    ip: &str,
    email: &str,
) -> Answer {
    let r = at(state, ip)
        .post("/auth/password-reset/request", json!({"email": email}))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let token = token_in(&outbox_mails(outbox, nth).await[nth - 1]);
    let r = at(state, ip)
        .post(
            "/auth/password-reset/confirm",
            json!({"token": token, "new_password": "new horse staple"}),
        )
        .await;
    r.ok();
    r
}

fn retry_after(a: &Answer) -> Duration {
    Duration::from_secs(
        a.headers[header::RETRY_AFTER]
            .to_str()
            .unwrap()
            .parse()
            .unwrap(),
    )
}

/// A six-digit code that is wrong at `clock`'s time for every accepted window.
fn wrong_code(secret: &[u8], clock: &ManualClock) -> String {
    let step = (clock.now_ms() / 1000) as u64 / mfa::STEP;
    let right: Vec<String> = (step - 1..=step + 1)
        .map(|s| mfa::code_at(secret, s))
        .collect();
    (0..)
        .map(|n| format!("{:06}", (n * 7919) % 1_000_000))
        .find(|c| !right.contains(c))
        .unwrap()
}

fn right_code(secret: &[u8], clock: &ManualClock) -> String {
    mfa::code_at(secret, (clock.now_ms() / 1000) as u64 / mfa::STEP)
}

/// Registers `user` and turns TOTP on at the manual clock's time; answers the secret and
/// the session cookie.
async fn with_totp(state: &AppState, clock: &ManualClock, user: &str) -> (Vec<u8>, String) {
    register(state, user, PW).await;
    let session = sign_in(state, user, PW).await;
    let setup = json_post(state, "/auth/totp/setup", json!({}), Some(&session)).await;
    setup.ok();
    let secret = base32_decode(setup.body["secret"].as_str().unwrap());
    let ok = confirm_setup(state, &session, &setup, &right_code(&secret, clock)).await;
    ok.ok();
    // The confirming code's window is used: move past it.
    clock.advance(Duration::from_secs(90));
    (secret, session)
}

/// A service on one manual clock with `user` registered and TOTP on: the clock, the
/// state, the database and outbox (to keep alive), TOTP's secret and the session cookie.
async fn totp_case(
    user: &str,
) -> (
    ManualClock,
    AppState,
    tessera_testkit::TestDb,
    tempfile::TempDir,
    Vec<u8>,
    String,
) {
    let (clock, state, db, outbox) = on_manual_clock().await;
    let (secret, session) = with_totp(&state, &clock, user).await;
    (clock, state, db, outbox, secret, session)
}

/// `/auth/totp/confirm` with `code`, as `session` holding the setup cookie that `setup`
/// set.
async fn confirm_setup(state: &AppState, session: &str, setup: &Answer, code: &str) -> Answer {
    let cookie = with_setup_cookie(session, setup);
    json_post(
        state,
        "/auth/totp/confirm",
        json!({ "code": code }),
        Some(&cookie),
    )
    .await
}

/// Registers `user` and requires a second factor before its next login completes, as
/// `tessera user enforce-mfa` does.
async fn register_enforced(state: &AppState, user: &str) {
    register(state, user, PW).await;
    let name = tessera_entity::AccountName::parse(user).unwrap();
    tessera_auth::accounts::change(
        &state.auth.db,
        &name,
        tessera_auth::accounts::Change::EnforceMfa,
    )
    .await
    .unwrap();
}

/// The password step: the answer and the challenge cookie it set.
async fn password_step(state: &AppState, ip: &str, user: &str, pw: &str) -> (Answer, String) {
    let r = at(state, ip).login(user, pw).await;
    let challenge = set_cookie(&r, "tessera_challenge")
        .map(|c| cookie_value(&c))
        .unwrap_or_default();
    (r, challenge)
}

/// Finding 1: someone who has the password guesses TOTP codes for 24 simulated hours,
/// logging in again whenever a pending login is spent and waiting out every throttle and
/// lock. At the defaults they get at most 30 codes checked; the owner, with a reset link,
/// still gets in.
#[tokio::test]
async fn a_patient_attacker_with_the_password_gets_at_most_30_guesses_a_day() {
    let (clock, state, _db, outbox, secret, _) = totp_case("victim").await;
    let start = clock.now_ms();
    let day = 24 * 60 * 60 * 1000;
    let (mut guesses, mut logins, mut locked, mut throttled) = (0, 0, 0, 0);
    'day: while clock.now_ms() - start < day {
        // A patient attacker: a few seconds per request.
        clock.advance(Duration::from_secs(3));
        let (r, challenge) = password_step(&state, "198.51.100.7", "victim", PW).await;
        match r.status {
            StatusCode::OK => logins += 1,
            StatusCode::LOCKED | StatusCode::TOO_MANY_REQUESTS => {
                locked += usize::from(r.status == StatusCode::LOCKED);
                clock.advance(retry_after(&r));
                continue;
            }
            other => panic!("password step: {other} {}", r.body),
        }
        let token = r.body["mfa_token"].as_str().unwrap().to_owned();
        let cookie = challenge.clone();
        loop {
            if clock.now_ms() - start >= day {
                break 'day;
            }
            clock.advance(Duration::from_secs(3));
            let code = wrong_code(&secret, &clock);
            let v = at(&state, "198.51.100.7")
                .with(&cookie)
                .verify(&token, &code)
                .await;
            match (v.status, v.body["code"].as_str().unwrap_or("")) {
                (StatusCode::UNAUTHORIZED, "invalid_code") => guesses += 1,
                (StatusCode::UNAUTHORIZED, "mfa_session_expired") => break,
                (StatusCode::TOO_MANY_REQUESTS, _) => {
                    throttled += 1;
                    clock.advance(retry_after(&v));
                }
                (StatusCode::LOCKED, _) => {
                    locked += 1;
                    clock.advance(retry_after(&v));
                    break;
                }
                (s, _) => panic!("verify: {s} {}", v.body),
            }
        }
    }
    eprintln!(
        "24 simulated hours: {guesses} second-factor guesses checked, {logins} pending logins, \
         {locked} locked answers, {throttled} throttled answers"
    );
    assert!(guesses <= 30, "{guesses} guesses in 24 hours");
    assert!(guesses >= 20, "the attack itself ran: {guesses}");

    // The owner: a reset link lifts the lock, and the password and a code sign in.
    reset_by_mail(
        &state,
        outbox.path(),
        1,
        "203.0.113.9",
        "victim@example.com",
    )
    .await;
    let (r, challenge) = password_step(&state, "203.0.113.9", "victim", "new horse staple").await;
    r.ok();
    let v = at(&state, "203.0.113.9")
        .with(&challenge.clone())
        .post(
            "/auth/2fa/verify",
            json!({"mfa_token": r.body["mfa_token"], "code": right_code(&secret, &clock)}),
        )
        .await;
    v.ok();
}

/// Finding 1: one pending login allows at most 5 wrong codes; the 6th attempt, even with
/// the right code, finds it spent.
#[tokio::test]
async fn a_pending_login_is_spent_after_five_wrong_codes() {
    let (clock, state, _db, _o, secret, _) = totp_case("pat").await;
    let (r, challenge) = password_step(&state, "198.51.100.7", "pat", PW).await;
    let token = r.body["mfa_token"].as_str().unwrap().to_owned();
    let attacker = at(&state, "198.51.100.7").with(&challenge);
    for _ in 0..5 {
        let v = attacker.verify(&token, &wrong_code(&secret, &clock)).await;
        problem(&v, StatusCode::UNAUTHORIZED, "invalid_code");
    }
    let v = attacker.verify(&token, &right_code(&secret, &clock)).await;
    problem(&v, StatusCode::UNAUTHORIZED, "mfa_session_expired");
}

/// Headers that may differ between two answers for reasons other than the account.
fn comparable(h: &HeaderMap) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = h
        .iter()
        .filter(|(k, _)| *k != "x-request-id" && *k != header::DATE)
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
        .collect();
    v.sort();
    v
}

/// Finding 3: a stranger sends wrong passwords for a real and a made-up name from many
/// addresses. Both answer alike at every count (status, body, headers), neither ever says
/// 423, and the owner still gets in: from a device that signed in before, or with a reset
/// link.
#[tokio::test]
async fn a_stranger_can_neither_lock_the_owner_out_nor_tell_who_exists() {
    let (_clock, state, _db, outbox) = on_manual_clock().await;
    register(&state, "lock", PW).await;
    let (first, _) = password_step(&state, "203.0.113.9", "lock", PW).await;
    assert_eq!(first.status, StatusCode::OK);
    let device = cookie_value(&set_cookie(&first, "tessera_device").expect("a device cookie"));

    for i in 0..30 {
        let ip = format!("198.51.100.{}", i + 1);
        let (known, _) = password_step(&state, &ip, "lock", "wrong password!").await;
        let (unknown, _) = password_step(&state, &ip, "nosuchuser", "wrong password!").await;
        assert_ne!(
            known.status,
            StatusCode::LOCKED,
            "attempt {i}: {}",
            known.body
        );
        assert!(
            known.status == StatusCode::UNAUTHORIZED
                || known.status == StatusCode::TOO_MANY_REQUESTS,
            "attempt {i}: {}",
            known.body
        );
        assert_eq!(known.status, unknown.status, "attempt {i}");
        assert_eq!(
            known.body.to_string().replace("lock", "NAME"),
            unknown.body.to_string().replace("nosuchuser", "NAME"),
            "attempt {i}"
        );
        assert_eq!(
            comparable(&known.headers),
            comparable(&unknown.headers),
            "attempt {i}"
        );
    }
    // The username-wide throttle now refuses strangers, even with the right password...
    let (r, _) = password_step(&state, "192.0.2.50", "lock", PW).await;
    problem(&r, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    // A device cookie of another account does not help with this one.
    register(&state, "other", PW).await;
    let (o, _) = password_step(&state, "203.0.113.10", "other", PW).await;
    let other_device = cookie_value(&set_cookie(&o, "tessera_device").unwrap());
    let r = at(&state, "203.0.113.10")
        .with(&other_device)
        .login("lock", PW)
        .await;
    problem(&r, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    // ...but not the owner's own device, whose right password signs in.
    let r = at(&state, "203.0.113.9")
        .with(&device)
        .login("lock", PW)
        .await;
    r.ok();
    assert_eq!(r.body["authenticated"], true);
    // On a new device, the owner gets in with a reset link, which leaves a device cookie.
    let reset = reset_by_mail(&state, outbox.path(), 1, "192.0.2.51", "lock@example.com").await;
    let device = cookie_value(&set_cookie(&reset, "tessera_device").expect("a device cookie"));
    let r = at(&state, "192.0.2.51")
        .with(&device)
        .login("lock", "new horse staple")
        .await;
    r.ok();
}

/// Finding 3: 423 comes only after the right password; a wrong one says nothing of the
/// lock.
#[tokio::test]
async fn a_lock_shows_only_to_the_right_password() {
    let (clock, state, db, _o) = on_manual_clock().await;
    register(&state, "locked", PW).await;
    db.db
        .execute_unprepared(&format!(
            "UPDATE users SET locked_until = '{}' WHERE username = 'locked'",
            (chrono::DateTime::from_timestamp_millis(clock.now_ms()).unwrap()
                + chrono::Duration::hours(1))
            .format("%Y-%m-%d %H:%M:%S%.f+00:00")
        ))
        .await
        .unwrap();
    let (wrong, _) = password_step(&state, "198.51.100.1", "locked", "wrong password!").await;
    problem(&wrong, StatusCode::UNAUTHORIZED, "invalid_credentials");
    let (right, _) = password_step(&state, "198.51.100.1", "locked", PW).await;
    problem(&right, StatusCode::LOCKED, "account_locked");
}

/// Sends `n` wrong answers with `attempt`, waiting out the per-user throttle between them.
async fn wrong_answers<F, Fut>(clock: &ManualClock, n: usize, mut attempt: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Answer>,
{
    for i in 0..n {
        if i % 5 == 0 {
            clock.advance(Duration::from_secs(301));
        }
        let a = attempt().await;
        assert_eq!(
            a.status,
            StatusCode::UNAUTHORIZED,
            "attempt {i}: {}",
            a.body
        );
    }
}

/// Finding 10: wrong codes at re-authentication (disable, regenerate), at enforced setup
/// and at email-code confirmation count toward the lockout like those at sign-in.
#[tokio::test]
async fn every_second_factor_check_counts_toward_the_lockout() {
    // Re-authentication: 10 wrong codes across disable and regenerate lock the account.
    let (clock, state, _db, outbox, secret, session) = totp_case("reauth").await;
    let mut n = 0;
    wrong_answers(&clock, 10, || {
        n += 1;
        let path = if n % 2 == 0 {
            "/auth/totp/disable"
        } else {
            "/auth/totp/backup-codes/regenerate"
        };
        let body = json!({"password": PW, "code": wrong_code(&secret, &clock)});
        let (state, session) = (state.clone(), session.clone());
        async move { json_post(&state, path, body, Some(&session)).await }
    })
    .await;
    let (r, _) = password_step(&state, "198.51.100.1", "reauth", PW).await;
    problem(&r, StatusCode::LOCKED, "account_locked");

    // Enforced setup: 10 wrong codes over two enforcement tokens lock the account.
    register_enforced(&state, "enforced").await;
    for _ in 0..2 {
        let (r, challenge) = password_step(&state, "198.51.100.2", "enforced", PW).await;
        assert_eq!(r.body["mfa_setup_required"], true, "{}", r.body);
        let cookie = challenge.clone();
        let token = r.body["mfa_token"].as_str().unwrap().to_owned();
        let setup = at(&state, "198.51.100.2")
            .with(&cookie)
            .post("/auth/totp/enforce-setup", json!({"mfa_token": token}))
            .await;
        let secret = base32_decode(setup.body["secret"].as_str().unwrap());
        let cookie = with_setup_cookie(&cookie, &setup);
        wrong_answers(&clock, 5, || {
            let body = json!({"mfa_token": token, "code": wrong_code(&secret, &clock)});
            let (state, cookie) = (state.clone(), cookie.clone());
            async move {
                at(&state, "198.51.100.2")
                    .with(&cookie)
                    .post("/auth/totp/enforce-confirm", body)
                    .await
            }
        })
        .await;
    }
    let (r, _) = password_step(&state, "198.51.100.2", "enforced", PW).await;
    problem(&r, StatusCode::LOCKED, "account_locked");

    // Email codes being turned on: 10 wrong codes lock the account.
    register(&state, "mailer", PW).await;
    let session = sign_in(&state, "mailer", PW).await;
    let en = json_post(&state, "/auth/email-otp/enable", json!({}), Some(&session)).await;
    en.ok();
    let setup_token = en.body["setup_token"].as_str().unwrap().to_owned();
    let mail = &outbox_mails(outbox.path(), 1).await[0];
    let sent: String = mail.split("is: ").nth(1).unwrap().chars().take(6).collect();
    let wrong = if sent == "000000" { "111111" } else { "000000" };
    wrong_answers(&clock, 10, || {
        let body = json!({"code": wrong, "setup_token": setup_token});
        let (state, session) = (state.clone(), session.clone());
        async move { json_post(&state, "/auth/email-otp/confirm", body, Some(&session)).await }
    })
    .await;
    // The account has no second factor yet, so the lock shows at the next check of one.
    clock.advance(Duration::from_secs(301));
    let right = browser(&state)
        .with(&session)
        .post(
            "/auth/email-otp/confirm",
            json!({"code": sent, "setup_token": setup_token}),
        )
        .await;
    problem(&right, StatusCode::LOCKED, "account_locked");
}

async fn v1(state: &AppState, path: &str, body: Value) -> Answer {
    let req = post(path).header(header::AUTHORIZATION, "Bearer svc-key");
    send(
        state,
        req.body(axum::body::Body::from(body.to_string())).unwrap(),
    )
    .await
}

/// Finding 15: a service key cannot mint a token that `/auth` accepts, read or revoke the
/// tokens `/auth` issued, nor read or clear the counters `/auth` keeps; apps still use the
/// seed's kinds through `/v1` for their own flows.
#[tokio::test]
async fn a_service_key_cannot_mint_logins_nor_clear_login_limits() {
    let (mut state, _db, outbox) = app_state(|_| {}).await;
    state.api_keys = tessera_api::ApiKeys::parse("svc-key");
    register(&state, "bob", PW).await;
    let session = sign_in(&state, "bob", PW).await;
    confirm_totp(&state, &session).await;

    let minted = v1(
        &state,
        "/v1/tokens",
        json!({"kind": "oidc_exchange", "username": "bob", "data": {"provider": "x", "skip_local_mfa": true}}),
    )
    .await;
    assert_eq!(minted.status, StatusCode::CREATED, "{}", minted.body);
    let r = browser(&state)
        .post(
            "/auth/oidc/exchange",
            json!({"token": minted.body["token"]}),
        )
        .await;
    problem(&r, StatusCode::BAD_REQUEST, "invalid_or_expired_token");

    let minted = v1(
        &state,
        "/v1/tokens",
        json!({"kind": "password_reset", "username": "bob"}),
    )
    .await;
    let r = browser(&state)
        .post(
            "/auth/password-reset/confirm",
            json!({"token": minted.body["token"], "new_password": "attacker's choice"}),
        )
        .await;
    problem(&r, StatusCode::BAD_REQUEST, "invalid_or_expired_token");
    sign_in_pending(&state, "bob", PW).await;

    // A pending login issued by /auth: /v1 can neither revoke, peek at nor consume it.
    let (pending, challenge) = sign_in_pending(&state, "bob", PW).await;
    let revoked = v1(
        &state,
        "/v1/tokens/revoke",
        json!({"kind": "pre_auth", "username": "bob"}),
    )
    .await;
    assert_eq!(revoked.body["revoked"], 0, "{}", revoked.body);
    for op in ["peek", "consume"] {
        let r = v1(
            &state,
            &format!("/v1/tokens/{op}"),
            json!({"kind": "pre_auth", "token": pending, "challenge": challenge.split_once('=').unwrap().1}),
        )
        .await;
        problem(&r, StatusCode::NOT_FOUND, "invalid_or_expired_token");
    }

    // bob's password throttle: /v1 sees none of it and cannot reset it.
    for i in 0..11 {
        from(
            &state,
            &format!("198.51.100.{i}"),
            "/auth/login",
            json!({"username": "bob", "password": "wrong password!"}),
            &[],
        )
        .await;
    }
    let peek = v1(
        &state,
        "/v1/ratelimit/peek",
        json!({"event": "login_attempt", "key": "bob"}),
    )
    .await;
    assert_eq!(peek.body["remaining"], 10, "{}", peek.body);
    let reset = v1(
        &state,
        "/v1/ratelimit/reset",
        json!({"event": "login_attempt", "key": "bob"}),
    )
    .await;
    assert_eq!(reset.status, StatusCode::NO_CONTENT);
    let (r, _) = password_step(&state, "192.0.2.77", "bob", PW).await;
    problem(&r, StatusCode::TOO_MANY_REQUESTS, "rate_limited");

    // The app's own pre_auth tokens work through /v1 as before.
    let own = v1(
        &state,
        "/v1/tokens",
        json!({"kind": "pre_auth", "username": "bob", "challenge": "c"}),
    )
    .await;
    let used = v1(
        &state,
        "/v1/tokens/consume",
        json!({"kind": "pre_auth", "token": own.body["token"], "challenge": "c"}),
    )
    .await;
    used.ok();
    assert_eq!(used.body["username"], "bob");
    drop(outbox);
}

/// The password step of a user with a second factor: the mfa_token and the challenge
/// cookie (`name=value`).
async fn sign_in_pending(state: &AppState, user: &str, pw: &str) -> (String, String) {
    let (r, challenge) = password_step(state, "203.0.113.1", user, pw).await;
    r.ok();
    (r.body["mfa_token"].as_str().unwrap().to_owned(), challenge)
}

/// Finding 16: a pending login (second factor or enforced setup) obtained with the old
/// password does not survive a password reset, nor one obtained with TOTP on its turning
/// off.
#[tokio::test]
async fn pending_logins_end_with_a_password_reset() {
    let (clock, state, _db, outbox, secret, session) = totp_case("mallory-victim").await;
    register_enforced(&state, "enforced").await;
    let (pre_auth, pa_cookie) = sign_in_pending(&state, "mallory-victim", PW).await;
    let (enforce, en_cookie) = sign_in_pending(&state, "enforced", PW).await;

    for (i, email) in ["mallory-victim@example.com", "enforced@example.com"]
        .iter()
        .enumerate()
    {
        reset_by_mail(&state, outbox.path(), i + 1, "203.0.113.5", email).await;
    }
    let v = at(&state, "203.0.113.1")
        .with(&pa_cookie)
        .verify(&pre_auth, &right_code(&secret, &clock))
        .await;
    problem(&v, StatusCode::UNAUTHORIZED, "mfa_session_expired");
    let e = at(&state, "203.0.113.1")
        .with(&en_cookie)
        .post("/auth/totp/enforce-setup", json!({"mfa_token": enforce}))
        .await;
    problem(&e, StatusCode::UNAUTHORIZED, "mfa_session_expired");
    drop(session);

    // Turning TOTP off ends the pending logins obtained while it was on.
    let (secret, session) = with_totp(&state, &clock, "totp-off").await;
    let (pending, cookie) = sign_in_pending(&state, "totp-off", PW).await;
    let off = browser(&state)
        .with(&session)
        .post(
            "/auth/totp/disable",
            json!({"password": PW, "code": right_code(&secret, &clock)}),
        )
        .await;
    off.ok();
    clock.advance(Duration::from_secs(90));
    let v = at(&state, "203.0.113.1")
        .with(&cookie)
        .verify(&pending, &right_code(&secret, &clock))
        .await;
    problem(&v, StatusCode::UNAUTHORIZED, "mfa_session_expired");
}

/// Finding 5: one address collects accounts, then anonymous reset requests for it would
/// each mail every account. An address has at most 5 accounts, and at most 10 mails an
/// hour reach it, however many accounts share it.
#[tokio::test]
async fn one_address_cannot_be_flooded_through_many_accounts() {
    let (state, _db, outbox) = app_state(|_| {}).await;
    let mut created = 0;
    for i in 0..20 {
        let r = from(
            &state,
            &format!("198.51.100.{}", i + 1),
            "/auth/register",
            json!({"username": format!("sock{i}"), "email": "victim@example.com", "password": PW}),
            &[],
        )
        .await;
        match r.status {
            StatusCode::CREATED => created += 1,
            _ => problem(&r, StatusCode::CONFLICT, "too_many_accounts_for_address"),
        }
    }
    assert_eq!(created, 5);
    for i in 0..5 {
        let r = from(
            &state,
            &format!("203.0.113.{}", i + 1),
            "/auth/password-reset/request",
            json!({"email": "victim@example.com"}),
            &[],
        )
        .await;
        assert_eq!(r.status, StatusCode::ACCEPTED);
    }
    // The mails go out after the answer: wait for the tenth, then for stragglers.
    outbox_mails(outbox.path(), 10).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = std::fs::read_dir(outbox.path()).unwrap().count();
    eprintln!("25 reset mails asked for one address: {sent} sent");
    assert_eq!(sent, 10, "the address's limit holds");
}

/// Finding 7: anonymous `/auth/oidc/{name}/start` calls each store an `oidc_state` row; one
/// address gets 50 per 15 minutes, then 429 before any row or provider lookup.
#[tokio::test]
async fn oidc_starts_are_bounded_per_address() {
    let (state, _db, _o) = app_state(|_| {}).await;
    let get = |ip: &'static str| {
        let req = axum::http::Request::get("/auth/oidc/nosuch/start")
            .extension(axum::extract::ConnectInfo(std::net::SocketAddr::new(
                ip.parse().unwrap(),
                4000,
            )))
            .body(axum::body::Body::empty())
            .unwrap();
        send(&state, req)
    };
    for _ in 0..50 {
        problem(
            &get("198.51.100.1").await,
            StatusCode::NOT_FOUND,
            "unknown_provider",
        );
    }
    problem(
        &get("198.51.100.1").await,
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
    );
    problem(
        &get("198.51.100.2").await,
        StatusCode::NOT_FOUND,
        "unknown_provider",
    );
}

/// Finding 2: someone with the password (or a stolen session) starts a TOTP setup and does
/// not confirm it. The owner's own setup gets a secret of its own, which the first
/// caller's setup cannot confirm or read; nothing pending sits in the account's row.
#[tokio::test]
async fn a_pending_totp_secret_belongs_to_the_setup_that_made_it() {
    let (clock, state, db, _o) = on_manual_clock().await;
    register(&state, "owner", PW).await;
    let attacker = sign_in(&state, "owner", PW).await;
    let theirs = json_post(&state, "/auth/totp/setup", json!({}), Some(&attacker)).await;
    theirs.ok();
    let again = json_post(
        &state,
        "/auth/totp/setup",
        json!({}),
        Some(&with_setup_cookie(&attacker, &theirs)),
    )
    .await;
    assert_eq!(
        again.body["secret"], theirs.body["secret"],
        "same caller, same setup"
    );
    assert_eq!(again.body["backup_codes"], theirs.body["backup_codes"]);
    let stored: Option<Vec<u8>> = {
        use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
        tessera_entity::users::Entity::find()
            .filter(tessera_entity::users::Column::Username.eq("owner"))
            .one(&db.db)
            .await
            .unwrap()
            .unwrap()
            .totp_secret
    };
    assert!(
        stored.is_none(),
        "a pending secret is not in the account's row"
    );

    let owner = sign_in(&state, "owner", PW).await;
    let mine = json_post(&state, "/auth/totp/setup", json!({}), Some(&owner)).await;
    assert_ne!(mine.body["secret"], theirs.body["secret"]);
    // The attacker's setup cookie is bound to the attacker's session: no use with the
    // owner's.
    let stolen = json_post(
        &state,
        "/auth/totp/setup",
        json!({}),
        Some(&with_setup_cookie(&owner, &theirs)),
    )
    .await;
    assert_ne!(stolen.body["secret"], theirs.body["secret"]);
    let my_secret = base32_decode(mine.body["secret"].as_str().unwrap());
    let ok = confirm_setup(&state, &owner, &mine, &right_code(&my_secret, &clock)).await;
    ok.ok();
    // The attacker's pending secret confirms nothing, and its codes sign no one in.
    let their_secret = base32_decode(theirs.body["secret"].as_str().unwrap());
    let late = confirm_setup(
        &state,
        &attacker,
        &theirs,
        &right_code(&their_secret, &clock),
    )
    .await;
    problem(&late, StatusCode::CONFLICT, "totp_already_enabled");
    clock.advance(Duration::from_secs(90));
    let (pending, cookie) = sign_in_pending(&state, "owner", PW).await;
    let owner = at(&state, "203.0.113.1").with(&cookie);
    let v = owner
        .verify(&pending, &right_code(&their_secret, &clock))
        .await;
    problem(&v, StatusCode::UNAUTHORIZED, "invalid_code");
    let v = owner
        .verify(&pending, &right_code(&my_secret, &clock))
        .await;
    v.ok();
}

/// Finding 11: a used TOTP code is kept as a keyed hash, never in clear.
#[tokio::test]
async fn used_totp_codes_are_not_stored_in_clear() {
    let (clock, state, db, _o, secret, _) = totp_case("hashed").await;
    let (pending, cookie) = sign_in_pending(&state, "hashed", PW).await;
    let code = right_code(&secret, &clock);
    let v = at(&state, "203.0.113.1")
        .with(&cookie)
        .verify(&pending, &code)
        .await;
    v.ok();
    use sea_orm::EntityTrait;
    let rows = tessera_entity::totp_usage::Entity::find()
        .all(&db.db)
        .await
        .unwrap();
    assert_eq!(rows.len(), 2, "the confirming code and the sign-in code");
    for row in rows {
        assert_eq!(row.code.len(), 64, "{}", row.code);
        assert!(!row.code.contains(&code));
    }
}

/// Finding 12: one host holds a whole IPv6 /64, and `::ffff:a.b.c.d` is `a.b.c.d`: neither
/// multiplies the per-address login budget (`login_ip`, 50 per 15 minutes).
#[tokio::test]
async fn per_address_limits_count_an_ipv6_network_and_mapped_addresses_once() {
    let (state, _db, _o) = app_state(|_| {}).await;
    let login = |ip: String, i: usize| {
        let state = state.clone();
        async move {
            from(
                &state,
                &ip,
                "/auth/login",
                json!({"username": format!("nobody{i}"), "password": "wrong password!"}),
                &[],
            )
            .await
        }
    };
    let mut limited = 0;
    for i in 0..60 {
        let r = login(format!("2001:db8:1:2:{i:x}::1"), i).await;
        limited += usize::from(r.status == StatusCode::TOO_MANY_REQUESTS);
    }
    assert_eq!(limited, 10, "50 of 60 from one /64 admitted");
    // Another /64 has its own budget.
    let r = login("2001:db8:1:3::1".into(), 0).await;
    problem(&r, StatusCode::UNAUTHORIZED, "invalid_credentials");

    for i in 0..50 {
        let ip = if i % 2 == 0 {
            "203.0.113.50"
        } else {
            "::ffff:203.0.113.50"
        };
        let r = login(ip.into(), i).await;
        assert_eq!(
            r.status,
            StatusCode::UNAUTHORIZED,
            "attempt {i}: {}",
            r.body
        );
    }
    let r = login("::ffff:203.0.113.50".into(), 99).await;
    problem(&r, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
}

/// Finding 20: a client's request id reaches the logs only when it is a plain token; a
/// provider name that is not UTF-8 gets the service's own answers, not a plain-text 400.
#[tokio::test]
async fn request_ids_and_odd_paths_get_the_services_own_answers() {
    let (state, _db, _o) = app_state(|_| {}).await;
    let get = |path: &str, id: Option<&str>| {
        let mut req = axum::http::Request::get(path);
        if let Some(id) = id {
            req = req.header("x-request-id", id);
        }
        send(&state, req.body(axum::body::Body::empty()).unwrap())
    };
    let kept = get("/healthz", Some("trace-42.a_b")).await;
    assert_eq!(kept.headers["x-request-id"], "trace-42.a_b");
    for forged in ["two words", "<script>", "tab\there", &"x".repeat(65)] {
        let r = get("/healthz", Some(forged)).await;
        let id = r.headers["x-request-id"].to_str().unwrap();
        assert_ne!(id, forged);
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    }

    let r = get("/auth/oidc/%FF/start", None).await;
    problem(&r, StatusCode::NOT_FOUND, "unknown_provider");
    let r = get("/auth/oidc/%FF/callback?code=x&state=y", None).await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert!(
        r.headers[header::LOCATION]
            .to_str()
            .unwrap()
            .ends_with("#oidc_error=unknown_provider"),
        "{:?}",
        r.headers
    );
}

/// Finding 9: look-alike names are one account and one set of counters: registering
/// `LOCK`, ` lock`, `lock ` beside `lock` is refused, invisible characters too, and a
/// stranger's wrong passwords under any spelling count against the same budget.
#[tokio::test]
async fn look_alike_usernames_are_one_account_and_one_budget() {
    let (state, _db, _o) = app_state(|_| {}).await;
    register(&state, "lock", PW).await;
    for (i, twin) in ["LOCK", " lock", "lock ", "Ｌｏｃｋ"].iter().enumerate() {
        let r = from(
            &state,
            &format!("198.51.100.{}", i + 1),
            "/auth/register",
            json!({"username": twin, "email": "x@example.com", "password": PW}),
            &[],
        )
        .await;
        problem(&r, StatusCode::CONFLICT, "username_taken");
    }
    for bad in ["lock\u{200b}", "lo\u{202e}ck"] {
        let r = at(&state, "198.51.100.9")
            .post(
                "/auth/register",
                json!({"username": bad, "email": "x@example.com", "password": PW}),
            )
            .await;
        problem(&r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    }
    // Any spelling signs the one account in...
    let (r, _) = password_step(&state, "203.0.113.1", " LOCK ", PW).await;
    assert_eq!(r.body["username"], "lock", "{}", r.body);
    // ...and wrong passwords under ten spellings exhaust its one per-username budget.
    let spellings = [
        "lock",
        "LOCK",
        "Lock",
        " lock",
        "lock ",
        "lOck",
        "loCk",
        "locK",
        "LOck",
        "ｌｏｃｋ",
    ];
    for (i, s) in spellings.iter().enumerate() {
        let (r, _) =
            password_step(&state, &format!("192.0.2.{}", i + 1), s, "wrong password!").await;
        problem(&r, StatusCode::UNAUTHORIZED, "invalid_credentials");
    }
    let (r, _) = password_step(&state, "192.0.2.99", "LoCk", "wrong password!").await;
    problem(&r, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
}

/// Finding 9, on upgrade: accounts made before names had keys get theirs; of two that
/// differ only in case, the older keeps the name and the newer is found by nothing.
#[tokio::test]
async fn the_upgrade_gives_existing_accounts_their_keys() {
    use sea_orm::{ConnectionTrait, EntityTrait};
    use tessera_migration::{Migrator, MigratorTrait};
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/t.db?mode=rwc", dir.path().display());
    let db = tessera_backend::sql::connect(&url, 2).await.unwrap();
    Migrator::up(&db, Some(8)).await.unwrap();
    for name in ["lock", "LOCK", "Bob"] {
        db.execute_unprepared(&format!(
            "INSERT INTO users (username, totp_enabled, email_otp_enabled, mfa_enforce_pending, \
             disabled, failed_login_count, created_at) \
             VALUES ('{name}', false, false, false, false, 0, '2026-11-01 00:00:00+00:00')"
        ))
        .await
        .unwrap();
    }
    Migrator::up(&db, None).await.unwrap();
    let mut keys: Vec<(String, Option<String>)> = tessera_entity::users::Entity::find()
        .all(&db)
        .await
        .unwrap()
        .into_iter()
        .map(|u| (u.username, u.username_key))
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            ("Bob".to_owned(), Some("bob".to_owned())),
            ("LOCK".to_owned(), None),
            ("lock".to_owned(), Some("lock".to_owned())),
        ]
    );
}

/// A provider that answers its discovery document with `body_mb` megabytes, or never
/// answers (`None`): counts the fetches, and the bytes it got to send before Tessera hung up.
struct HostileIdp {
    url: String,
    fetches: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    sent: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

async fn hostile_idp(body_mb: Option<usize>) -> HostileIdp {
    use std::sync::atomic::Ordering::SeqCst;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let fetches = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (f, s) = (fetches.clone(), sent.clone());
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let (f, s) = (f.clone(), s.clone());
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                if conn.read(&mut buf).await.unwrap_or(0) == 0 {
                    return;
                }
                f.fetch_add(1, SeqCst);
                let Some(mb) = body_mb else {
                    // Never answer; hold the connection for a minute at most.
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    return;
                };
                let head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{\"issuer\":\"";
                if conn.write_all(head).await.is_err() {
                    return;
                }
                let chunk = vec![b'a'; 64 * 1024];
                for _ in 0..mb * 16 {
                    if conn.write_all(&chunk).await.is_err() {
                        return;
                    }
                    s.fetch_add(chunk.len(), SeqCst);
                }
            });
        }
    });
    HostileIdp { url, fetches, sent }
}

async fn add_idp(state: &AppState, name: &str, issuer: &str) {
    tessera_auth::oidc::add_provider(
        &state.auth.db,
        &state.auth.settings.keys,
        tessera_auth::oidc::NewProvider {
            name: name.into(),
            issuer: issuer.into(),
            client_id: "tessera".into(),
            client_secret: None,
            scopes: "openid".into(),
            skip_local_mfa: false,
        },
    )
    .await
    .unwrap();
}

async fn oidc_start(state: &AppState, name: &str, ip: &str) -> Answer {
    let req = axum::http::Request::get(format!("/auth/oidc/{name}/start"))
        .extension(axum::extract::ConnectInfo(std::net::SocketAddr::new(
            ip.parse().unwrap(),
            4000,
        )))
        .body(axum::body::Body::empty())
        .unwrap();
    send(state, req).await
}

/// Finding 18: a provider that answers a 200 MB discovery document is cut off after a
/// bounded read; twenty starts at once make one fetch, and the failure is remembered for a
/// moment; a provider that never answers ends in `#oidc_error=provider_unavailable`
/// before the request's own timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hostile_provider_costs_a_bounded_read_and_one_fetch() {
    use std::sync::atomic::Ordering::SeqCst;
    let (mut state, _db, _o) = app_state(|_| {}).await;
    state.limits.request_timeout = Duration::from_secs(3);
    let huge = hostile_idp(Some(200)).await;
    add_idp(&state, "huge", &huge.url).await;
    let starts = (0..20).map(|i| {
        let state = state.clone();
        async move { oidc_start(&state, "huge", &format!("198.51.100.{}", i + 1)).await }
    });
    for r in futures::future::join_all(starts).await {
        assert_eq!(r.status, StatusCode::FOUND, "{}", r.body);
        let to = r.headers[header::LOCATION].to_str().unwrap();
        assert!(to.ends_with("#oidc_error=provider_unavailable"), "{to}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (fetches, sent) = (huge.fetches.load(SeqCst), huge.sent.load(SeqCst));
    eprintln!(
        "20 starts against a 200 MB discovery document: {fetches} fetch(es), {sent} bytes sent"
    );
    assert_eq!(
        fetches, 1,
        "one fetch for twenty starts, then the failure is remembered"
    );
    assert!(
        sent < 16 * 1024 * 1024,
        "{sent} bytes sent before the client hung up"
    );

    let silent = hostile_idp(None).await;
    add_idp(&state, "silent", &silent.url).await;
    let t = std::time::Instant::now();
    let r = oidc_start(&state, "silent", "203.0.113.1").await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.body);
    let to = r.headers[header::LOCATION].to_str().unwrap();
    assert!(to.ends_with("#oidc_error=provider_unavailable"), "{to}");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
}

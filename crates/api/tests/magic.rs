//! Magic links through the router: mailed to each account of an address, used once, the
//! first factor only (never followed by a mailed code), throttled per address, and off
//! when switched off.

mod common;

use axum::http::StatusCode;
use common::*;
use serde_json::json;
use tessera_auth::factors::codes as mfa;

const PW: &str = "correct horse";

/// Asks for a link to `email` and answers the `n`-th mail of the outbox's token.
async fn link(
    state: &tessera_api::AppState,
    outbox: &std::path::Path,
    email: &str,
    n: usize,
) -> String {
    let r = browser(state)
        .post("/auth/magic-link/request", json!({"email": email}))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let mails = outbox_mails(outbox, n).await;
    let mail = &mails[n - 1];
    assert!(mail.contains("/login/magic#token=tsr_ml_"), "{mail}");
    token_in(mail)
}

#[tokio::test]
async fn a_link_signs_in_once() {
    let (state, _db, outbox) = app_state(|_| {}).await;
    register(&state, "lin", PW).await;
    let nobody = browser(&state)
        .post(
            "/auth/magic-link/request",
            json!({"email": "nobody@example.com"}),
        )
        .await;
    assert_eq!(
        nobody.status,
        StatusCode::ACCEPTED,
        "an unknown address is answered alike"
    );
    let token = link(&state, outbox.path(), "lin@example.com", 1).await;
    assert_eq!(
        std::fs::read_dir(outbox.path()).unwrap().count(),
        1,
        "no mail to nobody"
    );
    let consume = json!({"token": token});
    let r = browser(&state)
        .post("/auth/magic-link/consume", consume.clone())
        .await;
    r.ok();
    assert_eq!(r.body["authenticated"], true, "{}", r.body);
    let session = cookie_value(&set_cookie(&r, "tessera_session").expect("a session"));
    assert_eq!(
        browser(&state).with(&session).get("/auth/me").await.body["username"],
        "lin"
    );
    let again = browser(&state)
        .post("/auth/magic-link/consume", consume)
        .await;
    problem(&again, StatusCode::BAD_REQUEST, "invalid_or_expired_token");
}

#[tokio::test]
async fn after_a_link_the_second_factor_is_never_a_mailed_code() {
    let (state, _db, outbox) = app_state(|_| {}).await;
    register(&state, "two", PW).await;
    let session = sign_in(&state, "two", PW).await;
    let (secret, step, _) = confirm_totp(&state, &session).await;
    enable_email_otp(&state, outbox.path(), &session, 1).await;

    let token = link(&state, outbox.path(), "two@example.com", 2).await;
    let r = browser(&state)
        .post("/auth/magic-link/consume", json!({"token": token}))
        .await;
    r.ok();
    assert_eq!(
        r.body["methods"],
        json!(["totp", "backup_code"]),
        "{}",
        r.body
    );
    let pending = r.body["mfa_token"].as_str().unwrap().to_owned();
    let challenge = cookie_value(&set_cookie(&r, "tessera_challenge").unwrap());
    let pend = browser(&state).with(&challenge);
    let send = pend
        .post("/auth/2fa/email/send", json!({"mfa_token": pending}))
        .await;
    problem(&send, StatusCode::CONFLICT, "email_otp_not_enabled");
    let mailed = json!({"mfa_token": pending, "email_code": "123456"});
    problem(
        &pend.post("/auth/2fa/verify", mailed).await,
        StatusCode::UNAUTHORIZED,
        "invalid_code",
    );
    let ok = pend
        .verify(&pending, &mfa::code_at(&secret, step + 1))
        .await;
    ok.ok();
    assert_eq!(ok.body["authenticated"], true, "{}", ok.body);
}

#[tokio::test]
async fn an_account_whose_only_factor_is_mail_uses_its_password() {
    let (state, _db, outbox) = app_state(|_| {}).await;
    register(&state, "mailonly", PW).await;
    let session = sign_in(&state, "mailonly", PW).await;
    enable_email_otp(&state, outbox.path(), &session, 1).await;
    let token = link(&state, outbox.path(), "mailonly@example.com", 2).await;
    let r = browser(&state)
        .post("/auth/magic-link/consume", json!({"token": token}))
        .await;
    problem(&r, StatusCode::CONFLICT, "magic_link_not_allowed");
}

#[tokio::test]
async fn links_are_throttled_per_address_and_can_be_switched_off() {
    let (state, _db, _o) = app_state(|_| {}).await;
    let ask = json!({"email": "someone@example.com"});
    for _ in 0..10 {
        let r = at(&state, "198.51.100.4")
            .post("/auth/magic-link/request", ask.clone())
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    }
    let over = at(&state, "198.51.100.4")
        .post("/auth/magic-link/request", ask.clone())
        .await;
    problem(&over, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    assert!(over.headers.contains_key("retry-after"));
    let other = at(&state, "198.51.100.5")
        .post("/auth/magic-link/request", ask.clone())
        .await;
    assert_eq!(
        other.status,
        StatusCode::ACCEPTED,
        "another address has its own budget"
    );

    let (off, _db2, _o2) = app_state(|s| s.magic_links = false).await;
    let r = browser(&off).post("/auth/magic-link/request", ask).await;
    problem(&r, StatusCode::FORBIDDEN, "magic_links_disabled");
    let r = browser(&off)
        .post("/auth/magic-link/consume", json!({"token": "tsr_ml_x"}))
        .await;
    problem(&r, StatusCode::FORBIDDEN, "magic_links_disabled");
}

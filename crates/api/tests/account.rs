//! Self-service for a signed-in person, through the router: a new password, a new mail
//! address, email codes off, the account deleted; each proven by the password, or by a
//! TOTP code for an account without one.

mod common;

use axum::http::StatusCode;
use common::*;
use serde_json::json;
use tessera_auth::factors::codes as mfa;

const PW: &str = "correct horse";

#[tokio::test]
async fn a_new_password_ends_the_other_sessions_and_keeps_this_one() {
    let (state, _db, _o) = app_state(|_| {}).await;
    register(&state, "pat", PW).await;
    let (here, elsewhere) = (
        sign_in(&state, "pat", PW).await,
        sign_in(&state, "pat", PW).await,
    );
    let me = browser(&state).with(&here);
    let change = |password: &str, new: &str| json!({"password": password, "new_password": new});
    let path = "/auth/password/change";
    let wrong = me.post(path, change("not it", "a new password")).await;
    problem(&wrong, StatusCode::UNAUTHORIZED, "invalid_credentials");
    let short = me.post(path, change(PW, "short")).await;
    problem(
        &short,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    assert_eq!(short.body["field"], "new_password");
    let anonymous = browser(&state)
        .post(path, change(PW, "a new password"))
        .await;
    problem(&anonymous, StatusCode::UNAUTHORIZED, "not_authenticated");
    let missing = me
        .post(path, json!({"new_password": "a new password"}))
        .await;
    problem(
        &missing,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    assert_eq!(missing.body["field"], "password");

    let ok = me.post(path, change(PW, "a new password")).await;
    ok.ok();
    assert_eq!(
        ok.body,
        json!({"password_changed": true, "sessions_ended": 1})
    );
    me.get("/auth/me").await.ok();
    let other = browser(&state).with(&elsewhere).get("/auth/me").await;
    problem(&other, StatusCode::UNAUTHORIZED, "not_authenticated");
    let old = at(&state, "203.0.113.5").login("pat", PW).await;
    problem(&old, StatusCode::UNAUTHORIZED, "invalid_credentials");
    at(&state, "203.0.113.5")
        .login("pat", "a new password")
        .await
        .ok();
}

#[tokio::test]
async fn a_new_address_counts_once_its_link_is_opened() {
    let (state, _db, outbox) = app_state(|_| {}).await;
    register(&state, "mo", PW).await;
    let session = sign_in(&state, "mo", PW).await;
    let me = browser(&state).with(&session);
    // A reset link to the old address, which the change must end.
    let reset_request = json!({"email": "mo@example.com"});
    browser(&state)
        .post("/auth/password-reset/request", reset_request)
        .await;
    let reset = token_in(&outbox_mails(outbox.path(), 1).await[0]);

    let to = |email: &str| json!({"email": email, "password": PW});
    let bad = me.post("/auth/email/change", to("no at sign")).await;
    problem(&bad, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    let sent = me.post("/auth/email/change", to("mo@new.example")).await;
    assert_eq!(sent.status, StatusCode::ACCEPTED, "{}", sent.body);
    let mails = outbox_mails(outbox.path(), 2).await;
    let mail = mails.iter().find(|m| m.contains("To: mo@new.example"));
    let mail = mail.expect("a mail to the new address");
    assert!(mail.contains("/account/email#token=tsr_ec_"), "{mail}");
    let token = token_in(mail);
    let before = me.get("/auth/me").await;
    assert_eq!(
        before.body["email"], "mo@example.com",
        "nothing changes until confirmed"
    );

    let confirm = json!({"token": token});
    let confirmed = browser(&state)
        .post("/auth/email/confirm", confirm.clone())
        .await;
    confirmed.ok();
    assert_eq!(confirmed.body, json!({"email": "mo@new.example"}));
    let again = browser(&state).post("/auth/email/confirm", confirm).await;
    problem(&again, StatusCode::BAD_REQUEST, "invalid_or_expired_token");
    let stale = json!({"token": reset, "new_password": "taken over!"});
    let stale = browser(&state)
        .post("/auth/password-reset/confirm", stale)
        .await;
    problem(&stale, StatusCode::BAD_REQUEST, "invalid_or_expired_token");
    assert_eq!(me.get("/auth/me").await.body["email"], "mo@new.example");
}

#[tokio::test]
async fn email_codes_go_off_and_an_account_goes_away() {
    let (state, db, outbox) = app_state(|_| {}).await;
    register(&state, "eve", PW).await;
    let session = sign_in(&state, "eve", PW).await;
    let me = browser(&state).with(&session);
    let with_password = json!({"password": PW});
    let off = me
        .post("/auth/email-otp/disable", with_password.clone())
        .await;
    problem(&off, StatusCode::CONFLICT, "email_otp_not_enabled");
    enable_email_otp(&state, outbox.path(), &session, 1).await;
    let off = me
        .post("/auth/email-otp/disable", with_password.clone())
        .await;
    off.ok();
    assert_eq!(off.body, json!({"email_otp_enabled": false}));
    let r = at(&state, "203.0.113.9").login("eve", PW).await;
    assert_eq!(
        r.body["authenticated"], true,
        "no second factor any more: {}",
        r.body
    );

    let wrong = me
        .post("/auth/account/delete", json!({"password": "not it"}))
        .await;
    problem(&wrong, StatusCode::UNAUTHORIZED, "invalid_credentials");
    let gone = me.post("/auth/account/delete", with_password).await;
    gone.ok();
    assert_eq!(gone.body, json!({"deleted": true}));
    let cleared = set_cookie(&gone, "tessera_session").expect("the cookie is cleared");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    for table in ["users", "sessions"] {
        assert_eq!(db.count(table).await, 0, "{table}");
    }
    let r = at(&state, "203.0.113.9").login("eve", PW).await;
    problem(&r, StatusCode::UNAUTHORIZED, "invalid_credentials");
}

/// An account without a password (made by an OIDC login) proves itself with a current
/// TOTP code instead, and a wrong code counts like any second-factor failure.
#[tokio::test]
async fn an_account_without_a_password_proves_itself_with_a_code() {
    use sea_orm::ConnectionTrait;
    let (state, db, _o) = app_state(|_| {}).await;
    register(&state, "oidc-made", PW).await;
    let session = sign_in(&state, "oidc-made", PW).await;
    let me = browser(&state).with(&session);
    let (secret, step, _) = confirm_totp(&state, &session).await;
    let no_password = "UPDATE users SET password_hash = NULL WHERE username = 'oidc-made'";
    db.db.execute_unprepared(no_password).await.unwrap();
    let with_password = me
        .post("/auth/account/delete", json!({"password": PW}))
        .await;
    problem(
        &with_password,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    let wrong = me
        .post("/auth/account/delete", json!({"code": "000000"}))
        .await;
    problem(&wrong, StatusCode::UNAUTHORIZED, "invalid_code");
    let listed = tessera_auth::accounts::list(&state.auth.db).await.unwrap();
    assert_eq!(
        listed[0].failed_login_count, 1,
        "a wrong code counts toward the lockout"
    );
    // The confirming code's window is used: the next one (accepted a window early).
    let code = mfa::code_at(&secret, step + 1);
    let first = json!({"code": code, "new_password": "a first password"});
    me.post("/auth/password/change", first).await.ok();
    let r = at(&state, "203.0.113.9")
        .login("oidc-made", "a first password")
        .await;
    assert_eq!(r.body["mfa_required"], true, "{}", r.body);
}

/// Wrong passwords sent as proof count in the account's own `login_attempt` budget, the
/// one `/auth/login` uses (10 per 15 minutes), and in no other account's.
#[tokio::test]
async fn wrong_proofs_spend_the_accounts_own_password_budget() {
    let (state, _db, _o) = app_state(|_| {}).await;
    register(&state, "held", PW).await;
    register(&state, "bystander", PW).await;
    let session = sign_in(&state, "held", PW).await;
    let me = browser(&state).with(&session);
    let wrong = json!({"password": "not the password", "new_password": "a new password"});
    for _ in 0..10 {
        let a = me.post("/auth/password/change", wrong.clone()).await;
        problem(&a, StatusCode::UNAUTHORIZED, "invalid_credentials");
    }
    let over = me.post("/auth/password/change", wrong).await;
    problem(&over, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    let login = at(&state, "203.0.113.77")
        .login("held", "not the password")
        .await;
    problem(&login, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    at(&state, "203.0.113.78").login("bystander", PW).await.ok();
}

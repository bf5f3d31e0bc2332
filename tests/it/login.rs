//! The login flows end to end: three `tessera serve` workers on one store (PostgreSQL, and
//! PostgreSQL with tokens and limits on Redis), a real SMTP server (aiosmtpd) receiving the
//! mail, and TOTP codes from an independent generator (pyotp). Each step of a login lands
//! on a different worker.

use futures::future::join_all;
use serde_json::json;
use std::net::SocketAddr;
use std::time::Duration;
use tessera_testkit::require_redis;

use crate::helpers::*;

/// Password on worker 1, TOTP on worker 2, `/auth/me` on worker 3; then replay, the race of
/// one code on two workers, backup codes, throttling and lockout across workers, email
/// codes, password reset, enforced MFA. Answers every secret seen.
async fn login_flows(w: [SocketAddr; 3], smtp: &SmtpSink, database_url: &str) -> Vec<String> {
    let mut f = Flow {
        w,
        secrets: Vec::new(),
        confirmed_at: 0,
    };
    let pw = "correct horse battery";
    let (alice, _) = f.register("alice", pw).await;
    let (secret, backup) = without_a_second_factor(&mut f, &alice, pw).await;
    totp_codes_across_workers(&mut f, &alice, pw, &secret).await;
    backup_codes_across_workers(&mut f, &alice, pw, &backup).await;
    second_factor_throttle_across_workers(&mut f, pw).await;
    wrong_passwords_are_throttled_never_locked(&mut f, &alice, pw).await;
    let (dave, dave_mail, mut bd) = email_codes_across_workers(&mut f, smtp, pw).await;
    password_reset_across_workers(&mut f, smtp, pw, &dave, &dave_mail, &mut bd).await;
    mfa_enforced_by_an_admin(&mut f, pw, database_url).await;
    f.secrets
}

/// Without a second factor a session comes at once, valid on every worker; then TOTP is
/// set up. Answers its secret and backup codes.
async fn without_a_second_factor(f: &mut Flow, alice: &str, pw: &str) -> (String, Vec<String>) {
    let w = f.w;
    // Without a second factor: a session straight away, valid on every worker.
    let (mut b, r) = f.password(0, alice, pw).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, json!({"authenticated": true, "username": alice}));
    let me = b.get(w[2], "/auth/me").await;
    assert_eq!(me.status, 200);
    assert_eq!(me.body["username"], alice);
    assert_eq!(me.body["totp_enabled"], false);

    let (secret, backup) = f.enable_totp(&mut b).await;
    let status = b.get(w[2], "/auth/totp/status").await;
    assert_eq!(
        status.body,
        json!({"enabled": true, "backup_codes_remaining": 10})
    );
    let out = b.post(w[2], "/auth/logout", json!({})).await;
    assert_eq!(out.status, 204);
    assert_eq!(b.get(w[0], "/auth/me").await.status, 401);
    (secret, backup)
}

/// Password, TOTP code and `/auth/me` each on another worker; a code is accepted once
/// (replays, the previous window, two workers racing one code).
async fn totp_codes_across_workers(f: &mut Flow, alice: &str, pw: &str, secret: &str) {
    let w = f.w;
    // Password on worker 1 → second factor on worker 2 → me on worker 3. The codes are
    // those of the confirmation's window and the next, both inside the accepted skew
    // however long the steps above took.
    let now = f.confirmed_at;
    let (mut b, r) = f.password(0, alice, pw).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["mfa_required"], true);
    assert_eq!(r.body["methods"], json!(["totp", "backup_code"]));
    let token = r.body["mfa_token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("tsr_pa_"));
    assert!(b.jar.contains_key("tessera_challenge"));
    // The token alone, without the challenge cookie, is useless.
    let mut thief = Browser::new();
    let stolen = verify(&mut thief, w[1], &token, "code", &pyotp(secret, now + 30)).await;
    assert_eq!(stolen.status, 401);
    assert_eq!(stolen.body["code"], "mfa_session_expired");
    // The code that confirmed the setup was recorded: it does not sign in again.
    let replay = verify(&mut b, w[1], &token, "code", &pyotp(secret, now)).await;
    assert_eq!(replay.status, 401, "{}", replay.body);
    assert_eq!(replay.body["code"], "invalid_code");
    // A fresh code (the next window, within the skew) does, and spends the mfa_token.
    let next = pyotp(secret, now + 30);
    let ok = verify(&mut b, w[1], &token, "code", &next).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.body["authenticated"], true);
    let me = b.get(w[2], "/auth/me").await;
    assert_eq!(me.status, 200);
    assert_eq!(me.body["totp_enabled"], true);
    f.secrets.push(b.jar["tessera_session"].clone());
    let spent = verify(&mut b, w[0], &token, "code", &next).await;
    assert_eq!(spent.body["code"], "mfa_session_expired");
    // The same code in a new login: a replay.
    let (mut b2, r) = f.password(2, alice, pw).await;
    let token2 = r.body["mfa_token"].as_str().unwrap().to_owned();
    let replay = verify(&mut b2, w[0], &token2, "code", &next).await;
    assert_eq!(replay.body["code"], "invalid_code");

    // The previous window's code, then the current one: both accepted once.
    let t = loop {
        // Two windows that nothing has used yet: wait for the window after `next`'s.
        let t = fresh_window().await;
        if t / 30 >= now / 30 + 3 {
            break t;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let prev = verify(&mut b2, w[1], &token2, "code", &pyotp(secret, t - 30)).await;
    assert_eq!(prev.status, 200, "{}", prev.body);
    let (mut b3, r) = f.password(1, alice, pw).await;
    let token3 = r.body["mfa_token"].as_str().unwrap().to_owned();
    let cur = verify(&mut b3, w[2], &token3, "code", &pyotp(secret, t)).await;
    assert_eq!(cur.status, 200, "{}", cur.body);

    // Two workers given the same unused code at the same moment: one success.
    let t = fresh_window().await;
    let code = pyotp(secret, t + 30);
    let mut racers = Vec::new();
    for i in 0..2 {
        let (b, r) = f.password(i, alice, pw).await;
        racers.push((b, r.body["mfa_token"].as_str().unwrap().to_owned()));
    }
    let results = join_all(racers.into_iter().enumerate().map(|(i, (mut b, tok))| {
        let code = code.clone();
        async move { verify(&mut b, w[i + 1], &tok, "code", &code).await.status }
    }))
    .await;
    let mut sorted = results.clone();
    sorted.sort();
    assert_eq!(sorted, vec![200, 401], "one code, two workers: {results:?}");
}

/// Backup codes: typed sloppily they work, once; of three workers racing one, one wins.
async fn backup_codes_across_workers(f: &mut Flow, alice: &str, pw: &str, backup: &[String]) {
    let w = f.w;
    // Backup codes: typed sloppily they work, once; two workers racing one code: one wins.
    let (mut b, r) = f.password(0, alice, pw).await;
    let tok = r.body["mfa_token"].as_str().unwrap().to_owned();
    let sloppy = backup[0].replace('-', " ").to_lowercase();
    let ok = verify(&mut b, w[1], &tok, "backup_code", &sloppy).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let (mut b, r) = f.password(0, alice, pw).await;
    let tok = r.body["mfa_token"].as_str().unwrap().to_owned();
    let again = verify(&mut b, w[2], &tok, "backup_code", &backup[0]).await;
    assert_eq!(again.body["code"], "invalid_code");
    let mut racers = Vec::new();
    for i in 0..3 {
        let (b, r) = f.password(i, alice, pw).await;
        racers.push((b, r.body["mfa_token"].as_str().unwrap().to_owned()));
    }
    let results = join_all(racers.into_iter().enumerate().map(|(i, (mut b, tok))| {
        let code = backup[1].clone();
        async move {
            verify(&mut b, w[i], &tok, "backup_code", &code)
                .await
                .status
        }
    }))
    .await;
    assert_eq!(
        results.iter().filter(|s| **s == 200).count(),
        1,
        "one backup code, three workers: {results:?}"
    );
}

/// Wrong codes spread over the workers meet one throttle.
async fn second_factor_throttle_across_workers(f: &mut Flow, pw: &str) {
    let w = f.w;
    // Throttling across workers: 5 wrong codes spread over the three workers are each
    // counted; the 6th attempt gets 429 whichever worker it reaches. Failures count toward
    // the lock too.
    let (bob, _) = f.register("bob", pw).await;
    let (mut bb, _) = f.password(0, &bob, pw).await;
    let (bob_secret, _) = f.enable_totp(&mut bb).await;
    let (mut bb, r) = f.password(0, &bob, pw).await;
    let tok = r.body["mfa_token"].as_str().unwrap().to_owned();
    for i in 0..5 {
        let r = verify(&mut bb, w[i % 3], &tok, "code", "000000").await;
        assert_eq!(r.status, 401, "attempt {i}: {}", r.body);
    }
    // Five wrong codes spent that pending login; a new one meets the per-user throttle.
    let r = verify(&mut bb, w[0], &tok, "code", &pyotp(&bob_secret, unix_now())).await;
    assert_eq!(r.body["code"], "mfa_session_expired", "{}", r.body);
    for (i, addr) in w.iter().enumerate() {
        let (mut bb, r) = f.password(i, &bob, pw).await;
        let tok = r.body["mfa_token"].as_str().unwrap().to_owned();
        let r = verify(
            &mut bb,
            *addr,
            &tok,
            "code",
            &pyotp(&bob_secret, unix_now()),
        )
        .await;
        assert_eq!(r.status, 429, "worker {i}: {}", r.body);
        assert_eq!(r.body["code"], "rate_limited");
        assert!(r.headers.contains_key("retry-after"));
        assert_eq!(
            r.headers["ratelimit-policy"].to_str().unwrap(),
            "\"2fa_attempt\";q=5;w=300"
        );
        assert!(
            r.headers["ratelimit"]
                .to_str()
                .unwrap()
                .starts_with("\"2fa_attempt\";r=0;t=")
        );
    }
}

/// Wrong passwords meet a throttle, never a lock; an unknown user answers like a wrong
/// password.
async fn wrong_passwords_are_throttled_never_locked(f: &mut Flow, alice: &str, pw: &str) {
    // Wrong passwords never lock (a stranger could keep the owner out): five from one
    // address across the workers exhaust the per-username-and-address throttle, which then
    // answers 429 on every worker, never 423.
    let (carol, _) = f.register("carol", pw).await;
    for i in 0..5 {
        let (_, r) = f.password(i % 3, &carol, "wrong password!").await;
        assert_eq!(r.status, 401, "attempt {i}: {}", r.body);
        assert_eq!(r.body["code"], "invalid_credentials");
    }
    for on in 0..3 {
        let (_, r) = f.password(on, &carol, "wrong password!").await;
        assert_eq!(r.status, 429, "{}", r.body);
        assert_eq!(r.body["code"], "rate_limited");
        assert!(r.headers.contains_key("retry-after"));
    }
    // An unknown user and a wrong password answer alike.
    let (_, unknown) = f.password(0, "nobody-at-all", "wrong password!").await;
    let (_, wrong) = f.password(0, alice, "wrong password!").await;
    assert_eq!(unknown.status, 401);
    assert_eq!(unknown.body, wrong.body);
}

/// Email codes turned on and used, each step on another worker. Answers the account, its
/// address and its signed-in browser.
async fn email_codes_across_workers(
    f: &mut Flow,
    smtp: &SmtpSink,
    pw: &str,
) -> (String, String, Browser) {
    let w = f.w;
    // Email codes: enable on worker 1 (the code arrives by SMTP), confirm on worker 2; at
    // login, the code is mailed by worker 1 and accepted by worker 2.
    let (dave, dave_mail) = f.register("dave", pw).await;
    let (mut bd, _) = f.password(0, &dave, pw).await;
    let en = bd.post(w[0], "/auth/email-otp/enable", json!({})).await;
    assert_eq!(en.status, 200, "{}", en.body);
    f.secrets
        .push(en.body["setup_token"].as_str().unwrap().to_owned());
    let mail = smtp.nth_to(&dave_mail, 1).await;
    let code = code_in(&mail);
    assert_standard_message(&mail, &code);
    let wrong = bd
        .post(w[1], "/auth/email-otp/confirm", json!({"code": "999999"}))
        .await;
    assert_eq!(wrong.status, 401);
    let conf = bd
        .post(w[1], "/auth/email-otp/confirm", json!({"code": code}))
        .await;
    assert_eq!(conf.status, 200, "{}", conf.body);
    assert_eq!(
        bd.get(w[2], "/auth/me").await.body["email_otp_enabled"],
        true
    );
    let (mut bd, r) = f.password(2, &dave, pw).await;
    assert_eq!(r.body["methods"], json!(["email_otp"]));
    let tok = r.body["mfa_token"].as_str().unwrap().to_owned();
    let sent = bd
        .post(w[0], "/auth/2fa/email/send", json!({"mfa_token": tok}))
        .await;
    assert_eq!(sent.status, 202, "{}", sent.body);
    let code = code_in(&smtp.nth_to(&dave_mail, 2).await);
    let ok = verify(&mut bd, w[1], &tok, "email_code", &code).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(bd.get(w[2], "/auth/me").await.body["username"], dave);
    (dave, dave_mail, bd)
}

/// A reset link by mail sets a new password once and ends every session.
async fn password_reset_across_workers(
    f: &mut Flow,
    smtp: &SmtpSink,
    pw: &str,
    dave: &str,
    dave_mail: &str,
    bd: &mut Browser,
) {
    let w = f.w;
    // Password reset: 202 for a known and an unknown address alike; the mail's token sets
    // a new password once and ends every session.
    let before = smtp.count_to(dave_mail);
    for addr in [dave_mail, "nobody@example.com"] {
        let r = Browser::new()
            .post(w[0], "/auth/password-reset/request", json!({"email": addr}))
            .await;
        assert_eq!(r.status, 202, "{}", r.body);
    }
    let reset = smtp.nth_to(dave_mail, before + 1).await;
    let token = reset_token_in(&reset);
    assert_standard_message(&reset, &token);
    f.secrets.push(token.clone());
    let new_pw = "a brand new passphrase";
    let mut anon = Browser::new();
    let short = anon
        .post(
            w[1],
            "/auth/password-reset/confirm",
            json!({"token": token, "new_password": "short"}),
        )
        .await;
    assert_eq!(short.status, 422, "a bad password does not burn the token");
    let done = anon
        .post(
            w[1],
            "/auth/password-reset/confirm",
            json!({"token": token, "new_password": new_pw}),
        )
        .await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(done.body["sessions_ended"].as_u64().unwrap() >= 1);
    f.secrets.push(new_pw.to_owned());
    let reuse = anon
        .post(
            w[2],
            "/auth/password-reset/confirm",
            json!({"token": token, "new_password": new_pw}),
        )
        .await;
    assert_eq!(reuse.status, 400);
    assert_eq!(reuse.body["code"], "invalid_or_expired_token");
    assert_eq!(bd.get(w[2], "/auth/me").await.status, 401, "sessions ended");
    let (_, old) = f.password(1, dave, pw).await;
    assert_eq!(old.status, 401);
    let (_, new) = f.password(1, dave, new_pw).await;
    assert_eq!(new.body["mfa_required"], true);
    assert_eq!(smtp.count_to("nobody@example.com"), 0);
}

/// An admin requires a second factor: the password step answers `mfa_setup_required` and
/// the enforcement token sets TOTP up and signs in.
async fn mfa_enforced_by_an_admin(f: &mut Flow, pw: &str, database_url: &str) {
    let w = f.w;
    // MFA enforced by an admin: the password step answers mfa_setup_required, and the
    // enforcement token sets TOTP up and signs in.
    let (erin, _) = f.register("erin", pw).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = crate::helpers::tessera(dir.path());
    cmd.args(["user", "enforce-mfa", &erin, "--database-url", database_url]);
    let out = crate::helpers::run(cmd);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (mut be, r) = f.password(0, &erin, pw).await;
    assert_eq!(r.body["mfa_setup_required"], true, "{}", r.body);
    let tok = r.body["mfa_token"].as_str().unwrap().to_owned();
    assert!(tok.starts_with("tsr_me_"));
    // An enforcement token is not a pre_auth token.
    assert_eq!(
        verify(&mut be, w[1], &tok, "code", "123456").await.body["code"],
        "mfa_session_expired"
    );
    let setup = be
        .post(w[1], "/auth/totp/enforce-setup", json!({"mfa_token": tok}))
        .await;
    assert_eq!(setup.status, 200, "{}", setup.body);
    let es = setup.body["secret"].as_str().unwrap().to_owned();
    f.secrets.push(es.clone());
    let now = fresh_window().await;
    let conf = be
        .post(
            w[2],
            "/auth/totp/enforce-confirm",
            json!({"mfa_token": tok, "code": pyotp(&es, now)}),
        )
        .await;
    assert_eq!(conf.status, 200, "{}", conf.body);
    assert_eq!(conf.body["authenticated"], true);
    assert_eq!(be.get(w[0], "/auth/me").await.body["totp_enabled"], true);
    let (_, r) = f.password(0, &erin, pw).await;
    assert_eq!(r.body["mfa_required"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn login_flows_across_three_workers_on_postgres() {
    // Every request of the test comes from 127.0.0.1.
    let (db, smtp, _dir, ws, _ws_dir) =
        three_workers_on_postgres("login_ip=1000/15m,password_reset_ip=1000/1h").await;
    let addrs = [ws[0].addr, ws[1].addr, ws[2].addr];
    let secrets = login_flows(addrs, &smtp, &db.url).await;
    assert_no_secret(&dump_postgres(&db).await, &secrets);
    drop(ws);
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn login_flows_across_three_workers_on_redis() {
    let redis = require_redis();
    let (db, smtp, _dir, ws, _ws_dir) =
        three_workers_on_redis("login_ip=1000/15m,password_reset_ip=1000/1h").await;
    let addrs = [ws[0].addr, ws[1].addr, ws[2].addr];
    let secrets = login_flows(addrs, &smtp, &db.url).await;
    let mut dump = dump_postgres(&db).await;
    dump.push_str(&dump_redis(&redis));
    assert!(
        dump.contains("tessera:tok:"),
        "the dump holds the tokens in Redis"
    );
    assert_no_secret(&dump, &secrets);
    drop(ws);
    db.finish().await;
}

//! Passkeys across three workers, with Chromium's virtual authenticator answering the
//! ceremonies in a page of the deployment's origin (`http://localhost:PORT`, the workers
//! behind the deployment's nginx; the relying party is `localhost`). Each step goes to a
//! worker of the test's choosing: registration begun on worker 1 and finished on worker 2,
//! sign-in begun on 2 and finished on 3; replays, another browser's cookie, a cloned
//! authenticator and a removed passkey refused. Once on PostgreSQL, once with tokens and
//! limits on Redis; a dump of both taken while ceremonies and a magic link are in flight.

use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};
use std::net::SocketAddr;

use crate::helpers::authenticator::{self, Authenticator};
use crate::helpers::nginx::{Killed, echo_app, nginx_on, servers};
use crate::helpers::webdriver::{Driver, Page};
use crate::helpers::*;
use tessera_testkit::TestDb;

const LIMITS: &str =
    "login_ip=1000/15m,passkey_ip=1000/15m,2fa_attempt=100/15m,magic_link_ip=1000/1h";

struct Deployment {
    w: [SocketAddr; 3],
    db: TestDb,
    smtp: SmtpSink,
    redis: Option<String>,
    page: Page,
    _parts: (
        Driver,
        tempfile::TempDir,
        Vec<Worker>,
        Killed,
        Killed,
        tempfile::TempDir,
    ),
}

async fn deployment(redis: Option<String>) -> Deployment {
    let port = free_port();
    let origin = format!("http://localhost:{port}");
    let mut args = vec!["--public-url".to_owned(), origin.clone()];
    if let Some(url) = &redis {
        args.extend(["--redis-url".to_owned(), url.clone()]);
    }
    let (db, smtp, dir, ws, _ws_dir) = three_workers(&args, LIMITS).await;
    let (app_process, app) = echo_app();
    let w = [ws[0].addr, ws[1].addr, ws[2].addr];
    let files = [
        ("upstreams.conf", servers(&w)),
        ("app.conf", servers(&[app])),
    ];
    let (nginx, _proxy, prefix) = nginx_on(port, "protect-app.conf", &files);
    let driver = Driver::start();
    let page = driver.browser(&origin).await;
    // Any page of the origin: WebAuthn runs in its context (localhost is a secure one).
    page.open("/login").await;
    Deployment {
        w,
        db,
        smtp,
        redis,
        page,
        _parts: (driver, dir, ws, app_process, nginx, prefix),
    }
}

/// The user's count of second-factor failures toward the lockout.
async fn failures(db: &TestDb, user: &str) -> i64 {
    let row = db
        .db
        .query_one_raw(Statement::from_string(
            db.db.get_database_backend(),
            format!("SELECT failed_login_count::bigint AS n FROM users WHERE username = '{user}'"),
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get::<i64>("", "n").unwrap()
}

/// Sets the account's lock (`until` is SQL: a time, or `NULL`).
async fn set_lock(db: &TestDb, user: &str, until: &str) {
    db.db
        .execute_raw(Statement::from_string(
            db.db.get_database_backend(),
            format!("UPDATE users SET locked_until = {until} WHERE username = '{user}'"),
        ))
        .await
        .unwrap();
}

/// A browser signed in as `user` (no second factor yet) through worker `on`.
async fn signed_in(w: SocketAddr, user: &str, password: &str) -> Browser {
    let mut b = Browser::new();
    let r = b
        .post(
            w,
            "/auth/login",
            json!({"username": user, "password": password}),
        )
        .await;
    assert_eq!(r.body["authenticated"], true, "{}", r.body);
    b
}

/// A ceremony's start: its options (`publicKey`) and the cookie that names it.
async fn start(b: &mut Browser, w: SocketAddr, path: &str, body: Value) -> (Value, String) {
    let r = b.post(w, path, body).await;
    assert_eq!(r.status, 200, "{path}: {}", r.body);
    let cookie = b
        .jar
        .get("tessera_webauthn")
        .cloned()
        .expect("the ceremony's cookie");
    assert!(cookie.starts_with("tsr_wa_"), "{cookie}");
    let set = r.headers.get("set-cookie").unwrap().to_str().unwrap();
    assert!(
        set.contains("HttpOnly") && set.contains("Path=/auth"),
        "{set}"
    );
    (r.body["publicKey"].clone(), cookie)
}

/// A sign-in with a passkey alone: begun on `from` with `body`, the authenticator's
/// answer finished on `to`; the request's options and the finish's answer.
async fn passkey_sign_in(
    b: &mut Browser,
    page: &Page,
    from: SocketAddr,
    to: SocketAddr,
    body: Value,
) -> (Value, Answer) {
    let (options, _) = start(b, from, "/auth/passkeys/login/start", body).await;
    let assertion = authenticator::get(page, &options).await.unwrap();
    let r = b
        .post(
            to,
            "/auth/passkeys/login/finish",
            json!({ "credential": assertion }),
        )
        .await;
    (options, r)
}

/// A passkey as the second factor of the sign-in `mfa_token` began: the ceremony started on
/// `from`, the assertion sent to `/auth/2fa/verify` on `to`.
async fn passkey_second_factor(
    b: &mut Browser,
    page: &Page,
    from: SocketAddr,
    to: SocketAddr,
    mfa_token: &str,
) -> Answer {
    let body = json!({ "mfa_token": mfa_token });
    let (options, _) = start(b, from, "/auth/2fa/passkey/start", body).await;
    let assertion = authenticator::get(page, &options).await.unwrap();
    b.post(
        to,
        "/auth/2fa/verify",
        json!({ "mfa_token": mfa_token, "passkey": assertion }),
    )
    .await
}

/// `b` with the ceremony cookie `cookie` in place of its own.
fn with_ceremony(b: &Browser, cookie: &str) -> Browser {
    let mut other = b.clone();
    other
        .jar
        .insert("tessera_webauthn".into(), cookie.to_owned());
    other
}

async fn passkeys_across_workers(d: &Deployment) {
    let (w, page) = (d.w, &d.page);
    let auth = Authenticator::add(page).await;
    let pw = "a passkey password";
    let mut f = Flow {
        w,
        secrets: Vec::new(),
        confirmed_at: 0,
    };
    let (user, email) = f.register("pk", pw).await;
    let mut b = signed_in(w[0], &user, pw).await;

    // Registration begun on worker 1.
    let (options, cookie) = start(&mut b, w[0], "/auth/passkeys/register/start", json!({})).await;
    assert_eq!(options["rp"]["id"], "localhost", "{options}");
    assert_eq!(
        options["authenticatorSelection"]["residentKey"],
        "preferred"
    );
    let challenge = options["challenge"].as_str().unwrap().to_owned();
    let credential = authenticator::create(page, &options).await.unwrap();

    // In flight: a second ceremony (a sign-in) and a magic link. The stores hold neither
    // challenge nor token in clear.
    let mut anon = Browser::new();
    let (login_options, login_cookie) =
        start(&mut anon, w[1], "/auth/passkeys/login/start", json!({})).await;
    assert_eq!(
        login_options["allowCredentials"],
        json!([]),
        "{login_options}"
    );
    let r = Browser::new()
        .post(w[2], "/auth/magic-link/request", json!({ "email": email }))
        .await;
    assert_eq!(r.status, 202);
    let link = crate::magic::token_after(&d.smtp.nth_to(&email, 1).await, "#token=");
    assert!(link.starts_with("tsr_ml_"), "{link}");
    let in_flight = [
        challenge.clone(),
        cookie.clone(),
        login_options["challenge"].as_str().unwrap().to_owned(),
        login_cookie.clone(),
        link,
    ];
    let mut dump = dump_postgres(&d.db).await;
    if let Some(url) = &d.redis {
        dump.push_str(&dump_redis(url));
    }
    for secret in &in_flight {
        assert!(
            !dump.contains(secret.as_str()),
            "in clear in a store: {secret}"
        );
    }
    assert!(dump.contains(&user), "the dump holds the account");

    // Finished with another browser's cookie (its own ceremony, of another account):
    // refused, and neither ceremony is spent.
    let (stranger, _) = f.register("pk-other", pw).await;
    let mut other = signed_in(w[1], &stranger, pw).await;
    let (_, other_cookie) =
        start(&mut other, w[1], "/auth/passkeys/register/start", json!({})).await;
    // ... or its own ceremony, of the same account, begun in a second browser: the
    // challenge the authenticator signed is not that ceremony's.
    let mut second = signed_in(w[2], &user, pw).await;
    let (_, second_cookie) = start(
        &mut second,
        w[2],
        "/auth/passkeys/register/start",
        json!({}),
    )
    .await;
    let finish = json!({ "credential": credential, "name": "Laptop" });
    for (mut as_whom, code) in [
        (with_ceremony(&b, &other_cookie), "ceremony_expired"),
        (with_ceremony(&other, &cookie), "ceremony_expired"),
        (with_ceremony(&b, &second_cookie), "validation_failed"),
    ] {
        let r = as_whom
            .post(w[2], "/auth/passkeys/register/finish", finish.clone())
            .await;
        assert_eq!(r.body["code"], code, "{}", r.body);
        assert!(!r.body["detail"].as_str().unwrap_or_default().is_empty());
    }

    // Finished on worker 2; the same finish again on worker 3 is refused.
    let r = b
        .post(w[1], "/auth/passkeys/register/finish", finish.clone())
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["name"], "Laptop");
    let passkey_id = r.body["id"].as_str().unwrap().to_owned();
    assert!(
        !b.jar.contains_key("tessera_webauthn"),
        "the cookie is cleared"
    );
    let r = with_ceremony(&b, &cookie)
        .post(w[2], "/auth/passkeys/register/finish", finish.clone())
        .await;
    assert_eq!(r.body["code"], "ceremony_expired", "{}", r.body);
    let list = b.get(w[2], "/auth/passkeys").await;
    assert_eq!(list.status, 200);
    assert_eq!(list.body.as_array().unwrap().len(), 1, "{}", list.body);
    assert_eq!(list.body[0]["id"], passkey_id.as_str());
    assert_eq!(list.body[0]["last_used_at"], Value::Null);

    // Without a password: the sign-in begun on worker 2 (in flight above), finished on 3.
    let assertion = authenticator::get(page, &login_options).await.unwrap();
    let sign_in = json!({ "credential": assertion });
    let r = anon
        .post(w[2], "/auth/passkeys/login/finish", sign_in.clone())
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["authenticated"], true);
    assert_eq!(
        anon.get(w[0], "/auth/me").await.body["username"],
        user.as_str()
    );
    // The same finish again, on worker 1: refused.
    let mut replay = with_ceremony(&Browser::new(), &login_cookie);
    let r = replay
        .post(w[0], "/auth/passkeys/login/finish", sign_in)
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.body["code"], "ceremony_expired");
    let used = b.get(w[0], "/auth/passkeys").await;
    assert!(used.body[0]["last_used_at"].is_string(), "{}", used.body);

    // With the username, the request names the account's passkey.
    let mut c = Browser::new();
    let (options, r) = passkey_sign_in(&mut c, page, w[1], w[0], json!({"username": user})).await;
    assert_eq!(
        options["allowCredentials"].as_array().unwrap().len(),
        1,
        "{options}"
    );
    assert_eq!(r.body["authenticated"], true, "{}", r.body);
    // A name without passkeys, or of no account, gets a request of the same shape: one
    // credential id, the same at every call, that no authenticator holds.
    let real = options["allowCredentials"][0].clone();
    assert_eq!(real["type"], "public-key", "{real}");
    for name in [stranger.clone(), unique("nobody")] {
        let ask = json!({ "username": name });
        let mut c2 = Browser::new();
        let (first, _) = start(&mut c2, w[1], "/auth/passkeys/login/start", ask.clone()).await;
        let (again, _) = start(&mut c2, w[2], "/auth/passkeys/login/start", ask).await;
        let decoy = first["allowCredentials"].clone();
        assert_eq!(
            decoy, again["allowCredentials"],
            "stable across calls and workers"
        );
        assert_eq!(decoy.as_array().unwrap().len(), 1, "{decoy}");
        assert_ne!(decoy[0]["id"], real["id"]);
        let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&decoy[0]), keys(&real));
        assert_eq!(
            keys(&first),
            keys(&options),
            "the same options, field for field"
        );
    }

    // As the second factor after the password (TOTP on as well).
    f.enable_totp(&mut b).await;
    let (mut p, r) = f.password(2, &user, pw).await;
    assert_eq!(
        r.body["methods"],
        json!(["totp", "backup_code", "passkey"]),
        "{}",
        r.body
    );
    let mfa_token = r.body["mfa_token"].as_str().unwrap().to_owned();
    let r = passkey_second_factor(&mut p, page, w[0], w[1], &mfa_token).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["authenticated"], true);

    // A cloned authenticator: the same key, its counter behind the stored one.
    let held = auth.credentials(page).await;
    assert_eq!(held.len(), 1, "one resident credential");
    let count = held[0]["signCount"].as_u64().unwrap();
    assert!(
        count >= 3,
        "the authenticator counts its signatures: {count}"
    );
    auth.set_count(page, &held[0], 1).await;
    let before = failures(&d.db, &user).await;
    let mut thief = Browser::new();
    let (_, r) = passkey_sign_in(&mut thief, page, w[1], w[2], json!({})).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.body["code"], "invalid_credentials", "{}", r.body);
    assert!(!thief.jar.contains_key("tessera_session"));
    // Without the password a refusal does not count against the account: whoever learns
    // its credential ids (a start with its name lists them) cannot lock its owner out.
    for _ in 0..12 {
        auth.set_count(page, &held[0], 1).await;
        let (_, r) = passkey_sign_in(&mut thief, page, w[0], w[1], json!({})).await;
        assert_eq!(r.status, 401, "{}", r.body);
    }
    assert_eq!(
        failures(&d.db, &user).await,
        before,
        "not counted against the account"
    );
    // After the password it is a second-factor check, and counts like a wrong code.
    auth.set_count(page, &held[0], 1).await;
    let (mut p, r) = f.password(1, &user, pw).await;
    let mfa_token = r.body["mfa_token"].as_str().unwrap().to_owned();
    let r = passkey_second_factor(&mut p, page, w[2], w[0], &mfa_token).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.body["code"], "invalid_code", "{}", r.body);
    assert_eq!(
        failures(&d.db, &user).await,
        before + 1,
        "counted toward the lockout"
    );
    // The real one, its counter ahead, still signs in.
    auth.set_count(page, &held[0], count + 10).await;
    let (_, r) = passkey_sign_in(&mut thief, page, w[1], w[2], json!({})).await;
    assert_eq!(r.body["authenticated"], true, "{}", r.body);

    // A locked account stays locked, whatever the passkey.
    set_lock(&d.db, &user, "now() + interval '1 hour'").await;
    let (_, r) = passkey_sign_in(&mut thief, page, w[0], w[1], json!({})).await;
    assert_eq!(r.status, 423, "{}", r.body);
    assert_eq!(r.body["code"], "account_locked");
    set_lock(&d.db, &user, "NULL").await;

    // Removed (with the password, on worker 3): it no longer signs in, nor is it offered.
    let wrong = b
        .post(
            w[2],
            "/auth/passkeys/remove",
            json!({"id": passkey_id, "password": "not it at all"}),
        )
        .await;
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    let r = b
        .post(
            w[2],
            "/auth/passkeys/remove",
            json!({"id": passkey_id, "password": pw}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    let r = b
        .post(
            w[2],
            "/auth/passkeys/remove",
            json!({"id": passkey_id, "password": pw}),
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(r.body["code"], "passkey_not_found");
    let mut late = Browser::new();
    let (_, r) = passkey_sign_in(&mut late, page, w[0], w[1], json!({})).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.body["code"], "invalid_credentials");
    let (_, r) = f.password(0, &user, pw).await;
    assert_eq!(
        r.body["methods"],
        json!(["totp", "backup_code"]),
        "{}",
        r.body
    );
    auth.clear(page).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn passkeys_across_three_workers_on_postgres() {
    let d = deployment(None).await;
    passkeys_across_workers(&d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn passkeys_across_three_workers_with_tokens_on_redis() {
    let d = deployment(Some(tessera_testkit::require_redis())).await;
    passkeys_across_workers(&d).await;
}

/// The page's own "Sign out" (the sessions list has one per other session).
async fn sign_out(page: &Page) {
    page.visible("//section[@aria-label='Sign out']//button[normalize-space()='Sign out']")
        .await
        .click()
        .await
        .unwrap();
    page.wait_at("/login").await;
}

/// A person with the pages: adds a passkey on the account page, signs in with it alone,
/// uses it as the second factor after the password, and removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn passkeys_through_the_pages() {
    use crate::pages::look;
    let d = deployment(None).await;
    let (w, page) = (d.w, &d.page);
    let auth = Authenticator::add(page).await;
    let pw = "a page passkey password";
    let mut f = Flow {
        w,
        secrets: Vec::new(),
        confirmed_at: 0,
    };
    let (user, _) = f.register("pkpage", pw).await;
    let mut b = signed_in(w[1], &user, pw).await;
    let (_, backup_codes) = f.enable_totp(&mut b).await;

    page.open("/login").await;
    page.fill("Username", &user).await;
    page.fill("Password", pw).await;
    page.press("Sign in").await;
    page.press("Use a backup code").await;
    page.fill("Backup code", &backup_codes[0]).await;
    page.press("Verify").await;
    page.wait_at("/account").await;
    page.fill("Passkey name", "Work laptop").await;
    page.press("Add a passkey").await;
    page.visible("//ul[@class='passkeys']//strong[normalize-space()='Work laptop']")
        .await;
    assert!(page.text().await.contains("not used yet"));
    look(page, "account-passkey").await;
    assert_eq!(auth.credentials(page).await.len(), 1);

    // Signed out, then in with the passkey alone.
    sign_out(page).await;
    look(page, "login-passkey").await;
    page.press("Sign in with a passkey").await;
    page.wait_at("/account").await;
    assert!(
        page.text().await.contains("last used"),
        "{}",
        page.text().await
    );

    // The password step offers the passkey as the second factor.
    sign_out(page).await;
    page.fill("Username", &user).await;
    page.fill("Password", pw).await;
    page.press("Sign in").await;
    page.press("Use a passkey").await;
    page.wait_at("/account").await;

    // Removed after the password.
    // The passkeys' own "Password" (the authenticator app's section has one too).
    let proof = "//section[@id='passkeys']//input[@name='password']";
    page.visible(proof)
        .await
        .send_keys("not the password")
        .await
        .unwrap();
    page.press("Remove").await;
    let refusal = page.alert().await;
    assert!(refusal.contains("password"), "{refusal}");
    let field = page.visible(proof).await;
    field.clear().await.unwrap();
    field.send_keys(pw).await.unwrap();
    page.press("Remove").await;
    page.settled().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while page.text().await.contains("Work laptop") {
        assert!(
            std::time::Instant::now() < deadline,
            "the passkey stayed listed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let listed = b.get(w[2], "/auth/passkeys").await;
    assert_eq!(listed.body, json!([]));

    // The authenticator still holds it, but it signs in no more: a sentence says so.
    sign_out(page).await;
    page.press("Sign in with a passkey").await;
    let refusal = page.alert().await;
    assert!(refusal.contains("passkey does not sign in"), "{refusal}");
    look(page, "login-passkey-refused").await;
}

//! OIDC login end to end against a real OpenID provider process: panva's certified
//! `oidc-provider` (from the npm registry, run with the machine's node; `tests/idp`), PKCE
//! required. The browser starts on one worker, signs in at the provider, comes back to
//! another, and exchanges on a third.

use serde_json::json;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tessera_testkit::TestDb;

use crate::helpers::idp::{CLIENT_SECRET, Idp, PUBLIC, add_provider};
use crate::helpers::{
    Answer, Browser, dump_postgres, dump_redis, fresh_window, pyotp, start_workers, unique, verify,
};
use crate::helpers::{Worker, free_port};

const APP: &str = "http://app.test/";

async fn oidc_workers(n: usize, db: &TestDb, redis: Option<String>) -> (Vec<Worker>, PathBuf) {
    let mut args = vec![
        "--database-url".into(),
        db.url.clone(),
        "--public-url".into(),
        PUBLIC.into(),
        "--oidc-return-url".into(),
        APP.into(),
        "--rate-limits".into(),
        "login_ip=1000/15m".into(),
    ];
    if let Some(r) = redis {
        args.extend(["--redis-url".into(), r]);
    }
    start_workers(n, args).await
}

fn location(a: &crate::helpers::Answer) -> String {
    a.headers["location"].to_str().unwrap().to_owned()
}

fn param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1.split('#').next()?;
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(if b[i] == b'+' { b' ' } else { b[i] });
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// Starts a login on `addr`; answers the provider's authorization URL.
async fn start(b: &mut Browser, addr: SocketAddr, return_to: Option<&str>) -> String {
    let path = match return_to {
        Some(r) => format!("/auth/oidc/idp/start?return_to={r}"),
        None => "/auth/oidc/idp/start".into(),
    };
    let r = b.get(addr, &path).await;
    assert_eq!(r.status, 302, "{}", r.text);
    let url = location(&r);
    assert!(
        b.jar.contains_key("tessera_oidc"),
        "the browser binding cookie is set"
    );
    url
}

/// Signs in at the provider as `login`; answers the callback's path and query.
async fn at_idp(b: &mut Browser, idp: &Idp, authorize: &str, login: &str) -> String {
    let mut url = authorize.to_owned();
    for _ in 0..12 {
        let req = b.c.get(&url);
        let mut r = b.send(req).await;
        if r.status == 200 {
            let prompt = if r.text.contains("value=\"login\"") {
                "login"
            } else if r.text.contains("value=\"consent\"") {
                "consent"
            } else {
                panic!("an unexpected page at the provider: {}", r.text)
            };
            let req =
                b.c.post(&url)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(format!("prompt={prompt}&login={login}&password=any"));
            r = b.send(req).await;
        }
        assert!(matches!(r.status, 302 | 303), "{} {}", r.status, r.text);
        let loc = location(&r);
        let next = if loc.starts_with("http") {
            loc
        } else {
            format!("{}{loc}", idp.issuer())
        };
        if let Some(rest) = next.strip_prefix(PUBLIC) {
            return rest.to_owned();
        }
        url = next;
    }
    panic!("the provider never sent the browser back");
}

/// The callback on `addr`: answers where Tessera sent the browser.
async fn callback(b: &mut Browser, addr: SocketAddr, path: &str) -> String {
    let r = b.get(addr, path).await;
    assert_eq!(r.status, 302, "{}", r.text);
    let landed = location(&r);
    if fragment(&landed, "oidc_exchange").is_some() {
        assert!(
            !b.jar.contains_key("tessera_oidc"),
            "the binding cookie is cleared"
        );
    }
    landed
}

fn fragment(url: &str, key: &str) -> Option<String> {
    url.split_once('#')?
        .1
        .strip_prefix(&format!("{key}="))
        .map(str::to_owned)
}

/// Start on worker 1, provider, callback on worker 2, exchange on worker 3; then the
/// second login, a TOTP user, replay, and a worker killed mid-flow.
async fn oidc_flows(db: &TestDb, redis: Option<String>) {
    let idp = Idp::start();
    add_provider(&db.url, &idp);
    let (mut ws, _dir) = oidc_workers(3, db, redis.clone()).await;
    let w = [ws[0].addr, ws[1].addr, ws[2].addr];
    let login = unique("olga");
    let mut b = first_login(db, redis.as_deref(), &idp, w, &login).await;
    second_login_meets_the_second_factor(db, &idp, w, &login, &mut b).await;
    two_first_logins_at_once_make_one_account(db, &idp, w).await;
    taken_names_are_avoided(&idp, w).await;
    a_worker_killed_mid_flow(&idp, &mut ws).await;
    drop(ws);
}

/// A first login, each step on another worker: the flow in flight is in the store with no
/// secret in clear, the callback cannot be replayed, the exchange token works once and
/// only in the browser it was sent to. Answers that browser, signed in.
async fn first_login(
    db: &TestDb,
    redis: Option<&str>,
    idp: &Idp,
    w: [SocketAddr; 3],
    login: &str,
) -> Browser {
    let mut b = Browser::new();
    let authorize = start(&mut b, w[0], Some("/dashboard?tab=1")).await;
    assert!(
        authorize.starts_with(&format!("{}/auth?", idp.issuer())),
        "{authorize}"
    );
    let state = param(&authorize, "state").unwrap();
    let nonce = param(&authorize, "nonce").unwrap();
    assert!(state.starts_with("tsr_os_"));
    assert_eq!(
        param(&authorize, "code_challenge_method").as_deref(),
        Some("S256")
    );
    assert_eq!(param(&authorize, "response_type").as_deref(), Some("code"));
    assert_eq!(
        param(&authorize, "redirect_uri").as_deref(),
        Some("http://tessera.test/auth/oidc/idp/callback")
    );
    let binding = b.jar["tessera_oidc"].clone();

    // A dump while the flow is in flight holds neither the state, the nonce, the browser
    // binding nor the client secret.
    let mut dump = dump_postgres(db).await;
    if let Some(r) = redis {
        dump.push_str(&dump_redis(r));
    }
    assert!(
        dump.contains("oidc_state"),
        "the dump holds the flow in flight"
    );
    for secret in [&state, &nonce, &binding, &CLIENT_SECRET.to_owned()] {
        assert!(!dump.contains(secret.as_str()), "in the dump: {secret}");
    }

    let back = at_idp(&mut b, idp, &authorize, login).await;
    assert!(back.starts_with("/auth/oidc/idp/callback?"), "{back}");
    let landed = callback(&mut b, w[1], &back).await;
    assert!(
        landed.starts_with("http://app.test/dashboard?tab=1#oidc_exchange=tsr_ox_"),
        "{landed}"
    );
    let exchange = fragment(&landed, "oidc_exchange").unwrap();
    // The same callback again (a replay, on a third worker): refused, no token.
    let mut replayer = b.clone();
    replayer.jar.insert("tessera_oidc".into(), binding.clone());
    let again = callback(&mut replayer, w[2], &back).await;
    assert_eq!(
        fragment(&again, "oidc_error").as_deref(),
        Some("invalid_state"),
        "{again}"
    );

    // The exchange token works only in the browser the callback sent it to: an attacker's
    // own token planted in a victim's page (login CSRF) is refused there, unspent.
    let stranger = Browser::new()
        .post(w[2], "/auth/oidc/exchange", json!({"token": exchange}))
        .await;
    assert_eq!(stranger.status, 400, "{}", stranger.body);
    assert_eq!(stranger.body["code"], "invalid_or_expired_token");
    let r = b
        .post(w[2], "/auth/oidc/exchange", json!({"token": exchange}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["authenticated"], true);
    assert_eq!(r.body["username"], login);
    let me = b.get(w[0], "/auth/me").await;
    assert_eq!(me.body["username"], login);
    assert_eq!(me.body["email"], format!("{login}@idp.example"));
    let used = b
        .post(w[0], "/auth/oidc/exchange", json!({"token": exchange}))
        .await;
    assert_eq!(used.status, 400);
    assert_eq!(used.body["code"], "invalid_or_expired_token");
    b
}

/// The second login of the subject is the same account; with TOTP on, the exchange
/// answers the second-factor step.
async fn second_login_meets_the_second_factor(
    db: &TestDb,
    idp: &Idp,
    w: [SocketAddr; 3],
    login: &str,
    b: &mut Browser,
) {
    // The second login of the subject is the same account. With TOTP on, the exchange
    // answers the second-factor step.
    let setup = b.post(w[1], "/auth/totp/setup", json!({})).await;
    assert_eq!(setup.status, 200, "{}", setup.body);
    let secret = setup.body["secret"].as_str().unwrap().to_owned();
    let now = fresh_window().await;
    let ok = b
        .post(
            w[2],
            "/auth/totp/confirm",
            json!({"code": pyotp(&secret, now)}),
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.body);

    let mut b2 = Browser::new();
    let authorize = start(&mut b2, w[2], None).await;
    let back = at_idp(&mut b2, idp, &authorize, login).await;
    let landed = callback(&mut b2, w[0], &back).await;
    assert!(
        landed.starts_with("http://app.test/#oidc_exchange="),
        "{landed}"
    );
    let r = b2
        .post(
            w[1],
            "/auth/oidc/exchange",
            json!({"token": fragment(&landed, "oidc_exchange").unwrap()}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["mfa_required"], true, "{}", r.body);
    assert_eq!(r.body["methods"], json!(["totp", "backup_code"]));
    let tok = r.body["mfa_token"].as_str().unwrap().to_owned();
    let done = verify(&mut b2, w[2], &tok, "code", &pyotp(&secret, now + 30)).await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert_eq!(b2.get(w[0], "/auth/me").await.body["username"], login);
    let accounts = dump_postgres(db).await;
    assert_eq!(
        accounts
            .matches(&format!("\"username\":\"{login}\""))
            .count(),
        1,
        "one account for the subject"
    );
}

/// Two first logins of one subject at once, on two workers: one account, one link.
async fn two_first_logins_at_once_make_one_account(db: &TestDb, idp: &Idp, w: [SocketAddr; 3]) {
    // Two first logins of one subject at once, on two workers: one account, one link.
    let twin = unique("rosa");
    let mut trips = Vec::new();
    for i in 0..2 {
        let mut b = Browser::new();
        let authorize = start(&mut b, w[i], None).await;
        let back = at_idp(&mut b, idp, &authorize, &twin).await;
        trips.push((b, back, w[i + 1]));
    }
    let landed =
        futures::future::join_all(trips.into_iter().map(|(mut b, back, addr)| async move {
            let landed = callback(&mut b, addr, &back).await;
            (b, landed)
        }))
        .await;
    for (mut b, l) in landed {
        let token = fragment(&l, "oidc_exchange").unwrap_or_else(|| panic!("{l}"));
        let r = b
            .post(w[0], "/auth/oidc/exchange", json!({"token": token}))
            .await;
        assert_eq!(r.body["username"], twin.as_str(), "{}", r.body);
    }
    let accounts = dump_postgres(db).await;
    assert_eq!(
        accounts
            .matches(&format!("\"username\":\"{twin}\""))
            .count(),
        1
    );
    assert!(
        !accounts.contains(&format!("idp_{twin}")),
        "no second account"
    );
}

/// Both names a first login would take are registered locally first: the login still
/// finds a free one.
async fn taken_names_are_avoided(idp: &Idp, w: [SocketAddr; 3]) {
    // Both names a first login would take are registered locally first: the login still
    // finds a free one.
    let squatted = unique("sam");
    Browser::new()
        .register(w[0], &squatted, "squatter's password")
        .await;
    Browser::new()
        .register(w[0], &format!("idp_{squatted}"), "squatter's password")
        .await;
    let mut b4 = Browser::new();
    let authorize = start(&mut b4, w[1], None).await;
    let back = at_idp(&mut b4, idp, &authorize, &squatted).await;
    let landed = callback(&mut b4, w[1], &back).await;
    let r = post_exchange(&mut b4, w[1], &landed).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let name = r.body["username"].as_str().unwrap();
    assert!(name.starts_with(&format!("idp_{squatted}_")), "{name}");
}

/// The worker that started the flow dies (SIGKILL) before the callback; another worker
/// finishes it.
async fn a_worker_killed_mid_flow(idp: &Idp, ws: &mut [Worker]) {
    let w = [ws[0].addr, ws[1].addr, ws[2].addr];
    // The worker that started the flow dies (SIGKILL) before the callback; another worker
    // finishes it.
    let other = unique("pavel");
    let mut b3 = Browser::new();
    let authorize = start(&mut b3, w[0], None).await;
    ws[0].child.kill().unwrap();
    ws[0].child.wait().unwrap();
    let back = at_idp(&mut b3, idp, &authorize, &other).await;
    let landed = callback(&mut b3, w[1], &back).await;
    let r = post_exchange(&mut b3, w[2], &landed).await;
    assert_eq!(r.body["username"], other.as_str(), "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oidc_login_across_three_workers_on_postgres() {
    let db = TestDb::postgres().await;
    oidc_flows(&db, None).await;
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oidc_login_across_three_workers_with_tokens_on_redis() {
    let db = TestDb::postgres().await;
    // A Redis of its own: the per-address start budget (oidc_start_ip) of 127.0.0.1 must
    // not carry over from an earlier run against a shared server.
    let redis = crate::helpers::OwnRedis::start(free_port(), tempfile::tempdir().unwrap());
    oidc_flows(&db, Some(format!("redis://127.0.0.1:{}", redis.port))).await;
    db.finish().await;
}

/// Posts the `oidc_exchange` token of the landing URL `landed` from browser `b`.
async fn post_exchange(b: &mut Browser, addr: SocketAddr, landed: &str) -> Answer {
    let token = fragment(landed, "oidc_exchange").expect(landed);
    b.post(addr, "/auth/oidc/exchange", json!({ "token": token }))
        .await
}

/// Every way a callback can go wrong ends in a redirect with a stable `#oidc_error` code,
/// and never in a session.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oidc_refusals() {
    let db = TestDb::postgres().await;
    let idp = Idp::start();
    add_provider(&db.url, &idp);
    // The provider publishes a key that signs nothing before the worker first reads it.
    idp.jwks("bad").await;
    let (ws, _dir) = oidc_workers(1, &db, None).await;
    let w = ws[0].addr;
    let user = unique("quinn");
    keys_that_verify_nothing_then_good_ones(w, &idp, &user).await;
    a_callback_needs_its_own_browser(w, &idp, &user).await;
    tampered_declined_and_expired_callbacks(&db, w, &idp, &user).await;
    bad_starts_are_refused(w).await;
    the_provider_down_then_back(&db, w, idp, &user).await;
    drop(ws);
    db.finish().await;
}

/// The `#oidc_error` code of a landing URL.
fn error_of(landed: &str) -> String {
    fragment(landed, "oidc_error").unwrap_or_else(|| panic!("{landed}"))
}

/// An ID token signed by no published key is refused; once the provider's keys are right
/// again the worker fetches them anew.
async fn keys_that_verify_nothing_then_good_ones(w: SocketAddr, idp: &Idp, user: &str) {
    // An ID token whose signature the published keys do not verify.
    let mut b = Browser::new();
    let authorize = start(&mut b, w, None).await;
    let back = at_idp(&mut b, idp, &authorize, user).await;
    assert_eq!(
        error_of(&callback(&mut b, w, &back).await),
        "invalid_id_token"
    );
    assert!(!b.jar.contains_key("tessera_session"));

    // The provider's keys are right again: the worker fetches them anew (its cached set
    // verifies nothing) and the login goes through.
    idp.jwks("good").await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let mut b = Browser::new();
    let authorize = start(&mut b, w, None).await;
    let back = at_idp(&mut b, idp, &authorize, user).await;
    let landed = callback(&mut b, w, &back).await;
    assert!(fragment(&landed, "oidc_exchange").is_some(), "{landed}");
}

/// A callback without the state's cookie, or with another browser's, is refused, and
/// leaves every browser's own login in flight alone.
async fn a_callback_needs_its_own_browser(w: SocketAddr, idp: &Idp, user: &str) {
    // Without the cookie; with another browser's cookie.
    let mut b = Browser::new();
    let authorize = start(&mut b, w, None).await;
    let back = at_idp(&mut b, idp, &authorize, user).await;
    let mut cookieless = b.clone();
    cookieless.jar.remove("tessera_oidc");
    assert_eq!(
        error_of(&callback(&mut cookieless, w, &back).await),
        "missing_cookie"
    );
    let mut other = Browser::new();
    start(&mut other, w, None).await;
    let mut mixed = b.clone();
    mixed
        .jar
        .insert("tessera_oidc".into(), other.jar["tessera_oidc"].clone());
    assert_eq!(
        error_of(&callback(&mut mixed, w, &back).await),
        "invalid_state"
    );
    // A callback forced on a browser with someone else's state leaves that browser's own
    // login in flight alone: its cookie stays, and the login finishes.
    assert_eq!(mixed.jar["tessera_oidc"], other.jar["tessera_oidc"]);
    let other_authorize = start(&mut other, w, None).await;
    let other_back = at_idp(&mut other, idp, &other_authorize, user).await;
    let forced = format!(
        "/auth/oidc/idp/callback?code=x&state={}",
        param(&back, "state").unwrap()
    );
    let mut victim = other.clone();
    assert_eq!(
        error_of(&callback(&mut victim, w, &forced).await),
        "invalid_state"
    );
    assert!(
        victim.jar.contains_key("tessera_oidc"),
        "the victim's login survives"
    );
    let landed = callback(&mut victim, w, &other_back).await;
    assert!(fragment(&landed, "oidc_exchange").is_some(), "{landed}");
    // Neither refusal spent the state: its own browser still finishes.
    let landed = callback(&mut b, w, &back).await;
    assert!(fragment(&landed, "oidc_exchange").is_some(), "{landed}");
}

/// A tampered code, a foreign `iss`, a declined login and an expired state.
async fn tampered_declined_and_expired_callbacks(
    db: &TestDb,
    w: SocketAddr,
    idp: &Idp,
    user: &str,
) {
    // A tampered code; an `iss` that is not the provider's.
    for (tamper, code) in [("code=", "code_rejected"), ("iss=", "issuer_mismatch")] {
        let mut b = Browser::new();
        let authorize = start(&mut b, w, None).await;
        let back = at_idp(&mut b, idp, &authorize, user).await;
        let bad = if tamper == "code=" {
            back.replacen("code=", "code=x", 1)
        } else {
            let iss = param(&back, "iss").expect("the provider sends iss (RFC 9207)");
            back.replace(&urlencode(&iss), "http%3A%2F%2Fevil.example")
        };
        assert_eq!(error_of(&callback(&mut b, w, &bad).await), code, "{bad}");
    }

    // The user declines at the provider: error=access_denied; the state is spent.
    let mut b = Browser::new();
    let authorize = start(&mut b, w, Some("/after")).await;
    let state = param(&authorize, "state").unwrap();
    let declined = format!("/auth/oidc/idp/callback?error=access_denied&state={state}");
    let landed = callback(&mut b.clone(), w, &declined).await;
    assert!(
        landed.starts_with("http://app.test/after#oidc_error=access_denied"),
        "{landed}"
    );
    let back = at_idp(&mut b, idp, &authorize, user).await;
    assert_eq!(error_of(&callback(&mut b, w, &back).await), "invalid_state");

    // An expired state (its expiry moved into the past, judged by the database's clock).
    let mut b = Browser::new();
    let authorize = start(&mut b, w, None).await;
    let back = at_idp(&mut b, idp, &authorize, user).await;
    {
        use sea_orm::{ConnectionTrait, Statement};
        let done = db
            .db
            .execute_raw(Statement::from_string(
                db.db.get_database_backend(),
                "UPDATE auth_ephemeral_tokens SET expires_at = now() - interval '1 second' \
                 WHERE token_type = 'oidc_state'",
            ))
            .await
            .unwrap();
        assert!(done.rows_affected() >= 1);
    }
    assert_eq!(error_of(&callback(&mut b, w, &back).await), "invalid_state");
}

/// An absolute return_to is refused before anything is issued; an unknown provider too.
async fn bad_starts_are_refused(w: SocketAddr) {
    let mut b = Browser::new();
    for bad in [
        "https://evil.example/",
        "//evil.example/x",
        "/%5Cevil.example",
    ] {
        let r = b
            .get(w, &format!("/auth/oidc/idp/start?return_to={bad}"))
            .await;
        assert_eq!(r.status, 422, "{bad}: {}", r.text);
        assert_eq!(r.body["field"], "return_to");
    }
    let r = b.get(w, "/auth/oidc/nope/start").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body["code"], "unknown_provider");
    assert!(!b.jar.contains_key("tessera_session"));
}

/// The provider unreachable, then back with new signing keys.
async fn the_provider_down_then_back(db: &TestDb, w: SocketAddr, idp: Idp, user: &str) {
    // The provider is unreachable: the start answers with a redirect naming the failure.
    let idp_port = idp.port;
    drop(idp);
    let (ws2, _dir2) = oidc_workers(1, db, None).await;
    let landed = {
        let r = Browser::new()
            .get(ws2[0].addr, "/auth/oidc/idp/start")
            .await;
        assert_eq!(r.status, 302, "{}", r.text);
        location(&r)
    };
    assert_eq!(error_of(&landed), "provider_unavailable", "port {idp_port}");

    // The provider comes back with new signing keys (a new key id): the first worker, whose
    // cache still holds the old key set, fetches the new one and the login goes through.
    let idp = Idp::start_on(idp_port);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let mut b = Browser::new();
    let authorize = start(&mut b, w, None).await;
    let back = at_idp(&mut b, &idp, &authorize, user).await;
    let landed = callback(&mut b, w, &back).await;
    assert!(fragment(&landed, "oidc_exchange").is_some(), "{landed}");
    let metrics = reqwest::get(format!("http://{w}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .contains("tessera_oidc_logins_total{provider=\"idp\",outcome=\"invalid_id_token\"}"),
        "{metrics}"
    );
    drop(ws2);
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

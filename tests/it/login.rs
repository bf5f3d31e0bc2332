//! The login flows end to end: three `tessera serve` workers on one store (PostgreSQL, and
//! PostgreSQL with tokens and limits on Redis), a real SMTP server (aiosmtpd) receiving the
//! mail, and TOTP codes from an independent generator (pyotp). Each step of a login lands
//! on a different worker.

use futures::future::join_all;
use reqwest::header::{HeaderMap, SET_COOKIE};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tessera_testkit::{TestDb, require_redis};

use crate::helpers::{Worker, free_port};

/// An SMTP server process (aiosmtpd) that files every message in a maildir.
pub struct SmtpSink {
    child: Child,
    pub port: u16,
    dir: PathBuf,
}

impl SmtpSink {
    pub fn start(dir: &Path) -> SmtpSink {
        let port = free_port();
        let maildir = dir.join("maildir");
        let child = Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs");
        let mut sink = SmtpSink {
            child,
            port,
            dir: maildir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = sink.child.try_wait().unwrap() {
                panic!(
                    "the SMTP sink exited with {status}: install it with `pip install aiosmtpd`"
                );
            }
            assert!(Instant::now() < deadline, "aiosmtpd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        sink
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    fn messages_to(&self, to: &str) -> Vec<String> {
        let mut found: Vec<(std::time::SystemTime, String)> = Vec::new();
        for sub in ["new", "cur"] {
            let Ok(entries) = std::fs::read_dir(self.dir.join(sub)) else {
                continue;
            };
            for e in entries.flatten() {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                if text.contains(&format!("To: {to}")) {
                    let t = e
                        .metadata()
                        .and_then(|m| m.modified())
                        .unwrap_or(UNIX_EPOCH);
                    found.push((t, text));
                }
            }
        }
        found.sort_by_key(|(t, _)| *t);
        found.into_iter().map(|(_, m)| m).collect()
    }

    /// Waits for the `n`-th message (1-based) to `to` and answers it.
    pub async fn nth_to(&self, to: &str, n: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let all = self.messages_to(to);
            if all.len() >= n {
                return all[n - 1].clone();
            }
            assert!(Instant::now() < deadline, "no mail #{n} to {to} arrived");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn count_to(&self, to: &str) -> usize {
        self.messages_to(to).len()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// The 6-digit code in a mail.
fn code_in(mail: &str) -> String {
    let at = mail.find("is: ").expect("the mail names a code") + 4;
    mail[at..at + 6].to_owned()
}

/// The reset token in a mail (undoing quoted-printable soft line breaks).
fn reset_token_in(mail: &str) -> String {
    let mail = mail
        .replace("=\r\n", "")
        .replace("=\n", "")
        .replace("=3D", "=");
    assert!(mail.contains("/reset-password#token=tsr_pr_"), "{mail}");
    let at = mail.find("tsr_pr_").expect("the mail carries a token");
    mail[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect()
}

/// A TOTP code from pyotp, an implementation independent of Tessera's, at `unix` seconds.
pub fn pyotp(secret: &str, unix: u64) -> String {
    let out = Command::new("python3")
        .args([
            "-c",
            "import pyotp, sys; print(pyotp.TOTP(sys.argv[1]).at(int(sys.argv[2])))",
            secret,
            &unix.to_string(),
        ])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "pyotp failed (install it with `pip install pyotp`): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Waits until at least 12 s remain in the current 30-s window, so a short sequence of
/// steps stays inside it; answers the current time.
pub async fn fresh_window() -> u64 {
    while unix_now() % 30 > 18 {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    unix_now()
}

/// A browser: keeps the cookies it is given and sends them back (to any host: the tests
/// talk to one service and one provider, and neither minds the other's cookies). It follows
/// no redirect by itself, so tests see every hop.
#[derive(Clone)]
pub struct Browser {
    pub c: reqwest::Client,
    pub jar: HashMap<String, String>,
}

pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub headers: HeaderMap,
    pub text: String,
}

impl Browser {
    pub fn new() -> Browser {
        Browser {
            c: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            jar: HashMap::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.jar
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn keep(&mut self, headers: &HeaderMap) {
        for sc in headers.get_all(SET_COOKIE) {
            let sc = sc.to_str().unwrap();
            let first = sc.split(';').next().unwrap();
            let (name, value) = first.split_once('=').unwrap();
            let gone = value.is_empty() || sc.contains("Max-Age=0");
            if gone {
                self.jar.remove(name);
            } else {
                self.jar.insert(name.to_owned(), value.to_owned());
            }
        }
    }

    pub async fn send(&mut self, req: reqwest::RequestBuilder) -> Answer {
        let res = req
            .header("cookie", self.cookie_header())
            .send()
            .await
            .expect("the worker answers");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        self.keep(&headers);
        let text = res.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer {
            status,
            body,
            headers,
            text,
        }
    }

    pub async fn post(&mut self, addr: SocketAddr, path: &str, body: Value) -> Answer {
        let req = self.c.post(format!("http://{addr}{path}")).json(&body);
        self.send(req).await
    }

    pub async fn get(&mut self, addr: SocketAddr, path: &str) -> Answer {
        let req = self.c.get(format!("http://{addr}{path}"));
        self.send(req).await
    }

    /// Registers `username` (mail at example.com) and checks the 201.
    pub async fn register(&mut self, addr: SocketAddr, username: &str, password: &str) {
        let r = self
            .post(
                addr,
                "/auth/register",
                json!({"username": username, "email": format!("{username}@example.com"), "password": password}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
}

pub async fn start_workers(n: usize, args: Vec<String>) -> (Vec<Worker>, PathBuf) {
    tokio::task::spawn_blocking(move || {
        let dir = tempfile::tempdir().unwrap().keep();
        let ws = (0..n)
            .map(|_| {
                let all: Vec<&str> = args.iter().map(String::as_str).collect();
                Worker::start(&dir, &all)
            })
            .collect();
        (ws, dir)
    })
    .await
    .unwrap()
}

pub fn unique(name: &str) -> String {
    format!("{name}{}", &uuid_like()[..10])
}

fn uuid_like() -> String {
    let mut s = String::new();
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    s.push_str(&format!("{:x}", n ^ (std::process::id() as u128) << 64));
    s.chars().rev().collect()
}

struct Flow {
    w: [SocketAddr; 3],
    /// Every secret seen, for the dump check at the end.
    secrets: Vec<String>,
    /// When the last TOTP setup was confirmed (its code's window is then used).
    confirmed_at: u64,
}

impl Flow {
    async fn register(&mut self, name: &str, password: &str) -> (String, String) {
        let username = unique(name);
        let email = format!("{username}@example.com");
        Browser::new()
            .register(self.w[0], &username, password)
            .await;
        self.secrets.push(password.to_owned());
        (username, email)
    }

    /// Signs in with a password on worker `on`; answers the browser and the body.
    async fn password(&mut self, on: usize, user: &str, password: &str) -> (Browser, Answer) {
        let mut b = Browser::new();
        let r = b
            .post(
                self.w[on],
                "/auth/login",
                json!({"username": user, "password": password}),
            )
            .await;
        if let Some(t) = r.body["mfa_token"].as_str() {
            self.secrets.push(t.to_owned());
        }
        for v in b.jar.values() {
            self.secrets.push(v.clone());
        }
        (b, r)
    }

    /// Sets TOTP up for a signed-in browser; answers the base32 secret and backup codes.
    async fn enable_totp(&mut self, b: &mut Browser) -> (String, Vec<String>) {
        let setup = b.post(self.w[0], "/auth/totp/setup", json!({})).await;
        assert_eq!(setup.status, 200, "{}", setup.body);
        let secret = setup.body["secret"].as_str().unwrap().to_owned();
        let again = b.post(self.w[1], "/auth/totp/setup", json!({})).await;
        assert_eq!(
            again.body["secret"], setup.body["secret"],
            "setup is idempotent until confirmed"
        );
        let codes: Vec<String> = again.body["backup_codes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(codes.len(), 10);
        let now = fresh_window().await;
        let confirm = b
            .post(
                self.w[1],
                "/auth/totp/confirm",
                json!({"code": pyotp(&secret, now)}),
            )
            .await;
        assert_eq!(confirm.status, 200, "{}", confirm.body);
        assert_eq!(confirm.body["enabled"], true);
        assert_eq!(confirm.body["backup_codes_remaining"], 10);
        self.confirmed_at = now;
        self.secrets.push(secret.clone());
        self.secrets.extend(codes.iter().cloned());
        self.secrets
            .extend(codes.iter().map(|c| c.replace('-', "")));
        (secret, codes)
    }
}

pub async fn verify(
    b: &mut Browser,
    addr: SocketAddr,
    mfa_token: &str,
    field: &str,
    code: &str,
) -> Answer {
    b.post(
        addr,
        "/auth/2fa/verify",
        json!({"mfa_token": mfa_token, field: code}),
    )
    .await
}

/// Password on worker 1, TOTP on worker 2, `/auth/me` on worker 3; then replay, the race of
/// one code on two workers, backup codes, throttling and lockout across workers, email
/// codes, password reset.
async fn login_flows(w: [SocketAddr; 3], smtp: &SmtpSink, database_url: &str) -> Vec<String> {
    let mut f = Flow {
        w,
        secrets: Vec::new(),
        confirmed_at: 0,
    };
    let pw = "correct horse battery";
    let (alice, _) = f.register("alice", pw).await;

    // Without a second factor: a session straight away, valid on every worker.
    let (mut b, r) = f.password(0, &alice, pw).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, json!({"authenticated": true, "username": alice}));
    let me = b.get(w[2], "/auth/me").await;
    assert_eq!(me.status, 200);
    assert_eq!(me.body["username"], alice.as_str());
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

    // Password on worker 1 → second factor on worker 2 → me on worker 3. The codes are
    // those of the confirmation's window and the next, both inside the accepted skew
    // however long the steps above took.
    let now = f.confirmed_at;
    let (mut b, r) = f.password(0, &alice, pw).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["mfa_required"], true);
    assert_eq!(r.body["methods"], json!(["totp", "backup_code"]));
    let token = r.body["mfa_token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("tsr_pa_"));
    assert!(b.jar.contains_key("tessera_challenge"));
    // The token alone, without the challenge cookie, is useless.
    let mut thief = Browser::new();
    let stolen = verify(&mut thief, w[1], &token, "code", &pyotp(&secret, now + 30)).await;
    assert_eq!(stolen.status, 401);
    assert_eq!(stolen.body["code"], "mfa_session_expired");
    // The code that confirmed the setup was recorded: it does not sign in again.
    let replay = verify(&mut b, w[1], &token, "code", &pyotp(&secret, now)).await;
    assert_eq!(replay.status, 401, "{}", replay.body);
    assert_eq!(replay.body["code"], "invalid_code");
    // A fresh code (the next window, within the skew) does, and spends the mfa_token.
    let next = pyotp(&secret, now + 30);
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
    let (mut b2, r) = f.password(2, &alice, pw).await;
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
    let prev = verify(&mut b2, w[1], &token2, "code", &pyotp(&secret, t - 30)).await;
    assert_eq!(prev.status, 200, "{}", prev.body);
    let (mut b3, r) = f.password(1, &alice, pw).await;
    let token3 = r.body["mfa_token"].as_str().unwrap().to_owned();
    let cur = verify(&mut b3, w[2], &token3, "code", &pyotp(&secret, t)).await;
    assert_eq!(cur.status, 200, "{}", cur.body);

    // Two workers given the same unused code at the same moment: one success.
    let t = fresh_window().await;
    let code = pyotp(&secret, t + 30);
    let mut racers = Vec::new();
    for i in 0..2 {
        let (b, r) = f.password(i, &alice, pw).await;
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

    // Backup codes: typed sloppily they work, once; two workers racing one code: one wins.
    let (mut b, r) = f.password(0, &alice, pw).await;
    let tok = r.body["mfa_token"].as_str().unwrap().to_owned();
    let sloppy = backup[0].replace('-', " ").to_lowercase();
    let ok = verify(&mut b, w[1], &tok, "backup_code", &sloppy).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let (mut b, r) = f.password(0, &alice, pw).await;
    let tok = r.body["mfa_token"].as_str().unwrap().to_owned();
    let again = verify(&mut b, w[2], &tok, "backup_code", &backup[0]).await;
    assert_eq!(again.body["code"], "invalid_code");
    let mut racers = Vec::new();
    for i in 0..3 {
        let (b, r) = f.password(i, &alice, pw).await;
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
    let (_, wrong) = f.password(0, &alice, "wrong password!").await;
    assert_eq!(unknown.status, 401);
    assert_eq!(unknown.body, wrong.body);

    // Email codes: enable on worker 1 (the code arrives by SMTP), confirm on worker 2; at
    // login, the code is mailed by worker 1 and accepted by worker 2.
    let (dave, dave_mail) = f.register("dave", pw).await;
    let (mut bd, _) = f.password(0, &dave, pw).await;
    let en = bd.post(w[0], "/auth/email-otp/enable", json!({})).await;
    assert_eq!(en.status, 200, "{}", en.body);
    f.secrets
        .push(en.body["setup_token"].as_str().unwrap().to_owned());
    let code = code_in(&smtp.nth_to(&dave_mail, 1).await);
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
    assert_eq!(
        bd.get(w[2], "/auth/me").await.body["username"],
        dave.as_str()
    );

    // Password reset: 202 for a known and an unknown address alike; the mail's token sets
    // a new password once and ends every session.
    let before = smtp.count_to(&dave_mail);
    for addr in [&dave_mail, "nobody@example.com"] {
        let r = Browser::new()
            .post(w[0], "/auth/password-reset/request", json!({"email": addr}))
            .await;
        assert_eq!(r.status, 202, "{}", r.body);
    }
    let reset = smtp.nth_to(&dave_mail, before + 1).await;
    let token = reset_token_in(&reset);
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
    let (_, old) = f.password(1, &dave, pw).await;
    assert_eq!(old.status, 401);
    let (_, new) = f.password(1, &dave, new_pw).await;
    assert_eq!(new.body["mfa_required"], true);
    assert_eq!(smtp.count_to("nobody@example.com"), 0);

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

    f.secrets
}

/// Every row of every table as text (PostgreSQL).
pub async fn dump_postgres(db: &TestDb) -> String {
    use sea_orm::{ConnectionTrait, Statement};
    let tables = [
        "users",
        "sessions",
        "totp_usage",
        "backup_codes",
        "email_otp_codes",
        "auth_ephemeral_tokens",
        "auth_rate_limit_events",
        "auth_rate_limit_counters",
        "oidc_providers",
        "oidc_identities",
    ];
    let mut out = String::new();
    for t in tables {
        let rows = db
            .db
            .query_all_raw(Statement::from_string(
                db.db.get_database_backend(),
                format!("SELECT row_to_json(t)::text AS j FROM {t} t"),
            ))
            .await
            .unwrap();
        for r in rows {
            out.push_str(&r.try_get::<String>("", "j").unwrap());
            out.push('\n');
        }
    }
    out
}

/// Every value of every Tessera key in Redis, as text.
pub fn dump_redis(url: &str) -> String {
    let port = url.rsplit(':').next().unwrap().trim_end_matches('/');
    let cli = |args: &[&str]| {
        let out = Command::new("redis-cli")
            .args(["-p", port])
            .args(args)
            .output()
            .expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let mut out = String::new();
    for key in cli(&["--scan", "--pattern", "tessera:*"]).lines() {
        let kind = cli(&["TYPE", key]);
        let value = match kind.trim() {
            "hash" => cli(&["HGETALL", key]),
            "set" => cli(&["SMEMBERS", key]),
            "zset" => cli(&["ZRANGE", key, "0", "-1"]),
            _ => cli(&["GET", key]),
        };
        out.push_str(key);
        out.push(' ');
        out.push_str(&value);
    }
    out
}

fn assert_no_secret(dump: &str, secrets: &[String]) {
    assert!(dump.contains("$argon2id$"), "the dump holds the accounts");
    assert!(secrets.len() > 20, "secrets were collected");
    for s in secrets {
        assert!(s.len() >= 8, "{s}");
        assert!(
            !dump.contains(s.as_str()),
            "the dump holds a secret in clear: {s}"
        );
    }
}

/// Three workers on a fresh PostgreSQL database, mailing through a real SMTP sink, with
/// `rate_limits` overriding the policies.
async fn three_workers_on_postgres(
    rate_limits: &str,
) -> (TestDb, SmtpSink, tempfile::TempDir, Vec<Worker>, PathBuf) {
    let db = TestDb::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let smtp = SmtpSink::start(dir.path());
    let (ws, ws_dir) = start_workers(
        3,
        vec![
            "--database-url".into(),
            db.url.clone(),
            "--smtp-url".into(),
            smtp.url(),
            "--rate-limits".into(),
            rate_limits.into(),
        ],
    )
    .await;
    (db, smtp, dir, ws, ws_dir)
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
    let db = TestDb::postgres().await;
    let redis = require_redis();
    let dir = tempfile::tempdir().unwrap();
    let smtp = SmtpSink::start(dir.path());
    let (ws, _dir) = start_workers(
        3,
        vec![
            "--database-url".into(),
            db.url.clone(),
            "--redis-url".into(),
            redis.clone(),
            "--smtp-url".into(),
            smtp.url(),
            // Every request of the test comes from 127.0.0.1 (and on Redis, every run of it).
            "--rate-limits".into(),
            "login_ip=1000/15m,password_reset_ip=1000/1h".into(),
        ],
    )
    .await;
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

/// When the store behind the limiter is down, throttled routes answer 503 — no attempt
/// goes through unthrottled — and they work again once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn throttled_routes_fail_closed_while_the_limiter_store_is_down() {
    let db = TestDb::postgres().await;
    let redis = crate::workers::OwnRedis::start(free_port(), tempfile::tempdir().unwrap());
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let (ws, _dir) = start_workers(
        1,
        vec![
            "--database-url".into(),
            db.url.clone(),
            "--redis-url".into(),
            url,
        ],
    )
    .await;
    let w = ws[0].addr;
    let mut b = Browser::new();
    let user = unique("frank");
    let pw = "correct horse battery";
    b.register(w, &user, pw).await;
    let (port, dir) = redis.stop();
    for (path, body) in [
        ("/auth/login", json!({"username": user, "password": pw})),
        (
            "/auth/login",
            json!({"username": user, "password": "wrong password!"}),
        ),
        (
            "/auth/password-reset/request",
            json!({"email": format!("{user}@example.com")}),
        ),
    ] {
        let r = b.post(w, path, body).await;
        assert_eq!(r.status, 503, "{path}: {}", r.body);
        assert_eq!(r.body["code"], "store_unavailable");
    }
    let _redis = crate::workers::OwnRedis::start(port, dir);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = b
            .post(w, "/auth/login", json!({"username": user, "password": pw}))
            .await;
        if r.status == 200 {
            assert_eq!(r.body["authenticated"], true);
            break;
        }
        assert!(Instant::now() < deadline, "no recovery: {}", r.body);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(ws);
    db.finish().await;
}

/// When PostgreSQL goes away, the login routes answer 503 `store_unavailable`, never 500
/// and never 401 for a valid session, and they work again once it is back, without a
/// restart. The outage is a forwarder in front of the shared server, cut and restored.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn login_fails_closed_while_postgres_is_down() {
    let db = TestDb::postgres().await;
    let mut gate = crate::helpers::TcpGate::open("127.0.0.1:5432".parse().unwrap()).await;
    assert!(db.url.contains("127.0.0.1:5432/"), "{}", db.url);
    let url = db
        .url
        .replace("127.0.0.1:5432/", &format!("127.0.0.1:{}/", gate.port));
    let (ws, _dir) = start_workers(1, vec!["--database-url".into(), url]).await;
    let w = ws[0].addr;
    let mut b = Browser::new();
    let user = unique("gail");
    let pw = "correct horse battery";
    b.register(w, &user, pw).await;
    let r = b
        .post(w, "/auth/login", json!({"username": user, "password": pw}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(b.get(w, "/auth/me").await.status, 200);

    gate.cut().await;
    let me = b.get(w, "/auth/me").await;
    assert_eq!(
        me.status, 503,
        "a valid session is not signed out: {}",
        me.body
    );
    assert_eq!(me.body["code"], "store_unavailable");
    for (path, body) in [
        ("/auth/login", json!({"username": user, "password": pw})),
        (
            "/auth/login",
            json!({"username": user, "password": "wrong password!"}),
        ),
        (
            "/auth/register",
            json!({"username": unique("hank"), "email": "h@example.com", "password": pw}),
        ),
        (
            "/auth/password-reset/request",
            json!({"email": format!("{user}@example.com")}),
        ),
    ] {
        let started = Instant::now();
        let r = b.post(w, path, body).await;
        assert_eq!(r.status, 503, "{path}: {}", r.body);
        assert_eq!(r.body["code"], "store_unavailable", "{path}");
        // The pool gives up on a connection after 5 s; nothing waits longer.
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{path} answered after {:?}",
            started.elapsed()
        );
    }

    gate.restore().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = b.get(w, "/auth/me").await;
        if r.status == 200 {
            assert_eq!(r.body["username"], user.as_str());
            break;
        }
        assert!(Instant::now() < deadline, "no recovery: {}", r.body);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The wrong password during the outage was never counted, and the account works.
    let mut fresh = Browser::new();
    let r = fresh
        .post(w, "/auth/login", json!({"username": user, "password": pw}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["authenticated"], true);
    drop(ws);
    db.finish().await;
}

/// Hashing stays off the runtime: while 20 logins are hashed at once, `/healthz` on the
/// same worker answers about as fast as when idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn healthz_stays_flat_while_twenty_logins_are_hashed() {
    let db = TestDb::postgres().await;
    let (ws, _dir) = start_workers(
        1,
        vec![
            "--database-url".into(),
            db.url.clone(),
            "--rate-limits".into(),
            "login_ip=100000/15m,login_attempt=100000/15m,login_user_ip=100000/15m".into(),
        ],
    )
    .await;
    let w = ws[0].addr;
    let user = unique("grace");
    let pw = "correct horse battery";
    Browser::new().register(w, &user, pw).await;
    let c = reqwest::Client::new();
    let probe = |c: reqwest::Client| async move {
        let t = Instant::now();
        let r = c.get(format!("http://{w}/healthz")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        t.elapsed()
    };
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let mut idle = Vec::new();
    let mut busy = Vec::new();
    for _round in 0..3 {
        for _ in 0..10 {
            idle.push(probe(c.clone()).await);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let logins = tokio::spawn({
            let user = user.clone();
            async move {
                join_all((0..20).map(|_| {
                    let user = user.clone();
                    async move {
                        Browser::new()
                            .post(w, "/auth/login", json!({"username": user, "password": pw}))
                            .await
                            .status
                    }
                }))
                .await
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        while !logins.is_finished() {
            busy.push(probe(c.clone()).await);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The hashing queue holds two per CPU beyond the running hashes: the rest of a
        // burst is told at once to retry (503 overloaded, Retry-After: 1), nothing else.
        let statuses = logins.await.unwrap();
        assert!(
            statuses.iter().all(|s| *s == 200 || *s == 503),
            "{statuses:?}"
        );
        assert!(
            statuses.iter().filter(|s| **s == 200).count() >= 4,
            "{statuses:?}"
        );
    }
    assert!(!busy.is_empty(), "the logins took long enough to be probed");
    let (idle, busy) = (median(idle), median(busy));
    eprintln!("/healthz median: idle {idle:?}, during 20 concurrent logins {busy:?}");
    assert!(
        busy < idle + Duration::from_millis(50),
        "/healthz slowed from {idle:?} to {busy:?} while logins were hashed"
    );
    drop(ws);
    db.finish().await;
}

/// `tessera keys rotate`: TOTP and OIDC client secrets sealed under the old key are re-sealed
/// under the new one, after which a worker that knows only the new key still verifies codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_rotate_reseals_totp_secrets_under_the_new_key() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/rotate.db?mode=rwc", dir.path().display());
    let old_key = "old-secret-key-0123456789-0123456789-abcdef";
    let new_key = "new-secret-key-0123456789-0123456789-abcdef";
    let start = |key: &'static str| {
        let (url, path) = (url.clone(), dir.path().to_owned());
        tokio::task::spawn_blocking(move || {
            Worker::start_env(
                &path,
                &["--database-url", &url],
                &[("TESSERA_SECRET_KEY", key)],
            )
        })
    };
    let w = start(old_key).await.unwrap();
    let pw = "correct horse battery";
    let mut b = Browser::new();
    b.register(w.addr, "rita", pw).await;
    b.post(
        w.addr,
        "/auth/login",
        json!({"username": "rita", "password": pw}),
    )
    .await;
    let setup = b.post(w.addr, "/auth/totp/setup", json!({})).await;
    let secret = setup.body["secret"].as_str().unwrap().to_owned();
    let now = fresh_window().await;
    let ok = b
        .post(
            w.addr,
            "/auth/totp/confirm",
            json!({"code": pyotp(&secret, now)}),
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    drop(w);
    // An OIDC client secret, sealed under the old key too.
    let mut add = crate::helpers::tessera(dir.path());
    add.args([
        "oidc",
        "add",
        "corp",
        "--issuer",
        "https://idp.example",
        "--client-id",
        "tessera",
        "--client-secret",
        "corp-client-secret",
        "--database-url",
        &url,
    ])
    .env("TESSERA_SECRET_KEY", old_key);
    let out = crate::helpers::run(add);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut rotate = crate::helpers::tessera(dir.path());
    rotate
        .args(["keys", "rotate", "--database-url", &url])
        .env("TESSERA_SECRET_KEY", new_key)
        .env("TESSERA_PREVIOUS_SECRET_KEYS", old_key);
    let out = crate::helpers::run(rotate);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.starts_with("2 secret(s) re-encrypted"), "{said}");
    // Everything is under the new key now: a second run has nothing to do.
    let mut again = crate::helpers::tessera(dir.path());
    again
        .args(["keys", "rotate", "--database-url", &url])
        .env("TESSERA_SECRET_KEY", new_key);
    let out = crate::helpers::run(again);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.starts_with("0 secret(s) re-encrypted") && said.contains("2 already"),
        "{said}"
    );

    let w = start(new_key).await.unwrap();
    let mut b = Browser::new();
    let r = b
        .post(
            w.addr,
            "/auth/login",
            json!({"username": "rita", "password": pw}),
        )
        .await;
    let tok = r.body["mfa_token"].as_str().unwrap().to_owned();
    let ok = verify(&mut b, w.addr, &tok, "code", &pyotp(&secret, now + 30)).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    drop(w);
}

/// The attacker with the password against three workers on one store, for one real window
/// (the 2FA window shortened to 4 s): codes spread over the workers still meet one budget
/// (10 checked, then 423 on every worker, as one worker alone would allow), and the owner
/// gets back in with a reset link, the new password and a code.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_second_factor_budget_is_one_across_three_workers() {
    let (db, smtp, _dir, ws, _ws_dir) =
        three_workers_on_postgres("login_ip=1000/15m,2fa_attempt=5/4s").await;
    let w = [ws[0].addr, ws[1].addr, ws[2].addr];
    let mut f = Flow {
        w,
        secrets: Vec::new(),
        confirmed_at: 0,
    };
    let pw = "correct horse battery";
    let (victim, mail) = f.register("victim", pw).await;
    let (mut b, _) = f.password(0, &victim, pw).await;
    let (secret, _) = f.enable_totp(&mut b).await;

    let started = Instant::now();
    let (mut checked, mut locked_on) = (0, Vec::new());
    let mut n = 0usize;
    'attack: while started.elapsed() < Duration::from_secs(20) {
        let (mut a, r) = f.password(n % 3, &victim, pw).await;
        if r.status == 423 {
            locked_on.push(n % 3);
            if locked_on.len() == 3 {
                break;
            }
            n += 1;
            continue;
        }
        assert_eq!(r.status, 200, "{}", r.body);
        let token = r.body["mfa_token"].as_str().unwrap().to_owned();
        loop {
            n += 1;
            let v = verify(&mut a, w[n % 3], &token, "code", "000000").await;
            match (v.status, v.body["code"].as_str().unwrap_or("")) {
                (401, "invalid_code") => checked += 1,
                (401, "mfa_session_expired") => break,
                (429, _) => tokio::time::sleep(Duration::from_millis(500)).await,
                (423, _) => break,
                (s, _) if started.elapsed() > Duration::from_secs(20) => {
                    panic!("{s} {}", v.body)
                }
                (s, c) => panic!("{s} {c}: {}", v.body),
            }
            if started.elapsed() > Duration::from_secs(20) {
                break 'attack;
            }
        }
    }
    eprintln!(
        "three workers, {:?}: {checked} second-factor guesses checked, then locked on workers {locked_on:?}",
        started.elapsed()
    );
    // "000000" might be the right code once in a million: at most the threshold anyway.
    assert!(checked <= 10, "{checked}");
    assert!(checked >= 9, "{checked}");
    assert_eq!(locked_on.len(), 3, "423 on every worker");

    // The owner: a reset link (mailed by worker 2, used on worker 3), then the new password
    // and a fresh code on worker 1.
    let before = smtp.count_to(&mail);
    let r = Browser::new()
        .post(w[1], "/auth/password-reset/request", json!({"email": mail}))
        .await;
    assert_eq!(r.status, 202);
    let token = reset_token_in(&smtp.nth_to(&mail, before + 1).await);
    let r = Browser::new()
        .post(
            w[2],
            "/auth/password-reset/confirm",
            json!({"token": token, "new_password": "new horse staple"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let now = fresh_window().await;
    let (mut o, r) = f.password(0, &victim, "new horse staple").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let token = r.body["mfa_token"].as_str().unwrap().to_owned();
    let code = pyotp(&secret, now + 30);
    let ok = verify(&mut o, w[0], &token, "code", &code).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    drop(ws);
    db.finish().await;
}

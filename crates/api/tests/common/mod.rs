//! Driving the router without a socket, on a fresh SQLite database per test.
#![allow(dead_code)]

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};
use std::sync::Arc;
use tessera_api::{ApiKeys, AppState, AuthSettings, router};
use tessera_auth::factors::codes as mfa;
use tessera_limiter::{Clock, Limiter, SqlLimiter};
use tessera_store::{SqlTokenStore, Tokens};
use tessera_testkit::TestDb;
use tower::ServiceExt;

pub async fn app_state(
    configure: impl FnOnce(&mut AuthSettings),
) -> (AppState, TestDb, tempfile::TempDir) {
    app_state_on(Clock::Store, configure).await
}

/// A service whose locks, windows and TOTP time all read `clock`.
pub async fn app_state_on(
    clock: Clock,
    configure: impl FnOnce(&mut AuthSettings),
) -> (AppState, TestDb, tempfile::TempDir) {
    let db = TestDb::sqlite_file().await;
    let tokens = Tokens::new(Arc::new(SqlTokenStore::new(db.db.clone()).unwrap()));
    let limiter = Limiter::new(
        Arc::new(
            SqlLimiter::new(db.db.clone())
                .unwrap()
                .with_clock(clock.clone()),
        ),
        tessera_auth::throttle::default_policies(),
    );
    let outbox = tempfile::tempdir().unwrap();
    let mut settings = AuthSettings::ephemeral(outbox.path().to_owned());
    settings.public_url = "https://auth.example.com".into();
    settings.public_origin = "https://auth.example.com".into();
    settings.secure_cookies = true;
    settings.clock = clock;
    configure(&mut settings);
    let mut state = AppState::new(db.db.clone(), tokens, limiter, ApiKeys::parse(""));
    state.auth.set_settings(settings);
    (state, db, outbox)
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Value,
}

impl Answer {
    /// Asserts a 200 answer, showing the body otherwise.
    #[track_caller]
    pub fn ok(&self) -> &Self {
        assert_eq!(self.status, StatusCode::OK, "{}", self.body);
        self
    }
}

pub async fn send(state: &AppState, req: Request<Body>) -> Answer {
    let res = router(state.clone()).oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()))
    };
    Answer {
        status,
        headers,
        body,
    }
}

pub fn post(path: &str) -> axum::http::request::Builder {
    Request::post(path).header(header::CONTENT_TYPE, "application/json")
}

pub async fn json_post(state: &AppState, path: &str, body: Value, cookie: Option<&str>) -> Answer {
    let mut req = post(path);
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, c);
    }
    send(state, req.body(Body::from(body.to_string())).unwrap()).await
}

pub fn problem(a: &Answer, status: StatusCode, code: &str) {
    assert_eq!(a.status, status, "{}", a.body);
    assert_eq!(a.body["code"], code, "{}", a.body);
    assert_eq!(a.body["status"], status.as_u16());
    assert_eq!(
        a.headers[header::CONTENT_TYPE],
        "application/problem+json",
        "{}",
        a.body
    );
}

pub fn set_cookie(a: &Answer, name: &str) -> Option<String> {
    a.headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|v| v.starts_with(&format!("{name}=")))
}

/// The session cookie with the TOTP setup cookie that `setup` (an answer of
/// `/auth/totp/setup`) set: what a browser sends to confirm that setup.
pub fn with_setup_cookie(cookies: &str, setup: &Answer) -> String {
    let set = set_cookie(setup, "tessera_totp_setup").expect("a setup cookie");
    format!("{cookies}; {}", cookie_value(&set))
}

pub fn cookie_value(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
}

pub async fn register(state: &AppState, user: &str, password: &str) {
    let r = json_post(
        state,
        "/auth/register",
        json!({"username": user, "email": format!("{user}@example.com"), "password": password}),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
}

pub fn base32_decode(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut bits = 0u64;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.trim_end_matches('=').bytes() {
        bits = (bits << 5) | ALPHABET.iter().position(|a| *a == c).unwrap() as u64;
        n += 5;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    out
}

pub async fn sign_in(state: &AppState, user: &str, password: &str) -> String {
    let r = json_post(
        state,
        "/auth/login",
        json!({"username": user, "password": password}),
        None,
    )
    .await;
    r.ok();
    cookie_value(&set_cookie(&r, "tessera_session").expect("a session"))
}

/// Sets up and confirms TOTP for the session's user, early enough in a window that the
/// previous one stays within the skew to the end. Answers the secret, the window the
/// confirmation used, and the backup codes.
pub async fn confirm_totp(state: &AppState, session: &str) -> (Vec<u8>, u64, Value) {
    let setup = json_post(state, "/auth/totp/setup", json!({}), Some(session)).await;
    let secret = base32_decode(setup.body["secret"].as_str().unwrap());
    while chrono::Utc::now().timestamp() % 30 > 20 {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let step = chrono::Utc::now().timestamp() as u64 / mfa::STEP;
    let ok = json_post(
        state,
        "/auth/totp/confirm",
        json!({"code": mfa::code_at(&secret, step)}),
        Some(&with_setup_cookie(session, &setup)),
    )
    .await;
    ok.ok();
    (secret, step, setup.body["backup_codes"].clone())
}

/// Turns email codes on for the session's user with the code mailed to the outbox (its
/// `nth` mail).
pub async fn enable_email_otp(
    state: &AppState,
    outbox: &std::path::Path,
    session: &str,
    nth: usize,
) {
    let me = browser(state).with(session);
    let enable = me.post("/auth/email-otp/enable", json!({})).await;
    enable.ok();
    let mail = &outbox_mails(outbox, nth).await[nth - 1];
    let at = mail.find("is: ").unwrap() + 4;
    let confirm = json!({"code": &mail[at..at + 6], "setup_token": enable.body["setup_token"]});
    me.post("/auth/email-otp/confirm", confirm).await.ok();
}

pub async fn outbox_mails(dir: &std::path::Path, n: usize) -> Vec<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        if files.len() >= n {
            return files
                .iter()
                .map(|p| {
                    std::fs::read_to_string(p)
                        .unwrap()
                        .replace("=\r\n", "")
                        .replace("=3D", "=")
                })
                .collect();
        }
        assert!(std::time::Instant::now() < deadline, "{n} mails expected");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

pub fn token_in(mail: &str) -> String {
    let at = mail.find("#token=").unwrap() + 7;
    mail[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect()
}

/// A JSON POST from `ip`, with `cookies`.
pub async fn from(state: &AppState, ip: &str, path: &str, body: Value, cookies: &[&str]) -> Answer {
    let mut req = post(path).extension(axum::extract::ConnectInfo(std::net::SocketAddr::new(
        ip.parse().unwrap(),
        4000,
    )));
    if !cookies.is_empty() {
        req = req.header(header::COOKIE, cookies.join("; "));
    }
    send(state, req.body(Body::from(body.to_string())).unwrap()).await
}

/// A client at address `ip` (through a trusted proxy's `ConnectInfo`), with the cookies it
/// holds: `at(&state, ip).with(&cookie).login(user, pw)`.
pub struct At<'a> {
    state: &'a AppState,
    ip: Option<&'a str>,
    cookies: Vec<&'a str>,
}

/// The client at `ip`, with no cookie yet.
pub fn at<'a>(state: &'a AppState, ip: &'a str) -> At<'a> {
    At {
        state,
        ip: Some(ip),
        cookies: Vec::new(),
    }
}

/// A client without a known address (as [`json_post`] sends), with no cookie yet.
pub fn browser(state: &AppState) -> At<'_> {
    At {
        state,
        ip: None,
        cookies: Vec::new(),
    }
}

impl<'a> At<'a> {
    /// The same client, sending `cookie` too.
    pub fn with(mut self, cookie: &'a str) -> Self {
        self.cookies.push(cookie);
        self
    }

    /// A JSON POST to `path`.
    pub async fn post(&self, path: &str, body: Value) -> Answer {
        match self.ip {
            Some(ip) => from(self.state, ip, path, body, &self.cookies).await,
            None => {
                let cookies = self.cookies.join("; ");
                let cookies = (!cookies.is_empty()).then_some(cookies.as_str());
                json_post(self.state, path, body, cookies).await
            }
        }
    }

    /// A GET of `path`.
    pub async fn get(&self, path: &str) -> Answer {
        let mut req = Request::get(path);
        if !self.cookies.is_empty() {
            req = req.header(header::COOKIE, self.cookies.join("; "));
        }
        send(self.state, req.body(Body::empty()).unwrap()).await
    }

    /// A TOTP `code` for the pending login `mfa_token`.
    pub async fn verify(&self, mfa_token: &str, code: &str) -> Answer {
        let body = json!({"mfa_token": mfa_token, "code": code});
        self.post("/auth/2fa/verify", body).await
    }

    /// The password step.
    pub async fn login(&self, user: &str, password: &str) -> Answer {
        let body = json!({"username": user, "password": password});
        self.post("/auth/login", body).await
    }
}

//! A browser with a cookie jar, and names no earlier run has used.

use reqwest::header::{HeaderMap, SET_COOKIE};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

    pub fn cookie_header(&self) -> String {
        self.jar
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub fn keep(&mut self, headers: &HeaderMap) {
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

pub fn unique(name: &str) -> String {
    format!("{name}{}", &uuid_like()[..10])
}

pub fn uuid_like() -> String {
    let mut s = String::new();
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    s.push_str(&format!("{:x}", n ^ (std::process::id() as u128) << 64));
    s.chars().rev().collect()
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

//! Magic links across three workers, with the mail caught by a real SMTP server: asked for
//! on one worker, used on another, refused the second time on a third; an account with TOTP
//! asked for its code; an unknown address answered alike and sent nothing.

use serde_json::json;
use std::net::SocketAddr;
use std::time::Duration;

use crate::helpers::*;

/// The token after `marker` in a mail (quoted-printable soft breaks undone).
pub(crate) fn token_after(mail: &str, marker: &str) -> String {
    let mail = mail
        .replace("=\r\n", "")
        .replace("=\n", "")
        .replace("=3D", "=");
    let at = mail
        .find(marker)
        .unwrap_or_else(|| panic!("no `{marker}` in {mail}"))
        + marker.len();
    mail[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect()
}

async fn magic_links_across_workers(w: [SocketAddr; 3], smtp: &SmtpSink) {
    let pw = "a magic password";
    let mut f = Flow {
        w,
        secrets: Vec::new(),
        confirmed_at: 0,
    };
    let (user, email) = f.register("magic", pw).await;
    let ask = |email: &str| json!({ "email": email });
    let nobody = format!("nobody-{}@example.com", unique("x"));
    let r = Browser::new()
        .post(w[0], "/auth/magic-link/request", ask(&nobody))
        .await;
    assert_eq!(r.status, 202, "{}", r.body);

    // Asked for on worker 1, used on worker 2, refused again on worker 3.
    let r = Browser::new()
        .post(w[0], "/auth/magic-link/request", ask(&email))
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let mail = smtp.nth_to(&email, 1).await;
    let token = token_after(&mail, "/login/magic#token=");
    assert!(token.starts_with("tsr_ml_"), "{token}");
    assert_standard_message(&mail, &token);
    let mut b = Browser::new();
    let r = b
        .post(w[1], "/auth/magic-link/consume", json!({ "token": token }))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["authenticated"], true, "{}", r.body);
    assert_eq!(b.get(w[2], "/auth/me").await.body["username"], user);
    let again = Browser::new()
        .post(w[2], "/auth/magic-link/consume", json!({ "token": token }))
        .await;
    assert_eq!(again.status, 400, "{}", again.body);
    assert_eq!(again.body["code"], "invalid_or_expired_token");

    // With TOTP on, the link is the first factor only: the code is asked for.
    let (secret, _) = f.enable_totp(&mut b).await;
    let r = Browser::new()
        .post(w[2], "/auth/magic-link/request", ask(&email))
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let token = token_after(&smtp.nth_to(&email, 2).await, "/login/magic#token=");
    let mut b = Browser::new();
    let r = b
        .post(w[0], "/auth/magic-link/consume", json!({ "token": token }))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let offered = r.body["methods"].clone();
    assert_eq!(
        offered,
        json!(["totp", "backup_code"]),
        "never a mailed code"
    );
    let pending = r.body["mfa_token"].as_str().unwrap().to_owned();
    let code = pyotp(&secret, f.confirmed_at + 30);
    let ok = verify(&mut b, w[1], &pending, "code", &code).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(b.get(w[2], "/auth/me").await.body["username"], user);

    // The third link in ten minutes goes out; the fourth is answered alike and sends
    // nothing (`email_send`, 3 per 10 minutes per account).
    for on in [w[1], w[2]] {
        let r = Browser::new()
            .post(on, "/auth/magic-link/request", ask(&email))
            .await;
        assert_eq!(r.status, 202, "{}", r.body);
    }
    smtp.nth_to(&email, 3).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(smtp.count_to(&email), 3, "the fourth request sent nothing");

    // Nothing ever went to the unknown address.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(smtp.count_to(&nobody), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn magic_links_across_three_workers_on_postgres() {
    let (db, smtp, _dir, ws, _ws_dir) =
        three_workers_on_postgres("login_ip=1000/15m,magic_link_ip=1000/1h").await;
    magic_links_across_workers([ws[0].addr, ws[1].addr, ws[2].addr], &smtp).await;
    drop(ws);
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn magic_links_across_three_workers_with_tokens_on_redis() {
    let (db, smtp, _dir, ws, _ws_dir) =
        three_workers_on_redis("login_ip=1000/15m,magic_link_ip=1000/1h").await;
    magic_links_across_workers([ws[0].addr, ws[1].addr, ws[2].addr], &smtp).await;
    drop(ws);
    db.finish().await;
}

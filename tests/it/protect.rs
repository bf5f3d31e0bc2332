//! Forward auth as deployed: Debian's nginx running deploy/nginx/protect-app.conf in front
//! of an upstream app and three workers. A visitor without a session is sent to sign in
//! with the path they asked for; signed in, the app sees who they are, and a visitor cannot
//! claim to be someone by sending the headers themselves.

use serde_json::json;

use crate::helpers::nginx::{echo_app, nginx, servers};
use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_app_behind_nginx_sees_who_signed_in() {
    let (db, _smtp, _dir, ws, _ws_dir) = three_workers_on_postgres("login_ip=1000/15m").await;
    let (_app, app) = echo_app();
    let workers = [ws[0].addr, ws[1].addr, ws[2].addr];
    let files = [
        ("upstreams.conf", servers(&workers)),
        ("app.conf", servers(&[app])),
    ];
    let (_nginx, proxy, _prefix) = nginx("protect-app.conf", &files);
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    // No session: to the sign-in page, the path kept (encoded), the app never asked.
    let r = client
        .get(format!("http://{proxy}/reports/q3?year=2026&x=1"))
        .header("remote-user", "admin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(
        r.headers()["location"],
        "/login?return_to=/reports/q3%3Fyear%3D2026%26x%3D1"
    );

    // Sign in through the same origin (Tessera's routes are mounted beside the app).
    let mut b = Browser::new();
    let user = unique("viewer");
    let pw = "a protected password";
    let r = b
        .post(
            proxy,
            "/auth/register",
            json!({"username": user, "email": format!("{user}@example.com"), "password": pw}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = b
        .post(
            proxy,
            "/auth/login",
            json!({"username": user, "password": pw}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // Each visit may land on any worker; the app sees the user every time, and never the
    // header the visitor wrote.
    for _ in 0..6 {
        let seen = b
            .send(
                client
                    .get(format!("http://{proxy}/reports/q3"))
                    .header("remote-user", "admin"),
            )
            .await;
        assert_eq!(seen.status, 200, "{}", seen.text);
        assert_eq!(seen.body["path"], "/reports/q3");
        assert_eq!(seen.body["headers"]["remote-user"], user.as_str());
        assert_eq!(
            seen.body["headers"]["remote-email"],
            format!("{user}@example.com")
        );
        assert_eq!(seen.body["headers"]["remote-second-factor"], "false");
    }
    // Signed out: sent to sign in again.
    assert_eq!(b.post(proxy, "/auth/logout", json!({})).await.status, 204);
    let after = client
        .get(format!("http://{proxy}/reports/q3"))
        .header("cookie", b.cookie_header())
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 302);
    drop(ws);
    db.finish().await;
}

//! `tessera keys rotate`: secrets sealed under a new key while the workers serve.

use serde_json::json;

use crate::helpers::*;

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
    // An OIDC client secret, sealed under the old key too. Its issuer does not answer
    // (nothing listens on its port): refused unless added with --no-check.
    let issuer = format!("http://127.0.0.1:{}", free_port());
    let add = |check: bool| {
        let mut add = crate::helpers::tessera(dir.path());
        add.args(["oidc", "add", "corp", "--issuer", &issuer])
            .args([
                "--client-id",
                "tessera",
                "--client-secret",
                "corp-client-secret",
            ])
            .args(["--database-url", &url])
            .args(if check { &[][..] } else { &["--no-check"][..] })
            .env("TESSERA_SECRET_KEY", old_key);
        crate::helpers::run(add)
    };
    let refused = add(true);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        said.contains("did not answer with a discovery document")
            && said.contains("/.well-known/openid-configuration")
            && said.contains("--no-check"),
        "{said}"
    );
    let out = add(false);
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

//! The pages in a real browser: headless Chromium (WebDriver) in front of nginx running
//! deploy/nginx/protect-app.conf, three workers on PostgreSQL behind it and a small app
//! it protects. A person opens the app, is sent to sign in, creates an account, sets up the
//! authenticator app, signs in with codes and backup codes, resets a forgotten password from
//! the mail, and ends a session on another browser; every step may land on any worker.
//! Every page is photographed at 1280 and 360 px (`target/screenshots/pages/`) and checked
//! with axe-core against WCAG 2.1 AA.

use serde_json::json;
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use crate::helpers::idp::{Idp, add_provider};
use crate::helpers::nginx::{Killed, echo_app, nginx_on, servers};
use crate::helpers::webdriver::{Driver, Page};
use crate::helpers::*;

/// A deployment as a person meets it: one origin (`http://localhost:PORT`).
struct Site {
    origin: String,
    database_url: String,
    proxy: std::net::SocketAddr,
    smtp: SmtpSink,
    driver: Driver,
    _parts: (
        TestDb,
        tempfile::TempDir,
        Vec<Worker>,
        Killed,
        Killed,
        tempfile::TempDir,
    ),
}

use tessera_testkit::TestDb;

async fn site(limits: &str, extra: &[&str]) -> Site {
    let port = free_port();
    let origin = format!("http://localhost:{port}");
    let mut args = vec!["--public-url".to_owned(), origin.clone()];
    args.extend(extra.iter().map(|a| a.to_string()));
    let (db, smtp, dir, ws, _ws_dir) = three_workers(&args, limits).await;
    let (app_process, app) = echo_app();
    let workers = [ws[0].addr, ws[1].addr, ws[2].addr];
    let files = [
        ("upstreams.conf", servers(&workers)),
        ("app.conf", servers(&[app])),
    ];
    let (nginx, proxy, prefix) = nginx_on(port, "protect-app.conf", &files);
    Site {
        origin,
        database_url: db.url.clone(),
        proxy,
        smtp,
        driver: Driver::start(),
        _parts: (db, dir, ws, app_process, nginx, prefix),
    }
}

fn shots() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/screenshots/pages")
}

/// Photographs the page at both widths and checks it with axe-core.
pub(crate) async fn look(page: &Page, name: &str) {
    page.screenshots(&shots(), name).await;
    let violations = page.axe().await;
    assert!(violations.is_empty(), "{name}: {violations:#?}");
}

/// A TOTP code of a window no earlier sign-in used (the current or the next one).
fn fresh_code(secret: &str, used: &mut HashSet<u64>) -> String {
    let now = unix_now();
    let window = [now / 30, now / 30 + 1]
        .into_iter()
        .find(|w| !used.contains(w))
        .expect("a window left");
    used.insert(window);
    pyotp(secret, window * 30)
}

/// The authenticator app's secret as the setup shows it, beside its QR code (a `data:`
/// image, the one image source the pages' CSP allows besides their own).
async fn shown_secret(b: &Page) -> String {
    let qr = b
        .visible("//img[@alt='QR code for your authenticator app']")
        .await;
    let src = qr.attr("src").await.unwrap().unwrap_or_default();
    assert!(src.starts_with("data:image/png;base64,"), "{src:.40}");
    b.visible("//code[contains(@class, 'secret')]")
        .await
        .text()
        .await
        .unwrap()
}

async fn password_step(b: &Page, user: &str, password: &str) {
    b.fill("Username", user).await;
    b.fill("Password", password).await;
    b.press("Sign in").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_person_signs_in_through_the_pages_behind_nginx() {
    let site = site("login_ip=1000/15m", &[]).await;
    let b = site.driver.browser(&site.origin).await;
    let user = unique("page");
    let email = format!("{user}@example.com");
    let pw = "the first password";

    // The protected app sends a stranger to sign in, the path kept.
    b.open("/reports/q3?year=2026").await;
    assert_eq!(
        b.wait_at("/login").await,
        "/login?return_to=/reports/q3%3Fyear%3D2026"
    );
    look(&b, "login").await;

    // Create account, and straight back to the app, signed in.
    b.press("Create account").await;
    b.wait_at("/register").await;
    look(&b, "register").await;
    b.fill("Username", &user).await;
    b.fill("Email", &email).await;
    b.fill("Password", pw).await;
    b.press("Create account").await;
    b.wait_at("/reports/q3").await;
    let saw = b.app_saw().await;
    assert_eq!(saw["path"], "/reports/q3?year=2026");
    assert_eq!(saw["headers"]["remote-user"], json!(user));
    assert_eq!(saw["headers"]["remote-second-factor"], "false");

    // The account page: set up the authenticator app from the secret on the page.
    b.open("/account").await;
    b.wait_at("/account").await;
    look(&b, "account").await;
    b.press("Set up authenticator app").await;
    let secret = shown_secret(&b).await;
    let mut backup = Vec::new();
    for li in
        b.c.find_all(fantoccini::Locator::Css(".totp-setup .codes li"))
            .await
            .unwrap()
    {
        backup.push(li.text().await.unwrap());
    }
    assert_eq!(backup.len(), 10, "{backup:?}");
    look(&b, "account-totp-setup").await;
    let mut used = HashSet::new();
    fresh_window().await;
    b.fill("Authentication code", &fresh_code(&secret, &mut used))
        .await;
    b.press("Confirm").await;
    b.visible("//p[starts-with(normalize-space(), 'On.')]")
        .await;
    look(&b, "account-totp-on").await;

    // Sign out; back to the app: sign in again, with a code this time.
    b.press("Sign out").await;
    b.wait_at("/login").await;
    b.open("/reports/q4").await;
    b.wait_at("/login?return_to=/reports/q4").await;
    password_step(&b, &user, pw).await;
    b.field("Authentication code").await;
    look(&b, "second-factor").await;
    b.fill("Authentication code", &fresh_code(&secret, &mut used))
        .await;
    b.press("Verify").await;
    b.wait_at("/reports/q4").await;
    let saw = b.app_saw().await;
    assert_eq!(saw["headers"]["remote-user"], json!(user));
    assert_eq!(saw["headers"]["remote-second-factor"], "true");

    // A backup code instead; with no return_to, the account page.
    b.open("/account").await;
    b.press("Sign out").await;
    b.wait_at("/login").await;
    password_step(&b, &user, pw).await;
    b.press("Use a backup code").await;
    look(&b, "second-factor-backup").await;
    b.fill("Backup code", &backup[0]).await;
    b.press("Verify").await;
    b.wait_at("/account").await;
    assert!(b.text().await.contains("9 unused backup codes left"));

    // A forgotten password, reset from the mail.
    b.press("Sign out").await;
    b.wait_at("/login").await;
    b.press("Forgot password?").await;
    b.wait_at("/reset-password").await;
    look(&b, "reset-request").await;
    b.fill("Email", &email).await;
    b.press("Send reset link").await;
    b.visible("//*[@role='status'][contains(., 'reset link is on its way')]")
        .await;
    let mail = site.smtp.nth_to(&email, 1).await;
    let token = reset_token_in(&mail);
    b.open(&format!("/reset-password#token={token}")).await;
    b.field("New password").await;
    assert_eq!(
        b.at().await,
        "/reset-password",
        "the token left the address bar"
    );
    look(&b, "reset-confirm").await;
    let new_pw = "the second password";
    b.fill("New password", new_pw).await;
    b.press("Set password").await;
    b.visible("//*[@role='status'][contains(., 'Your password is set')]")
        .await;
    b.press("Sign in").await;
    b.wait_at("/login").await;
    password_step(&b, &user, pw).await;
    assert!(
        b.alert().await.contains("wrong"),
        "the old password is gone"
    );
    b.fill("Password", new_pw).await;
    b.press("Sign in").await;
    b.press("Use a backup code").await;
    b.fill("Backup code", &backup[1]).await;
    b.press("Verify").await;
    b.wait_at("/account").await;

    // A second browser signs in too; the first sees two sessions and ends the other one.
    let other = site.driver.browser(&site.origin).await;
    other.open("/reports/elsewhere").await;
    other.wait_at("/login").await;
    password_step(&other, &user, new_pw).await;
    other.press("Use a backup code").await;
    other.fill("Backup code", &backup[2]).await;
    other.press("Verify").await;
    other.wait_at("/reports/elsewhere").await;
    assert_eq!(other.app_saw().await["headers"]["remote-user"], json!(user));

    b.open("/account").await;
    let sessions =
        b.c.find_all(fantoccini::Locator::Css("li[data-session]"))
            .await
            .unwrap();
    assert_eq!(sessions.len(), 2);
    assert!(b.text().await.contains("This device"));
    look(&b, "account-sessions").await;
    b.visible(
        "//li[@data-session][not(contains(@class, 'current'))]//button[normalize-space()='Sign out']",
    )
    .await
    .click()
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while b
        .c
        .find_all(fantoccini::Locator::Css("li[data-session]"))
        .await
        .map_or(2, |l| l.len())
        != 1
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the other session stayed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // That browser is signed out; this one is not.
    other.open("/reports/elsewhere").await;
    other.wait_at("/login?return_to=/reports/elsewhere").await;
    b.open("/reports/still").await;
    b.wait_at("/reports/still").await;
    assert_eq!(b.app_saw().await["headers"]["remote-user"], json!(user));

    other.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refusals_are_sentences_in_an_alert() {
    let site = site(
        "login_ip=1000/15m,2fa_attempt=100/5m",
        &["--lockout-threshold", "3"],
    )
    .await;
    // An account with the authenticator app on, made through the JSON routes.
    let mut api = Browser::new();
    let user = unique("refused");
    let pw = "a correct password";
    api.register(site.proxy, &user, pw).await;
    let r = api
        .post(
            site.proxy,
            "/auth/login",
            json!({"username": user, "password": pw}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let setup = api.post(site.proxy, "/auth/totp/setup", json!({})).await;
    let secret = setup.body["secret"].as_str().unwrap().to_owned();
    let now = fresh_window().await;
    let r = api
        .post(
            site.proxy,
            "/auth/totp/confirm",
            json!({"code": pyotp(&secret, now)}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);

    let b = site.driver.browser(&site.origin).await;

    // A return_to that is not a path: said, and dropped.
    b.open("/login?return_to=https://evil.example/").await;
    assert!(b.alert().await.contains("another site"));
    look(&b, "login-foreign-return-to").await;

    // The wrong password.
    b.open("/login").await;
    password_step(&b, &user, "not the password").await;
    assert_eq!(b.alert().await, "The username or the password is wrong.");
    look(&b, "login-refused").await;

    // A wrong code, twice: said each time, on the same step.
    b.fill("Password", pw).await;
    b.press("Sign in").await;
    let right = pyotp(&secret, unix_now());
    let wrong = format!(
        "{:06}",
        (right.parse::<u32>().unwrap() + 500_000) % 1_000_000
    );
    for _ in 0..2 {
        b.fill("Authentication code", &wrong).await;
        b.press("Verify").await;
        assert!(b.alert().await.contains("not right"));
    }
    look(&b, "second-factor-refused").await;
    // The third locks the account (threshold 3 here): said at the next sign-in, after the
    // right password, and not before it.
    b.fill("Authentication code", &wrong).await;
    b.press("Verify").await;
    b.alert().await;
    b.open("/login").await;
    password_step(&b, &user, "not the password").await;
    assert!(!b.alert().await.contains("locked"));
    b.fill("Password", pw).await;
    b.press("Sign in").await;
    let locked = b.alert().await;
    assert!(locked.contains("locked"), "{locked}");
    look(&b, "login-locked").await;

    // An expired (here: never issued) reset link.
    b.open("/reset-password#token=tsr_pr_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        .await;
    b.fill("New password", "a new password here").await;
    b.press("Set password").await;
    assert!(b.alert().await.contains("expired or was already used"));
    look(&b, "reset-expired").await;

    // A sign-in link that was never issued, and a provider's refusal.
    b.open("/login/magic#token=tsr_ml_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        .await;
    assert!(b.alert().await.contains("expired or was already used"));
    b.open("/login#oidc_error=access_denied").await;
    assert!(b.alert().await.contains("cancelled"));

    // Signed out, the account page sends to sign in and back.
    b.open("/account").await;
    assert_eq!(b.wait_at("/login").await, "/login?return_to=/account");

    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_person_signs_in_with_an_openid_provider_through_the_pages() {
    let site = site("login_ip=1000/15m", &[]).await;
    let idp = Idp::start_for(free_port(), &site.origin);
    add_provider(&site.database_url, &idp);
    let b = site.driver.browser(&site.origin).await;

    b.open("/reports/q1").await;
    b.wait_at("/login?return_to=/reports/q1").await;
    b.press("Sign in with idp").await;
    // The provider's own sign-in and consent pages (oidc-provider's development ones).
    let who = unique("ola");
    let login = b.visible("//input[@name='login']").await;
    login.send_keys(&who).await.unwrap();
    b.visible("//input[@name='password']")
        .await
        .send_keys("any")
        .await
        .unwrap();
    b.visible("//button[@type='submit']")
        .await
        .click()
        .await
        .unwrap();
    // Consent, when the provider asks for it.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !b
        .c
        .current_url()
        .await
        .unwrap()
        .as_str()
        .starts_with(&site.origin)
    {
        assert!(std::time::Instant::now() < deadline, "never sent back");
        if let Ok(button) =
            b.c.find(fantoccini::Locator::XPath("//button[@type='submit']"))
                .await
        {
            button.click().await.ok();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Back through the callback to /login, which finishes the exchange, then to the app.
    b.wait_at("/reports/q1").await;
    let saw = b.app_saw().await;
    assert_eq!(saw["headers"]["remote-user"], json!(who), "{saw}");

    // A refusal at the provider comes back as a sentence.
    b.open("/account").await;
    b.press("Sign out").await;
    b.wait_at("/login").await;
    b.open("/auth/oidc/idp/callback?error=access_denied&state=tsr_os_x")
        .await;
    b.wait_at("/login").await;
    let said = b.alert().await;
    assert!(
        said.contains("cancelled") || said.contains("Start again"),
        "{said}"
    );
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn enforced_mfa_and_email_codes_through_the_pages() {
    let site = site("login_ip=1000/15m", &[]).await;
    let mut api = Browser::new();
    let pw = "a password of theirs";

    // An admin requires a second factor: the sign-in page sets up the app, then signs in.
    let enforced = unique("enforced");
    api.register(site.proxy, &enforced, pw).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = tessera(dir.path());
    cmd.args([
        "user",
        "enforce-mfa",
        &enforced,
        "--database-url",
        &site.database_url,
    ]);
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let b = site.driver.browser(&site.origin).await;
    b.open("/login").await;
    password_step(&b, &enforced, pw).await;
    let secret = shown_secret(&b).await;
    look(&b, "login-enforced-setup").await;
    let now = fresh_window().await;
    b.fill("Authentication code", &pyotp(&secret, now)).await;
    b.press("Confirm").await;
    b.wait_at("/account").await;
    b.visible("//p[starts-with(normalize-space(), 'On.')]")
        .await;
    b.press("Sign out").await;
    b.wait_at("/login").await;

    // A sign-in link by mail: the page asks for the app's code, never a mailed one (the
    // link came through the same mailbox).
    b.fill("Email", &format!("{enforced}@example.com")).await;
    b.press("Email me a sign-in link").await;
    b.visible("//*[@role='status'][contains(., 'sign-in link is on its way')]")
        .await;
    let mail = site
        .smtp
        .nth_to(&format!("{enforced}@example.com"), 1)
        .await;
    let token = crate::magic::token_after(&mail, "/login/magic#token=");
    b.open(&format!("/login/magic#token={token}")).await;
    b.field("Authentication code").await;
    assert_eq!(
        b.at().await,
        "/login/magic",
        "the token left the address bar"
    );
    assert!(!b.text().await.contains("Email me a code"));
    look(&b, "magic-link-second-factor").await;
    let mut used = HashSet::from([now / 30]);
    b.fill("Authentication code", &fresh_code(&secret, &mut used))
        .await;
    b.press("Verify").await;
    b.wait_at("/account").await;
    // The link was spent: opened again, it is refused.
    b.open("/account").await;
    b.press("Sign out").await;
    b.wait_at("/login").await;
    b.open(&format!("/login/magic#token={token}")).await;
    assert!(b.alert().await.contains("expired or was already used"));
    b.open("/login").await;

    // Email codes: turned on with a mailed code, then used to sign in.
    let mailed = unique("mailed");
    let email = format!("{mailed}@example.com");
    api.register(site.proxy, &mailed, pw).await;
    password_step(&b, &mailed, pw).await;
    b.wait_at("/account").await;
    b.press("Turn on email codes").await;
    let code = code_in(&site.smtp.nth_to(&email, 1).await);
    look(&b, "account-email-codes").await;
    b.fill("Emailed code", &code).await;
    b.press("Confirm").await;
    b.visible("//p[starts-with(normalize-space(), 'On: when you sign in')]")
        .await;
    b.press("Sign out").await;
    b.wait_at("/login").await;
    password_step(&b, &mailed, pw).await;
    b.press("Email me a code").await;
    let code = code_in(&site.smtp.nth_to(&email, 2).await);
    look(&b, "second-factor-email").await;
    b.fill("Emailed code", &code).await;
    b.press("Verify").await;
    b.wait_at("/account").await;
    b.close().await;
}

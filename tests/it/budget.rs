//! The second-factor budget of an attacker with the password, against several workers.

use serde_json::json;
use std::time::{Duration, Instant};

use crate::helpers::*;

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

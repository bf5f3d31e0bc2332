//! `tessera user ...` as an admin runs it.

use sea_orm::{ConnectionTrait, Statement};
use serde_json::Value;
use std::io::Write;
use std::process::Stdio;
use tessera_testkit::TestDb;

use crate::helpers::{run, tessera};

fn user(db: &TestDb, args: &[&str], password: Option<&str>) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = tessera(dir.path());
    cmd.arg("user").args(args).args(["--database-url", &db.url]);
    if let Some(p) = password {
        cmd.env("TESSERA_USER_PASSWORD", p);
    }
    run(cmd)
}

fn listed(db: &TestDb) -> Vec<Value> {
    let out = user(db, &["list"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn accounts_are_created_listed_and_changed() {
    let db = TestDb::postgres().await;
    let out = user(
        &db,
        &["create", "alice", "--email", "alice@example.org"],
        Some("correct horse battery"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(created["username"], "alice");
    assert_eq!(created["has_password"], true);

    let again = user(&db, &["create", "alice"], Some("another password"));
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));
    let short = user(&db, &["create", "carol"], Some("short"));
    assert!(!short.status.success());
    assert!(String::from_utf8_lossy(&short.stderr).contains("8 to 1024"));
    let none = user(&db, &["create", "carol"], None);
    assert!(!none.status.success());

    // The password from standard input.
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = tessera(dir.path());
    cmd.args([
        "user",
        "create",
        "bob",
        "--password-stdin",
        "--database-url",
        &db.url,
    ])
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"bobs long password\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let rows = db
        .db
        .query_all_raw(Statement::from_string(
            db.db.get_database_backend(),
            "SELECT username, password_hash FROM users ORDER BY username",
        ))
        .await
        .unwrap();
    for (row, password) in rows
        .iter()
        .zip(["correct horse battery", "bobs long password"])
    {
        let hash: String = row.try_get("", "password_hash").unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(!hash.contains(password));
    }

    db.db
        .execute_unprepared(
            "UPDATE users SET failed_login_count = 10, locked_until = now() + interval '30 minutes' \
             WHERE username = 'bob'",
        )
        .await
        .unwrap();
    let before = listed(&db);
    assert_eq!(before[1]["failed_login_count"], 10);
    assert!(before[1]["locked_until"].is_string());
    for args in [
        ["disable", "alice"],
        ["enforce-mfa", "bob"],
        ["unlock", "bob"],
    ] {
        let out = user(&db, &args, None);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let after = listed(&db);
    assert_eq!(after[0]["username"], "alice");
    assert_eq!(after[0]["disabled"], true);
    assert_eq!(after[1]["mfa_enforce_pending"], true);
    assert_eq!(after[1]["failed_login_count"], 0);
    assert!(after[1]["locked_until"].is_null());
    let text = serde_json::to_string(&after).unwrap();
    assert!(!text.contains("argon2"), "list shows no secrets");

    let missing = user(&db, &["disable", "nobody"], None);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no user `nobody`"));
    db.finish().await;
}

#[test]
fn user_commands_work_on_the_embedded_default() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = tessera(dir.path());
    cmd.args(["user", "create", "dora"])
        .env("TESSERA_USER_PASSWORD", "dora's password");
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut cmd = tessera(dir.path());
    cmd.args(["user", "list"]);
    let out = run(cmd);
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"username\":\"dora\""));
}

/// What `out` printed, failing with its stderr when it did not succeed.
fn printed(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// An account can be disabled and enabled again, given a new password by an admin (its
/// sessions end) and deleted with everything that hangs on it; every command says what it
/// did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_comes_back_gets_a_new_password_and_can_be_deleted() {
    use crate::helpers::{Browser, Worker};
    use serde_json::json;
    let db = TestDb::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let (url, path) = (db.url.clone(), dir.path().to_owned());
    let w = tokio::task::spawn_blocking(move || Worker::start(&path, &["--database-url", &url]))
        .await
        .unwrap();
    let mut b = Browser::new();
    b.register(w.addr, "erin", "first password").await;
    let login = |password: &str| json!({"username": "erin", "password": password});
    let r = b.post(w.addr, "/auth/login", login("first password")).await;
    assert_eq!(r.status, 200, "{}", r.body);

    let said = printed(user(&db, &["disable", "erin"], None));
    assert!(said.contains("`erin` disabled"), "{said}");
    let r = Browser::new()
        .post(w.addr, "/auth/login", login("first password"))
        .await;
    assert_eq!(r.status, 401, "{}", r.body);
    let said = printed(user(&db, &["enable", "erin"], None));
    assert!(said.contains("`erin` enabled"), "{said}");
    let r = Browser::new()
        .post(w.addr, "/auth/login", login("first password"))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let said = printed(user(&db, &["unlock", "erin"], None));
    assert!(said.contains("`erin` unlocked"), "{said}");
    let said = printed(user(&db, &["enforce-mfa", "erin"], None));
    assert!(
        said.contains("`erin` must set up a second factor"),
        "{said}"
    );

    // A new password from the admin: the old one and its sessions end.
    let short = user(&db, &["set-password", "erin"], Some("short"));
    assert!(!short.status.success());
    let said = printed(user(
        &db,
        &["set-password", "erin"],
        Some("second password"),
    ));
    assert!(said.contains("2 session(s) ended"), "{said}");
    assert_eq!(b.get(w.addr, "/auth/me").await.status, 401);
    let r = Browser::new()
        .post(w.addr, "/auth/login", login("first password"))
        .await;
    assert_eq!(r.status, 401, "{}", r.body);
    let r = b
        .post(w.addr, "/auth/login", login("second password"))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["mfa_setup_required"], true, "{}", r.body);

    // Deleted: the row, its sessions and its pending login go; the name is free again.
    let said = printed(user(&db, &["delete", "ERIN"], None));
    assert!(said.contains("deleted `erin`"), "{said}");
    assert!(
        said.contains("1 token(s)"),
        "the pending login is revoked: {said}"
    );
    for table in ["users", "sessions"] {
        assert_eq!(db.count(table).await, 0, "{table}");
    }
    let pending = r.body["mfa_token"].as_str().unwrap();
    let v = b
        .post(
            w.addr,
            "/auth/totp/enforce-setup",
            json!({ "mfa_token": pending }),
        )
        .await;
    assert_eq!(v.status, 401, "{}", v.body);
    let r = Browser::new()
        .post(w.addr, "/auth/login", login("second password"))
        .await;
    assert_eq!(r.status, 401, "{}", r.body);
    let missing = user(&db, &["delete", "erin"], None);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no user `erin`"));
    printed(user(
        &db,
        &["create", "erin"],
        Some("a new erin's password"),
    ));
    drop(w);
    db.finish().await;
}

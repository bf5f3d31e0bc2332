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

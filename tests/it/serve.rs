//! `tessera serve`, `migrate` and `purge` as a user runs them.

use sea_orm::ConnectionTrait;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tessera_entity::{AuthEphemeralToken, Username};
use tessera_store::{SqlTokenStore, Tokens};
use tessera_testkit::TestDb;

use crate::helpers::{Worker, get, run, tessera};

#[test]
fn serve_with_no_configuration_runs_on_sqlite_in_the_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    let w = Worker::start(dir.path(), &[]);
    assert_eq!(get(w.addr, "/healthz").unwrap().0, 200);
    let (status, body) = get(w.addr, "/readyz").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(dir.path().join("tessera.db").exists());
}

/// Without TESSERA_SECRET_KEY, the embedded default makes a key once, beside the database,
/// readable by its owner only; any other database is refused, naming the setting.
#[tokio::test]
async fn the_secret_key_is_generated_only_for_the_embedded_default() {
    let dir = tempfile::tempdir().unwrap();
    let port = crate::helpers::free_port();
    let mut serve = tessera(dir.path());
    serve
        .env_remove("TESSERA_SECRET_KEY")
        .args(["serve", "--port", &port.to_string()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = serve.spawn().unwrap();
    let key = dir.path().join("tessera.db.key");
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        "/readyz",
    )
    .map(|r| r.0)
        != Some(200)
    {
        assert!(Instant::now() < deadline, "serve did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().ok();
    child.wait().ok();
    let first = std::fs::read_to_string(&key).unwrap();
    assert!(first.len() >= 32);
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    let db = TestDb::postgres().await;
    let mut serve = tessera(dir.path());
    serve.env_remove("TESSERA_SECRET_KEY").args([
        "serve",
        "--database-url",
        &db.url,
        "--port",
        "1",
    ]);
    let out = run(serve);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("TESSERA_SECRET_KEY is required"), "{err}");
    let mut short = tessera(dir.path());
    short.env("TESSERA_SECRET_KEY", "too short").args([
        "serve",
        "--database-url",
        &db.url,
        "--port",
        "1",
    ]);
    let out = run(short);
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 32"));
    db.finish().await;
}

#[tokio::test]
async fn serve_refuses_an_unmigrated_database_and_migrate_is_idempotent() {
    let db = TestDb::postgres_unmigrated().await;
    let dir = tempfile::tempdir().unwrap();
    let mut serve = tessera(dir.path());
    serve.args(["serve", "--database-url", &db.url, "--port", "1"]);
    let out = run(serve);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not migrated") && err.contains("tessera migrate"),
        "{err}"
    );

    use tessera_migration::MigratorTrait;
    let all = tessera_migration::Migrator::migrations().len();
    for expected in [
        format!("{all} migration(s) applied"),
        "0 migration(s) applied".into(),
    ] {
        let mut migrate = tessera(dir.path());
        migrate.args(["migrate", "--database-url", &db.url]);
        let out = run(migrate);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains(&expected));
    }
    let w = Worker::start(dir.path(), &["--database-url", &db.url]);
    assert_eq!(get(w.addr, "/readyz").unwrap().0, 200);
    drop(w);
    db.finish().await;
}

#[tokio::test]
async fn serve_migrates_when_asked() {
    let db = TestDb::postgres_unmigrated().await;
    let dir = tempfile::tempdir().unwrap();
    let w = Worker::start(dir.path(), &["--database-url", &db.url, "--migrate"]);
    assert_eq!(get(w.addr, "/readyz").unwrap().0, 200);
    drop(w);
    db.finish().await;
}

#[tokio::test]
async fn serve_and_migrate_refuse_a_schema_from_a_newer_build() {
    let db = TestDb::postgres().await;
    db.db
        .execute_unprepared(
            "INSERT INTO seaql_migrations (version, applied_at) \
             VALUES ('m20991231_000000_from_the_future', 0)",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    for sub in ["serve", "migrate"] {
        let mut cmd = tessera(dir.path());
        cmd.args([sub, "--database-url", &db.url]);
        let out = run(cmd);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("newer") && err.contains("m20991231_000000_from_the_future"),
            "{err}"
        );
    }
    db.finish().await;
}

async fn count_tokens(db: &TestDb) -> i64 {
    db.count("auth_ephemeral_tokens").await
}

async fn issue_some(db: &TestDb, expired: usize, live: usize) -> Tokens {
    let tokens = Tokens::new(Arc::new(SqlTokenStore::new(db.db.clone()).unwrap()));
    let u = Username::parse("pat").unwrap();
    for i in 0..expired + live {
        let ttl = if i < expired {
            Duration::from_millis(50)
        } else {
            Duration::from_secs(3600)
        };
        // Kinds in turn: the purge goes by expiry, whatever the kind (the passkey
        // ceremonies and magic links included).
        let token = match i % 3 {
            0 => AuthEphemeralToken::new_password_reset(u.clone()),
            1 => AuthEphemeralToken::new_magic_link(u.clone()),
            _ => AuthEphemeralToken::new_webauthn(None, serde_json::json!({"op": "x"})),
        };
        tokens.issue(token.with_ttl(ttl)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    tokens
}

#[tokio::test]
async fn the_background_purge_removes_expired_tokens() {
    let db = TestDb::postgres().await;
    issue_some(&db, 30, 3).await;
    let dir = tempfile::tempdir().unwrap();
    let _w = Worker::start(
        dir.path(),
        &[
            "--database-url",
            &db.url,
            "--purge-interval",
            "1",
            "--purge-batch",
            "7",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while count_tokens(&db).await != 3 {
        assert!(Instant::now() < deadline, "expired tokens were not purged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(count_tokens(&db).await, 3, "live tokens stay");
    db.finish().await;
}

#[tokio::test]
async fn the_purge_command_deletes_expired_tokens() {
    let db = TestDb::postgres().await;
    issue_some(&db, 12, 2).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = tessera(dir.path());
    cmd.args(["purge", "--database-url", &db.url, "--purge-batch", "5"]);
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "{\"tokens\":12,\"events\":0,\"login_rows\":0}"
    );
    assert_eq!(count_tokens(&db).await, 2);
    db.finish().await;
}

#[test]
fn serve_keeps_tokens_and_limits_in_redis_when_told_to() {
    let redis = tessera_testkit::require_redis();
    let dir = tempfile::tempdir().unwrap();
    let w = Worker::start(dir.path(), &["--redis-url", &redis]);
    assert_eq!(get(w.addr, "/readyz").unwrap().0, 200);
}

#[test]
fn serve_refuses_to_start_when_redis_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let dead = format!("redis://127.0.0.1:{}", crate::helpers::free_port());
    let mut cmd = tessera(dir.path());
    cmd.args(["serve", "--port", "1", "--redis-url", &dead]);
    let out = run(cmd);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach Redis"), "{err}");
}

#[test]
fn sigterm_stops_serve_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = Worker::start_env(dir.path(), &[], &[("TESSERA_LOG", "info")]);
    let pid = w.child.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = w.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "a clean exit: {status}");
    assert!(get(w.addr, "/healthz").is_none(), "the listener is closed");
    let log = std::fs::read_to_string(&w.log).unwrap();
    assert!(log.contains("finishing requests in flight"), "{log}");
}

/// Finding 17 of the hardening: clients that open connections and trickle their headers
/// (slowloris), as many as the worker serves at once. Each is cut after the header
/// timeout, which frees its place, and `/healthz` on a new connection answers soon after.
#[test]
fn trickled_headers_are_cut_and_cannot_hold_every_connection() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let w = Worker::on_sqlite(
        dir.path(),
        &["--header-timeout", "2", "--max-connections", "8"],
    );
    let started = Instant::now();
    // Seven trickle header lines; one opens the connection and sends nothing at all.
    let slow: Vec<_> = (0..8)
        .map(|i| {
            let addr = w.addr;
            std::thread::spawn(move || {
                let mut s = std::net::TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(Duration::from_millis(300)))
                    .unwrap();
                let silent = i == 0;
                if !silent {
                    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                        .unwrap();
                }
                let t = Instant::now();
                // A header line every 300 ms, for at most 20 s: the server must cut it first.
                while t.elapsed() < Duration::from_secs(20) {
                    if !silent && s.write_all(b"X-Slow: 1\r\n").is_err() {
                        return t.elapsed();
                    }
                    let mut buf = [0u8; 512];
                    match s.read(&mut buf) {
                        Ok(0) => return t.elapsed(),
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(_) => return t.elapsed(),
                    }
                }
                t.elapsed()
            })
        })
        .collect();
    // Let them all take their places, then ask for /healthz on a new connection.
    std::thread::sleep(Duration::from_millis(500));
    let asked = Instant::now();
    let health = get(w.addr, "/healthz");
    let waited = asked.elapsed();
    assert_eq!(health.map(|h| h.0), Some(200));
    let cut: Vec<Duration> = slow.into_iter().map(|t| t.join().unwrap()).collect();
    eprintln!("slow connections cut after {cut:?}; /healthz answered after {waited:?}");
    for c in &cut {
        assert!(
            *c < Duration::from_secs(6),
            "a trickling client held on for {c:?}"
        );
    }
    assert!(waited < Duration::from_secs(6), "{waited:?}");
    assert!(started.elapsed() < Duration::from_secs(15));
}

//! A PostgreSQL crash under relaxed commits (`--pg-sync relaxed`, the default): tokens are
//! issued and limits hit with `synchronous_commit` off, consumes stay synchronous. The
//! test's own cluster (initdb, pg_ctl, as the `postgres` user) is killed with SIGKILL while
//! a worker writes to it, then restarted: a few of the last issued tokens may be lost (a
//! retry), but every token whose consume was answered 200 before the crash stays spent.

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::json;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::*;
use crate::workers::{KEY, post};

/// A PostgreSQL cluster of this test, in a folder of its own.
struct OwnPostgres {
    dir: tempfile::TempDir,
    port: u16,
}

fn pg_bin(name: &str) -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL's server binaries in /usr/lib/postgresql")
        .flatten()
        .map(|e| e.path())
        .collect();
    versions.sort();
    versions.last().unwrap().join("bin").join(name)
}

/// `bin args` as the `postgres` user (the server refuses to run as root).
fn as_postgres(bin: &str, args: &[&str]) {
    let root = Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
    let mut cmd = if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(pg_bin(bin));
        c
    } else {
        Command::new(pg_bin(bin))
    };
    let out = cmd.args(args).stdin(Stdio::null()).output().unwrap();
    assert!(
        out.status.success(),
        "{bin} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl OwnPostgres {
    fn init() -> OwnPostgres {
        let dir = tempfile::Builder::new()
            .prefix("tessera-crash-")
            .tempdir_in("/tmp")
            .unwrap();
        Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status()
            .ok();
        let data = dir.path().join("data");
        as_postgres(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
            ],
        );
        let mut pg = OwnPostgres {
            dir,
            port: free_port(),
        };
        pg.start();
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn start(&mut self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {}",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log");
        as_postgres(
            "pg_ctl",
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-o",
                &options,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
    }

    /// SIGKILL to the server and every process of it at once: what it held in memory and
    /// had not written is gone.
    fn crash(&mut self) {
        let pid_file = std::fs::read_to_string(self.data().join("postmaster.pid")).unwrap();
        let pid = pid_file.lines().next().unwrap().trim().to_owned();
        Command::new("pkill")
            .args(["-KILL", "-P", &pid])
            .status()
            .unwrap();
        Command::new("kill").args(["-KILL", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            || Path::new(&format!("/proc/{pid}")).exists()
        {
            assert!(Instant::now() < deadline, "the server did not die");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        if self.data().join("postmaster.pid").exists() {
            self.crash();
        }
    }
}

async fn consume(c: &reqwest::Client, w: SocketAddr, token: &str) -> StatusCode {
    let (s, b) = post(
        c,
        w,
        "/v1/tokens/consume",
        json!({"kind": "pre_auth", "token": token, "challenge": "c"}),
    )
    .await;
    assert!(
        s == StatusCode::OK || s == StatusCode::NOT_FOUND || s == StatusCode::SERVICE_UNAVAILABLE,
        "{s}: {b}"
    );
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_postgres_crash_never_makes_a_spent_token_usable_again() {
    let mut pg = tokio::task::spawn_blocking(OwnPostgres::init)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = pg.url();
    let w = tokio::task::block_in_place(|| {
        Worker::start(
            dir.path(),
            &[
                "--database-url",
                &url,
                "--migrate",
                "--api-keys",
                KEY,
                "--pg-sync",
                "relaxed",
                "--rate-limits",
                "crash=100000/1m",
            ],
        )
    });
    let c = reqwest::Client::new();
    let issue = |i: usize| {
        let c = c.clone();
        async move {
            let (s, b) = post(
                &c,
                w.addr,
                "/v1/tokens",
                json!({"kind": "pre_auth", "username": format!("u{i}"), "challenge": "c"}),
            )
            .await;
            (s == StatusCode::CREATED).then(|| b["token"].as_str().unwrap().to_owned())
        }
    };
    let issued: Vec<String> = join_all((0..400).map(issue))
        .await
        .into_iter()
        .map(|t| t.expect("issued before the crash"))
        .collect();
    // Half of them consumed, and the consumes answered, while issues and hits (relaxed
    // commits) keep arriving; then the crash, at once.
    let spent = &issued[..200];
    let late = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let busy = {
        let (c, late) = (c.clone(), late.clone());
        let addr = w.addr;
        tokio::spawn(async move {
            for n in 0.. {
                let hit = json!({"event": "crash", "key": "k"});
                let _ = post(&c, addr, "/v1/ratelimit/hit", hit).await;
                let new =
                    json!({"kind": "pre_auth", "username": format!("late{n}"), "challenge": "c"});
                let (s, b) = post(&c, addr, "/v1/tokens", new).await;
                if s == StatusCode::CREATED {
                    late.lock()
                        .unwrap()
                        .push(b["token"].as_str().unwrap().to_owned());
                }
            }
        })
    };
    let answers = join_all(spent.iter().map(|t| consume(&c, w.addr, t))).await;
    assert!(answers.iter().all(|s| *s == StatusCode::OK), "{answers:?}");
    tokio::task::block_in_place(|| pg.crash());
    busy.abort();

    tokio::task::block_in_place(|| pg.start());
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(w.addr, "/readyz").map(|(s, _)| s) != Some(200) {
        assert!(
            Instant::now() < deadline,
            "the worker never saw the store again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Every token consumed before the crash stays spent, on a second try as on the first.
    for t in spent {
        assert_eq!(
            consume(&c, w.addr, t).await,
            StatusCode::NOT_FOUND,
            "a token consumed before the crash was usable again"
        );
    }
    // The others: each usable at most once (some of the last issued may be lost).
    let mut survived = 0;
    for t in &issued[200..] {
        if consume(&c, w.addr, t).await == StatusCode::OK {
            survived += 1;
            assert_eq!(consume(&c, w.addr, t).await, StatusCode::NOT_FOUND);
        }
    }
    eprintln!("{survived} of 200 unconsumed tokens issued before the crash survived it");
    // The tokens issued in the last moments: answered 201, and each one usable at most
    // once after the crash, whether its relaxed commit reached the disk or not.
    let late = late.lock().unwrap().clone();
    let mut lost = 0;
    for t in &late {
        match consume(&c, w.addr, t).await {
            StatusCode::OK => assert_eq!(consume(&c, w.addr, t).await, StatusCode::NOT_FOUND),
            _ => lost += 1,
        }
    }
    eprintln!(
        "{lost} of the {} tokens issued during the last writes were lost",
        late.len()
    );
    assert!(
        survived > 0,
        "the tokens issued well before the crash were flushed"
    );
}

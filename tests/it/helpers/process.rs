//! Processes the tests start: `tessera` commands and workers, copies of this test binary
//! that race, and Redis servers of a test's own.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tessera_testkit::TestDb;

use std::net::SocketAddr;

use super::net::{free_port, get};
use super::smtp::SmtpSink;

/// The `tessera` binary built for these tests.
pub fn tessera_bin() -> &'static str {
    env!("CARGO_BIN_EXE_tessera")
}

/// The secret key every test process shares (as the workers of one deployment must).
pub const SECRET_KEY: &str = "e2e-secret-key-shared-by-every-worker-0123456789";

/// A `tessera` command with no `TESSERA_*` setting inherited from the environment, and the
/// shared test secret key.
pub fn tessera(cwd: &Path) -> Command {
    let mut cmd = Command::new(tessera_bin());
    cmd.current_dir(cwd);
    for (k, _) in std::env::vars() {
        if k.starts_with("TESSERA_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("TESSERA_LOG", "warn");
    cmd.env("TESSERA_SECRET_KEY", SECRET_KEY);
    cmd
}

/// Runs a `tessera` command to completion.
pub fn run(mut cmd: Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .expect("the tessera binary runs")
}

/// A `tessera serve` process, killed when dropped.
pub struct Worker {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: std::path::PathBuf,
}

impl Worker {
    /// Starts `tessera serve` on a free port with `args`, and waits until `/readyz` answers
    /// 200 (or the process exits, which panics with its stderr).
    pub fn start(cwd: &Path, args: &[&str]) -> Worker {
        Worker::start_env(cwd, args, &[])
    }

    /// [`Worker::start`] in `dir` on a SQLite file of its own there, with `args` besides.
    pub fn on_sqlite(dir: &Path, args: &[&str]) -> Worker {
        let db = format!("sqlite://{}/t.db?mode=rwc", dir.display());
        let mut all = vec!["--database-url", db.as_str()];
        all.extend_from_slice(args);
        Worker::start(dir, &all)
    }

    /// [`Worker::start`] with extra environment variables.
    pub fn start_env(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Worker {
        let port = free_port();
        // The log goes to a file, not a pipe nobody reads: a full pipe would stall the worker.
        let log = cwd.join(format!("worker-{port}.log"));
        let mut cmd = tessera(cwd);
        cmd.arg("serve")
            .args(["--bind", "127.0.0.1:0", "--port", &port.to_string()])
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("a log file"));
        let child = cmd.spawn().expect("tessera serve starts");
        let mut w = Worker {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
        };
        w.wait_ready();
        w
    }

    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                let err = std::fs::read_to_string(&self.log).unwrap_or_default();
                panic!("tessera serve exited with {status}: {err}");
            }
            if get(self.addr, "/readyz").map(|(s, _)| s) == Some(200) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("tessera serve did not become ready within 30 s");
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// Starts `n` copies of this test binary, each running the ignored test `name` with `env`,
/// and releases them together once all are started, so that they race. Answers each child
/// with the file it writes its result to.
pub fn race_children(
    dir: &Path,
    name: &str,
    n: usize,
    env: &[(&str, &str)],
) -> Vec<(Child, std::path::PathBuf)> {
    let go = dir.join("go");
    let children = (0..n)
        .map(|i| {
            let out = dir.join(format!("result-{i}"));
            let child = Command::new(std::env::current_exe().unwrap())
                .args(["--exact", name, "--ignored", "--nocapture"])
                .envs(env.iter().copied())
                .env("TESSERA_RACE_GO", &go)
                .env("TESSERA_RACE_OUT", &out)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .expect("the test binary starts a copy of itself");
            (child, out)
        })
        .collect();
    // Let every child connect and load its input, then start them together.
    std::thread::sleep(Duration::from_millis(500));
    std::fs::write(&go, b"go").unwrap();
    children
}

/// In a child of [`race_children`]: waits for the start, and answers where to write the
/// result.
pub async fn wait_for_go() -> std::path::PathBuf {
    let go = std::path::PathBuf::from(std::env::var("TESSERA_RACE_GO").unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !go.exists() {
        assert!(Instant::now() < deadline, "never told to go");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    std::path::PathBuf::from(std::env::var("TESSERA_RACE_OUT").unwrap())
}

pub async fn start_workers(n: usize, args: Vec<String>) -> (Vec<Worker>, PathBuf) {
    tokio::task::spawn_blocking(move || {
        let dir = tempfile::tempdir().unwrap().keep();
        let ws = (0..n)
            .map(|_| {
                let all: Vec<&str> = args.iter().map(String::as_str).collect();
                Worker::start(&dir, &all)
            })
            .collect();
        (ws, dir)
    })
    .await
    .unwrap()
}

/// A redis-server of this test, on its own port.
pub struct OwnRedis {
    pub port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

impl OwnRedis {
    pub fn start(port: u16, dir: tempfile::TempDir) -> OwnRedis {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts (apt-get install redis-server)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        OwnRedis { port, child, dir }
    }

    pub fn stop(mut self) -> (u16, tempfile::TempDir) {
        self.kill();
        let dir = tempfile::tempdir().unwrap();
        (self.port, std::mem::replace(&mut self.dir, dir))
    }

    pub fn kill(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Three workers on a fresh PostgreSQL database, mailing through a real SMTP sink, with
/// `rate_limits` overriding the policies.
pub async fn three_workers_on_postgres(
    rate_limits: &str,
) -> (TestDb, SmtpSink, tempfile::TempDir, Vec<Worker>, PathBuf) {
    three_workers(&[], rate_limits).await
}

/// [`three_workers_on_postgres`] with tokens and limits on the test Redis (every request of
/// a test comes from 127.0.0.1, and on the shared Redis every run of it: `rate_limits`
/// raises what they share).
pub async fn three_workers_on_redis(
    rate_limits: &str,
) -> (TestDb, SmtpSink, tempfile::TempDir, Vec<Worker>, PathBuf) {
    three_workers(
        &["--redis-url".into(), tessera_testkit::require_redis()],
        rate_limits,
    )
    .await
}

/// Three workers on a fresh PostgreSQL database with `extra` arguments.
pub async fn three_workers(
    extra: &[String],
    rate_limits: &str,
) -> (TestDb, SmtpSink, tempfile::TempDir, Vec<Worker>, PathBuf) {
    let db = TestDb::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let smtp = SmtpSink::start(dir.path());
    let mut args = vec![
        "--database-url".into(),
        db.url.clone(),
        "--smtp-url".into(),
        smtp.url(),
    ];
    args.extend(["--rate-limits".into(), rate_limits.into()]);
    args.extend_from_slice(extra);
    let (ws, ws_dir) = start_workers(3, args).await;
    (db, smtp, dir, ws, ws_dir)
}

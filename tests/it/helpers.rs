//! Starting `tessera` processes and talking to them.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

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

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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

    fn wait_ready(&mut self) {
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

/// A plain HTTP/1.1 GET; answers the status and the body, or `None` if nothing listens.
pub fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let status = raw.split(' ').nth(1)?.parse().ok()?;
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
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

/// A TCP forwarder in front of a real server, which a test can cut and restore to play an
/// outage of that server without stopping it for every other test: cutting closes the
/// listening port and drops every forwarded connection.
pub struct TcpGate {
    /// The port clients connect to.
    pub port: u16,
    target: SocketAddr,
    accept: Option<tokio::task::JoinHandle<()>>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl TcpGate {
    /// An open gate to `target` on a free port.
    pub async fn open(target: SocketAddr) -> TcpGate {
        let mut gate = TcpGate {
            port: free_port(),
            target,
            accept: None,
            conns: Default::default(),
        };
        gate.restore().await;
        gate
    }

    /// Listens again on the same port.
    pub async fn restore(&mut self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("the gate's port is free again");
        let (target, conns) = (self.target, self.conns.clone());
        self.accept = Some(tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let conn = tokio::spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(target).await {
                        tokio::io::copy_bidirectional(&mut inbound, &mut out)
                            .await
                            .ok();
                    }
                });
                conns.lock().unwrap().push(conn);
            }
        }));
    }

    /// Closes the port and drops every connection through it.
    pub async fn cut(&mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
            accept.await.ok();
        }
        let conns: Vec<_> = self.conns.lock().unwrap().drain(..).collect();
        for conn in conns {
            conn.abort();
            conn.await.ok();
        }
    }
}

impl Drop for TcpGate {
    fn drop(&mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
        }
        for conn in self.conns.lock().unwrap().drain(..) {
            conn.abort();
        }
    }
}

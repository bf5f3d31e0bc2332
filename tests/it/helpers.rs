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

/// A `tessera` command with no `TESSERA_*` setting inherited from the environment.
pub fn tessera(cwd: &Path) -> Command {
    let mut cmd = Command::new(tessera_bin());
    cmd.current_dir(cwd);
    for (k, _) in std::env::vars() {
        if k.starts_with("TESSERA_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("TESSERA_LOG", "warn");
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
}

impl Worker {
    /// Starts `tessera serve` on a free port with `args`, and waits until `/readyz` answers
    /// 200 (or the process exits, which panics with its stderr).
    pub fn start(cwd: &Path, args: &[&str]) -> Worker {
        let port = free_port();
        let mut cmd = tessera(cwd);
        cmd.arg("serve")
            .args(["--bind", "127.0.0.1:0", "--port", &port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let child = cmd.spawn().expect("tessera serve starts");
        let mut w = Worker {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        w.wait_ready();
        w
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut err = String::new();
                self.child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .ok();
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

//! Debian's nginx running one of the configurations in deploy/nginx, and a small upstream
//! app (Python's http.server) that answers with the headers it received.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::net::free_port;

/// A process started in a process group of its own, killed with everything it started
/// (nginx's workers, a browser's helpers) when dropped, even when a test fails.
pub struct Killed(Child);

impl Killed {
    /// Spawns `cmd` as the leader of a new process group.
    pub fn spawn(mut cmd: Command, what: &str) -> Killed {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
        Killed(cmd.spawn().unwrap_or_else(|e| panic!("{what} starts: {e}")))
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        // The whole group: nginx's workers and Chromium's processes outlive their parent.
        Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0.id())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .ok();
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

fn wait_for(addr: SocketAddr, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts nginx with `deploy/nginx/{conf}` and, beside it, `files` (name, contents) and a
/// `listen.conf` on a free port; answers the process, its address and its prefix folder.
pub fn nginx(conf: &str, files: &[(&str, String)]) -> (Killed, SocketAddr, tempfile::TempDir) {
    nginx_on(free_port(), conf, files)
}

/// [`nginx`] on `port` (for workers that must know their public URL first).
pub fn nginx_on(
    port: u16,
    conf: &str,
    files: &[(&str, String)],
) -> (Killed, SocketAddr, tempfile::TempDir) {
    let prefix = tempfile::tempdir().unwrap();
    let source = format!("{}/deploy/nginx/{conf}", env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(source, prefix.path().join("nginx.conf")).unwrap();
    for (name, contents) in files {
        std::fs::write(prefix.path().join(name), contents).unwrap();
    }
    let listen = format!("listen 127.0.0.1:{port};\n");
    std::fs::write(prefix.path().join("listen.conf"), listen).unwrap();
    let bin = ["/usr/sbin/nginx", "nginx"]
        .into_iter()
        .find(|b| Command::new(b).arg("-v").output().is_ok())
        .expect("nginx is required for this test: apt-get install nginx-light");
    let mut cmd = Command::new(bin);
    cmd.arg("-p")
        .arg(prefix.path())
        .args(["-c", "nginx.conf"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let nginx = Killed::spawn(cmd, "nginx");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_for(addr, "nginx");
    (nginx, addr, prefix)
}

/// The upstream servers of `addrs`, as an nginx include file.
pub fn servers(addrs: &[SocketAddr]) -> String {
    addrs.iter().map(|a| format!("server {a};\n")).collect()
}

const ECHO: &str = r#"
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        seen = {"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}}
        body = json.dumps(seen).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Echo).serve_forever()
"#;

/// An app that answers every GET with `{path, headers}`: what it received.
pub fn echo_app() -> (Killed, SocketAddr) {
    let port = free_port();
    let mut cmd = Command::new("python3");
    cmd.args(["-c", ECHO, &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let app = Killed::spawn(cmd, "python3");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_for(addr, "the echo app");
    (app, addr)
}

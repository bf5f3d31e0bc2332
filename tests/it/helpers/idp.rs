//! The OpenID provider of the OIDC tests: panva's oidc-provider (tests/idp, from npm) run
//! with the machine's node, and its registration with `tessera oidc add`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::net::free_port;
use super::process::{run, tessera};

/// What the workers believe their public URL is; the provider redirects the browser there,
/// and the test delivers each such request to the worker it chooses.
pub const PUBLIC: &str = "http://tessera.test";
pub const CLIENT_SECRET: &str = "idp-client-secret-that-must-never-be-stored-in-clear";

/// The provider process.
pub struct Idp {
    child: Child,
    pub port: u16,
}

impl Idp {
    pub fn start() -> Idp {
        Idp::start_on(free_port())
    }

    /// A provider on `port`, with signing keys of its own (a new key id each start).
    pub fn start_on(port: u16) -> Idp {
        Idp::start_for(port, PUBLIC)
    }

    /// A provider on `port` that sends browsers back to Tessera at `public`.
    pub fn start_for(port: u16, public: &str) -> Idp {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/idp");
        assert!(
            dir.join("node_modules/oidc-provider").exists(),
            "the test OpenID provider is not installed: run `npm install` in tests/idp"
        );
        let log =
            std::fs::File::create(std::env::temp_dir().join(format!("idp-{port}.log"))).unwrap();
        let child = Command::new("node")
            .current_dir(&dir)
            .arg("server.mjs")
            .arg(port.to_string())
            .arg(format!("{public}/auth/oidc/idp/callback"))
            .arg(CLIENT_SECRET)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("node runs");
        let mut idp = Idp { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(s) = idp.child.try_wait().unwrap() {
                panic!("the OpenID provider exited with {s}");
            }
            assert!(
                Instant::now() < deadline,
                "the OpenID provider did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        idp
    }

    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub async fn jwks(&self, mode: &str) {
        let r = reqwest::Client::new()
            .post(format!("{}/__test/jwks/{mode}", self.issuer()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// Registers the provider `idp` with `tessera oidc add`.
pub fn add_provider(database_url: &str, idp: &Idp) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = tessera(dir.path());
    cmd.args([
        "oidc",
        "add",
        "idp",
        "--issuer",
        &idp.issuer(),
        "--client-id",
        "tessera",
        "--database-url",
        database_url,
    ])
    .env("TESSERA_OIDC_CLIENT_SECRET", CLIENT_SECRET);
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut list = tessera(dir.path());
    list.args(["oidc", "list", "--database-url", database_url]);
    let out = String::from_utf8(run(list).stdout).unwrap();
    let row: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(row["name"], "idp");
    assert_eq!(row["confidential"], true);
    assert!(!out.contains(CLIENT_SECRET));
}

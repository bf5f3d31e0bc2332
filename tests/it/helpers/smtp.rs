//! A real SMTP server (aiosmtpd, from PyPI) that files every message, and what the tests
//! read out of the mail.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, UNIX_EPOCH};

use super::net::free_port;

/// An SMTP server process (aiosmtpd) that files every message in a maildir.
pub struct SmtpSink {
    child: Child,
    pub port: u16,
    dir: PathBuf,
}

impl SmtpSink {
    pub fn start(dir: &Path) -> SmtpSink {
        let port = free_port();
        let maildir = dir.join("maildir");
        let child = Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs");
        let mut sink = SmtpSink {
            child,
            port,
            dir: maildir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = sink.child.try_wait().unwrap() {
                panic!(
                    "the SMTP sink exited with {status}: install it with `pip install aiosmtpd`"
                );
            }
            assert!(Instant::now() < deadline, "aiosmtpd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        sink
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    pub fn messages_to(&self, to: &str) -> Vec<String> {
        let mut found: Vec<(std::time::SystemTime, String)> = Vec::new();
        for sub in ["new", "cur"] {
            let Ok(entries) = std::fs::read_dir(self.dir.join(sub)) else {
                continue;
            };
            for e in entries.flatten() {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                if text.contains(&format!("To: {to}")) {
                    let t = e
                        .metadata()
                        .and_then(|m| m.modified())
                        .unwrap_or(UNIX_EPOCH);
                    found.push((t, text));
                }
            }
        }
        found.sort_by_key(|(t, _)| *t);
        found.into_iter().map(|(_, m)| m).collect()
    }

    /// Waits for the `n`-th message (1-based) to `to` and answers it.
    pub async fn nth_to(&self, to: &str, n: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let all = self.messages_to(to);
            if all.len() >= n {
                return all[n - 1].clone();
            }
            assert!(Instant::now() < deadline, "no mail #{n} to {to} arrived");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn count_to(&self, to: &str) -> usize {
        self.messages_to(to).len()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// Checks with an independent parser, the `email` package of Python's standard library,
/// that `mail` is a standard message: `Date` (a valid date), `Message-ID`, `MIME-Version`,
/// and a `multipart/alternative` body whose text and HTML parts both carry `needle`.
pub fn assert_standard_message(mail: &str, needle: &str) {
    use std::io::Write;
    const CHECK: &str = r#"
import email, email.policy, email.utils, sys
m = email.message_from_string(sys.stdin.read(), policy=email.policy.default)
for h in ("Date", "Message-ID", "MIME-Version", "From", "To", "Subject"):
    assert m[h], "no " + h + " header"
email.utils.parsedate_to_datetime(m["Date"])
assert m.get_content_type() == "multipart/alternative", m.get_content_type()
plain = m.get_body(("plain",)).get_content()
html = m.get_body(("html",)).get_content()
assert sys.argv[1] in plain, plain
assert sys.argv[1] in html, html
assert html.lstrip().lower().startswith("<!doctype html>"), html
"#;
    let mut child = Command::new("python3")
        .args(["-c", CHECK, needle])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(mail.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "not a standard message: {}\n{mail}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The 6-digit code in a mail.
pub fn code_in(mail: &str) -> String {
    let at = mail.find("is: ").expect("the mail names a code") + 4;
    mail[at..at + 6].to_owned()
}

/// The reset token in a mail (undoing quoted-printable soft line breaks).
pub fn reset_token_in(mail: &str) -> String {
    let mail = mail
        .replace("=\r\n", "")
        .replace("=\n", "")
        .replace("=3D", "=");
    assert!(mail.contains("/reset-password#token=tsr_pr_"), "{mail}");
    let at = mail.find("tsr_pr_").expect("the mail carries a token");
    mail[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect()
}

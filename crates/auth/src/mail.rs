//! Outgoing mail: second-factor codes and password-reset links.
//!
//! With `TESSERA_SMTP_URL` set, mail goes out over SMTP (lettre). Without it — the embedded
//! default — each message is written as an `.eml` file to the outbox folder and the log
//! says where (never what: the messages carry codes).

use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::path::PathBuf;
use std::time::Duration;

/// Why a mail was not sent.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// An address could not be parsed.
    #[error("invalid address `{0}`")]
    Address(String),
    /// The SMTP server refused or could not be reached.
    #[error("smtp: {0}")]
    Smtp(String),
    /// The outbox folder could not be written.
    #[error("outbox: {0}")]
    Outbox(String),
}

enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Outbox(PathBuf),
}

/// Sends the service's mail.
pub struct Mailer {
    from: Mailbox,
    transport: Transport,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.transport {
            Transport::Smtp(_) => f.write_str("Mailer(smtp)"),
            Transport::Outbox(dir) => write!(f, "Mailer(outbox {})", dir.display()),
        }
    }
}

impl Mailer {
    /// SMTP at `url` (`smtp://host:port`, `smtps://...`; lettre's URL form) when given,
    /// else the outbox folder `outbox`.
    pub fn new(smtp_url: Option<&str>, outbox: PathBuf, from: &str) -> Result<Mailer, MailError> {
        let from: Mailbox = from
            .parse()
            .map_err(|_| MailError::Address(from.to_owned()))?;
        let transport = match smtp_url.filter(|u| !u.is_empty()) {
            Some(url) => Transport::Smtp(
                AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                    .map_err(|e| MailError::Smtp(e.to_string()))?
                    .timeout(Some(Duration::from_secs(10)))
                    .build(),
            ),
            None => Transport::Outbox(outbox),
        };
        Ok(Mailer { from, transport })
    }

    /// A mailer writing to `dir` (tests).
    pub fn outbox(dir: PathBuf) -> Mailer {
        Mailer::new(None, dir, "Tessera <tessera@localhost>").expect("a valid sender")
    }

    /// Sends `text` as a standard message: `Date`, `Message-ID`, `MIME-Version`, and a
    /// `multipart/alternative` body of the text and the same as HTML.
    pub async fn send(&self, to: &str, subject: &str, text: String) -> Result<(), MailError> {
        let to: Mailbox = to.parse().map_err(|_| MailError::Address(to.to_owned()))?;
        let html = html_of(subject, &text);
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .date_now()
            .message_id(None)
            .multipart(MultiPart::alternative_plain_html(text, html))
            .map_err(|e| MailError::Address(e.to_string()))?;
        match &self.transport {
            Transport::Smtp(smtp) => {
                smtp.send(message)
                    .await
                    .map_err(|e| MailError::Smtp(e.to_string()))?;
                Ok(())
            }
            Transport::Outbox(dir) => {
                // Mails carry live reset links and codes: the folder and every file in it
                // are the owner's alone.
                use std::os::unix::fs::PermissionsExt;
                tokio::fs::create_dir_all(dir)
                    .await
                    .map_err(|e| MailError::Outbox(e.to_string()))?;
                tokio::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                    .await
                    .map_err(|e| MailError::Outbox(e.to_string()))?;
                let name = format!(
                    "{}-{}.eml",
                    chrono::Utc::now().format("%Y%m%dT%H%M%S%.6fZ"),
                    uuid::Uuid::new_v4().simple()
                );
                let path = dir.join(&name);
                // Written under a hidden name, then renamed: whoever reads the folder sees
                // a whole mail or none.
                let part = dir.join(format!(".{name}.part"));
                let write = async {
                    use tokio::io::AsyncWriteExt;
                    let mut file = tokio::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .open(&part)
                        .await?;
                    file.write_all(&message.formatted()).await?;
                    file.sync_all().await?;
                    tokio::fs::rename(&part, &path).await
                };
                write.await.map_err(|e| MailError::Outbox(e.to_string()))?;
                tracing::info!(path = %path.display(), "mail written to the outbox (no SMTP configured)");
                Ok(())
            }
        }
    }
}

/// `text` as a small HTML document: its paragraphs, escaped, with its links clickable.
fn html_of(subject: &str, text: &str) -> String {
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let paragraphs: String = text
        .split("\n\n")
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            let lines: Vec<String> = p
                .lines()
                .map(|line| {
                    let line = escape(line.trim());
                    if line.starts_with("https://") || line.starts_with("http://") {
                        format!("<a href=\"{line}\">{line}</a>")
                    } else {
                        line
                    }
                })
                .collect();
            format!("<p>{}</p>\n", lines.join("<br>\n"))
        })
        .collect();
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{}</title></head>\n\
         <body style=\"font-family: sans-serif; line-height: 1.5\">\n{paragraphs}</body></html>\n",
        escape(subject)
    )
}

/// Every message text Tessera sends.
pub mod messages {
    /// The body of a mail carrying `code`.
    pub fn code(code: &str, purpose: &str) -> String {
        format!(
            "Your code to {purpose} is: {code}\n\nIt expires in 10 minutes. If you did not ask \
             for it, someone knows your password: change it.\n"
        )
    }

    /// The body of a sign-in link for `username`, with its `link` and `token`.
    pub fn magic_link(username: &str, link: &str, token: &str) -> String {
        format!(
            "To sign in to the account `{username}`, open:\n{link}\n\nThe link works once, \
             within 15 minutes. The token, for apps: {token}\n\nIf you did not ask for it, \
             ignore this mail.\n"
        )
    }

    /// The body of the mail to a new address of `username`, with its `link` and `token`.
    pub fn email_change(username: &str, link: &str, token: &str) -> String {
        format!(
            "The account `{username}` asked to use this address for its mail.\n\nTo confirm, \
             open:\n{link}\n\nThe link works once, within an hour. The token, for apps: \
             {token}\n\nIf it was not you, ignore this mail: nothing changes.\n"
        )
    }

    /// The body of a password-reset mail for `username`, with its `link` and `token`.
    pub fn password_reset(username: &str, link: &str, token: &str) -> String {
        format!(
            "Someone asked to reset the password of the account `{username}`.\n\nTo choose a new \
             password, open:\n{link}\n\nThe link works once, within an hour. The token, for \
             apps: {token}\n\nIf it was not you, ignore this mail.\n"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_outbox_holds_one_file_per_message() {
        let dir = tempfile::tempdir().unwrap();
        let mailer = Mailer::outbox(dir.path().join("outbox"));
        mailer
            .send("alice@example.com", "Your code", "123456".into())
            .await
            .unwrap();
        let files: Vec<_> = std::fs::read_dir(dir.path().join("outbox"))
            .unwrap()
            .collect();
        assert_eq!(files.len(), 1);
        let text = std::fs::read_to_string(files[0].as_ref().unwrap().path()).unwrap();
        assert!(text.contains("To: alice@example.com"), "{text}");
        assert!(text.contains("123456"));
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join("outbox")), 0o700);
        assert_eq!(mode(&files[0].as_ref().unwrap().path()), 0o600);
        assert!(matches!(
            mailer.send("not an address", "x", "y".into()).await,
            Err(MailError::Address(_))
        ));
    }

    #[test]
    fn the_html_part_escapes_and_links() {
        let html = html_of(
            "Reset <x>",
            "Hi `a<b>`.\n\nOpen:\nhttps://x.example/r#token=1&2\n",
        );
        assert!(html.contains("<title>Reset &lt;x&gt;</title>"), "{html}");
        assert!(html.contains("<p>Hi `a&lt;b&gt;`.</p>"), "{html}");
        assert!(
            html.contains("<a href=\"https://x.example/r#token=1&amp;2\">"),
            "{html}"
        );
    }
}

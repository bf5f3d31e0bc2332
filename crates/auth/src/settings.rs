//! [`AuthSettings`]: the login domain's settings, built from plain values (the HTTP
//! service fills them from its configuration), and the clock that locks, sessions and
//! TOTP windows read.

use chrono::{DateTime, Utc};
use std::time::Duration;

use crate::mail::Mailer;
use crate::secrets::KeyRing;

/// Settings of the login flows.
pub struct AuthSettings {
    /// Encrypts TOTP secrets at rest.
    pub keys: KeyRing,
    /// Sends codes and reset links.
    pub mailer: Mailer,
    /// The URL users reach the service at, without a trailing slash.
    pub public_url: String,
    /// The origin of `public_url` (`scheme://host[:port]`), the only `Origin` accepted.
    pub public_origin: String,
    /// Cookies carry `Secure` (the public URL is https).
    pub secure_cookies: bool,
    /// Other origins allowed to call `/auth` from a browser with credentials (an app on
    /// another origin): their `Origin` passes the CSRF check and their preflights are
    /// answered. Exact origins, never `*`.
    pub cors_origins: Vec<String>,
    /// The `Domain` of every cookie, for apps on sibling subdomains; `None`: host-only.
    pub cookie_domain: Option<String>,
    /// `POST /auth/register` is open.
    pub registration: bool,
    /// Magic links are offered.
    pub magic_links: bool,
    /// How long a session lasts.
    pub session_ttl: Duration,
    /// Second-factor failures that lock an account (each further this many lock again).
    pub lockout_threshold: u32,
    /// How long the first lock lasts; the second lasts twice as long, every later one
    /// [`LONG_LOCK`].
    pub lockout_duration: Duration,
    /// Where "now" comes from for locks, sessions and TOTP windows: the process's clock, or
    /// a manual one that tests advance together with the limiter's.
    pub clock: tessera_limiter::Clock,
    /// Issuer shown by authenticator apps.
    pub totp_issuer: String,
    /// Where OIDC callbacks send the browser.
    pub oidc_return_url: String,
    /// OIDC logins of unknown subjects create accounts.
    pub oidc_create_users: bool,
    /// Discovery documents and key sets of the OpenID providers, and their HTTP client.
    pub oidc: crate::oidc::OidcClients,
}

impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSettings")
            .field("public_url", &self.public_url)
            .field("mailer", &self.mailer)
            .finish_non_exhaustive()
    }
}

/// `scheme://host[:port]` of an absolute http(s) URL, lowercased.
pub fn origin_of(url: &str) -> Result<String, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("`{url}` is not an absolute URL"))?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return Err(format!("`{url}` is not an http or https URL"));
    }
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() {
        return Err(format!("`{url}` has no host"));
    }
    Ok(format!("{scheme}://{}", host.to_ascii_lowercase()))
}

/// `origin` if it is an exact origin (`scheme://host[:port]`, nothing after it), in its
/// canonical (lower-case) form; `*` and anything with a path are refused.
pub fn exact_origin(origin: &str) -> Result<String, String> {
    let canonical = origin_of(origin)?;
    if !canonical.eq_ignore_ascii_case(origin.trim_end_matches('/')) || origin.contains('*') {
        return Err(format!(
            "`{origin}` is not an exact origin (scheme://host[:port])"
        ));
    }
    Ok(canonical)
}

/// `domain` if it is a cookie domain the public URL's host lies in (the host itself or a
/// parent of it), lower-cased and without a leading dot.
pub fn cookie_domain_for(domain: &str, public_origin: &str) -> Result<String, String> {
    let domain = domain.trim().trim_start_matches('.').to_ascii_lowercase();
    let valid = !domain.is_empty()
        && domain
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if !valid {
        return Err(format!("`{domain}` is not a domain name"));
    }
    let host = public_origin
        .split_once("://")
        .map_or("", |(_, h)| h)
        .split(':')
        .next()
        .unwrap_or("");
    if host != domain && !host.ends_with(&format!(".{domain}")) {
        return Err(format!(
            "the public URL's host `{host}` is not in `{domain}`: browsers would refuse the cookies"
        ));
    }
    Ok(domain)
}

impl AuthSettings {
    /// Whether a request with this `Origin` may use cookie-authorized routes: the public
    /// URL's origin, or one of [`AuthSettings::cors_origins`].
    pub fn accepts_origin(&self, origin: &str) -> bool {
        origin.eq_ignore_ascii_case(&self.public_origin)
            || self
                .cors_origins
                .iter()
                .any(|o| o.eq_ignore_ascii_case(origin))
    }

    /// Defaults for a service without a socket (router tests): a throwaway key, mail to
    /// `outbox`, the public URL `http://localhost`.
    pub fn ephemeral(outbox: std::path::PathBuf) -> Self {
        AuthSettings {
            keys: KeyRing::ephemeral(),
            mailer: Mailer::outbox(outbox),
            public_url: "http://localhost".into(),
            public_origin: "http://localhost".into(),
            secure_cookies: false,
            cors_origins: Vec::new(),
            cookie_domain: None,
            registration: true,
            magic_links: true,
            session_ttl: Duration::from_secs(12 * 60 * 60),
            lockout_threshold: 10,
            lockout_duration: Duration::from_secs(30 * 60),
            clock: Default::default(),
            totp_issuer: "Tessera".into(),
            oidc_return_url: "http://localhost/".into(),
            oidc_create_users: true,
            oidc: Default::default(),
        }
    }
}

impl AuthSettings {
    /// The current time by [`AuthSettings::clock`].
    pub fn now(&self) -> DateTime<Utc> {
        match self.clock.manual_ms() {
            Some(ms) => DateTime::from_timestamp_millis(ms).unwrap_or_default(),
            None => Utc::now(),
        }
    }

    /// How long the lock that the `failures`-th second-factor failure sets lasts, if it sets
    /// one: every `lockout_threshold`-th failure locks, the first time for
    /// `lockout_duration`, the second for twice that, from the third on for [`LONG_LOCK`].
    /// So at most three thresholds' worth of guesses fit in any 24 hours.
    pub fn lock_for(&self, failures: u32) -> Option<Duration> {
        let t = self.lockout_threshold.max(1);
        if failures == 0 || !failures.is_multiple_of(t) {
            return None;
        }
        Some(match failures / t {
            1 => self.lockout_duration,
            2 => self.lockout_duration * 2,
            _ => LONG_LOCK.max(self.lockout_duration * 2),
        })
    }
}

/// The process's clock, for what no test needs to move: session and mailed-code expiry,
/// purges.
pub(crate) fn now() -> DateTime<Utc> {
    Utc::now()
}

pub(crate) fn after(d: Duration) -> DateTime<Utc> {
    now() + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// The lock from the third on: a day, so that no 24 hours hold more than three
/// thresholds of second-factor guesses.
pub const LONG_LOCK: Duration = Duration::from_secs(24 * 60 * 60);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        assert_eq!(
            origin_of("https://Auth.Example.com/app/").unwrap(),
            "https://auth.example.com"
        );
        assert_eq!(
            origin_of("http://127.0.0.1:8080").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert!(origin_of("ftp://x").is_err());
        assert!(origin_of("/relative").is_err());
        assert!(origin_of("http://").is_err());
    }

    #[test]
    fn other_origins_are_exact_and_cookie_domains_hold_the_public_host() {
        assert_eq!(
            exact_origin("https://App.example.com").unwrap(),
            "https://app.example.com"
        );
        assert_eq!(
            exact_origin("http://localhost:3000/").unwrap(),
            "http://localhost:3000"
        );
        for bad in [
            "*",
            "https://*.example.com",
            "https://a.example/path",
            "app.example.com",
        ] {
            assert!(exact_origin(bad).is_err(), "{bad}");
        }
        let public = "https://auth.example.com";
        assert_eq!(
            cookie_domain_for(".Example.com", public).unwrap(),
            "example.com"
        );
        assert_eq!(
            cookie_domain_for("auth.example.com", public).unwrap(),
            "auth.example.com"
        );
        assert!(cookie_domain_for("other.com", public).is_err());
        assert!(cookie_domain_for("ample.com", public).is_err());
        assert!(cookie_domain_for("example.com/x", public).is_err());
    }
}

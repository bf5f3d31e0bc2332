//! Each page: what it reads (one call into tessera-auth at most) and its template.

use askama::Template;
use axum::extract::Query;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use tessera_auth::AuthError;
use tessera_auth::flows::SignInOptions;

use crate::http::cookies::SESSION;
use crate::routes::auth::call::Call;
use crate::routes::auth::sessions::percent_encode;

/// What every page is sent with: only its own origin's scripts, styles and images (and
/// `data:` images for the QR code), never framed, never sniffed, never cached.
const PAGE_HEADERS: [(HeaderName, &str); 5] = [
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    ),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::CACHE_CONTROL, "no-store"),
    (header::REFERRER_POLICY, "same-origin"),
    (header::CONTENT_TYPE, "text/html; charset=utf-8"),
];

/// An HTML page with [`PAGE_HEADERS`].
fn html(status: axum::http::StatusCode, body: String) -> Response {
    let mut answer = (status, body).into_response();
    let headers = answer.headers_mut();
    for (name, value) in PAGE_HEADERS {
        headers.insert(name, HeaderValue::from_static(value));
    }
    answer
}

/// The query of the sign-in pages.
#[derive(Deserialize)]
pub struct Back {
    /// Where to go after signing in: a path on this origin.
    return_to: Option<String>,
}

/// A `return_to` as the pages use it: kept when it is a path on this origin, dropped with
/// a message otherwise (no open redirect).
struct ReturnTo {
    path: String,
    alert: Option<&'static str>,
}

impl ReturnTo {
    fn of(back: &Back) -> Self {
        match back.return_to.as_deref() {
            None | Some("") => ReturnTo {
                path: String::new(),
                alert: None,
            },
            Some(p) if tessera_auth::oidc::is_relative_path(p) => ReturnTo {
                path: p.to_owned(),
                alert: None,
            },
            Some(_) => ReturnTo {
                path: String::new(),
                alert: Some(
                    "The link that brought you here would send you to another site after \
                     signing in. It was ignored: you will go to your account instead.",
                ),
            },
        }
    }

    /// `?return_to=...` to pass it on, or nothing.
    fn query(&self) -> String {
        if self.path.is_empty() {
            String::new()
        } else {
            format!("?return_to={}", percent_encode(&self.path))
        }
    }
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    site: String,
    return_to: String,
    return_query: String,
    /// The OIDC start's query: back to this page (which finishes the exchange), then on.
    oidc_query: String,
    alert: Option<&'static str>,
    options: SignInOptions,
    magic: bool,
}

#[derive(Template)]
#[template(path = "register.html")]
struct RegisterPage {
    site: String,
    return_to: String,
    return_query: String,
    alert: Option<&'static str>,
    registration: bool,
}

#[derive(Template)]
#[template(path = "reset.html")]
struct ResetPage {
    site: String,
    return_to: String,
}

#[derive(Template)]
#[template(path = "email.html")]
struct EmailPage {
    site: String,
    return_to: String,
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    site: String,
    return_to: String,
    message: &'static str,
}

/// One session as the account page lists it.
struct SessionRow {
    id: String,
    browser: String,
    created: String,
    seen: Option<String>,
    ip: Option<String>,
    current: bool,
}

/// One passkey as the account page lists it.
struct PasskeyRow {
    id: String,
    name: String,
    created: String,
    used: Option<String>,
}

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage {
    site: String,
    return_to: String,
    username: String,
    email: Option<String>,
    totp_enabled: bool,
    backup_codes_remaining: u64,
    email_otp_enabled: bool,
    sessions: Vec<SessionRow>,
    passkeys_on: bool,
    passkeys: Vec<PasskeyRow>,
    has_password: bool,
}

/// The page, or the error page when a template fails (it cannot: they are checked when the
/// crate builds, and nothing they print can fail).
fn render(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(body) => html(status, body),
        Err(e) => {
            tracing::error!(error = %e, "a page failed to render");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// A page that could not be built (the store is down): a sentence, never a stack trace.
fn unavailable(call: &Call, e: AuthError) -> Response {
    tracing::warn!(error = %e, "a page could not be built");
    let page = ErrorPage {
        site: site(call),
        return_to: String::new(),
        message: "The service is not available just now. Try again in a moment.",
    };
    render(StatusCode::SERVICE_UNAVAILABLE, &page)
}

fn site(call: &Call) -> String {
    call.auth().settings.totp_issuer.clone()
}

async fn sign_in_page(call: Call, back: Back, magic: bool) -> Response {
    let back = ReturnTo::of(&back);
    let options = match call.auth().sign_in_options().await {
        Ok(options) => options,
        Err(e) => return unavailable(&call, e),
    };
    let oidc_query = format!(
        "?return_to={}",
        percent_encode(&format!("/login{}", back.query()))
    );
    let page = LoginPage {
        site: site(&call),
        oidc_query,
        return_query: back.query(),
        return_to: back.path,
        alert: back.alert,
        options,
        magic,
    };
    render(StatusCode::OK, &page)
}

/// `GET /login[?return_to=/path]`: password, then the second factor; also where the OIDC
/// callback returns by default (`#oidc_exchange=` or `#oidc_error=`).
pub async fn login(call: Call, Query(back): Query<Back>) -> Response {
    sign_in_page(call, back, false).await
}

/// `GET /login/magic`: the mailed sign-in link (`#token=`).
pub async fn magic(call: Call, Query(back): Query<Back>) -> Response {
    sign_in_page(call, back, true).await
}

/// `GET /register`.
pub async fn register(call: Call, Query(back): Query<Back>) -> Response {
    let back = ReturnTo::of(&back);
    let registration = call.auth().settings.registration;
    let page =
        RegisterPage {
            site: site(&call),
            return_query: back.query(),
            return_to: back.path,
            alert: back.alert.or((!registration)
                .then_some("New accounts cannot be created here. Ask whoever runs it.")),
            registration,
        };
    render(StatusCode::OK, &page)
}

/// `GET /reset-password`: ask for a link; opened from the link (`#token=`), the new password.
pub async fn reset_password(call: Call) -> Response {
    let page = ResetPage {
        site: site(&call),
        return_to: String::new(),
    };
    render(StatusCode::OK, &page)
}

/// `GET /account/email`: the link confirming a new address (`#token=`).
pub async fn email_confirm(call: Call) -> Response {
    let page = EmailPage {
        site: site(&call),
        return_to: String::new(),
    };
    render(StatusCode::OK, &page)
}

/// `GET /account`: signed in, the account; otherwise to the sign-in page and back.
pub async fn account(call: Call) -> Response {
    let overview = match call.auth().account_overview(call.cookie(SESSION)).await {
        Ok(overview) => overview,
        Err(AuthError::NotSignedIn) => {
            return (
                StatusCode::FOUND,
                [
                    (header::LOCATION, "/login?return_to=/account"),
                    (header::CACHE_CONTROL, "no-store"),
                ],
            )
                .into_response();
        }
        Err(e) => return unavailable(&call, e),
    };
    let sessions = overview
        .sessions
        .iter()
        .map(|(s, current)| SessionRow {
            id: tessera_auth::sessions::public_id(s),
            browser: browser_name(s.user_agent.as_deref()),
            created: when(s.created_at),
            seen: s.last_seen_at.map(when),
            ip: s.ip.clone(),
            current: *current,
        })
        .collect();
    let passkeys = overview
        .passkeys
        .iter()
        .map(|p| PasskeyRow {
            id: p.id.to_string(),
            name: p.name.clone(),
            created: when(p.created_at),
            used: p.last_used_at.map(when),
        })
        .collect();
    let page = AccountPage {
        site: site(&call),
        return_to: String::new(),
        username: overview.user.username,
        email: overview.user.email,
        totp_enabled: overview.totp.enabled,
        backup_codes_remaining: overview.totp.backup_codes_remaining,
        email_otp_enabled: overview.user.email_otp_enabled,
        sessions,
        passkeys_on: call.auth().passkeys_on(),
        passkeys,
        has_password: overview.user.password_hash.is_some(),
    };
    render(StatusCode::OK, &page)
}

fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// "Firefox on Linux" from a `User-Agent`, as a person recognises their browser.
fn browser_name(agent: Option<&str>) -> String {
    let Some(ua) = agent.filter(|a| !a.is_empty()) else {
        return "Unknown browser".into();
    };
    let browsers = [
        ("Edg/", "Edge"),
        ("OPR/", "Opera"),
        ("Firefox/", "Firefox"),
        ("Chrome/", "Chrome"),
        ("Chromium/", "Chromium"),
        ("Safari/", "Safari"),
    ];
    let systems = [
        ("Android", "Android"),
        ("iPhone", "iOS"),
        ("iPad", "iPadOS"),
        ("Windows", "Windows"),
        ("Mac OS X", "macOS"),
        ("CrOS", "ChromeOS"),
        ("Linux", "Linux"),
    ];
    let first = |table: &[(&str, &'static str)]| {
        table
            .iter()
            .find(|(needle, _)| ua.contains(needle))
            .map(|(_, name)| *name)
    };
    match (first(&browsers), first(&systems)) {
        (Some(b), Some(s)) => format!("{b} on {s}"),
        (Some(b), None) => b.to_owned(),
        _ => ua
            .split(['/', ' '])
            .next()
            .unwrap_or("Unknown browser")
            .chars()
            .take(40)
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browsers_are_named_as_people_know_them() {
        let chrome = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
                      HeadlessChrome/156.0.0.0 Safari/537.36";
        assert_eq!(browser_name(Some(chrome)), "Chrome on Linux");
        let iphone = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) AppleWebKit/605.1.15 \
                      (KHTML, like Gecko) Version/18.0 Mobile/15E148 Safari/604.1";
        assert_eq!(browser_name(Some(iphone)), "Safari on iOS");
        assert_eq!(browser_name(Some("curl/8.5.0")), "curl");
        assert_eq!(browser_name(None), "Unknown browser");
    }

    #[test]
    fn return_to_is_a_path_or_is_dropped_with_a_message() {
        let of = |p: &str| {
            ReturnTo::of(&Back {
                return_to: Some(p.into()),
            })
        };
        let kept = of("/reports/q3?year=2026");
        assert_eq!(kept.path, "/reports/q3?year=2026");
        assert_eq!(kept.query(), "?return_to=/reports/q3%3Fyear%3D2026");
        assert!(kept.alert.is_none());
        for bad in [
            "https://evil.example/",
            "//evil.example",
            "/\\evil",
            "javascript:x",
        ] {
            let dropped = of(bad);
            assert_eq!(dropped.path, "", "{bad}");
            assert!(dropped.alert.is_some(), "{bad}");
        }
    }
}

//! The login flows' rate limits: their policies, and hits recorded in a namespace of
//! counters (`auth:`) that `/v1`'s callers can neither read nor reset.

use tessera_entity::EventType;
use tessera_limiter::{Event, Limiter};

use crate::error::AuthError;
use crate::sessions::sha256;

/// Records one `event` for `key` and refuses with 429 when the policy is exhausted. The
/// hit is recorded before the attempt it guards, so concurrent attempts on any number of
/// workers can never get past the limit; a successful attempt clears the key again
/// ([`clear`]), so what stays counted are the failures. An unreachable store fails closed
/// (503).
pub async fn throttle(limiter: &Limiter, event: EventType, key: &str) -> Result<(), AuthError> {
    let event = event_of(event);
    let decision = hit(limiter, &event, key).await?;
    if decision.allowed {
        Ok(())
    } else {
        let window = limiter.policy(&event)?.window;
        Err(AuthError::RateLimited {
            event: event.as_str().to_owned(),
            decision,
            window,
        })
    }
}

/// Records one `event` for `key` in the login flows' own namespace of counters, which
/// `/v1` (keys under `app:`) can neither read nor reset.
pub async fn hit(
    limiter: &Limiter,
    event: &Event,
    key: &str,
) -> Result<tessera_limiter::Decision, AuthError> {
    Ok(limiter.hit(event, &auth_key(key), 1).await?)
}

/// The limiter's name of one of the login flows' events.
pub fn event_of(event: EventType) -> Event {
    Event::from_static(event.into()).expect("every EventType name is a valid event name")
}

/// The login flows' policies: the 2FA limit (5) stays below the lockout threshold (10), so
/// throttling answers before locking does.
pub fn default_policies() -> tessera_limiter::Policies {
    use tessera_limiter::Policy;
    let mut p = tessera_limiter::Policies::empty();
    for (event, policy) in [
        (EventType::TwoFaAttempt, Policy::per_seconds(5, 5 * 60)),
        (EventType::EmailSend, Policy::per_seconds(3, 10 * 60)),
        (EventType::LoginAttempt, Policy::per_seconds(10, 15 * 60)),
        (EventType::LoginIp, Policy::per_seconds(50, 15 * 60)),
        (
            EventType::PasswordResetSend,
            Policy::per_seconds(3, 60 * 60),
        ),
        (EventType::PasswordResetIp, Policy::per_seconds(10, 60 * 60)),
        (EventType::LoginUserIp, Policy::per_seconds(5, 15 * 60)),
        // The window outlives a pending login (5 minutes), so the limit is per token.
        (EventType::MfaTokenAttempt, Policy::per_seconds(5, 10 * 60)),
        (EventType::MailToAddress, Policy::per_seconds(10, 60 * 60)),
        (EventType::OidcStartIp, Policy::per_seconds(50, 15 * 60)),
        (EventType::MagicLinkIp, Policy::per_seconds(10, 60 * 60)),
        (EventType::PasskeyIp, Policy::per_seconds(50, 15 * 60)),
    ] {
        p.set(event_of(event), policy);
    }
    // An app's own events through /v1 that nobody configured in TESSERA_RATE_LIMITS.
    p.set_default(Policy::per_seconds(10, 15 * 60));
    p
}

fn auth_key(key: &str) -> String {
    format!("auth:{key}")
}

/// Forgets the recorded `event`s of `key` (after a success).
pub async fn clear(limiter: &Limiter, event: EventType, key: &str) -> Result<(), AuthError> {
    Ok(limiter.reset(&event_of(event), &auth_key(key)).await?)
}

/// The limiter key of a presented token (its SHA-256, hex): counters about a token never
/// hold the token itself.
pub fn token_key(presented: &str) -> String {
    sha256(presented.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Takes one mail's place in the `mail_to_address` limit of `to`, before any work for the
/// mail is done. Every mail Tessera sends goes through here: several accounts may share
/// an address, so only a limit on the address bounds what reaches one mailbox.
pub async fn mail_slot(limiter: &Limiter, to: &str) -> Result<(), AuthError> {
    throttle(limiter, EventType::MailToAddress, &to.trim().to_lowercase()).await
}

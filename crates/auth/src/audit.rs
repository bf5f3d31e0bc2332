//! The audit trail: every sign-in, failure, lock, factor change, reset and session end as
//! one structured event (tracing target `tessera::audit`) naming the event, its outcome and
//! the account, never a secret. An event raised while serving a request is inside that
//! request's span, so the log line carries its `request_id` and `client_ip` too. Each event
//! is also counted in `tessera_audit_events_total{event, outcome}`.

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Event {
    /// An account was created.
    Register,
    /// A password step.
    SignIn,
    /// A second-factor check (sign-in, enforced setup, re-authentication).
    SecondFactor,
    /// Repeated second-factor failures locked the account.
    Lock,
    /// TOTP was turned on.
    TotpEnabled,
    /// TOTP was turned off.
    TotpDisabled,
    /// New backup codes replaced the old ones.
    BackupCodesRegenerated,
    /// Mailed codes became a second factor.
    EmailOtpEnabled,
    /// A reset link was mailed.
    PasswordResetRequested,
    /// A password was set with a reset link.
    PasswordReset,
    /// A session ended (signing out).
    SessionEnded,
    /// The signed-in holder changed the password.
    PasswordChanged,
    /// A change of mail address was asked for (a link mailed to the new address).
    EmailChangeRequested,
    /// A new mail address was confirmed.
    EmailChanged,
    /// Mailed codes stopped being a second factor.
    EmailOtpDisabled,
    /// The holder deleted the account.
    AccountDeleted,
    /// A sign-in link was mailed.
    MagicLinkRequested,
    /// A passkey was registered.
    PasskeyAdded,
    /// A passkey was removed.
    PasskeyRemoved,
}

/// How it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Outcome {
    /// It was done (for a sign-in: a session).
    Success,
    /// The first step passed and a second factor (or its setup) is pending.
    Pending,
    /// Refused: wrong password, wrong code, spent token.
    Failure,
}

/// Records `event` for the account `user` (as typed, for a refused sign-in).
pub fn record(event: Event, outcome: Outcome, user: &str) {
    let (event, outcome): (&'static str, &'static str) = (event.into(), outcome.into());
    tracing::info!(target: "tessera::audit", event, outcome, user, "audit");
    metrics::counter!("tessera_audit_events_total", "event" => event, "outcome" => outcome)
        .increment(1);
}

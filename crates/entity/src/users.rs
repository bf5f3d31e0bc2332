//! `users`: the accounts of the login flows.

use sea_orm::entity::prelude::*;

/// An account.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "users")]
pub struct Model {
    /// Surrogate key.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// The login name as shown (unique).
    #[sea_orm(unique)]
    pub username: String,
    /// What the account is found and counted by: [`AccountName::key`](crate::AccountName::key)
    /// of the name (unique). `None` only for an account whose name collided with another's
    /// when keys were introduced; it is found by neither until renamed.
    pub username_key: Option<String>,
    /// Where mails go.
    pub email: Option<String>,
    /// argon2id PHC string; `None` for accounts that only sign in through OIDC.
    pub password_hash: Option<String>,
    /// The TOTP secret, encrypted; never stored in clear.
    pub totp_secret: Option<Vec<u8>>,
    /// TOTP confirmed and required at login.
    pub totp_enabled: bool,
    /// Email codes enabled as a second factor.
    pub email_otp_enabled: bool,
    /// An admin requires a second factor before the next login completes.
    pub mfa_enforce_pending: bool,
    /// Refused at every login.
    pub disabled: bool,
    /// Second-factor checks that failed since the last complete sign-in (every
    /// `TESSERA_LOCKOUT_THRESHOLD` of them lock the account); wrong passwords never count.
    pub failed_login_count: i32,
    /// Refused until then (set and compared by the workers' clocks: minutes, not seconds, matter here).
    pub locked_until: Option<DateTimeUtc>,
    /// When the account was created.
    pub created_at: DateTimeUtc,
}

/// No relations yet.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

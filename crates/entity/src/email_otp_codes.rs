//! `email_otp_codes`: the login code last mailed to a user, as an argon2id hash.

use sea_orm::entity::prelude::*;

/// The pending login code of one user.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "email_otp_codes")]
pub struct Model {
    /// The user (`users.id`); one pending code each.
    #[sea_orm(primary_key, auto_increment = false)]
    pub user_id: i64,
    /// argon2id PHC string of the code.
    pub code_hash: String,
    /// When the code stops being accepted.
    pub expires_at: DateTimeUtc,
}

/// No relations are navigated.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

//! `sessions`: signed-in browsers. The cookie's value is never stored, only its SHA-256.

use sea_orm::entity::prelude::*;

/// One session.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "sessions")]
pub struct Model {
    /// Surrogate key.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// SHA-256 of the session cookie's value (unique).
    pub id_hash: Vec<u8>,
    /// The user (`users.id`).
    pub user_id: i64,
    /// When the session ends.
    pub expires_at: DateTimeUtc,
    /// When it began.
    pub created_at: DateTimeUtc,
    /// The client's address at sign-in.
    pub ip: Option<String>,
    /// The client's `User-Agent` at sign-in (truncated).
    pub user_agent: Option<String>,
    /// When `/auth/verify` last saw it (written at most once a minute).
    pub last_seen_at: Option<DateTimeUtc>,
    /// Opened with a second factor.
    pub second_factor: bool,
}

/// A session belongs to its user: checking one reads both in one query.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    /// The signed-in user.
    #[sea_orm(
        belongs_to = "super::users::Entity",
        from = "Column::UserId",
        to = "super::users::Column::Id"
    )]
    User,
}

impl Related<super::users::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::User.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}

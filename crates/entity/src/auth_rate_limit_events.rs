//! `auth_rate_limit_events`: the sliding log of the SQL rate limiter.

use sea_orm::entity::prelude::*;

/// One recorded event.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "auth_rate_limit_events")]
pub struct Model {
    /// Surrogate key.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// The subject: a username, an IP or another key.
    pub key: String,
    /// [`crate::EventType`] (or an embedder's own event name).
    pub event_type: String,
    /// When it happened, by the database's clock.
    pub occurred_at: DateTimeUtc,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

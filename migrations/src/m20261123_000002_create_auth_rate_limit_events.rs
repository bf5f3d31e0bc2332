use sea_orm_migration::{prelude::*, schema::*};

/// The sliding log of the SQL rate limiter.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum AuthRateLimitEvents {
    Table,
    Id,
    Key,
    EventType,
    OccurredAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(AuthRateLimitEvents::Table)
                    .if_not_exists()
                    .col(big_pk_auto(AuthRateLimitEvents::Id))
                    .col(string_len(AuthRateLimitEvents::Key, 255))
                    .col(string_len(AuthRateLimitEvents::EventType, 64))
                    .col(timestamp_with_time_zone(AuthRateLimitEvents::OccurredAt))
                    .to_owned(),
            )
            .await?;
        // A decision counts one key's events of one kind inside a window: this index answers
        // it with a range scan.
        manager
            .create_index(
                Index::create()
                    .name("idx_auth_rate_limit_events_type_key_at")
                    .table(AuthRateLimitEvents::Table)
                    .col(AuthRateLimitEvents::EventType)
                    .col(AuthRateLimitEvents::Key)
                    .col(AuthRateLimitEvents::OccurredAt)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(AuthRateLimitEvents::Table).to_owned())
            .await
    }
}

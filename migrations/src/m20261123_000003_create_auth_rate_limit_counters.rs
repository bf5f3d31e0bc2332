use sea_orm_migration::{prelude::*, schema::*};

/// The approximate limiter's two fixed-window counters per key: constant space per key,
/// for high-volume keys such as per-IP limits.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum AuthRateLimitCounters {
    Table,
    EventType,
    Key,
    WindowStart,
    PrevCount,
    CurCount,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(AuthRateLimitCounters::Table)
                    .if_not_exists()
                    .col(string_len(AuthRateLimitCounters::EventType, 64))
                    .col(string_len(AuthRateLimitCounters::Key, 255))
                    // Milliseconds since the epoch, by the store's clock.
                    .col(big_integer(AuthRateLimitCounters::WindowStart))
                    .col(big_integer(AuthRateLimitCounters::PrevCount))
                    .col(big_integer(AuthRateLimitCounters::CurCount))
                    .primary_key(
                        Index::create()
                            .col(AuthRateLimitCounters::EventType)
                            .col(AuthRateLimitCounters::Key),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(AuthRateLimitCounters::Table).to_owned())
            .await
    }
}

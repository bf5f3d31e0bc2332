use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{boolean, timestamp_with_time_zone_null};

/// `sessions.last_seen_at` (written at most once a minute by `/auth/verify`, shown in the
/// sessions list) and `sessions.second_factor` (the session was opened with a second factor,
/// sent to protected apps as `Remote-Second-Factor`). Existing sessions: never seen, and
/// no second factor known.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Sessions {
    Table,
    LastSeenAt,
    SecondFactor,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite adds one at a time.
        let columns = [
            timestamp_with_time_zone_null(Sessions::LastSeenAt),
            boolean(Sessions::SecondFactor).default(false).to_owned(),
        ];
        for mut column in columns {
            let alter = Table::alter()
                .table(Sessions::Table)
                .add_column(&mut column)
                .to_owned();
            manager.alter_table(alter).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [Sessions::LastSeenAt, Sessions::SecondFactor] {
            let alter = Table::alter()
                .table(Sessions::Table)
                .drop_column(column)
                .to_owned();
            manager.alter_table(alter).await?;
        }
        Ok(())
    }
}

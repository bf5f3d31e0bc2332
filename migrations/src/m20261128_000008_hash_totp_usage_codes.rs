use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

/// Used TOTP codes are kept as a keyed hash (HMAC-SHA256, 64 hex digits) instead of in
/// clear: the column widens on PostgreSQL (SQLite does not enforce a length), and the codes
/// already stored in clear are blanked. Replay prevention does not depend on them: the
/// unique key is (user, window).
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        if manager.get_database_backend() == DbBackend::Postgres {
            db.execute_unprepared("ALTER TABLE totp_usage ALTER COLUMN code TYPE varchar(64)")
                .await?;
        }
        db.execute_unprepared("UPDATE totp_usage SET code = ''")
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("UPDATE totp_usage SET code = ''")
            .await?;
        if manager.get_database_backend() == DbBackend::Postgres {
            db.execute_unprepared("ALTER TABLE totp_usage ALTER COLUMN code TYPE varchar(10)")
                .await?;
        }
        Ok(())
    }
}

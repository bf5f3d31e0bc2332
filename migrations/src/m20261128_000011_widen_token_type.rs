use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::string_len;
use sea_orm_migration::sea_orm::DbBackend;

/// `auth_ephemeral_tokens.token_type` grows from 32 to 64 characters: an application's own
/// kinds are `x_` and up to 32 characters of their own. SQLite does not enforce a varchar's
/// length (and cannot alter a column), so only PostgreSQL changes.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum AuthEphemeralTokens {
    Table,
    TokenType,
}

async fn set_length(manager: &SchemaManager<'_>, len: u32) -> Result<(), DbErr> {
    if manager.get_database_backend() != DbBackend::Postgres {
        return Ok(());
    }
    let alter = Table::alter()
        .table(AuthEphemeralTokens::Table)
        .modify_column(string_len(AuthEphemeralTokens::TokenType, len))
        .to_owned();
    manager.alter_table(alter).await
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        set_length(manager, 64).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        set_length(manager, 32).await
    }
}

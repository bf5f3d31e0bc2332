use sea_orm_migration::{prelude::*, schema::*};

/// The single-use token table, with the indexes purge and revoke need.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum AuthEphemeralTokens {
    Table,
    Id,
    TokenHash,
    TokenType,
    Username,
    ProviderId,
    ChallengeHash,
    Sealed,
    ExpiresAt,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(AuthEphemeralTokens::Table)
                    .if_not_exists()
                    .col(big_pk_auto(AuthEphemeralTokens::Id))
                    .col(blob(AuthEphemeralTokens::TokenHash))
                    .col(string_len(AuthEphemeralTokens::TokenType, 32))
                    .col(string_len_null(AuthEphemeralTokens::Username, 255))
                    .col(string_len_null(AuthEphemeralTokens::ProviderId, 255))
                    .col(blob_null(AuthEphemeralTokens::ChallengeHash))
                    .col(blob(AuthEphemeralTokens::Sealed))
                    .col(timestamp_with_time_zone(AuthEphemeralTokens::ExpiresAt))
                    .col(timestamp_with_time_zone(AuthEphemeralTokens::CreatedAt))
                    .to_owned(),
            )
            .await?;
        // Every lookup (consume, peek) goes through the hash; unique so two tokens can never
        // share a row.
        manager
            .create_index(
                Index::create()
                    .name("auth_ephemeral_tokens_token_hash_key")
                    .table(AuthEphemeralTokens::Table)
                    .col(AuthEphemeralTokens::TokenHash)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        // Purge walks expired rows in batches.
        manager
            .create_index(
                Index::create()
                    .name("idx_auth_ephemeral_tokens_expires_at")
                    .table(AuthEphemeralTokens::Table)
                    .col(AuthEphemeralTokens::ExpiresAt)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        // Revoke removes all tokens of one kind for one user.
        manager
            .create_index(
                Index::create()
                    .name("idx_auth_ephemeral_tokens_type_username")
                    .table(AuthEphemeralTokens::Table)
                    .col(AuthEphemeralTokens::TokenType)
                    .col(AuthEphemeralTokens::Username)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(AuthEphemeralTokens::Table).to_owned())
            .await
    }
}

use sea_orm_migration::{prelude::*, schema::*};

/// Accounts of the login flows.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    Username,
    Email,
    PasswordHash,
    TotpSecret,
    TotpEnabled,
    EmailOtpEnabled,
    MfaEnforcePending,
    Disabled,
    FailedLoginCount,
    LockedUntil,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Users::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Users::Id))
                    .col(string_len(Users::Username, 255))
                    .col(string_len_null(Users::Email, 320))
                    // argon2id PHC string; null for accounts that only sign in through OIDC.
                    .col(string_len_null(Users::PasswordHash, 255))
                    // AEAD ciphertext naming its key; never the plain secret.
                    .col(blob_null(Users::TotpSecret))
                    .col(boolean(Users::TotpEnabled).default(false))
                    .col(boolean(Users::EmailOtpEnabled).default(false))
                    .col(boolean(Users::MfaEnforcePending).default(false))
                    .col(boolean(Users::Disabled).default(false))
                    .col(integer(Users::FailedLoginCount).default(0))
                    .col(timestamp_with_time_zone_null(Users::LockedUntil))
                    .col(
                        timestamp_with_time_zone(Users::CreatedAt)
                            .default(Expr::current_timestamp()),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("users_username_key")
                    .table(Users::Table)
                    .col(Users::Username)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Users::Table).to_owned())
            .await
    }
}

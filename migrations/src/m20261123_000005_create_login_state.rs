use sea_orm_migration::{prelude::*, schema::*};

/// The state of the login flows beside the accounts: used TOTP windows, backup codes,
/// sessions and mailed second-factor codes.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum TotpUsage {
    Table,
    Id,
    UserId,
    Code,
    TimeStep,
    UsedAt,
}

#[derive(DeriveIden)]
enum BackupCodes {
    Table,
    Id,
    UserId,
    CodeHash,
    UsedAt,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Sessions {
    Table,
    Id,
    IdHash,
    UserId,
    ExpiresAt,
    CreatedAt,
    Ip,
    UserAgent,
}

#[derive(DeriveIden)]
enum EmailOtpCodes {
    Table,
    UserId,
    CodeHash,
    ExpiresAt,
}

fn user_fk(table: impl IntoIden, column: impl IntoIden, name: &str) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .name(name)
        .from(table, column)
        .to(Users::Table, Users::Id)
        .on_delete(ForeignKeyAction::Cascade)
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(TotpUsage::Table)
                    .if_not_exists()
                    .col(big_pk_auto(TotpUsage::Id))
                    .col(big_integer(TotpUsage::UserId))
                    .col(string_len(TotpUsage::Code, 10))
                    .col(big_integer(TotpUsage::TimeStep))
                    .col(timestamp_with_time_zone(TotpUsage::UsedAt))
                    .foreign_key(&mut user_fk(
                        TotpUsage::Table,
                        TotpUsage::UserId,
                        "totp_usage_user_fk",
                    ))
                    .to_owned(),
            )
            .await?;
        // One accepted code per user and window (RFC 6238 §5.2): the insert that loses this
        // constraint is the replay.
        manager
            .create_index(
                Index::create()
                    .name("totp_usage_user_window_key")
                    .table(TotpUsage::Table)
                    .col(TotpUsage::UserId)
                    .col(TotpUsage::TimeStep)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("totp_usage_used_at_idx")
                    .table(TotpUsage::Table)
                    .col(TotpUsage::UsedAt)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(BackupCodes::Table)
                    .if_not_exists()
                    .col(big_pk_auto(BackupCodes::Id))
                    .col(big_integer(BackupCodes::UserId))
                    // argon2id PHC string of the normalised code.
                    .col(string_len(BackupCodes::CodeHash, 255))
                    .col(timestamp_with_time_zone_null(BackupCodes::UsedAt))
                    .col(
                        timestamp_with_time_zone(BackupCodes::CreatedAt)
                            .default(Expr::current_timestamp()),
                    )
                    .foreign_key(&mut user_fk(
                        BackupCodes::Table,
                        BackupCodes::UserId,
                        "backup_codes_user_fk",
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("backup_codes_user_idx")
                    .table(BackupCodes::Table)
                    .col(BackupCodes::UserId)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Sessions::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Sessions::Id))
                    // SHA-256 of the cookie's value; the value itself is never stored.
                    .col(binary_len(Sessions::IdHash, 32))
                    .col(big_integer(Sessions::UserId))
                    .col(timestamp_with_time_zone(Sessions::ExpiresAt))
                    .col(
                        timestamp_with_time_zone(Sessions::CreatedAt)
                            .default(Expr::current_timestamp()),
                    )
                    .col(string_len_null(Sessions::Ip, 45))
                    .col(string_len_null(Sessions::UserAgent, 512))
                    .foreign_key(&mut user_fk(
                        Sessions::Table,
                        Sessions::UserId,
                        "sessions_user_fk",
                    ))
                    .to_owned(),
            )
            .await?;
        for (name, col) in [
            ("sessions_id_hash_key", Sessions::IdHash),
            ("sessions_user_idx", Sessions::UserId),
            ("sessions_expires_at_idx", Sessions::ExpiresAt),
        ] {
            let mut index = Index::create();
            index
                .name(name)
                .table(Sessions::Table)
                .col(col)
                .if_not_exists();
            if name.ends_with("_key") {
                index.unique();
            }
            manager.create_index(index.to_owned()).await?;
        }

        manager
            .create_table(
                Table::create()
                    .table(EmailOtpCodes::Table)
                    .if_not_exists()
                    // One pending login code per user: a new mail replaces the last one.
                    .col(big_integer(EmailOtpCodes::UserId).primary_key())
                    .col(string_len(EmailOtpCodes::CodeHash, 255))
                    .col(timestamp_with_time_zone(EmailOtpCodes::ExpiresAt))
                    .foreign_key(&mut user_fk(
                        EmailOtpCodes::Table,
                        EmailOtpCodes::UserId,
                        "email_otp_codes_user_fk",
                    ))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            EmailOtpCodes::Table.into_iden(),
            Sessions::Table.into_iden(),
            BackupCodes::Table.into_iden(),
            TotpUsage::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}

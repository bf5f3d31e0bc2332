use sea_orm_migration::{prelude::*, schema::*};

/// `passkeys`: the WebAuthn credentials of an account. The credential's public key and
/// metadata are kept as webauthn-rs serialises them (`credential`, JSON: nothing in it is
/// secret); the signature counter has a column of its own, because it is compared and
/// raised on every sign-in.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Passkeys {
    Table,
    Id,
    UserId,
    CredentialId,
    UserHandle,
    Credential,
    SignCount,
    Name,
    CreatedAt,
    LastUsedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Passkeys::Table)
                    .if_not_exists()
                    // The public id the list and `remove` use.
                    .col(uuid(Passkeys::Id).primary_key())
                    .col(big_integer(Passkeys::UserId))
                    // The authenticator's credential id, base64url without padding.
                    .col(string_len(Passkeys::CredentialId, 1400))
                    // The WebAuthn user handle the account was registered under.
                    .col(uuid(Passkeys::UserHandle))
                    .col(text(Passkeys::Credential))
                    .col(big_integer(Passkeys::SignCount).default(0))
                    .col(string_len(Passkeys::Name, 64))
                    .col(
                        timestamp_with_time_zone(Passkeys::CreatedAt)
                            .default(Expr::current_timestamp()),
                    )
                    .col(timestamp_with_time_zone_null(Passkeys::LastUsedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("passkeys_user_fk")
                            .from(Passkeys::Table, Passkeys::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // A credential belongs to one account: registering it again, to any account, fails.
        manager
            .create_index(
                Index::create()
                    .name("passkeys_credential_id_key")
                    .table(Passkeys::Table)
                    .col(Passkeys::CredentialId)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("passkeys_user_id_idx")
                    .table(Passkeys::Table)
                    .col(Passkeys::UserId)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Passkeys::Table).to_owned())
            .await
    }
}

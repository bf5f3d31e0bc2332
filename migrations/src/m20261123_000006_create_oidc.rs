use sea_orm_migration::{prelude::*, schema::*};

/// OpenID providers as rows (every worker sees the same ones without a restart) and the
/// link of each (provider, subject) to a local account.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum OidcProviders {
    Table,
    Id,
    Name,
    Issuer,
    ClientId,
    ClientSecret,
    Scopes,
    SkipLocalMfa,
    CreatedAt,
}

#[derive(DeriveIden)]
enum OidcIdentities {
    Table,
    Id,
    ProviderId,
    Subject,
    UserId,
    Email,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(OidcProviders::Table)
                    .if_not_exists()
                    .col(big_pk_auto(OidcProviders::Id))
                    .col(string_len(OidcProviders::Name, 64))
                    .col(string_len(OidcProviders::Issuer, 2048))
                    .col(string_len(OidcProviders::ClientId, 1024))
                    // AEAD ciphertext naming its key; null for a public client.
                    .col(blob_null(OidcProviders::ClientSecret))
                    .col(string_len(OidcProviders::Scopes, 1024).default("openid email profile"))
                    .col(boolean(OidcProviders::SkipLocalMfa).default(false))
                    .col(
                        timestamp_with_time_zone(OidcProviders::CreatedAt)
                            .default(Expr::current_timestamp()),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("oidc_providers_name_key")
                    .table(OidcProviders::Table)
                    .col(OidcProviders::Name)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(OidcIdentities::Table)
                    .if_not_exists()
                    .col(big_pk_auto(OidcIdentities::Id))
                    .col(big_integer(OidcIdentities::ProviderId))
                    .col(string_len(OidcIdentities::Subject, 255))
                    .col(big_integer(OidcIdentities::UserId))
                    .col(string_len_null(OidcIdentities::Email, 320))
                    .col(
                        timestamp_with_time_zone(OidcIdentities::CreatedAt)
                            .default(Expr::current_timestamp()),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("oidc_identities_provider_fk")
                            .from(OidcIdentities::Table, OidcIdentities::ProviderId)
                            .to(OidcProviders::Table, OidcProviders::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("oidc_identities_user_fk")
                            .from(OidcIdentities::Table, OidcIdentities::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // One local account per (provider, subject): two first logins of one subject at
        // once create one link.
        manager
            .create_index(
                Index::create()
                    .name("oidc_identities_provider_subject_key")
                    .table(OidcIdentities::Table)
                    .col(OidcIdentities::ProviderId)
                    .col(OidcIdentities::Subject)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(OidcIdentities::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(OidcProviders::Table).to_owned())
            .await
    }
}

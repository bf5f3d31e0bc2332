use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, Statement};
use tessera_entity::AccountName;

/// `users.username_key`: the normalised, case-folded name an account is found and counted
/// by ([`AccountName::key`]), unique, so that `LOCK`, ` lock` and `lock\u{200b}` cannot be
/// accounts beside `lock`. Existing accounts get their key computed here; of several whose
/// keys collide, the oldest keeps it and the others are left without one (found by
/// nothing until an operator renames them).
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Users {
    Table,
    UsernameKey,
}

const INDEX: &str = "users_username_key_key";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .add_column(ColumnDef::new(Users::UsernameKey).string_len(1024).null())
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        let backend = manager.get_database_backend();
        let rows = db
            .query_all_raw(Statement::from_string(
                backend,
                "SELECT id, username FROM users ORDER BY id",
            ))
            .await?;
        let mut taken = std::collections::HashSet::new();
        for row in rows {
            let id: i64 = row.try_get("", "id")?;
            let name: String = row.try_get("", "username")?;
            let Ok(key) = AccountName::parse(&name).map(|n| n.key().to_owned()) else {
                continue;
            };
            if !taken.insert(key.clone()) {
                continue;
            }
            db.execute_raw(Statement::from_sql_and_values(
                backend,
                match backend {
                    sea_orm_migration::sea_orm::DbBackend::Postgres => {
                        "UPDATE users SET username_key = $1 WHERE id = $2"
                    }
                    _ => "UPDATE users SET username_key = ? WHERE id = ?",
                },
                [key.into(), id.into()],
            ))
            .await?;
        }
        manager
            .create_index(
                Index::create()
                    .name(INDEX)
                    .table(Users::Table)
                    .col(Users::UsernameKey)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(Index::drop().name(INDEX).table(Users::Table).to_owned())
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .drop_column(Users::UsernameKey)
                    .to_owned(),
            )
            .await
    }
}

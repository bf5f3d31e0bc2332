//! Tessera's schema, as sea-orm migrations: all of it lives here.
//!
//! [`Migrator`] applies the migrations (idempotent); [`schema_state`] tells a starting
//! server whether the database is migrated, behind, or ahead of this build, so that `serve`
//! can refuse a schema it does not know instead of failing on the first query.
//!
//! # Layout
//!
//! One module per migration, named `mYYYYMMDD_HHMMSS_what`, each with a `down`.

pub use sea_orm_migration::prelude::*;

mod m20261123_000001_create_auth_ephemeral_tokens;
mod m20261123_000002_create_auth_rate_limit_events;
mod m20261123_000003_create_auth_rate_limit_counters;
mod m20261123_000004_create_users;
mod m20261123_000005_create_login_state;
mod m20261123_000006_create_oidc;
mod m20261124_000007_create_rate_limit_function;
mod m20261128_000008_hash_totp_usage_codes;
mod m20261128_000009_add_username_keys;
mod m20261128_000010_add_session_activity;
mod m20261128_000011_widen_token_type;
mod m20261129_000012_create_passkeys;
mod m20261129_000013_rate_limit_function_in_one_row;

use sea_orm_migration::sea_orm::{DatabaseConnection, DbBackend, Statement};

/// Runs `sql` when the database is PostgreSQL, and nothing otherwise: the migrations that
/// install or drop PostgreSQL functions, which SQLite has no need of.
pub(crate) async fn on_postgres(manager: &SchemaManager<'_>, sql: &str) -> Result<(), DbErr> {
    if manager.get_database_backend() == DbBackend::Postgres {
        manager.get_connection().execute_unprepared(sql).await?;
    }
    Ok(())
}

/// Every migration of this build, oldest first.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261123_000001_create_auth_ephemeral_tokens::Migration),
            Box::new(m20261123_000002_create_auth_rate_limit_events::Migration),
            Box::new(m20261123_000003_create_auth_rate_limit_counters::Migration),
            Box::new(m20261123_000004_create_users::Migration),
            Box::new(m20261123_000005_create_login_state::Migration),
            Box::new(m20261123_000006_create_oidc::Migration),
            Box::new(m20261124_000007_create_rate_limit_function::Migration),
            Box::new(m20261128_000008_hash_totp_usage_codes::Migration),
            Box::new(m20261128_000009_add_username_keys::Migration),
            Box::new(m20261128_000010_add_session_activity::Migration),
            Box::new(m20261128_000011_widen_token_type::Migration),
            Box::new(m20261129_000012_create_passkeys::Migration),
            Box::new(m20261129_000013_rate_limit_function_in_one_row::Migration),
        ]
    }
}

/// How a database's schema compares with this build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaState {
    /// Every known migration is applied and nothing else.
    UpToDate,
    /// These known migrations are not applied yet (`tessera migrate` applies them).
    Behind(Vec<String>),
    /// The database has migrations this build does not know: it was migrated by a newer
    /// version of Tessera.
    Ahead(Vec<String>),
}

/// Compares the applied migrations with the known ones, without changing anything (no
/// migration table is created by asking).
pub async fn schema_state(db: &DatabaseConnection) -> Result<SchemaState, DbErr> {
    let known: Vec<String> = Migrator::migrations()
        .iter()
        .map(|m| m.name().to_owned())
        .collect();
    let has_table = SchemaManager::new(db).has_table("seaql_migrations").await?;
    let applied: Vec<String> = if has_table {
        let rows = db
            .query_all_raw(Statement::from_string(
                db.get_database_backend(),
                "SELECT version FROM seaql_migrations",
            ))
            .await?;
        rows.iter()
            .map(|r| r.try_get::<String>("", "version"))
            .collect::<Result<_, _>>()?
    } else {
        Vec::new()
    };
    let unknown: Vec<String> = applied
        .iter()
        .filter(|v| !known.contains(v))
        .cloned()
        .collect();
    if !unknown.is_empty() {
        return Ok(SchemaState::Ahead(unknown));
    }
    let pending: Vec<String> = known.into_iter().filter(|k| !applied.contains(k)).collect();
    if pending.is_empty() {
        Ok(SchemaState::UpToDate)
    } else {
        Ok(SchemaState::Behind(pending))
    }
}

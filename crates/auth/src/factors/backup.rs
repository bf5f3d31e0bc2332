//! Backup codes: ten single-use codes, stored only as argon2id hashes.

use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter, Set,
    TransactionTrait,
};
use tessera_entity::backup_codes;

use super::codes;
use crate::error::AuthError;
use crate::hashing;
use crate::settings::now;

/// Replaces the user's backup codes with 10 new ones; answers them (shown once).
pub async fn replace_backup_codes(
    db: &DatabaseConnection,
    user_id: i64,
) -> Result<Vec<String>, AuthError> {
    let codes: Vec<String> = (0..codes::BACKUP_CODES)
        .map(|_| codes::new_backup_code())
        .collect();
    let hashes = hashing::hash_codes(codes.clone()).await?;
    let txn = db.begin().await?;
    store_backup_codes(&txn, user_id, hashes).await?;
    txn.commit().await?;
    Ok(codes)
}

/// Replaces the user's backup codes by `hashes`, inside the caller's transaction.
pub(super) async fn store_backup_codes(
    txn: &sea_orm::DatabaseTransaction,
    user_id: i64,
    hashes: Vec<String>,
) -> Result<(), AuthError> {
    backup_codes::Entity::delete_many()
        .filter(backup_codes::Column::UserId.eq(user_id))
        .exec(txn)
        .await?;
    backup_codes::Entity::insert_many(hashes.into_iter().map(|h| backup_codes::ActiveModel {
        user_id: Set(user_id),
        code_hash: Set(h),
        used_at: Set(None),
        created_at: Set(now()),
        ..Default::default()
    }))
    .exec(txn)
    .await?;
    Ok(())
}

/// Unused backup codes of a user.
pub async fn backup_codes_remaining(
    db: &DatabaseConnection,
    user_id: i64,
) -> Result<u64, AuthError> {
    Ok(backup_codes::Entity::find()
        .filter(backup_codes::Column::UserId.eq(user_id))
        .filter(backup_codes::Column::UsedAt.is_null())
        .count(db)
        .await?)
}

/// Uses a backup code: true when it matched an unused code and this call marked it used.
/// Marking is one conditional update, so of two concurrent uses of one code one wins.
pub async fn use_backup_code(
    db: &DatabaseConnection,
    user_id: i64,
    input: &str,
) -> Result<bool, AuthError> {
    let Some(code) = codes::normalize_backup_code(input) else {
        return Ok(false);
    };
    let unused: Vec<(i64, String)> = backup_codes::Entity::find()
        .filter(backup_codes::Column::UserId.eq(user_id))
        .filter(backup_codes::Column::UsedAt.is_null())
        .all(db)
        .await?
        .into_iter()
        .map(|c| (c.id, c.code_hash))
        .collect();
    let Some(id) = hashing::first_match(code, unused).await? else {
        return Ok(false);
    };
    let marked = backup_codes::Entity::update_many()
        .col_expr(backup_codes::Column::UsedAt, Expr::value(Some(now())))
        .filter(backup_codes::Column::Id.eq(id))
        .filter(backup_codes::Column::UsedAt.is_null())
        .exec(db)
        .await?;
    Ok(marked.rows_affected == 1)
}

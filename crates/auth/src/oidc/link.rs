//! Linking an OpenID identity to a local account, creating one when allowed.

use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, Set, SqlErr,
    TransactionTrait,
};
use tessera_entity::AccountName;
use tessera_entity::{oidc_identities, oidc_providers, users};

use super::answers::{Identity, OidcFailure};
use crate::error::AuthError;

/// The local account for `identity` at `provider`: the linked one, or a new one (username
/// `preferred_username` when free, else `NAME_sub`, else `NAME_sub_RANDOM`) when `create`
/// allows. Two first logins
/// of one subject at once make one link: the loser of the unique (provider, subject) insert
/// reads the winner's.
pub async fn link_or_create(
    db: &DatabaseConnection,
    provider: &oidc_providers::Model,
    identity: &Identity,
    create: bool,
) -> Result<Result<users::Model, OidcFailure>, AuthError> {
    let linked = |db: &DatabaseConnection| {
        let (pid, sub) = (provider.id, identity.subject.clone());
        let db = db.clone();
        async move {
            let link = oidc_identities::Entity::find()
                .filter(oidc_identities::Column::ProviderId.eq(pid))
                .filter(oidc_identities::Column::Subject.eq(sub))
                .one(&db)
                .await?;
            match link {
                Some(l) => Ok::<_, AuthError>(users::Entity::find_by_id(l.user_id).one(&db).await?),
                None => Ok(None),
            }
        }
    };
    if let Some(user) = linked(db).await? {
        return Ok(Ok(user));
    }
    if !create {
        return Ok(Err(OidcFailure::UserCreationDisabled));
    }
    let fallback: String = format!("{}_{}", provider.name, identity.subject)
        .chars()
        .take(255)
        .collect();
    // Anyone can register names locally, including the two a subject would get first; a
    // random suffix after them always finds a free one (eight tries of 64 random bits).
    let random = (0..8).map(|_| {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).expect("the operating system's generator is available");
        let suffix: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let base: String = if AccountName::parse(&fallback).is_ok() {
            fallback.chars().take(200).collect()
        } else {
            provider.name.clone()
        };
        format!("{base}_{suffix}")
    });
    let candidates = identity
        .preferred_username
        .iter()
        .cloned()
        .chain(std::iter::once(fallback.clone()))
        .chain(random)
        .filter_map(|u| AccountName::parse(&u).ok());
    // The account and its link are made in one transaction: a concurrent first login of the
    // same subject waits on the name this one took until it commits or rolls back, so the
    // two do not end up one with `preferred_username` and the other with the fallback.
    // Each name is tried under a savepoint (a taken name aborts only that attempt).
    let txn = db.begin().await?;
    let mut user = None;
    for name in candidates {
        let row = users::ActiveModel {
            username: Set(name.as_str().to_owned()),
            username_key: Set(Some(name.key().to_owned())),
            email: Set(identity.email.clone()),
            password_hash: Set(None),
            ..Default::default()
        };
        let attempt = txn.begin().await?;
        match row.insert(&attempt).await {
            Ok(u) => {
                attempt.commit().await?;
                user = Some(u);
                break;
            }
            Err(e) if matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
                attempt.rollback().await?;
                continue;
            }
            Err(e) => return Err(e.into()),
        }
    }
    let Some(user) = user else {
        return Ok(Err(OidcFailure::ServerError));
    };
    let link = oidc_identities::ActiveModel {
        provider_id: Set(provider.id),
        subject: Set(identity.subject.clone()),
        user_id: Set(user.id),
        email: Set(identity.email.clone()),
        created_at: Set(chrono::Utc::now()),
        ..Default::default()
    };
    match link.insert(&txn).await {
        Ok(_) => {
            txn.commit().await?;
            Ok(Ok(user))
        }
        Err(e) if matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
            // Another worker linked this subject first: use its account, drop ours.
            txn.rollback().await?;
            Ok(linked(db).await?.ok_or(OidcFailure::ServerError))
        }
        Err(e) => Err(e.into()),
    }
}

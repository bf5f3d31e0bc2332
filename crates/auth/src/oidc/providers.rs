//! OpenID providers as database rows: what `tessera oidc add | list | remove` manage, their
//! client secrets sealed at rest.

use openidconnect::IssuerUrl;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, Set,
    SqlErr,
};
use serde::Serialize;
use tessera_entity::{oidc_identities, oidc_providers};

use crate::error::AuthError;
use crate::error::Conflict;
use crate::secrets::KeyRing;

/// A provider as `tessera oidc list` shows it (no secret).
#[derive(Debug, Serialize)]
pub struct ProviderSummary {
    /// The name in the routes.
    pub name: String,
    /// The issuer.
    pub issuer: String,
    /// The client id.
    pub client_id: String,
    /// Whether a client secret is stored.
    pub confidential: bool,
    /// Scopes asked for.
    pub scopes: String,
    /// No local second factor after this provider.
    pub skip_local_mfa: bool,
}

impl From<oidc_providers::Model> for ProviderSummary {
    fn from(p: oidc_providers::Model) -> Self {
        ProviderSummary {
            name: p.name,
            issuer: p.issuer,
            client_id: p.client_id,
            confidential: p.client_secret.is_some(),
            scopes: p.scopes,
            skip_local_mfa: p.skip_local_mfa,
        }
    }
}

/// The associated data a client secret is sealed to: its provider's name.
pub fn secret_place(name: &str) -> String {
    format!("oidc_client:{name}")
}

/// What `tessera oidc add` takes.
pub struct NewProvider {
    /// `[a-z0-9_-]{1,64}`.
    pub name: String,
    /// An http(s) issuer URL.
    pub issuer: String,
    /// The client id.
    pub client_id: String,
    /// The client secret, for a confidential client.
    pub client_secret: Option<String>,
    /// Space-separated scopes (`openid` is always asked for).
    pub scopes: String,
    /// No local second factor after this provider.
    pub skip_local_mfa: bool,
}

/// Adds a provider; its client secret is stored encrypted.
pub async fn add_provider(
    db: &DatabaseConnection,
    keys: &KeyRing,
    new: NewProvider,
) -> Result<ProviderSummary, AuthError> {
    let name_ok = (1..=64).contains(&new.name.len())
        && new
            .name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !name_ok {
        return Err(AuthError::invalid(
            "name",
            "a provider name is [a-z0-9_-], 1 to 64 characters",
        ));
    }
    IssuerUrl::new(new.issuer.clone())
        .ok()
        .filter(|u| matches!(u.url().scheme(), "http" | "https"))
        .ok_or_else(|| AuthError::invalid("issuer", "not an http(s) URL"))?;
    if new.client_id.is_empty() {
        return Err(AuthError::invalid("client_id", "required"));
    }
    let secret = new
        .client_secret
        .filter(|s| !s.is_empty())
        .map(|s| keys.seal(&secret_place(&new.name), s.as_bytes()));
    let row = oidc_providers::ActiveModel {
        name: Set(new.name.clone()),
        issuer: Set(new.issuer),
        client_id: Set(new.client_id),
        client_secret: Set(secret),
        scopes: Set(new.scopes),
        skip_local_mfa: Set(new.skip_local_mfa),
        created_at: Set(chrono::Utc::now()),
        ..Default::default()
    };
    match row.insert(db).await {
        Ok(m) => Ok(m.into()),
        Err(e) if matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
            Err(AuthError::conflict(
                Conflict::ProviderExists,
                format!("a provider `{}` exists already", new.name),
            ))
        }
        Err(e) => Err(e.into()),
    }
}

/// Every provider, by name.
pub async fn list_providers(db: &DatabaseConnection) -> Result<Vec<ProviderSummary>, AuthError> {
    Ok(oidc_providers::Entity::find()
        .order_by_asc(oidc_providers::Column::Name)
        .all(db)
        .await?
        .into_iter()
        .map(ProviderSummary::from)
        .collect())
}

/// Removes a provider and the links made through it.
pub async fn remove_provider(db: &DatabaseConnection, name: &str) -> Result<(), AuthError> {
    let Some(p) = find_provider(db, name).await? else {
        return Err(AuthError::invalid("name", format!("no provider `{name}`")));
    };
    oidc_identities::Entity::delete_many()
        .filter(oidc_identities::Column::ProviderId.eq(p.id))
        .exec(db)
        .await?;
    oidc_providers::Entity::delete_by_id(p.id).exec(db).await?;
    Ok(())
}

/// The provider named `name`.
pub async fn find_provider(
    db: &DatabaseConnection,
    name: &str,
) -> Result<Option<oidc_providers::Model>, AuthError> {
    // A name from a URL path may hold anything; no provider's name holds a control
    // character, and a NUL would fail the PostgreSQL query.
    if name.is_empty() || name.len() > 255 || name.chars().any(char::is_control) {
        return Ok(None);
    }
    Ok(oidc_providers::Entity::find()
        .filter(oidc_providers::Column::Name.eq(name))
        .one(db)
        .await?)
}

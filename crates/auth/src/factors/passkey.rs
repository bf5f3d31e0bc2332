//! Passkeys: WebAuthn credentials checked by webauthn-rs, kept in `passkeys`. The relying
//! party is the public URL: its host is the RP id, its origin the only origin accepted.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, Set,
    SqlErr,
};
use tessera_entity::passkeys;
use webauthn_rs::prelude::{
    Passkey, PublicKeyCredential, RegisterPublicKeyCredential, Url, Uuid, Webauthn,
    WebauthnBuilder, WebauthnError,
};

use crate::error::{AuthError, Conflict};

/// The most passkeys one account may hold.
pub const MAX_PASSKEYS: usize = 20;

/// The longest name a passkey may be given, in characters.
pub const MAX_NAME: usize = 64;

/// The relying party of `public_url`, or why there is none: a browser refuses an IP
/// address as RP id, so the public URL must name a host.
pub fn relying_party(public_url: &str) -> Result<Webauthn, String> {
    let url = Url::parse(public_url).map_err(|e| format!("TESSERA_PUBLIC_URL: {e}"))?;
    let host = match url.host() {
        Some(url::Host::Domain(d)) => d.to_owned(),
        Some(_) => {
            return Err(format!(
                "TESSERA_PUBLIC_URL names an IP address ({public_url}); browsers accept only a \
                 host name as a passkey's relying party"
            ));
        }
        None => return Err(format!("TESSERA_PUBLIC_URL has no host ({public_url})")),
    };
    let origin = Url::parse(&url.origin().ascii_serialization())
        .map_err(|e| format!("TESSERA_PUBLIC_URL: {e}"))?;
    WebauthnBuilder::new(&host, &origin)
        .and_then(|b| b.rp_name(&host).build())
        .map_err(|e| format!("passkeys: {e}"))
}

/// The stored form of a credential id: base64url without padding.
pub fn credential_key(raw: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(raw)
}

/// The credential id a sign-in request names for an account name without passkeys: a
/// keyed hash of the name, so the same at every call and like a real id in form, and
/// never one an authenticator holds.
pub fn decoy(keys: &crate::secrets::KeyRing, name_key: &str) -> String {
    credential_key(&keys.mac_bytes("passkey-decoy", name_key.as_bytes()))
}

/// A stored passkey with its credential read back.
pub struct Stored {
    /// The row.
    pub row: passkeys::Model,
    /// The credential.
    pub passkey: Passkey,
}

impl Stored {
    fn read(row: passkeys::Model) -> Result<Self, AuthError> {
        let passkey = serde_json::from_str(&row.credential)
            .map_err(|e| AuthError::internal(format!("passkey {}: {e}", row.id)))?;
        Ok(Stored { row, passkey })
    }
}

/// The passkeys of a user, oldest first.
pub async fn of_user(db: &impl ConnectionTrait, user_id: i64) -> Result<Vec<Stored>, AuthError> {
    passkeys::Entity::find()
        .filter(passkeys::Column::UserId.eq(user_id))
        .order_by_asc(passkeys::Column::CreatedAt)
        .all(db)
        .await?
        .into_iter()
        .map(Stored::read)
        .collect()
}

/// Whether the user has a passkey.
pub async fn has_passkey(db: &impl ConnectionTrait, user_id: i64) -> Result<bool, AuthError> {
    Ok(passkeys::Entity::find()
        .filter(passkeys::Column::UserId.eq(user_id))
        .one(db)
        .await?
        .is_some())
}

/// The passkey of a credential id, whoever holds it.
pub async fn by_credential(
    db: &impl ConnectionTrait,
    raw_id: &[u8],
) -> Result<Option<Stored>, AuthError> {
    passkeys::Entity::find()
        .filter(passkeys::Column::CredentialId.eq(credential_key(raw_id)))
        .one(db)
        .await?
        .map(Stored::read)
        .transpose()
}

/// Keeps a newly registered passkey; `passkey_exists` when its credential is registered
/// already (to this account or any other).
pub async fn insert(
    db: &impl ConnectionTrait,
    user_id: i64,
    user_handle: Uuid,
    passkey: &Passkey,
    name: String,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<passkeys::Model, AuthError> {
    let credential = serde_json::to_string(passkey).map_err(AuthError::internal)?;
    let row = passkeys::ActiveModel {
        id: Set(Uuid::new_v4()),
        user_id: Set(user_id),
        credential_id: Set(credential_key(passkey.cred_id().as_ref())),
        user_handle: Set(user_handle),
        credential: Set(credential),
        sign_count: Set(0),
        name: Set(name),
        created_at: Set(now),
        last_used_at: Set(None),
    };
    match row.insert(db).await {
        Ok(m) => Ok(m),
        Err(e) if matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
            Err(AuthError::conflict(
                Conflict::PasskeyExists,
                "this passkey is registered already",
            ))
        }
        Err(e) => Err(e.into()),
    }
}

/// Records a sign-in with `stored`: its credential as webauthn-rs updated it (the new
/// signature counter) and when. Only ever raises the counter, so of two sign-ins at once
/// the higher count stays.
pub async fn record_use(
    db: &impl ConnectionTrait,
    stored: &Stored,
    counter: u32,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), AuthError> {
    let credential = serde_json::to_string(&stored.passkey).map_err(AuthError::internal)?;
    let counter = i64::from(counter);
    // One statement: the time always, the credential and its count only when higher.
    let higher = || passkeys::Column::SignCount.lt(counter);
    passkeys::Entity::update_many()
        .col_expr(passkeys::Column::LastUsedAt, Expr::value(now))
        .col_expr(
            passkeys::Column::Credential,
            Expr::case(higher(), Expr::value(credential))
                .finally(Expr::col(passkeys::Column::Credential))
                .into(),
        )
        .col_expr(
            passkeys::Column::SignCount,
            Expr::case(higher(), Expr::value(counter))
                .finally(Expr::col(passkeys::Column::SignCount))
                .into(),
        )
        .filter(passkeys::Column::Id.eq(stored.row.id))
        .exec(db)
        .await?;
    Ok(())
}

/// Removes a passkey of `user_id`; false when it has none of that id.
pub async fn remove(db: &impl ConnectionTrait, user_id: i64, id: Uuid) -> Result<bool, AuthError> {
    let gone = passkeys::Entity::delete_many()
        .filter(passkeys::Column::Id.eq(id))
        .filter(passkeys::Column::UserId.eq(user_id))
        .exec(db)
        .await?;
    Ok(gone.rows_affected > 0)
}

/// Reads a registration response as the browser sent it (the WebAuthn JSON form).
pub fn registration(value: serde_json::Value) -> Result<RegisterPublicKeyCredential, AuthError> {
    serde_json::from_value(value).map_err(|e| {
        AuthError::invalid(
            "credential",
            format!("not a WebAuthn registration response: {e}"),
        )
    })
}

/// Reads an assertion as the browser sent it (the WebAuthn JSON form).
pub fn assertion(value: serde_json::Value) -> Result<PublicKeyCredential, AuthError> {
    serde_json::from_value(value)
        .map_err(|e| AuthError::invalid("credential", format!("not a WebAuthn assertion: {e}")))
}

/// Whether a refused assertion was refused for its signature counter: an authenticator
/// that counts backwards may be a copy of the real one.
pub fn counter_went_back(e: &WebauthnError) -> bool {
    matches!(e, WebauthnError::CredentialPossibleCompromise)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relying_party_is_the_public_urls_host() {
        let rp = relying_party("https://login.example.com/base").unwrap();
        let origins: Vec<String> = rp
            .get_allowed_origins()
            .iter()
            .map(|u| u.origin().ascii_serialization())
            .collect();
        assert_eq!(origins, ["https://login.example.com"]);
        assert!(relying_party("http://localhost:8080").is_ok());
    }

    #[test]
    fn an_ip_address_is_no_relying_party() {
        for url in ["http://127.0.0.1:8080", "http://[::1]:8080", "not a url"] {
            assert!(relying_party(url).is_err(), "{url} was accepted");
        }
    }
}

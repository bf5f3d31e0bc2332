//! `tessera keys rotate`: every secret at rest re-sealed under the current key.

use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter};
use serde::Serialize;
use tessera_entity::users::{Column, Entity as Users};

use crate::error::AuthError;
use crate::secrets::KeyRing;

/// What `tessera keys rotate` did.
#[derive(Debug, Default, Serialize)]
pub struct RotateReport {
    /// Secrets re-encrypted under the current key.
    pub rotated: u64,
    /// Secrets that were under the current key already.
    pub current: u64,
}

/// Re-encrypts every TOTP secret and OIDC client secret under the ring's current key. Each row is rewritten only
/// if it still holds the ciphertext that was read, so a concurrent setup is never
/// overwritten with an older secret.
pub async fn rotate_secrets(
    db: &DatabaseConnection,
    ring: &KeyRing,
) -> Result<RotateReport, AuthError> {
    use tessera_entity::oidc_providers as p;
    let mut report = RotateReport::default();
    for user in Users::find()
        .filter(Column::TotpSecret.is_not_null())
        .all(db)
        .await?
    {
        let place = crate::factors::totp::totp_place(user.id);
        let what = format!("user `{}`", user.username);
        if let Some(Resealed { old, new }) =
            reseal(ring, &place, user.totp_secret, &what, &mut report)?
        {
            Users::update_many()
                .col_expr(Column::TotpSecret, Expr::value(Some(new)))
                .filter(Column::Id.eq(user.id))
                .filter(Column::TotpSecret.eq(old))
                .exec(db)
                .await?;
        }
    }
    for provider in p::Entity::find()
        .filter(p::Column::ClientSecret.is_not_null())
        .all(db)
        .await?
    {
        let place = crate::oidc::secret_place(&provider.name);
        let what = format!("provider `{}`", provider.name);
        if let Some(Resealed { old, new }) =
            reseal(ring, &place, provider.client_secret, &what, &mut report)?
        {
            p::Entity::update_many()
                .col_expr(p::Column::ClientSecret, Expr::value(Some(new)))
                .filter(p::Column::Id.eq(provider.id))
                .filter(p::Column::ClientSecret.eq(old))
                .exec(db)
                .await?;
        }
    }
    Ok(report)
}

/// A ciphertext as read, and the same secret sealed under the current key.
struct Resealed {
    old: Vec<u8>,
    new: Vec<u8>,
}

/// The ciphertext `sealed` (at `place`) and its re-sealing under the current key, or
/// `None` when it is under the current key already; counts either way.
fn reseal(
    ring: &KeyRing,
    place: &str,
    sealed: Option<Vec<u8>>,
    what: &str,
    report: &mut RotateReport,
) -> Result<Option<Resealed>, AuthError> {
    let Some(old) = sealed else { return Ok(None) };
    if ring.is_current(&old) {
        report.current += 1;
        return Ok(None);
    }
    let plain = ring
        .open(place, &old)
        .map_err(|e| AuthError::internal(format!("{what}: {e}")))?;
    report.rotated += 1;
    let new = ring.seal(place, &plain);
    Ok(Some(Resealed { old, new }))
}

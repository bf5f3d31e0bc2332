//! Links mailed to every account of an address (a password reset, a magic sign-in): the
//! answer is the same whether an account exists, and so is its timing, because the lookup
//! and the mail happen in a task of their own, after the caller has its answer.

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use tessera_entity::{AuthEphemeralToken, EventType, Username, users};

use super::common::Client;
use crate::accounts;
use crate::audit::{self, Event, Outcome};
use crate::error::AuthError;
use crate::handle::Auth;
use crate::throttle;

/// One kind of mailed link.
pub(crate) struct LinkMail {
    /// What the mail is, for the log (`password reset`).
    pub what: &'static str,
    /// Counted per client address for every request (429 over it).
    pub per_address: EventType,
    /// Counted per account for every mail (over it, no mail, and the answer unchanged).
    pub per_account: EventType,
    /// The token of the link.
    pub token: fn(Username) -> AuthEphemeralToken,
    /// The page of the public URL the link opens (`/reset-password`).
    pub page: &'static str,
    /// The mail's subject.
    pub subject: &'static str,
    /// The mail's text, from the username, the link and the token.
    pub body: fn(&str, &str, &str) -> String,
    /// The audit event of each mail sent.
    pub event: Event,
}

impl Auth {
    /// Checks `email` and the per-address limit now; mails the link to each usable account
    /// of `email` afterwards, in the request's span (so its log lines carry the request's
    /// id and address).
    pub(crate) async fn mail_links(
        &self,
        client: &Client,
        email: String,
        link: &'static LinkMail,
    ) -> Result<(), AuthError> {
        let email = email.trim().to_owned();
        if email.len() > 320 || !email.contains('@') {
            return Err(AuthError::invalid("email", "not a mail address"));
        }
        throttle::throttle(&self.limiter, link.per_address, &client.key).await?;
        let auth = self.clone();
        let task = async move {
            if let Err(e) = auth.send_links(&email, link).await {
                tracing::warn!(error = %e, "{} mail not sent", link.what);
            }
        };
        tokio::spawn(tracing::Instrument::in_current_span(task));
        Ok(())
    }

    async fn send_links(&self, email: &str, link: &LinkMail) -> Result<(), AuthError> {
        let accounts = users::Entity::find()
            .filter(users::Column::Email.eq(email))
            .filter(users::Column::Disabled.eq(false))
            .all(&self.db)
            .await?;
        for user in accounts {
            // The per-account limits never show: over them, the answer was 202 all the same
            // and no mail goes out.
            let per_account = throttle::throttle(&self.limiter, link.per_account, &user.username);
            if let Err(e) = per_account.await {
                tracing::info!(error = %e, "{} mail withheld", link.what);
                continue;
            }
            if let Err(e) = throttle::mail_slot(&self.limiter, email).await {
                tracing::info!(error = %e, "{} mail withheld: the address had its share", link.what);
                continue;
            }
            let token = (link.token)(accounts::username_of(&user)?);
            let issued = self.tokens.issue(token).await?;
            let token = issued.token.expose();
            let url = format!("{}{}#token={token}", self.settings.public_url, link.page);
            let body = (link.body)(&user.username, &url, token);
            self.settings.mailer.send(email, link.subject, body).await?;
            audit::record(link.event, Outcome::Success, &user.username);
        }
        Ok(())
    }
}

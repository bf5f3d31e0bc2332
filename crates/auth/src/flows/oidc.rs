//! Sign-in through an OpenID provider, across workers: `start` on one worker, the
//! provider's pages, `callback` on another, `exchange` on a third. What must survive the
//! trip is in the `oidc_state` token (sealed) and the browser's cookie it is bound to.

use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;
use tessera_entity::{AuthEphemeralToken, Challenge, EventType, TokenType, oidc_providers};

use super::common::{Client, LoginOutcome};
use tessera_store::UserToken;

use crate::accounts;
use crate::error::AuthError;
use crate::error::token_error;
use crate::handle::Auth;
use crate::lockout;
use crate::oidc::{self, OidcFailure};
use crate::secrets;
use crate::settings::origin_of;
use crate::throttle;

/// Where `start` sends the browser.
#[derive(Debug)]
pub enum OidcStart {
    /// To the provider, with the challenge for the browser's state cookie.
    Provider {
        /// The authorization URL.
        url: String,
        /// The state cookie's value.
        browser: Challenge,
    },
    /// The provider could not be reached: back to the app with `#oidc_error=`.
    Failed {
        /// The app's URL with the error.
        to: String,
    },
}

/// Where the callback sends the browser.
#[derive(Debug)]
pub struct CallbackOutcome {
    /// The app's URL with `#oidc_exchange=` or `#oidc_error=`.
    pub to: String,
    /// On success, the value of the cookie the exchange token is bound to.
    pub exchange_binding: Option<Challenge>,
    /// The callback carried this browser's own state: its state cookie is done.
    pub own_state: bool,
}

impl Auth {
    /// Begins a login at the provider `name` (`None`: a name that is not even UTF-8).
    /// Calls to the provider take at most `budget`.
    pub async fn oidc_start(
        &self,
        client: &Client,
        name: Option<&str>,
        return_to: Option<String>,
        budget: Duration,
    ) -> Result<OidcStart, AuthError> {
        if let Some(r) = &return_to
            && !oidc::is_relative_path(r)
        {
            return Err(AuthError::invalid(
                "return_to",
                "return_to must be a path on this site (starting with one `/`), never an absolute URL",
            ));
        }
        // Each start stores an `oidc_state` row for ten minutes: anonymous GETs are bounded
        // per address.
        throttle::throttle(&self.limiter, EventType::OidcStartIp, &client.key).await?;
        let name = name.ok_or(AuthError::UnknownProvider)?;
        let provider = oidc::find_provider(&self.db, name)
            .await?
            .ok_or(AuthError::UnknownProvider)?;
        let back = self.redirect_uri(name);
        let s = &self.settings;
        let ready = s.oidc.ready(&provider, &s.keys, &back, None);
        let ready = match within(budget, ready).await {
            Ok(r) => r,
            Err(f) => {
                tracing::warn!(provider = %name, code = f.code(), "OIDC start failed");
                count(name, f.code());
                let to = format!(
                    "{}#oidc_error={}",
                    self.landing(return_to.as_deref()),
                    f.code()
                );
                return Ok(OidcStart::Failed { to });
            }
        };
        let nonce = secrets::random_key();
        let (challenge, verifier) = oidc::new_pkce();
        let browser = Challenge::generate();
        let issued = self
            .tokens
            .issue(
                AuthEphemeralToken::new_oidc_state(
                    provider.id.to_string(),
                    nonce.clone(),
                    verifier,
                )
                .with_challenge(browser.clone())
                .with_data(json!({ "return_to": return_to })),
            )
            .await?;
        let url = ready.authorize(
            issued.token.expose().to_owned(),
            nonce,
            &provider.scopes,
            challenge,
        );
        Ok(OidcStart::Provider { url, browser })
    }

    /// The provider's redirect back: consumes the state, exchanges the code, checks the ID
    /// token, links the user, and sends the browser on with `#oidc_exchange=<token>`, or
    /// `#oidc_error=<code>` for any failure, never an error page and never a session.
    pub async fn oidc_callback(
        &self,
        name: &str,
        query: &HashMap<String, String>,
        state_cookie: Option<&str>,
        budget: Duration,
    ) -> CallbackOutcome {
        let mut return_to = None;
        let mut own_state = false;
        let provider = oidc::find_provider(&self.db, name).await;
        let label = match &provider {
            Ok(Some(_)) => name,
            _ => "unknown",
        };
        let outcome = match provider {
            Ok(Some(p)) => {
                let mut callback = Callback {
                    query,
                    state_cookie,
                    budget,
                    return_to: &mut return_to,
                    own_state: &mut own_state,
                };
                self.finish(p, &mut callback).await
            }
            Ok(None) => Err(OidcFailure::UnknownProvider),
            Err(e) => {
                tracing::error!(error = %e, "OIDC callback: store failure");
                Err(OidcFailure::ServerError)
            }
        };
        let base = self.landing(return_to.as_deref());
        let (to, exchange_binding) = match outcome {
            Ok((token, binding)) => {
                count(label, "success");
                tracing::info!(provider = %label, "OIDC login");
                (format!("{base}#oidc_exchange={token}"), Some(binding))
            }
            Err(f) => {
                count(label, f.code());
                tracing::warn!(provider = %label, code = f.code(), "OIDC callback refused");
                (format!("{base}#oidc_error={}", f.code()), None)
            }
        };
        CallbackOutcome {
            to,
            exchange_binding,
            own_state,
        }
    }

    async fn finish(
        &self,
        provider: oidc_providers::Model,
        cb: &mut Callback<'_>,
    ) -> Result<(String, Challenge), OidcFailure> {
        let cookie = cb.state_cookie.map(Challenge::new);
        let presented = cb.query.get("state");
        // The state is spent whatever happens next: a callback is never retried.
        let consumed = match (presented, &cookie) {
            (Some(s), Some(c)) => Some(
                self.tokens
                    .consume(TokenType::OidcState, s, Some(c))
                    .await
                    .map(OidcState::from)
                    .map_err(|e| match e {
                        tessera_store::StoreError::InvalidOrExpired => OidcFailure::InvalidState,
                        other => server(other.into()),
                    }),
            ),
            _ => None,
        };
        if let Some(Ok(t)) = &consumed {
            *cb.own_state = true;
            *cb.return_to = t.return_to.clone();
        }
        if let Some(error) = cb.query.get("error") {
            return Err(if error == "access_denied" {
                OidcFailure::AccessDenied
            } else {
                OidcFailure::ProviderError
            });
        }
        if presented.is_none() {
            return Err(OidcFailure::InvalidState);
        }
        if cookie.is_none() {
            return Err(OidcFailure::MissingCookie);
        }
        let state = consumed.expect("state and cookie are present")?;
        if state.provider_id.as_deref() != Some(provider.id.to_string().as_str()) {
            return Err(OidcFailure::InvalidState);
        }
        if let Some(iss) = cb.query.get("iss")
            && iss.trim_end_matches('/') != provider.issuer.trim_end_matches('/')
        {
            return Err(OidcFailure::IssuerMismatch);
        }
        let code = cb
            .query
            .get("code")
            .cloned()
            .ok_or(OidcFailure::MissingCode)?;
        let back = self.redirect_uri(&provider.name);
        let s = &self.settings;
        let identity = s.oidc.finish(
            &provider,
            &s.keys,
            &back,
            code,
            state.code_verifier,
            state.nonce,
        );
        let identity = within(cb.budget, identity).await?;
        let user = oidc::link_or_create(&self.db, &provider, &identity, s.oidc_create_users)
            .await
            .map_err(server)??;
        if user.disabled {
            return Err(OidcFailure::AccountDisabled);
        }
        let username = accounts::username_of(&user).map_err(server)?;
        let binding = Challenge::generate();
        let issued = self
            .tokens
            .issue(
                AuthEphemeralToken::new_oidc_exchange(username)
                    .with_challenge(binding.clone())
                    .with_data(json!({ "provider": provider.name })),
            )
            .await
            .map_err(|e| server(e.into()))?;
        Ok((issued.token.expose().to_owned(), binding))
    }

    /// Trades the token from the callback (bound to the `binding` cookie) for a session,
    /// or for the second-factor step when the user has one and the provider is not trusted
    /// to replace it.
    pub async fn oidc_exchange(
        &self,
        client: &Client,
        token: &str,
        binding: Option<&str>,
    ) -> Result<LoginOutcome, AuthError> {
        // Only from the browser the callback sent the token to.
        let binding = binding
            .map(Challenge::new)
            .ok_or(AuthError::TokenRejected)?;
        let consumed = self
            .tokens
            .consume(TokenType::OidcExchange, token, Some(&binding))
            .await
            .and_then(UserToken::try_from)
            .map_err(|e| token_error(e, AuthError::TokenRejected))?;
        let user = accounts::token_user(&self.db, &consumed)
            .await?
            .filter(|u| !u.disabled)
            .ok_or(AuthError::TokenRejected)?;
        lockout::ensure_unlocked(&self.settings, &user)?;
        // Whether this login may skip the local second factor is the provider's setting,
        // read from its row now; the token only names the provider.
        let provider = consumed
            .payload
            .data
            .as_ref()
            .and_then(|d| d.get("provider"))
            .and_then(|v| v.as_str())
            .unwrap_or("");
        let skip_local_mfa = oidc::find_provider(&self.db, provider)
            .await?
            .is_some_and(|p| p.skip_local_mfa);
        if skip_local_mfa {
            Ok(LoginOutcome::Session(
                self.signed_in(&user, client, false).await?,
            ))
        } else {
            self.after_first_factor(&user, client).await
        }
    }

    fn redirect_uri(&self, name: &str) -> String {
        format!("{}/auth/oidc/{name}/callback", self.settings.public_url)
    }

    /// Where the browser goes after the callback: `return_to` on the return URL's origin,
    /// or the return URL itself.
    fn landing(&self, return_to: Option<&str>) -> String {
        let s = &self.settings;
        match return_to.filter(|r| oidc::is_relative_path(r)) {
            Some(path) => {
                let origin =
                    origin_of(&s.oidc_return_url).unwrap_or_else(|_| s.public_origin.clone());
                format!("{origin}{path}")
            }
            None => s.oidc_return_url.clone(),
        }
    }
}

/// A consumed `oidc_state`: the provider it was issued for, and what finishing needs.
struct OidcState {
    provider_id: Option<String>,
    nonce: String,
    code_verifier: String,
    return_to: Option<String>,
}

impl From<tessera_store::ConsumedToken> for OidcState {
    fn from(t: tessera_store::ConsumedToken) -> Self {
        let return_to = t
            .payload
            .data
            .as_ref()
            .and_then(|d| d.get("return_to"))
            .and_then(|r| r.as_str())
            .map(str::to_owned);
        OidcState {
            provider_id: t.provider_id,
            nonce: t.payload.nonce.unwrap_or_default(),
            code_verifier: t.payload.code_verifier.unwrap_or_default(),
            return_to,
        }
    }
}

/// What a callback brought, and what it learns on the way.
struct Callback<'a> {
    query: &'a HashMap<String, String>,
    state_cookie: Option<&'a str>,
    budget: Duration,
    return_to: &'a mut Option<String>,
    own_state: &'a mut bool,
}

fn server(e: AuthError) -> OidcFailure {
    tracing::error!(error = %e, "OIDC callback: store failure");
    OidcFailure::ServerError
}

/// Runs calls to a provider within `budget`, so a slow provider ends in
/// `#oidc_error=provider_unavailable` (a page can say what happened), not in the request's
/// own timeout.
async fn within<T>(
    budget: Duration,
    calls: impl Future<Output = Result<T, OidcFailure>>,
) -> Result<T, OidcFailure> {
    tokio::time::timeout(budget, calls)
        .await
        .unwrap_or_else(|_| {
            tracing::warn!(?budget, "the OpenID provider did not answer in time");
            Err(OidcFailure::ProviderUnavailable)
        })
}

fn count(provider: &str, outcome: &'static str) {
    metrics::counter!("tessera_oidc_logins_total", "provider" => provider.to_owned(), "outcome" => outcome)
        .increment(1);
}

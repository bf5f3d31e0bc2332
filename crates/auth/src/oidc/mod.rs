//! OIDC login (authorization code + PKCE) with providers kept as database rows.
//!
//! The `openidconnect` crate does discovery, PKCE, the token request and every ID-token
//! check (signature against the JWKS, `iss`, `aud`, `exp`, `nonce`). What this module adds
//! is the state that must survive a change of worker: the `oidc_state` token carries the
//! provider, nonce and PKCE verifier, sealed, bound to the `tessera_oidc` cookie, and is
//! consumed exactly once by whichever worker the callback reaches.

use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreClientAuthMethod, CoreProviderMetadata,
};
use openidconnect::{
    AuthType, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet,
    EndpointNotSet, EndpointSet, IssuerUrl, Nonce, PkceCodeChallenge, PkceCodeVerifier,
    RedirectUrl, RequestTokenError, Scope, SignatureVerificationError,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tessera_entity::oidc_providers;

use crate::secrets::KeyRing;

mod answers;
mod link;
mod providers;

pub use answers::{Identity, OidcFailure};
pub use link::link_or_create;
pub use providers::{
    NewProvider, ProviderSummary, add_provider, find_provider, list_providers, remove_provider,
    secret_place,
};

/// How long discovery documents and key sets are reused.
const METADATA_TTL: Duration = Duration::from_secs(300);
/// A key set is refetched for an unknown key at most this often.
const REFETCH_AFTER: Duration = Duration::from_secs(5);
/// Longest any call to a provider may take.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(3);

/// Discovery documents (with their key sets), per issuer, and the HTTP client that fetches
/// them: redirects off (a provider's redirect is never followed, as the crate advises),
/// a timeout on every call.
pub struct OidcClients {
    http: CappedHttp,
    cache: Mutex<HashMap<String, Cached>>,
    /// One discovery at a time per issuer: twenty starts at once make one fetch.
    fetching: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// What the cache holds for an issuer.
enum Cached {
    /// The document, and when it was fetched.
    Found(Box<CoreProviderMetadata>, Instant),
    /// The last fetch failed then: starts fail at once until [`FAILURE_TTL`] has passed,
    /// instead of each fetching again from a provider that is down or hostile.
    Failed(Instant),
}

/// How long a failed discovery is remembered.
const FAILURE_TTL: Duration = Duration::from_secs(5);

/// The largest answer read from a provider (discovery document, key set, token
/// response); a larger one is refused before it is held in memory.
pub const MAX_PROVIDER_RESPONSE: usize = 256 * 1024;

impl Default for OidcClients {
    fn default() -> Self {
        OidcClients {
            http: CappedHttp(
                openidconnect::reqwest::Client::builder()
                    .redirect(openidconnect::reqwest::redirect::Policy::none())
                    .timeout(PROVIDER_TIMEOUT)
                    .connect_timeout(PROVIDER_TIMEOUT)
                    .build()
                    .expect("a reqwest client with rustls builds"),
            ),
            cache: Mutex::new(HashMap::new()),
            fetching: Mutex::new(HashMap::new()),
        }
    }
}

/// Why a call to a provider failed.
#[derive(Debug, thiserror::Error)]
pub enum ProviderHttpError {
    /// The request could not be made or answered.
    #[error("request failed: {0}")]
    Request(#[from] openidconnect::reqwest::Error),
    /// The answer is larger than [`MAX_PROVIDER_RESPONSE`].
    #[error("the provider's answer is over {MAX_PROVIDER_RESPONSE} bytes")]
    TooLarge,
    /// The answer could not be rebuilt.
    #[error("unreadable answer: {0}")]
    Unreadable(String),
}

/// The HTTP client of every call to a provider, through [`capped`].
struct CappedHttp(openidconnect::reqwest::Client);

impl<'c> openidconnect::AsyncHttpClient<'c> for CappedHttp {
    type Error = ProviderHttpError;
    type Future = std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<openidconnect::HttpResponse, Self::Error>>
                + Send
                + 'c,
        >,
    >;

    fn call(&'c self, request: openidconnect::HttpRequest) -> Self::Future {
        Box::pin(capped(&self.0, request))
    }
}

/// One call to a provider, its body read in chunks and refused past
/// [`MAX_PROVIDER_RESPONSE`]: the openidconnect crate's own reqwest client reads any body
/// whole into memory.
async fn capped(
    client: &openidconnect::reqwest::Client,
    request: openidconnect::HttpRequest,
) -> Result<openidconnect::HttpResponse, ProviderHttpError> {
    let request = openidconnect::reqwest::Request::try_from(request)?;
    let mut response = client.execute(request).await?;
    if response
        .content_length()
        .is_some_and(|n| n > MAX_PROVIDER_RESPONSE as u64)
    {
        return Err(ProviderHttpError::TooLarge);
    }
    let mut builder = openidconnect::http::Response::builder().status(response.status());
    for (name, value) in response.headers() {
        builder = builder.header(name, value);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_PROVIDER_RESPONSE {
            return Err(ProviderHttpError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    builder
        .body(body)
        .map_err(|e| ProviderHttpError::Unreadable(e.to_string()))
}

impl std::fmt::Debug for OidcClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OidcClients")
    }
}

/// A client built from discovery: authorization endpoint known, token and userinfo
/// endpoints as the provider published them.
type Client = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// A client ready for one provider.
pub struct Ready {
    client: Client,
    issuer: String,
}

impl OidcClients {
    /// The provider's discovery document: from the cache while younger than
    /// `refresh_older_than` (default [`METADATA_TTL`]), else fetched.
    async fn metadata(
        &self,
        issuer: &str,
        refresh_older_than: Option<Duration>,
    ) -> Result<CoreProviderMetadata, OidcFailure> {
        let limit = refresh_older_than.unwrap_or(METADATA_TTL);
        if let Some(cached) = self.cached(issuer, limit) {
            return cached;
        }
        // Single flight: the first caller fetches; the others wait for it and read what it
        // left in the cache (the document, or its failure).
        let gate = self
            .fetching
            .lock()
            .expect("the lock is never poisoned")
            .entry(issuer.to_owned())
            .or_default()
            .clone();
        let _turn = gate.lock().await;
        if let Some(cached) = self.cached(issuer, limit) {
            return cached;
        }
        let url =
            IssuerUrl::new(issuer.to_owned()).map_err(|_| OidcFailure::ProviderUnavailable)?;
        let fetched = CoreProviderMetadata::discover_async(url, &self.http).await;
        let mut cache = self.cache.lock().expect("the cache lock is never poisoned");
        match fetched {
            Ok(m) => {
                cache.insert(
                    issuer.to_owned(),
                    Cached::Found(Box::new(m.clone()), Instant::now()),
                );
                Ok(m)
            }
            Err(e) => {
                tracing::warn!(issuer, error = %e, "OIDC discovery failed");
                cache.insert(issuer.to_owned(), Cached::Failed(Instant::now()));
                Err(OidcFailure::ProviderUnavailable)
            }
        }
    }

    /// Fetches `issuer`'s discovery document now, bypassing the cache, to check that the
    /// issuer answers as an OpenID provider (`tessera oidc add`); the error says why not.
    pub async fn check_issuer(&self, issuer: &str) -> Result<(), String> {
        let url = IssuerUrl::new(issuer.to_owned()).map_err(|e| format!("not a URL: {e}"))?;
        CoreProviderMetadata::discover_async(url, &self.http)
            .await
            .map(drop)
            .map_err(|e| {
                let mut why = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    why = format!("{why}: {s}");
                    source = s.source();
                }
                why
            })
    }

    /// The cache's answer for `issuer`: a document younger than `limit`, or a failure
    /// younger than [`FAILURE_TTL`]; `None` when it has to be fetched.
    fn cached(
        &self,
        issuer: &str,
        limit: Duration,
    ) -> Option<Result<CoreProviderMetadata, OidcFailure>> {
        let cache = self.cache.lock().expect("the cache lock is never poisoned");
        match cache.get(issuer)? {
            Cached::Found(m, at) if at.elapsed() < limit => Some(Ok((**m).clone())),
            Cached::Failed(at) if at.elapsed() < FAILURE_TTL => {
                Some(Err(OidcFailure::ProviderUnavailable))
            }
            _ => None,
        }
    }

    /// A client for `provider`, redirecting back to `redirect_uri`.
    pub async fn ready(
        &self,
        provider: &oidc_providers::Model,
        keys: &KeyRing,
        redirect_uri: &str,
        refresh_older_than: Option<Duration>,
    ) -> Result<Ready, OidcFailure> {
        let metadata = self.metadata(&provider.issuer, refresh_older_than).await?;
        let secret = match &provider.client_secret {
            Some(sealed) => Some(
                keys.open(&secret_place(&provider.name), sealed)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or(OidcFailure::ServerError)?,
            ),
            None => None,
        };
        // client_secret_basic unless the provider offers only client_secret_post.
        let post_only = metadata
            .token_endpoint_auth_methods_supported()
            .is_some_and(|m| {
                m.contains(&CoreClientAuthMethod::ClientSecretPost)
                    && !m.contains(&CoreClientAuthMethod::ClientSecretBasic)
            });
        let redirect =
            RedirectUrl::new(redirect_uri.to_owned()).map_err(|_| OidcFailure::ServerError)?;
        let client = CoreClient::from_provider_metadata(
            metadata.clone(),
            ClientId::new(provider.client_id.clone()),
            secret.map(ClientSecret::new),
        )
        .set_redirect_uri(redirect)
        .set_auth_type(if post_only {
            AuthType::RequestBody
        } else {
            AuthType::BasicAuth
        });
        Ok(Ready {
            client,
            issuer: provider.issuer.clone(),
        })
    }

    /// Forgets a cached document, so the next use fetches it (and the key set) again.
    fn forget(&self, issuer: &str) {
        self.cache
            .lock()
            .expect("the cache lock is never poisoned")
            .remove(issuer);
    }

    /// Exchanges `code` and checks the ID token; answers its subject, email and preferred
    /// username. A signature that no cached key verifies gets one more try with the key
    /// set fetched again (the provider may have rotated its keys).
    pub async fn finish(
        &self,
        provider: &oidc_providers::Model,
        keys: &KeyRing,
        redirect_uri: &str,
        code: String,
        verifier: String,
        nonce: String,
    ) -> Result<Identity, OidcFailure> {
        let ready = self.ready(provider, keys, redirect_uri, None).await?;
        let request = ready
            .client
            .exchange_code(AuthorizationCode::new(code))
            .map_err(|_| OidcFailure::ProviderUnavailable)?
            .set_pkce_verifier(PkceCodeVerifier::new(verifier));
        let response = request.request_async(&self.http).await.map_err(|e| match e {
            RequestTokenError::ServerResponse(r) => {
                tracing::warn!(provider = %provider.name, error = %r.error(), "the provider refused the code");
                OidcFailure::CodeRejected
            }
            RequestTokenError::Request(e) => {
                tracing::warn!(provider = %provider.name, error = %e, "token request failed");
                OidcFailure::ProviderUnavailable
            }
            other => {
                tracing::warn!(provider = %provider.name, error = %other, "unreadable token response");
                OidcFailure::CodeRejected
            }
        })?;
        use openidconnect::TokenResponse as _;
        let id_token = response.id_token().ok_or(OidcFailure::InvalidIdToken)?;
        let nonce = Nonce::new(nonce);
        let checked = {
            let verifier = ready.client.id_token_verifier();
            id_token.claims(&verifier, &nonce).map(identity_of)
        };
        match checked {
            Ok(identity) => Ok(identity),
            Err(openidconnect::ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey
                | SignatureVerificationError::CryptoError(_),
            )) => {
                // Refetch at most every few seconds, so forged tokens cannot make Tessera
                // hammer the provider.
                self.forget_if_older(&ready.issuer, REFETCH_AFTER);
                let again = self
                    .ready(provider, keys, redirect_uri, Some(REFETCH_AFTER))
                    .await?;
                let verifier = again.client.id_token_verifier();
                id_token
                    .claims(&verifier, &nonce)
                    .map(identity_of)
                    .map_err(|e| {
                        tracing::warn!(provider = %provider.name, error = %e, "ID token refused");
                        OidcFailure::InvalidIdToken
                    })
            }
            Err(e) => {
                tracing::warn!(provider = %provider.name, error = %e, "ID token refused");
                Err(OidcFailure::InvalidIdToken)
            }
        }
    }

    fn forget_if_older(&self, issuer: &str, age: Duration) {
        let stale = self
            .cache
            .lock()
            .expect("the cache lock is never poisoned")
            .get(issuer)
            .is_some_and(|c| matches!(c, Cached::Found(_, at) if at.elapsed() >= age));
        if stale {
            self.forget(issuer);
        }
    }
}

fn identity_of(c: &openidconnect::core::CoreIdTokenClaims) -> Identity {
    Identity {
        subject: c.subject().as_str().to_owned(),
        email: c.email().map(|e| e.as_str().to_owned()),
        preferred_username: c.preferred_username().map(|u| u.as_str().to_owned()),
    }
}

impl Ready {
    /// The authorization URL: code flow with `state`, `nonce` and the PKCE S256 `challenge`.
    pub fn authorize(
        &self,
        state: String,
        nonce: String,
        scopes: &str,
        challenge: PkceCodeChallenge,
    ) -> String {
        let mut req = self.client.authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            move || CsrfToken::new(state),
            move || Nonce::new(nonce),
        );
        for s in scopes.split_whitespace().filter(|s| *s != "openid") {
            req = req.add_scope(Scope::new(s.to_owned()));
        }
        let (url, _, _) = req.set_pkce_challenge(challenge).url();
        url.to_string()
    }
}

/// A fresh PKCE pair: the S256 challenge for the provider and the verifier to keep.
pub fn new_pkce() -> (PkceCodeChallenge, String) {
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    (challenge, verifier.secret().to_owned())
}

/// Whether `return_to` is a path on this site: one leading `/`, not `//` or `/\`, no
/// scheme, no control characters.
pub fn is_relative_path(return_to: &str) -> bool {
    return_to.starts_with('/')
        && !return_to.starts_with("//")
        && !return_to.starts_with("/\\")
        && return_to.len() <= 2048
        && !return_to.chars().any(|c| c.is_control() || c == '\\')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_to_is_a_relative_path_only() {
        for ok in ["/", "/app", "/app/page?x=1#y"] {
            assert!(is_relative_path(ok), "{ok}");
        }
        for bad in [
            "https://evil.example/",
            "//evil.example",
            "/\\evil.example",
            "evil",
            "",
            "/a\nb",
            "/a\\b",
        ] {
            assert!(!is_relative_path(bad), "{bad:?}");
        }
    }

    #[test]
    fn failure_codes_are_snake_case() {
        assert_eq!(OidcFailure::InvalidIdToken.code(), "invalid_id_token");
        assert_eq!(OidcFailure::AccessDenied.code(), "access_denied");
    }
}

//! One request to an `/auth` route as its handler reads it: the service, who calls and the
//! cookies sent. Every handler takes a [`Call`] (and its body), so the three extractors
//! are written once.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum_extra::extract::CookieJar;
use tessera_auth::{Auth, Client};

use crate::http::client_ip::Caller;
use crate::state::AppState;

/// The service, the client (its address's limiter key and `User-Agent`) and the cookie jar
/// of one request; the jar goes back with the answer.
pub struct Call {
    /// The service.
    pub state: AppState,
    /// Who calls.
    pub client: Client,
    /// The cookies sent; cookies set or removed go back in it.
    pub jar: CookieJar,
}

impl Call {
    /// The login domain.
    pub fn auth(&self) -> &Auth {
        &self.state.auth
    }

    /// The value of the cookie `name`, if sent.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.jar.get(name).map(|c| c.value())
    }
}

impl FromRequestParts<AppState> for Call {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Ok(Caller(client)) = Caller::from_request_parts(parts, state).await;
        Ok(Call {
            state: state.clone(),
            client,
            jar: CookieJar::from_headers(&parts.headers),
        })
    }
}

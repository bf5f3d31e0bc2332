//! A session as others see it: the check a proxy makes in front of a protected app
//! (`/auth/verify`), the introspection a backend asks for (`/v1/sessions/introspect`), and
//! the sessions a signed-in person sees and ends.

use tessera_entity::{sessions as rows, users};

use crate::error::AuthError;
use crate::handle::Auth;
use crate::sessions::{self, Found, SessionCheck};

fn check(session: &rows::Model, user: users::Model) -> SessionCheck {
    SessionCheck {
        username: user.username,
        email: user.email,
        session_id: sessions::public_id(session),
        created_at: session.created_at,
        expires_at: session.expires_at,
        second_factor: session.second_factor,
    }
}

impl Auth {
    /// The session of a cookie's value, recorded as seen (at most one write a minute); one
    /// lookup, no hashing, shared by the checks of the same cookie that arrive while it is
    /// in flight ([`crate::shared`]). `not_signed_in` for no live session.
    pub async fn check_session(&self, cookie: Option<&str>) -> Result<SessionCheck, AuthError> {
        match cookie {
            Some(value) if sessions::may_be_session(value) => self.shared_check(value).await,
            _ => Err(AuthError::NotSignedIn),
        }
    }

    /// [`Auth::check_session`] for one check alone.
    async fn lookup_session(&self, cookie: &str) -> Result<SessionCheck, AuthError> {
        let (session, user) = sessions::session_of(&self.db, Some(cookie)).await?;
        sessions::touch(&self.db, &session).await?;
        Ok(check(&session, user))
    }

    /// The live sessions of the signed-in person, oldest first, each with whether it is
    /// the one asking (name them by [`sessions::public_id`]).
    pub async fn list_sessions(
        &self,
        cookie: Option<&str>,
    ) -> Result<Vec<(rows::Model, bool)>, AuthError> {
        let (current, user) = sessions::session_of(&self.db, cookie).await?;
        let all = sessions::live_sessions(&self.db, user.id).await?;
        let mark = |s: rows::Model| {
            let mine = s.id == current.id;
            (s, mine)
        };
        Ok(all.into_iter().map(mark).collect())
    }

    /// Ends the signed-in person's session `id` (theirs only: any other id is unknown).
    pub async fn revoke_session(&self, cookie: Option<&str>, id: &str) -> Result<(), AuthError> {
        use sea_orm::EntityTrait;
        let (_, user) = sessions::session_of(&self.db, cookie).await?;
        let all = sessions::live_sessions(&self.db, user.id).await?;
        let found = all
            .into_iter()
            .find(|s| sessions::public_id(s) == id)
            .ok_or_else(|| AuthError::invalid("id", "no session of yours has this id"))?;
        rows::Entity::delete_by_id(found.id).exec(&self.db).await?;
        Ok(())
    }

    /// Ends every session of the signed-in person but this one; answers how many.
    pub async fn revoke_other_sessions(&self, cookie: Option<&str>) -> Result<u64, AuthError> {
        let (_, user) = sessions::session_of(&self.db, cookie).await?;
        sessions::end_other_sessions(&self.db, user.id, cookie).await
    }

    /// [`Auth::check_session`]'s lookup, shared with the checks of the same cookie that
    /// arrive while one is in flight ([`crate::shared`]).
    async fn shared_check(&self, cookie: &str) -> Result<SessionCheck, AuthError> {
        // The handle is cloned only when this check starts a lookup, not when it joins one.
        let lookup = || {
            let auth = self.clone();
            move |cookie: String| {
                let auth = auth.clone();
                async move {
                    match auth.lookup_session(&cookie).await {
                        Ok(check) => Found::Live(check),
                        Err(AuthError::NotSignedIn) => Found::NotSignedIn,
                        Err(_) => Found::Failed,
                    }
                }
            }
        };
        match self.checks.get(cookie, lookup).await {
            Some(Found::Live(check)) => Ok(check),
            Some(Found::NotSignedIn) => Err(AuthError::NotSignedIn),
            Some(Found::Failed) | None => self.lookup_session(cookie).await,
        }
    }
}

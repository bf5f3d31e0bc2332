//! The login flows driven as a library, without HTTP: what an embedder of tessera-auth
//! calls, on a fresh SQLite database per test.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tessera_auth::factors::codes;
use tessera_auth::flows::Factor;
use tessera_auth::{Auth, AuthError, AuthSettings, Client, Conflict, LoginOutcome};
use tessera_limiter::{Limiter, SqlLimiter};
use tessera_store::{SqlTokenStore, Tokens};
use tessera_testkit::TestDb;

const PW: &str = "correct horse battery";

async fn auth(configure: impl FnOnce(&mut AuthSettings)) -> (Auth, TestDb, tempfile::TempDir) {
    let db = TestDb::sqlite_file().await;
    let tokens = Tokens::new(Arc::new(SqlTokenStore::new(db.db.clone()).unwrap()));
    let limiter = Limiter::new(
        Arc::new(SqlLimiter::new(db.db.clone()).unwrap()),
        tessera_auth::throttle::default_policies(),
    );
    let outbox = tempfile::tempdir().unwrap();
    let mut settings = AuthSettings::ephemeral(outbox.path().to_owned());
    configure(&mut settings);
    (
        Auth::new(db.db.clone(), tokens, limiter, settings),
        db,
        outbox,
    )
}

fn client() -> Client {
    Client {
        key: "192.0.2.1".into(),
        addr: Some("192.0.2.1".into()),
        user_agent: Some("flows test".into()),
    }
}

/// The TOTP code of a base32 `secret` for the current window.
fn current_code(secret: &str) -> String {
    let bytes = totp_rs::Secret::try_from_base32(secret).unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    codes::code_at(bytes.as_bytes(), now / codes::STEP)
}

#[tokio::test]
async fn a_password_then_totp_login_as_outcomes() {
    let (auth, _db, _outbox) = auth(|_| {}).await;
    let c = client();
    let ann = auth
        .register(&c, "Ann", "ann@example.com".into(), PW.into())
        .await
        .unwrap();
    assert_eq!(ann.username, "Ann");

    // No second factor: a session at once, in any spelling of the name.
    let LoginOutcome::Session(first) = auth.login(&c, "ann", PW.into(), None).await.unwrap() else {
        panic!("a session without a second factor");
    };
    assert!(first.session.starts_with("tsr_se_"));
    let me = auth.me(Some(&first.session)).await.unwrap();
    assert_eq!(me.username, "Ann");

    // TOTP on: set up, confirmed with a code of its secret.
    let setup = auth.totp_setup(Some(&first.session), None).await.unwrap();
    assert_eq!(setup.backup_codes.len(), 10);
    let status = auth
        .totp_confirm(
            Some(&first.session),
            Some(&setup.setup_token),
            &current_code(&setup.enrolment.secret),
        )
        .await
        .unwrap();
    assert!(status.enabled);
    assert_eq!(status.backup_codes_remaining, 10);

    // The password step now answers the second-factor step; the token needs its challenge.
    let LoginOutcome::SecondFactor { pending, methods } =
        auth.login(&c, "Ann", PW.into(), None).await.unwrap()
    else {
        panic!("a second factor is due");
    };
    assert_eq!(methods, ["totp", "backup_code"]);
    let challenge = Some(pending.challenge.expose());
    let token = pending.mfa_token.as_str();
    let stolen = auth
        .verify(
            &c,
            token,
            None,
            Factor::BackupCode(setup.backup_codes[0].clone()),
        )
        .await;
    assert!(
        matches!(stolen, Err(AuthError::PendingLoginExpired)),
        "{stolen:?}"
    );
    let wrong = auth
        .verify(&c, token, challenge, Factor::Totp("000000".into()))
        .await;
    assert!(matches!(wrong, Err(AuthError::InvalidCode)), "{wrong:?}");
    let backup = Factor::BackupCode(setup.backup_codes[0].clone());
    let signed_in = auth
        .verify(&c, token, challenge, backup.clone())
        .await
        .unwrap();
    assert_eq!(signed_in.username, "Ann");
    assert!(auth.me(Some(&signed_in.session)).await.is_ok());
    // The pending login is spent, and the backup code with it.
    let again = auth.verify(&c, token, challenge, backup).await;
    assert!(
        matches!(again, Err(AuthError::PendingLoginExpired)),
        "{again:?}"
    );

    auth.logout(Some(&signed_in.session)).await.unwrap();
    let gone = auth.me(Some(&signed_in.session)).await;
    assert!(matches!(gone, Err(AuthError::NotSignedIn)), "{gone:?}");
}

#[tokio::test]
async fn refusals_are_domain_errors() {
    let (auth, _db, _outbox) = auth(|_| {}).await;
    let c = client();
    auth.register(&c, "bob", "bob@example.com".into(), PW.into())
        .await
        .unwrap();
    let taken = auth
        .register(&c, "BOB", "b2@example.com".into(), PW.into())
        .await;
    match taken {
        Err(AuthError::Conflict { kind, .. }) => {
            assert_eq!(kind, Conflict::UsernameTaken);
            assert_eq!(kind.code(), "username_taken");
        }
        other => panic!("{other:?}"),
    }
    let short = auth
        .register(&c, "cat", "cat@example.com".into(), "short".into())
        .await;
    assert!(
        matches!(
            short,
            Err(AuthError::Invalid {
                field: "password",
                ..
            })
        ),
        "{short:?}"
    );
    let wrong = auth.login(&c, "bob", "wrong password".into(), None).await;
    assert!(
        matches!(wrong, Err(AuthError::InvalidCredentials)),
        "{wrong:?}"
    );
    let nobody = auth
        .login(&c, "nobody", "wrong password".into(), None)
        .await;
    assert!(
        matches!(nobody, Err(AuthError::InvalidCredentials)),
        "{nobody:?}"
    );

    let (closed, _db2, _outbox2) = auth_closed().await;
    let refused = closed
        .register(&c, "dan", "dan@example.com".into(), PW.into())
        .await;
    assert!(
        matches!(refused, Err(AuthError::RegistrationDisabled)),
        "{refused:?}"
    );
}

async fn auth_closed() -> (Auth, TestDb, tempfile::TempDir) {
    auth(|s| s.registration = false).await
}

//! Chromium's virtual authenticator (the WebAuthn extension of WebDriver): a real
//! authenticator no one here wrote, with resident keys and user verification, answering
//! `navigator.credentials` in a page of the deployment's origin.

use fantoccini::wd::WebDriverCompatibleCommand;
use http::Method;
use serde_json::{Value, json};

use super::webdriver::Page;

/// One command of WebDriver's WebAuthn extension, under `/session/{id}/`.
#[derive(Debug)]
struct WebAuthnCommand {
    method: Method,
    path: String,
    body: Option<Value>,
}

impl WebDriverCompatibleCommand for WebAuthnCommand {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        let session = session_id.unwrap_or_default();
        base_url.join(&format!("session/{session}/{}", self.path))
    }

    fn method_and_body(&self, _: &url::Url) -> (Method, Option<String>) {
        (
            self.method.clone(),
            self.body.as_ref().map(Value::to_string),
        )
    }
}

/// A virtual authenticator added to a browser.
pub struct Authenticator {
    pub id: String,
}

async fn command(page: &Page, method: Method, path: String, body: Option<Value>) -> Value {
    let cmd = WebAuthnCommand { method, path, body };
    page.c
        .issue_cmd(cmd)
        .await
        .unwrap_or_else(|e| panic!("WebAuthn command refused: {e}"))
}

impl Authenticator {
    /// A platform authenticator (CTAP2, internal) that keeps resident keys and verifies
    /// its user, answering without a person's touch.
    pub async fn add(page: &Page) -> Authenticator {
        let options = json!({
            "protocol": "ctap2",
            "transport": "internal",
            "hasResidentKey": true,
            "hasUserVerification": true,
            "isUserVerified": true,
            "automaticPresenceSimulation": true,
        });
        let id = command(
            page,
            Method::POST,
            "webauthn/authenticator".into(),
            Some(options),
        )
        .await;
        Authenticator {
            id: id.as_str().expect("an authenticator id").to_owned(),
        }
    }

    /// The credentials it holds (`credentialId`, `privateKey`, `signCount`, ...).
    pub async fn credentials(&self, page: &Page) -> Vec<Value> {
        let path = format!("webauthn/authenticator/{}/credentials", self.id);
        let all = command(page, Method::GET, path, None).await;
        all.as_array().cloned().unwrap_or_default()
    }

    /// Replaces a credential by a copy of it whose signature counter is `count`: what a
    /// cloned authenticator (or one restored from a backup) would present.
    pub async fn set_count(&self, page: &Page, credential: &Value, count: u64) {
        let id = credential["credentialId"].as_str().unwrap();
        let path = format!("webauthn/authenticator/{}/credentials/{id}", self.id);
        command(page, Method::DELETE, path, None).await;
        let mut copy = credential.clone();
        copy["signCount"] = json!(count);
        let path = format!("webauthn/authenticator/{}/credential", self.id);
        command(page, Method::POST, path, Some(copy)).await;
    }

    /// Forgets every credential.
    pub async fn clear(&self, page: &Page) {
        let path = format!("webauthn/authenticator/{}/credentials", self.id);
        command(page, Method::DELETE, path, None).await;
    }
}

/// `navigator.credentials.create()` with creation options in the WebAuthn JSON form
/// (`publicKey`), in `page`; the new credential's `toJSON()`, or the browser's error.
pub async fn create(page: &Page, public_key: &Value) -> Result<Value, String> {
    ceremony(page, "create", "parseCreationOptionsFromJSON", public_key).await
}

/// `navigator.credentials.get()` with request options in the WebAuthn JSON form.
pub async fn get(page: &Page, public_key: &Value) -> Result<Value, String> {
    ceremony(page, "get", "parseRequestOptionsFromJSON", public_key).await
}

async fn ceremony(
    page: &Page,
    call: &str,
    parse: &str,
    public_key: &Value,
) -> Result<Value, String> {
    let script = format!(
        "const [options, done] = arguments;
         navigator.credentials.{call}({{ publicKey: PublicKeyCredential.{parse}(options) }})
           .then(c => done({{ ok: c.toJSON() }}), e => done({{ err: e.name + ': ' + e.message }}));"
    );
    let answer = page
        .c
        .execute_async(&script, vec![public_key.clone()])
        .await
        .expect("the script runs");
    match (answer.get("ok"), answer.get("err")) {
        (Some(ok), _) => Ok(ok.clone()),
        (_, Some(err)) => Err(err.as_str().unwrap_or_default().to_owned()),
        _ => Err(format!("no answer: {answer}")),
    }
}

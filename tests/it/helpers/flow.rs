//! A person's steps through the login flows against several workers, collecting every
//! secret they see (for the dump checks).

use serde_json::json;
use std::net::SocketAddr;

use super::browser::{Answer, Browser, unique};
use super::totp::{fresh_window, pyotp};

pub struct Flow {
    pub w: [SocketAddr; 3],
    /// Every secret seen, for the dump check at the end.
    pub secrets: Vec<String>,
    /// When the last TOTP setup was confirmed (its code's window is then used).
    pub confirmed_at: u64,
}

impl Flow {
    pub async fn register(&mut self, name: &str, password: &str) -> (String, String) {
        let username = unique(name);
        let email = format!("{username}@example.com");
        Browser::new()
            .register(self.w[0], &username, password)
            .await;
        self.secrets.push(password.to_owned());
        (username, email)
    }

    /// Signs in with a password on worker `on`; answers the browser and the body.
    pub async fn password(&mut self, on: usize, user: &str, password: &str) -> (Browser, Answer) {
        let mut b = Browser::new();
        let r = b
            .post(
                self.w[on],
                "/auth/login",
                json!({"username": user, "password": password}),
            )
            .await;
        if let Some(t) = r.body["mfa_token"].as_str() {
            self.secrets.push(t.to_owned());
        }
        for v in b.jar.values() {
            self.secrets.push(v.clone());
        }
        (b, r)
    }

    /// Sets TOTP up for a signed-in browser; answers the base32 secret and backup codes.
    pub async fn enable_totp(&mut self, b: &mut Browser) -> (String, Vec<String>) {
        let setup = b.post(self.w[0], "/auth/totp/setup", json!({})).await;
        assert_eq!(setup.status, 200, "{}", setup.body);
        let secret = setup.body["secret"].as_str().unwrap().to_owned();
        let again = b.post(self.w[1], "/auth/totp/setup", json!({})).await;
        assert_eq!(
            again.body["secret"], setup.body["secret"],
            "setup is idempotent until confirmed"
        );
        let codes: Vec<String> = again.body["backup_codes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(codes.len(), 10);
        let now = fresh_window().await;
        let confirm = b
            .post(
                self.w[1],
                "/auth/totp/confirm",
                json!({"code": pyotp(&secret, now)}),
            )
            .await;
        assert_eq!(confirm.status, 200, "{}", confirm.body);
        assert_eq!(confirm.body["enabled"], true);
        assert_eq!(confirm.body["backup_codes_remaining"], 10);
        self.confirmed_at = now;
        self.secrets.push(secret.clone());
        self.secrets.extend(codes.iter().cloned());
        self.secrets
            .extend(codes.iter().map(|c| c.replace('-', "")));
        (secret, codes)
    }
}

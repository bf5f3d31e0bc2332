pub mod auth;
pub mod health;
pub mod oidc;
pub mod v1;

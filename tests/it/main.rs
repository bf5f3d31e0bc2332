//! End-to-end tests: real `tessera` processes on real databases.
//!
//! One test binary; every test makes its own database, so they run in parallel.

mod budget;
mod crash;
mod flood;
mod helpers;
mod keys;
mod limits;
mod login;
mod logs;
mod magic;
mod oidc;
mod outages;
mod pages;
mod passkeys;
mod protect;
mod proxy;
mod race;
mod readme;
mod serve;
mod users;
mod workers;

//! What the end-to-end tests share, one concern per module.

pub mod authenticator;
pub mod browser;
pub mod dumps;
pub mod flow;
pub mod idp;
pub mod net;
pub mod nginx;
pub mod process;
pub mod smtp;
pub mod totp;
pub mod webdriver;

pub use browser::{Answer, Browser, unique, verify};
pub use dumps::{assert_no_secret, dump_postgres, dump_redis};
pub use flow::Flow;
pub use net::{TcpGate, free_port, get};
pub use process::{
    OwnRedis, Worker, race_children, run, start_workers, tessera, three_workers,
    three_workers_on_postgres, three_workers_on_redis, wait_for_go,
};
pub use smtp::{SmtpSink, assert_standard_message, code_in, reset_token_in};
pub use totp::{fresh_window, pyotp, unix_now};

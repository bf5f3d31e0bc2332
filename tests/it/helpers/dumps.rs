//! Everything a store holds, as text, to show that no secret is in it in clear.

use std::process::Command;
use tessera_testkit::TestDb;

/// Every row of every table as text (PostgreSQL).
pub async fn dump_postgres(db: &TestDb) -> String {
    use sea_orm::{ConnectionTrait, Statement};
    let tables = [
        "users",
        "sessions",
        "totp_usage",
        "backup_codes",
        "email_otp_codes",
        "auth_ephemeral_tokens",
        "auth_rate_limit_events",
        "auth_rate_limit_counters",
        "oidc_providers",
        "oidc_identities",
        "passkeys",
    ];
    let mut out = String::new();
    for t in tables {
        let rows = db
            .db
            .query_all_raw(Statement::from_string(
                db.db.get_database_backend(),
                format!("SELECT row_to_json(t)::text AS j FROM {t} t"),
            ))
            .await
            .unwrap();
        for r in rows {
            out.push_str(&r.try_get::<String>("", "j").unwrap());
            out.push('\n');
        }
    }
    out
}

/// Every value of every Tessera key in Redis, as text.
pub fn dump_redis(url: &str) -> String {
    let port = url.rsplit(':').next().unwrap().trim_end_matches('/');
    let cli = |args: &[&str]| {
        let out = Command::new("redis-cli")
            .args(["-p", port])
            .args(args)
            .output()
            .expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let mut out = String::new();
    for key in cli(&["--scan", "--pattern", "tessera:*"]).lines() {
        let kind = cli(&["TYPE", key]);
        let value = match kind.trim() {
            "hash" => cli(&["HGETALL", key]),
            "set" => cli(&["SMEMBERS", key]),
            "zset" => cli(&["ZRANGE", key, "0", "-1"]),
            _ => cli(&["GET", key]),
        };
        out.push_str(key);
        out.push(' ');
        out.push_str(&value);
    }
    out
}

pub fn assert_no_secret(dump: &str, secrets: &[String]) {
    assert!(dump.contains("$argon2id$"), "the dump holds the accounts");
    assert!(secrets.len() > 20, "secrets were collected");
    for s in secrets {
        assert!(s.len() >= 8, "{s}");
        assert!(
            !dump.contains(s.as_str()),
            "the dump holds a secret in clear: {s}"
        );
    }
}

//! README.md held to what the binary does: its multi-worker recipe, run as written, and its
//! tables of commands and settings, against `--help`.

use serde_json::json;
use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::process::tessera_bin;
use crate::helpers::*;

const README: &str = include_str!("../../README.md");

/// The first ```sh block after the line that starts with `heading`.
fn block_after(heading: &str) -> String {
    let at = README
        .find(&format!("\n{heading}"))
        .unwrap_or_else(|| panic!("README has no `{heading}`"));
    let rest = &README[at..];
    let start = rest.find("```sh\n").expect("a sh block follows") + "```sh\n".len();
    let end = start + rest[start..].find("```").expect("the block ends");
    rest[start..end].to_owned()
}

/// `text` with `from` replaced by `to`, failing when README no longer says `from` (so a
/// change to the recipe is noticed here).
fn swap(text: String, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "the recipe no longer says `{from}`:\n{text}"
    );
    text.replace(from, to)
}

/// The recipe "Three workers on Redis and PostgreSQL", run by bash as README writes it, with
/// this build's binary, a database and ports of its own: an account registered on one
/// worker signs in on another, its session is known to the third, and a TOTP secret sealed
/// by one worker is opened by another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_three_workers_on_redis_recipe_runs_as_written() {
    // A Redis of its own: the recipe sets no key prefix, and the workers' per-address
    // limits (every request comes from 127.0.0.1) must not be shared with other tests.
    let own = crate::helpers::process::OwnRedis::start(free_port(), tempfile::tempdir().unwrap());
    let redis = format!("redis://127.0.0.1:{}", own.port);
    let admin = tessera_testkit::postgres_admin_url();
    let server = admin.rsplit_once('/').expect("a database URL").0.to_owned();
    let db = format!("tessera_readme_{}", std::process::id());
    let ports = [free_port(), free_port(), free_port()];
    let recipe = block_after("Three workers on Redis and PostgreSQL");
    let script = swap(recipe, "cargo build --release\n", "");
    let script = swap(script, "target/release/tessera", tessera_bin());
    let script = swap(script, "redis://127.0.0.1:6379", &redis);
    let script = swap(
        script,
        "postgres://postgres@127.0.0.1:5432/tessera",
        &format!("{server}/{db}"),
    );
    let script = swap(script, "-U postgres tessera", &format!("-U postgres {db}"));
    let ports_text = ports.map(|p| p.to_string()).join(" ");
    let script = swap(script, "8081 8082 8083", &ports_text);

    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("recipe.log");
    let mut bash = Command::new("bash");
    bash.args(["-euo", "pipefail", "-c", &script])
        .current_dir(dir.path())
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.path().join("recipe.err")).unwrap());
    for (k, _) in std::env::vars() {
        if k.starts_with("TESSERA_") {
            bash.env_remove(k);
        }
    }
    let mut child = bash.spawn().expect("bash runs");
    let group = child.id();
    let _stop = scopeguard(group, db.clone());
    let status = child.wait().unwrap();
    let said = std::fs::read_to_string(dir.path().join("recipe.err")).unwrap_or_default();
    assert!(status.success(), "the recipe failed: {said}");
    let workers: Vec<std::net::SocketAddr> = ports
        .iter()
        .map(|p| std::net::SocketAddr::from(([127, 0, 0, 1], *p)))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    for w in &workers {
        while get(*w, "/readyz").map(|(s, _)| s) != Some(200) {
            assert!(Instant::now() < deadline, "worker {w} is not ready: {said}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    let mut b = Browser::new();
    let pw = "correct horse battery";
    b.register(workers[0], "reader", pw).await;
    let r = b
        .post(
            workers[1],
            "/auth/login",
            json!({"username": "reader", "password": pw}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let me = b.get(workers[2], "/auth/me").await;
    assert_eq!(me.body["username"], "reader", "{}", me.body);
    let setup = b.post(workers[2], "/auth/totp/setup", json!({})).await;
    assert_eq!(setup.status, 200, "{}", setup.body);
    let secret = setup.body["secret"].as_str().unwrap().to_owned();
    let now = fresh_window().await;
    let ok = b
        .post(
            workers[0],
            "/auth/totp/confirm",
            json!({"code": pyotp(&secret, now)}),
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
}

/// Stops the recipe's process group and drops its database when the test ends, passed or
/// not.
fn scopeguard(group: u32, db: String) -> impl Drop {
    struct Stop(u32, String);
    impl Drop for Stop {
        fn drop(&mut self) {
            Command::new("kill")
                .args(["--", &format!("-{}", self.0)])
                .status()
                .ok();
            std::thread::sleep(Duration::from_millis(300));
            Command::new("dropdb")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-U",
                    "postgres",
                    "--if-exists",
                    "--force",
                ])
                .arg(&self.1)
                .stdin(Stdio::null())
                .status()
                .ok();
        }
    }
    Stop(group, db)
}

/// What `tessera ARGS --help` prints.
fn help(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = tessera(dir.path());
    cmd.args(args).arg("--help");
    let out = run(cmd);
    assert!(out.status.success(), "{args:?} --help failed");
    String::from_utf8(out.stdout).unwrap()
}

/// The subcommands a `--help` lists under `Commands:` (without `help`).
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter(|l| !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .filter(|c| c != "help")
        .collect()
}

/// Every command README's command table names is one the binary has, and every command the
/// binary has is in the table.
#[test]
fn the_commands_table_is_the_cli() {
    let mut cli = BTreeSet::new();
    for command in subcommands(&help(&[])) {
        let sub = subcommands(&help(&[&command]));
        if sub.is_empty() {
            cli.insert(command);
        } else {
            cli.extend(sub.into_iter().map(|s| format!("{command} {s}")));
        }
    }
    let table =
        &README[README.find("## Commands").unwrap()..README.find("## Configuration").unwrap()];
    let mut documented = BTreeSet::new();
    for cell in table.lines().filter_map(|l| l.strip_prefix("| `tessera ")) {
        let named = cell.split(" | ").next().unwrap();
        for usage in named.split("`, `") {
            let usage = usage.trim_start_matches("tessera ").trim_end_matches('`');
            let words: Vec<&str> = usage
                .split_whitespace()
                .take_while(|w| {
                    w.chars()
                        .all(|c| c.is_ascii_lowercase() || c == '-' || c == '/')
                })
                .collect();
            // `user disable / enable NAME`: one group, several commands.
            let (group, rest) = match words.first() {
                Some(&g) if words.len() > 1 => (Some(g), &words[1..]),
                _ => (None, &words[..]),
            };
            let group = match (group, rest.first()) {
                (Some(g), _) if ["user", "oidc", "keys"].contains(&g) => Some(g),
                (None, _) => None,
                (Some(g), _) => panic!("unexpected `{g}` in `{usage}`"),
            };
            let alternatives = rest.iter().filter(|w| **w != "/");
            match group {
                Some(g) => documented.extend(alternatives.map(|c| format!("{g} {c}"))),
                None => documented.extend(words.iter().map(|w| w.to_string())),
            }
        }
    }
    assert_eq!(
        documented, cli,
        "README's command table and `tessera --help` differ"
    );
}

/// README's settings table has exactly the flags and variables of `tessera serve --help`.
#[test]
fn the_settings_table_is_serve_help() {
    let serve = help(&["serve"]);
    let mut from_help = BTreeSet::new();
    let mut flag = None;
    for line in serve.lines().map(str::trim) {
        if let Some(f) = line.split_whitespace().find(|w| w.starts_with("--"))
            && line.starts_with('-')
        {
            flag = Some(f.trim_end_matches(',').to_owned());
        }
        if let Some(at) = line.find("[env: ") {
            let var = line[at + 6..].split(['=', ']']).next().unwrap().to_owned();
            from_help.insert((var, flag.clone().expect("a flag before its env")));
        }
    }
    let table = &README[README
        .find("| variable | flag |")
        .expect("the settings table")..];
    let rows = table.lines().take_while(|l| l.starts_with('|'));
    let mut documented = BTreeSet::new();
    for line in rows.filter(|l| l.starts_with("| `TESSERA_")) {
        let cells: Vec<&str> = line.split(" | ").collect();
        let var = cells[0]
            .trim_start_matches("| ")
            .trim_matches('`')
            .to_owned();
        let flag = cells[1].trim_matches('`');
        if flag != "—" {
            documented.insert((var, flag.to_owned()));
        }
    }
    assert_eq!(
        documented, from_help,
        "README's settings table and `serve --help` differ"
    );
}

//! The load-balanced path: Debian's nginx, running the very configuration docker-compose
//! mounts (deploy/nginx/nginx.conf), in front of three local workers.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tessera_testkit::TestDb;

use crate::helpers::Worker;
use crate::helpers::nginx::{nginx, servers};
use crate::workers::{KEY, a_limit_holds_across_workers, tokens_are_consumed_once_across_workers};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_workers_behind_nginx() {
    let db = TestDb::postgres().await;
    let url = db.url.clone();
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path().to_owned();
    let ws: Vec<Worker> = tokio::task::spawn_blocking(move || {
        (0..3)
            .map(|_| {
                Worker::start_env(
                    &cwd,
                    &[
                        "--database-url",
                        &url,
                        "--api-keys",
                        KEY,
                        "--rate-limits",
                        "e2e=10/1h",
                        "--trusted-proxies",
                        "127.0.0.1",
                    ],
                    &[("TESSERA_LOG", "info")],
                )
            })
            .collect()
    })
    .await
    .unwrap();
    let addrs: Vec<SocketAddr> = ws.iter().map(|w| w.addr).collect();
    let (_nginx, proxy, _prefix) = nginx("nginx.conf", &[("upstreams.conf", servers(&addrs))]);

    tokens_are_consumed_once_across_workers(&[proxy]).await;
    a_limit_holds_across_workers(&[proxy]).await;
    for w in &ws {
        let log = std::fs::read_to_string(&w.log).unwrap();
        assert!(
            log.contains("/v1/tokens/consume"),
            "nginx sent requests to every worker ({})",
            w.addr
        );
    }

    // X-Forwarded-For is believed only from the trusted proxy, and only for the hop that
    // proxy recorded: a client on 127.0.0.2 that writes its own header is still 127.0.0.2.
    let client = reqwest::Client::builder()
        .local_address("127.0.0.2".parse::<IpAddr>().unwrap())
        .build()
        .unwrap();
    for (target, spoof) in [(proxy, "203.0.113.7"), (ws[0].addr, "203.0.113.9")] {
        let res = client
            .get(format!("http://{target}/healthz"))
            .header("x-forwarded-for", spoof)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let logs: String = ws
        .iter()
        .map(|w| std::fs::read_to_string(&w.log).unwrap())
        .collect();
    let healthz: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("path=/healthz"))
        .collect();
    assert!(
        healthz
            .iter()
            .filter(|l| l.contains("client_ip=127.0.0.2"))
            .count()
            >= 2,
        "both requests are logged with the real client: {healthz:#?}"
    );
    assert!(
        !logs.contains("client_ip=203.0.113."),
        "a client's own X-Forwarded-For is never believed"
    );
    drop(ws);
    db.finish().await;
}

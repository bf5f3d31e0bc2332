//! The connection to Redis that the token store and the limiter share.

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisError, RedisFuture, Value};
use std::time::Duration;

/// A connection to one Redis server or to a Cluster; both reconnect by themselves.
#[derive(Clone)]
pub enum RedisConnection {
    /// One server, through a connection manager.
    Single(ConnectionManager),
    /// A Redis Cluster.
    Cluster(ClusterConnection),
}

impl RedisConnection {
    /// Connects to `urls`: one URL is one server; several comma-separated URLs are the
    /// seed nodes of a Cluster.
    pub async fn connect(urls: &str) -> Result<Self, RedisError> {
        let nodes: Vec<&str> = urls
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if nodes.len() > 1 {
            let client = ClusterClient::builder(nodes)
                .connection_timeout(Duration::from_secs(2))
                .response_timeout(Duration::from_secs(2))
                .build()?;
            Ok(RedisConnection::Cluster(
                client.get_async_connection().await?,
            ))
        } else {
            let client = redis::Client::open(nodes.first().copied().unwrap_or_default())?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(2)))
                .set_response_timeout(Some(Duration::from_secs(2)))
                .set_number_of_retries(2)
                .set_max_delay(Duration::from_millis(500));
            Ok(RedisConnection::Single(
                ConnectionManager::new_with_config(client, config).await?,
            ))
        }
    }

    /// One `PING`: whether the server (or the cluster node the command lands on) answers.
    pub async fn ping(&self) -> Result<(), RedisError> {
        let mut conn = self.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(drop)
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConnection::Single(c) => c.req_packed_command(cmd),
            RedisConnection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConnection::Single(c) => c.req_packed_commands(cmd, offset, count),
            RedisConnection::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConnection::Single(c) => c.get_db(),
            RedisConnection::Cluster(c) => c.get_db(),
        }
    }
}

/// Whether a Redis error means the server cannot be reached (refused, dropped, timed out,
/// cluster down), as opposed to a command it refused.
pub fn is_unreachable(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_cluster_error()
}

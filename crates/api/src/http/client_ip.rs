//! The client's address: the socket's peer, or — only when that peer is a configured
//! proxy — the address the proxies recorded in `X-Forwarded-For`; and the key that
//! per-address limits count it under (an IPv6 client by its /64: one host holds a whole
//! /64, so counting single addresses would give it 2^64 budgets).

use axum::extract::ConnectInfo;
use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{Extensions, HeaderMap, Request};
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// The proxies whose `X-Forwarded-For` is believed, and how IPv6 clients are grouped.
#[derive(Debug, Clone)]
pub struct TrustedProxies {
    nets: Arc<Vec<IpNet>>,
    ipv6_prefix: u8,
}

impl Default for TrustedProxies {
    fn default() -> Self {
        TrustedProxies {
            nets: Arc::default(),
            ipv6_prefix: DEFAULT_IPV6_PREFIX,
        }
    }
}

/// The IPv6 prefix length per-address limits count by, unless configured.
pub const DEFAULT_IPV6_PREFIX: u8 = 64;

impl TrustedProxies {
    /// Parses a comma-separated list of addresses and CIDR ranges.
    pub fn parse(list: &str) -> Result<Self, String> {
        let nets = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("`{s}` is not an address or a CIDR range"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TrustedProxies {
            nets: Arc::new(nets),
            ipv6_prefix: DEFAULT_IPV6_PREFIX,
        })
    }

    /// Counts IPv6 clients by their `/prefix` (1 to 128) in per-address limits.
    pub fn with_ipv6_prefix(mut self, prefix: u8) -> Result<Self, String> {
        if !(1..=128).contains(&prefix) {
            return Err(format!("an IPv6 prefix is 1 to 128, not {prefix}"));
        }
        self.ipv6_prefix = prefix;
        Ok(self)
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// The client of `req`: walking `X-Forwarded-For` from the right while the hop is a
    /// trusted proxy, the first untrusted address; the peer itself when it is not a
    /// trusted proxy (its header could be anything). `None` without a socket (tests).
    pub fn client_ip<B>(&self, req: &Request<B>) -> Option<IpAddr> {
        self.client_of(req.extensions(), req.headers())
    }

    /// [`TrustedProxies::client_ip`] on a request's parts.
    pub fn client_of(&self, extensions: &Extensions, headers: &HeaderMap) -> Option<IpAddr> {
        let peer = extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| canonical(c.0.ip()))?;
        if !self.trusts(peer) {
            return Some(peer);
        }
        let mut client = peer;
        let hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect::<Vec<_>>();
        for hop in hops.iter().rev() {
            match parse_hop(hop) {
                Some(ip) => {
                    client = ip;
                    if !self.trusts(ip) {
                        break;
                    }
                }
                // A hop we cannot read ends what we can believe.
                None => break,
            }
        }
        Some(client)
    }
}

/// An address as proxies write it in `X-Forwarded-For`: `a.b.c.d`, `a.b.c.d:port`, a
/// bare IPv6 address, `[v6]`, `[v6]:port`, with or without a `%zone`; v4-mapped IPv6
/// addresses become the IPv4 address they carry.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(sock) = hop.parse::<SocketAddr>() {
        return Some(canonical(sock.ip()));
    }
    // `[v6]` without a port, or anything with a zone (`fe80::1%eth0`, `[fe80::1%eth0]:80`).
    let inner = hop.strip_prefix('[').map_or(hop, |rest| {
        rest.split_once(']').map_or(rest, |(addr, _port)| addr)
    });
    let without_zone = inner.split_once('%').map_or(inner, |(addr, _zone)| addr);
    without_zone.parse::<IpAddr>().ok().map(canonical)
}

/// `::ffff:a.b.c.d` is `a.b.c.d`: one client, one key.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The client's address as a handler argument; `None` only without a socket (tests).
#[derive(Debug, Clone, Copy)]
pub struct ClientIp {
    /// The address itself (what a session records).
    pub addr: Option<IpAddr>,
    ipv6_prefix: u8,
}

impl ClientIp {
    /// The rate-limit key of the address (`unknown` without a socket): an IPv4 address
    /// itself, an IPv6 address's network of the configured prefix (`2001:db8::/64`).
    pub fn key(&self) -> String {
        match self.addr {
            None => "unknown".to_owned(),
            Some(IpAddr::V4(v4)) => v4.to_string(),
            Some(IpAddr::V6(v6)) => ipnet::Ipv6Net::new(v6, self.ipv6_prefix)
                .map_or_else(|_| v6.to_string(), |n| n.trunc().to_string()),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClientIp
where
    TrustedProxies: FromRef<S>,
{
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let proxies = TrustedProxies::from_ref(state);
        Ok(ClientIp {
            addr: proxies.client_of(&parts.extensions, &parts.headers),
            ipv6_prefix: proxies.ipv6_prefix,
        })
    }
}

/// The client as the login flows see it: its address's limiter key, the address, and its
/// `User-Agent` (kept with a session).
pub struct Caller(pub tessera_auth::Client);

impl<S: Send + Sync> FromRequestParts<S> for Caller
where
    TrustedProxies: FromRef<S>,
{
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Ok(ip) = ClientIp::from_request_parts(parts, state).await;
        let user_agent = parts
            .headers
            .get(axum::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(Caller(tessera_auth::Client {
            key: ip.key(),
            addr: ip.addr.map(|a| a.to_string()),
            user_agent,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_count_by_their_prefix() {
        let key = |addr: &str, prefix: u8| {
            ClientIp {
                addr: Some(addr.parse().unwrap()),
                ipv6_prefix: prefix,
            }
            .key()
        };
        assert_eq!(key("2001:db8:1:2:aaaa::1", 64), "2001:db8:1:2::/64");
        assert_eq!(key("2001:db8:1:2:bbbb::9", 64), "2001:db8:1:2::/64");
        assert_eq!(key("2001:db8:1:2:bbbb::9", 128), "2001:db8:1:2:bbbb::9/128");
        assert_eq!(key("203.0.113.7", 64), "203.0.113.7");
        assert!(TrustedProxies::default().with_ipv6_prefix(0).is_err());
    }

    fn req(peer: &str, xff: Option<&str>) -> Request<()> {
        let mut r = Request::new(());
        r.extensions_mut()
            .insert(ConnectInfo(SocketAddr::new(peer.parse().unwrap(), 1234)));
        if let Some(x) = xff {
            r.headers_mut()
                .insert("x-forwarded-for", x.parse().unwrap());
        }
        r
    }

    #[test]
    fn the_header_counts_only_from_a_trusted_proxy() {
        let t = TrustedProxies::parse("127.0.0.1, 10.0.0.0/8").unwrap();
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert_eq!(
            t.client_ip(&req("192.0.2.1", Some("203.0.113.7"))),
            ip("192.0.2.1")
        );
        assert_eq!(
            t.client_ip(&req("127.0.0.1", Some("203.0.113.7"))),
            ip("203.0.113.7")
        );
        assert_eq!(
            t.client_ip(&req(
                "127.0.0.1",
                Some("203.0.113.7, 198.51.100.2, 10.1.2.3")
            )),
            ip("198.51.100.2"),
            "the rightmost untrusted hop; what the client wrote before it is not believed"
        );
        assert_eq!(
            t.client_ip(&req("127.0.0.1", Some("junk"))),
            ip("127.0.0.1")
        );
        assert_eq!(t.client_ip(&req("127.0.0.1", None)), ip("127.0.0.1"));
        assert!(TrustedProxies::parse("nope").is_err());
        // The forms proxies write, and v4-mapped addresses as the IPv4 they carry.
        for (hop, want) in [
            ("203.0.113.7:51234", "203.0.113.7"),
            ("[2001:db8::7]", "2001:db8::7"),
            ("[2001:db8::7]:443", "2001:db8::7"),
            ("fe80::1%eth0", "fe80::1"),
            ("::ffff:203.0.113.7", "203.0.113.7"),
        ] {
            assert_eq!(t.client_ip(&req("127.0.0.1", Some(hop))), ip(want), "{hop}");
        }
        assert_eq!(t.client_ip(&req("::ffff:192.0.2.1", None)), ip("192.0.2.1"));
        let none = TrustedProxies::default();
        assert_eq!(
            none.client_ip(&req("127.0.0.1", Some("203.0.113.7"))),
            ip("127.0.0.1")
        );
    }
}

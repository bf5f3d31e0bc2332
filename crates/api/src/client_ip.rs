//! The client's address: the socket's peer, or — only when that peer is a configured
//! proxy — the address the proxies recorded in `X-Forwarded-For`.

use axum::extract::ConnectInfo;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{Extensions, HeaderMap, Request};
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// The proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Arc<Vec<IpNet>>);

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
        Ok(TrustedProxies(Arc::new(nets)))
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(&ip))
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
            .map(|c| c.0.ip())?;
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
            match hop.parse::<IpAddr>() {
                Ok(ip) => {
                    client = ip;
                    if !self.trusts(ip) {
                        break;
                    }
                }
                // A hop we cannot read ends what we can believe.
                Err(_) => break,
            }
        }
        Some(client)
    }
}

/// The client's address as a handler argument; `None` only without a socket (tests).
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub Option<IpAddr>);

impl ClientIp {
    /// The address as a rate-limit key (`unknown` without a socket).
    pub fn key(&self) -> String {
        self.0
            .map_or_else(|| "unknown".to_owned(), |ip| ip.to_string())
    }
}

impl FromRequestParts<crate::AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &crate::AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(
            state.proxies.client_of(&parts.extensions, &parts.headers),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let none = TrustedProxies::default();
        assert_eq!(
            none.client_ip(&req("127.0.0.1", Some("203.0.113.7"))),
            ip("127.0.0.1")
        );
    }
}

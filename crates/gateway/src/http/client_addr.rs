//! Who is asking, by address: the TCP peer, unless the peer is one of the
//! configured `auth.trusted_proxies`, whose forwarding header then names
//! the client. A header from anyone else is ignored: it is what an
//! attacker would send to dodge the per-address login limit or to pin it
//! on someone else. Only the configured header is read
//! (`auth.forwarded_header`: `X-Forwarded-For`, which nginx and Caddy
//! append to, or RFC 7239 `Forwarded`); a proxy passes the other through
//! from the client untouched, so it would be the client's own words.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;

use crate::app::AppState;
use crate::config::ForwardedHeader;
use crate::http::error::ApiError;

/// The client's address, as far as the trusted proxies say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let ConnectInfo(peer) = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .copied()
            .ok_or_else(|| ApiError::internal("the connection's peer address is unknown"))?;
        Ok(ClientAddr(client_of(
            peer.ip(),
            &parts.headers,
            &state.config.auth.trusted_proxies,
            state.config.auth.forwarded_header,
        )))
    }
}

/// The nearest address in the forwarding chain that is not a trusted proxy
/// (proxies append; only the hops after the last untrusted one are ours).
/// Addresses are compared in canonical form (`::ffff:127.0.0.1` is
/// `127.0.0.1`), as a dual-stack listener reports IPv4 peers mapped.
pub fn client_of(
    peer: IpAddr,
    headers: &HeaderMap,
    trusted: &[IpAddr],
    header: ForwardedHeader,
) -> IpAddr {
    let peer = peer.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|t| t.to_canonical() == *ip);
    if !is_trusted(&peer) {
        return peer;
    }
    let mut chain = forwarded_chain(headers, header);
    while let Some(hop) = chain.pop() {
        if !is_trusted(&hop) {
            return hop;
        }
    }
    peer
}

/// The addresses the header lists, first hop first. A chain with an
/// unreadable hop (or, in `Forwarded`, an element without a readable
/// `for=`: `unknown`, an obfuscated `_name`) is not believed past it.
fn forwarded_chain(headers: &HeaderMap, header: ForwardedHeader) -> Vec<IpAddr> {
    let name = match header {
        ForwardedHeader::XForwardedFor => "x-forwarded-for",
        ForwardedHeader::Forwarded => "forwarded",
    };
    let hops: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|element| match header {
            ForwardedHeader::XForwardedFor => element,
            // `for=192.0.2.60;proto=http;by=203.0.113.43`: its `for`.
            ForwardedHeader::Forwarded => element
                .split(';')
                .filter_map(|pair| pair.trim().split_once('='))
                .find(|(key, _)| key.eq_ignore_ascii_case("for"))
                .map_or("", |(_, value)| value),
        })
        .collect();
    let mut chain = Vec::new();
    // Read from the nearest hop backwards; stop at the first that is not
    // an address (everything before it is the client's to invent).
    for hop in hops.iter().rev() {
        match parse_hop(hop) {
            Some(ip) => chain.push(ip.to_canonical()),
            None => break,
        }
    }
    chain.reverse();
    chain
}

/// `1.2.3.4`, `1.2.3.4:80`, `"[2001:db8::1]:4711"`, `2001:db8::1`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim().trim_matches('"');
    if let Ok(ip) = hop.parse() {
        return Some(ip);
    }
    if let Ok(addr) = hop.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    hop.strip_prefix('[')?
        .split_once(']')
        .and_then(|(ip, _)| ip.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    const PROXY: &str = "10.0.0.1";
    const XFF: ForwardedHeader = ForwardedHeader::XForwardedFor;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_trusted_proxies_are_believed() {
        let xff = headers(&[("x-forwarded-for", "203.0.113.7")]);
        assert_eq!(
            client_of(ip("198.51.100.2"), &xff, &[ip(PROXY)], XFF),
            ip("198.51.100.2")
        );
        assert_eq!(
            client_of(ip(PROXY), &xff, &[ip(PROXY)], XFF),
            ip("203.0.113.7")
        );
        assert_eq!(
            client_of(ip(PROXY), &HeaderMap::new(), &[ip(PROXY)], XFF),
            ip(PROXY)
        );
    }

    #[test]
    fn a_forged_first_hop_is_not_believed() {
        // The client sent "1.1.1.1" itself; the proxy appended the real one.
        let xff = headers(&[("x-forwarded-for", "1.1.1.1, 203.0.113.7")]);
        assert_eq!(
            client_of(ip(PROXY), &xff, &[ip(PROXY)], XFF),
            ip("203.0.113.7")
        );
        // Two trusted proxies in a row.
        let xff = headers(&[("x-forwarded-for", "203.0.113.7, 10.0.0.2")]);
        assert_eq!(
            client_of(ip(PROXY), &xff, &[ip(PROXY), ip("10.0.0.2")], XFF),
            ip("203.0.113.7")
        );
        // Garbage stops the walk: nothing before it is believed.
        let xff = headers(&[("x-forwarded-for", "203.0.113.9, nonsense, 10.0.0.2")]);
        assert_eq!(
            client_of(ip(PROXY), &xff, &[ip(PROXY), ip("10.0.0.2")], XFF),
            ip(PROXY)
        );
    }

    #[test]
    fn a_forwarded_header_from_the_client_is_not_believed() {
        let both = headers(&[
            ("forwarded", "for=198.51.100.99"),
            ("x-forwarded-for", "203.0.113.7"),
        ]);
        assert_eq!(
            client_of(ip(PROXY), &both, &[ip(PROXY)], XFF),
            ip("203.0.113.7")
        );
    }

    #[test]
    fn mapped_addresses_are_the_same_address() {
        let xff = headers(&[("x-forwarded-for", "[2001:db8::1]:4711, ::ffff:203.0.113.7")]);
        assert_eq!(
            client_of(ip("::ffff:10.0.0.1"), &xff, &[ip(PROXY)], XFF),
            ip("203.0.113.7")
        );
    }

    #[test]
    fn rfc_7239_forwarded_when_chosen() {
        let fwd = ForwardedHeader::Forwarded;
        let h = headers(&[(
            "forwarded",
            r#"for=1.1.1.1, for="[2001:db8:cafe::17]:4711";proto=https, For=10.0.0.2;by=10.0.0.1"#,
        )]);
        assert_eq!(
            client_of(ip(PROXY), &h, &[ip(PROXY), ip("10.0.0.2")], fwd),
            ip("2001:db8:cafe::17"),
            "the nearest untrusted hop, not the first (the client's own words)"
        );
        // An element with no address stops the walk.
        let h = headers(&[("forwarded", "for=203.0.113.7, for=unknown")]);
        assert_eq!(client_of(ip(PROXY), &h, &[ip(PROXY)], fwd), ip(PROXY));
        let h = headers(&[("forwarded", "proto=https;for=_hidden")]);
        assert_eq!(client_of(ip(PROXY), &h, &[ip(PROXY)], fwd), ip(PROXY));
        // The other header is not read.
        let h = headers(&[("x-forwarded-for", "203.0.113.7")]);
        assert_eq!(client_of(ip(PROXY), &h, &[ip(PROXY)], fwd), ip(PROXY));
    }
}

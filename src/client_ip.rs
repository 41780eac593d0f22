//! The client's IP address, for rate limits and logs. Behind a load
//! balancer every connection comes from the balancer, so `X-Forwarded-For`
//! is believed, but only when the connection comes from a configured
//! trusted proxy (`SWITCHBOARD_TRUSTED_PROXIES`); otherwise anyone could
//! pick the address they are limited and logged as.

use std::{
    net::{IpAddr, SocketAddr},
    sync::OnceLock,
};

use actix_web::http::header::HeaderMap;

static TRUSTED: OnceLock<Vec<IpAddr>> = OnceLock::new();

/// Sets the trusted proxies once for the process (later calls are ignored).
pub fn trust(proxies: Vec<IpAddr>) {
    let _ = TRUSTED.set(proxies);
}

fn trusted(ip: &IpAddr) -> bool {
    TRUSTED.get().is_some_and(|list| list.contains(ip))
}

/// The peer address, or, when the peer is a trusted proxy, the right-most
/// address in `X-Forwarded-For` that is not itself a trusted proxy.
pub fn client_ip(peer: Option<SocketAddr>, headers: &HeaderMap) -> Option<IpAddr> {
    let peer = peer?.ip();
    if !trusted(&peer) {
        return Some(peer);
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|a| a.trim().parse().ok())
        .collect();
    Some(
        forwarded
            .into_iter()
            .rev()
            .find(|ip| !trusted(ip))
            .unwrap_or(peer),
    )
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::{HeaderName, HeaderValue};

    use super::*;

    #[test]
    fn forwarded_addresses_count_only_from_a_trusted_proxy() {
        trust(vec!["10.0.0.1".parse().unwrap()]);
        let mut headers = HeaderMap::new();
        headers.insert(
            HeaderName::from_static("x-forwarded-for"),
            HeaderValue::from_static("1.2.3.4, 5.6.7.8"),
        );
        let from_proxy: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let from_client: SocketAddr = "9.9.9.9:5000".parse().unwrap();
        assert_eq!(
            client_ip(Some(from_proxy), &headers),
            Some("5.6.7.8".parse().unwrap())
        );
        assert_eq!(
            client_ip(Some(from_client), &headers),
            Some("9.9.9.9".parse().unwrap())
        );
        assert_eq!(
            client_ip(Some(from_proxy), &HeaderMap::new()),
            Some("10.0.0.1".parse().unwrap())
        );
    }
}

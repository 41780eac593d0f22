//! The SSRF guard: webhook URLs may not reach loopback, private,
//! link-local, metadata or otherwise internal addresses, unless the address
//! is in the configured allow-list.
//!
//! The check applies to the address actually connected to: the delivery
//! client resolves names through [`GuardedResolver`], which drops refused
//! addresses, so a name that resolves to a public address when the endpoint
//! is created and to an internal one later (DNS rebinding) is still refused.
//! URLs with a literal IP are checked before the request.

use std::{
    net::{IpAddr, SocketAddr, ToSocketAddrs},
    sync::Arc,
};

use ipnet::IpNet;

/// Which addresses deliveries may reach.
#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    allowed: Arc<Vec<IpNet>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlRefused {
    #[error("the URL must be absolute http:// or https:// with a host")]
    Malformed,
    #[error("`{0}` does not resolve to any address")]
    Unresolvable(String),
    #[error(
        "`{0}` is an internal address (loopback, private, link-local or metadata); allow it with SWITCHBOARD_WEBHOOK_ALLOW_NETWORKS"
    )]
    Internal(IpAddr),
}

impl AddressPolicy {
    pub fn new(allowed: Vec<IpNet>) -> Self {
        Self {
            allowed: Arc::new(allowed),
        }
    }

    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.allowed.iter().any(|net| net.contains(&ip)) || is_public(ip)
    }

    /// Checks a URL now: its literal address, or every address its name
    /// resolves to (all must be permitted).
    pub async fn check_url(&self, url: &url::Url) -> Result<(), UrlRefused> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(UrlRefused::Malformed);
        }
        let host = url.host().ok_or(UrlRefused::Malformed)?;
        let port = url.port_or_known_default().ok_or(UrlRefused::Malformed)?;
        let addresses: Vec<IpAddr> = match host {
            url::Host::Ipv4(ip) => vec![IpAddr::V4(ip)],
            url::Host::Ipv6(ip) => vec![IpAddr::V6(ip)],
            url::Host::Domain(name) => resolve(name, port).await?,
        };
        match addresses.into_iter().find(|ip| !self.permits(*ip)) {
            Some(ip) => Err(UrlRefused::Internal(ip)),
            None => Ok(()),
        }
    }

    /// Whether `url`'s host is an address written out, in the allow list
    /// itself (not merely public): what a plain `http://` URL must be.
    pub fn lists_literal(&self, url: &url::Url) -> bool {
        let ip = match url.host() {
            Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
            _ => return false,
        };
        let ip = canonical(ip);
        self.allowed.iter().any(|net| net.contains(&ip))
    }

    /// The literal address of a URL, if it has one and it is refused.
    pub fn refuses_literal(&self, url: &url::Url) -> Option<UrlRefused> {
        let ip = match url.host()? {
            url::Host::Ipv4(ip) => IpAddr::V4(ip),
            url::Host::Ipv6(ip) => IpAddr::V6(ip),
            url::Host::Domain(_) => return None,
        };
        (!self.permits(ip)).then_some(UrlRefused::Internal(ip))
    }
}

async fn resolve(name: &str, port: u16) -> Result<Vec<IpAddr>, UrlRefused> {
    let target = format!("{name}:{port}");
    let name = name.to_owned();
    let resolved = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tokio::task::spawn_blocking(move || {
            target
                .to_socket_addrs()
                .map(|addrs| addrs.map(|a| a.ip()).collect::<Vec<_>>())
        }),
    )
    .await;
    match resolved {
        Ok(Ok(Ok(addresses))) if !addresses.is_empty() => Ok(addresses),
        _ => Err(UrlRefused::Unresolvable(name)),
    }
}

/// IPv4-mapped IPv6 addresses are judged as the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Globally routable, as far as webhooks are concerned.
fn is_public(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_multicast()
                || a == 0
                // Carrier-grade NAT 100.64.0.0/10.
                || (a == 100 && (64..128).contains(&b))
                // IETF protocol assignments 192.0.0.0/24 (incl. some metadata services).
                || (a == 192 && b == 0 && c == 0)
                // Benchmarking 198.18.0.0/15.
                || (a == 198 && (b == 18 || b == 19))
                // Reserved 240.0.0.0/4.
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                // Unique local fc00::/7.
                || (first & 0xfe00) == 0xfc00
                // Link-local fe80::/10.
                || (first & 0xffc0) == 0xfe80
                // Documentation 2001:db8::/32.
                || (first == 0x2001 && v6.segments()[1] == 0x0db8)
                // NAT64 64:ff9b::/96 can reach internal IPv4.
                || (first == 0x0064 && v6.segments()[1] == 0xff9b))
        }
    }
}

/// The delivery client's resolver: the system's, minus refused addresses.
pub struct GuardedResolver {
    pub policy: AddressPolicy,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addresses = resolve(&host, 0).await.map_err(boxed)?;
            let permitted: Vec<SocketAddr> = addresses
                .into_iter()
                .filter(|ip| policy.permits(*ip))
                .map(|ip| SocketAddr::new(ip, 0))
                .collect();
            if permitted.is_empty() {
                return Err(boxed(UrlRefused::Unresolvable(format!(
                    "{host} (only internal addresses)"
                ))));
            }
            Ok(Box::new(permitted.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

fn boxed(e: UrlRefused) -> Box<dyn std::error::Error + Send + Sync> {
    Box::new(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn internal_addresses_are_refused_unless_allowed() {
        let strict = AddressPolicy::default();
        for url in [
            "http://169.254.169.254/latest/meta-data",
            "http://10.0.0.1/hook",
            "http://127.0.0.1:8080/",
            "http://[::1]/",
            "http://[::ffff:10.0.0.1]/",
            "http://192.168.1.1/",
            "http://100.100.100.200/",
            "http://localhost/",
        ] {
            let url = url::Url::parse(url).unwrap();
            assert!(strict.check_url(&url).await.is_err(), "{url}");
        }
        assert!(
            strict
                .check_url(&url::Url::parse("http://93.184.215.14/").unwrap())
                .await
                .is_ok()
        );
        assert!(
            strict
                .check_url(&url::Url::parse("ftp://93.184.215.14/").unwrap())
                .await
                .is_err()
        );
        let loopback = AddressPolicy::new(vec!["127.0.0.0/8".parse().unwrap()]);
        assert!(
            loopback
                .check_url(&url::Url::parse("http://127.0.0.1:9/").unwrap())
                .await
                .is_ok()
        );
        assert!(
            loopback
                .check_url(&url::Url::parse("http://10.0.0.1/").unwrap())
                .await
                .is_err()
        );
    }
}

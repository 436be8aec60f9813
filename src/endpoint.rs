//! The `host:port` part of `pcapovertcp::host:port`, and its resolution.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};

/// Why an endpoint string is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("endpoint is empty; expected HOST:PORT, e.g. pcapovertcp::127.0.0.1:57012")]
    Empty,
    #[error("\"{0}\" has no port; expected HOST:PORT, e.g. pcapovertcp::{0}:57012")]
    MissingPort(String),
    #[error("\"{0}\" has an empty host; expected HOST:PORT")]
    EmptyHost(String),
    #[error("\"{endpoint}\": port \"{port}\" is not a number from 1 to 65535")]
    BadPort { endpoint: String, port: String },
    #[error("\"{0}\": unbalanced brackets; write IPv6 addresses as [ADDR]:PORT")]
    Brackets(String),
    #[error("\"{0}\": IPv6 addresses need brackets, as in [::1]:57012")]
    BareIpv6(String),
    #[error("\"{0}\": unexpected text after the closing bracket; expected [ADDR]:PORT")]
    TrailingGarbage(String),
    #[error("\"{0}\": the host contains whitespace or a character that is not allowed")]
    BadHost(String),
}

/// A parsed PCAP-over-IP endpoint: the host as written (name or address) and the port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    host: String,
    port: u16,
}

impl Endpoint {
    /// Parses `host:port`, `[v6addr]:port` or `v4addr:port`.
    pub fn parse(text: &str) -> Result<Endpoint, EndpointError> {
        if text.is_empty() {
            return Err(EndpointError::Empty);
        }
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let close = rest
                .find(']')
                .ok_or_else(|| EndpointError::Brackets(text.to_string()))?;
            let host = &rest[..close];
            if host.contains('[') || host.contains(']') {
                return Err(EndpointError::Brackets(text.to_string()));
            }
            let after = &rest[close + 1..];
            let port = match after.strip_prefix(':') {
                Some(port) => port,
                None if after.is_empty() => {
                    return Err(EndpointError::MissingPort(text.to_string()))
                }
                None => return Err(EndpointError::TrailingGarbage(text.to_string())),
            };
            (host, port)
        } else {
            if text.contains(']') {
                return Err(EndpointError::Brackets(text.to_string()));
            }
            match text.rsplit_once(':') {
                None => return Err(EndpointError::MissingPort(text.to_string())),
                Some((host, _)) if host.contains(':') => {
                    return Err(EndpointError::BareIpv6(text.to_string()))
                }
                Some(parts) => parts,
            }
        };
        if host.is_empty() {
            return Err(EndpointError::EmptyHost(text.to_string()));
        }
        if host
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '/' || c == '@')
        {
            return Err(EndpointError::BadHost(text.to_string()));
        }
        let bad_port = || EndpointError::BadPort {
            endpoint: text.to_string(),
            port: port.to_string(),
        };
        // u16::from_str accepts a leading '+'; a port is digits only.
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad_port());
        }
        let port: u16 = port.parse().map_err(|_| bad_port())?;
        if port == 0 {
            return Err(bad_port());
        }
        Ok(Endpoint {
            host: host.to_string(),
            port,
        })
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Every address the host resolves to, in the resolver's order.
    /// The address itself when the host is an IP literal: no resolver needed.
    pub fn literal_addrs(&self) -> Option<Vec<SocketAddr>> {
        let ip: std::net::IpAddr = self.host.parse().ok()?;
        Some(vec![SocketAddr::new(ip, self.port)])
    }

    pub fn resolve(&self) -> std::io::Result<Vec<SocketAddr>> {
        (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map(|addrs| addrs.collect())
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> (String, u16) {
        let e = Endpoint::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        (e.host().to_string(), e.port())
    }

    #[test]
    fn accepts_the_documented_forms() {
        assert_eq!(ok("127.0.0.1:57012"), ("127.0.0.1".into(), 57012));
        assert_eq!(ok("[::1]:57012"), ("::1".into(), 57012));
        assert_eq!(ok("[fe80::1%lo]:1"), ("fe80::1%lo".into(), 1));
        assert_eq!(
            ok("sensor-feed.example:65535"),
            ("sensor-feed.example".into(), 65535)
        );
        assert_eq!(ok("localhost:80"), ("localhost".into(), 80));
    }

    #[test]
    fn display_round_trips() {
        for text in ["127.0.0.1:57012", "[::1]:57012", "localhost:1"] {
            assert_eq!(Endpoint::parse(text).unwrap().to_string(), text);
        }
    }

    #[test]
    fn rejects_each_malformed_form() {
        use EndpointError::*;
        type Check = fn(&EndpointError) -> bool;
        let cases: &[(&str, Check)] = &[
            ("", |e| matches!(e, Empty)),
            ("localhost", |e| matches!(e, MissingPort(_))),
            ("[::1]", |e| matches!(e, MissingPort(_))),
            (":57012", |e| matches!(e, EmptyHost(_))),
            ("[]:57012", |e| matches!(e, EmptyHost(_))),
            ("host:", |e| matches!(e, BadPort { .. })),
            ("host:0", |e| matches!(e, BadPort { .. })),
            ("host:70000", |e| matches!(e, BadPort { .. })),
            ("host:+80", |e| matches!(e, BadPort { .. })),
            ("host:80x", |e| matches!(e, BadPort { .. })),
            ("host:-1", |e| matches!(e, BadPort { .. })),
            ("[::1:57012", |e| matches!(e, Brackets(_))),
            ("::1]:57012", |e| matches!(e, Brackets(_))),
            ("[[::1]]:5", |e| matches!(e, Brackets(_))),
            ("::1:57012", |e| matches!(e, BareIpv6(_))),
            ("[::1]x:57012", |e| matches!(e, TrailingGarbage(_))),
            ("[::1]:57012 ", |e| matches!(e, BadPort { .. })),
            ("bad host:1", |e| matches!(e, BadHost(_))),
            ("user@host:1", |e| matches!(e, BadHost(_))),
        ];
        for (text, want) in cases {
            match Endpoint::parse(text) {
                Ok(e) => panic!("{text:?} was accepted as {e}"),
                Err(e) => assert!(want(&e), "{text:?}: unexpected error {e:?}"),
            }
        }
    }

    #[test]
    fn errors_name_the_endpoint() {
        let msg = Endpoint::parse("host:70000").unwrap_err().to_string();
        assert!(msg.contains("host:70000") && msg.contains("70000"), "{msg}");
    }

    #[test]
    fn resolves_loopback_names() {
        let v6 = Endpoint::parse("[::1]:9").unwrap().resolve().unwrap();
        assert_eq!(v6, vec!["[::1]:9".parse().unwrap()]);
        let v4 = Endpoint::parse("127.0.0.1:9").unwrap().resolve().unwrap();
        assert_eq!(v4, vec!["127.0.0.1:9".parse().unwrap()]);
    }
}

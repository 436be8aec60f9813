//! The interface name after `pcapovertcp::`, and the resolution of its endpoints.
//!
//! ```text
//! SPEC     = ENDPOINT *( "," ENDPOINT ) [ "?share=" I [ "+" K ] "/" N ]
//! ENDPOINT = [ SCHEME "://" ] HOST ":" PORT
//! SCHEME   = "tcp" | "tcp-listen" | "tls" | "tls-listen"      (default tcp)
//!          | "tcp+zstd" | "tcp+zstd-listen" | "tls+zstd" | "tls+zstd-listen"
//! ```
//!
//! The `+zstd` schemes carry the same PCAP-over-IP stream compressed with
//! zstd (see [`crate::net::compress`]): for thin links between this
//! project's own ends (the plugin and pcapovertcp-serve), which must both
//! say `+zstd`; plain PCAP-over-IP peers use the others.
//!
//! HOST is a name, an IPv4 address or `[IPv6]` (a zone such as `%lo` is
//! allowed inside the brackets); it may be empty only for the listen schemes,
//! where it means every local address. PORT is 1..65535, digits only.
//! `?share=I/N` (0 <= I < N <= 1024; I is 0-based, as systemd's
//! `${worker_index0}`) applies to the whole SPEC. `?share=I+K/N` is share
//! I+K (< N): a host's offset K plus its worker's index I, for generators
//! that substitute only a per-host index (`${host_worker_index0}+4/8`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};

/// The most endpoints one SPEC may list.
pub const MAX_ENDPOINTS: usize = 64;
/// The largest N in `?share=I/N`.
pub const MAX_SHARE_COUNT: u32 = 1024;

/// Why an endpoint string is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("endpoint is empty; expected [SCHEME://]HOST:PORT[,...][?share=I/N], e.g. pcapovertcp::127.0.0.1:57012")]
    Empty,
    #[error("\"{0}\" has no port; expected HOST:PORT, e.g. pcapovertcp::{0}:57012")]
    MissingPort(String),
    #[error("\"{0}\" has an empty host; expected HOST:PORT (an empty host is only allowed with tcp-listen:// or tls-listen://)")]
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
    #[error("\"{endpoint}\": unknown scheme \"{scheme}\"; expected tcp://, tcp-listen://, tls://, tls-listen:// or, compressed between this project's own ends, tcp+zstd://, tcp+zstd-listen://, tls+zstd://, tls+zstd-listen://")]
    UnknownScheme { endpoint: String, scheme: String },
    #[error(
        "\"{0}\": nothing after the scheme; expected SCHEME://HOST:PORT, e.g. {0}127.0.0.1:57012"
    )]
    NoAddress(String),
    #[error("\"{0}\": expected a single [SCHEME://]HOST:PORT here, without ',' or '?'")]
    NotSingle(String),
    #[error("\"{0}\" has an empty endpoint; expected [SCHEME://]HOST:PORT[,...][?share=I/N] with no empty item between, before or after the commas")]
    EmptyElement(String),
    #[error("\"{spec}\" lists {count} endpoints; at most 64 are allowed")]
    TooMany { spec: String, count: usize },
    #[error("\"{spec}\" lists \"{endpoint}\" more than once; each endpoint may appear only once")]
    Duplicate { spec: String, endpoint: String },
    #[error("\"{0}\" has more than one '?'; expected [SCHEME://]HOST:PORT[,...][?share=I/N]")]
    ExtraQuery(String),
    #[error("\"{0}\": nothing after '?'; expected ?share=I/N")]
    EmptyOption(String),
    #[error("\"{spec}\": unknown option \"{key}\"; the only option is ?share=I/N")]
    UnknownOption { spec: String, key: String },
    #[error("\"{spec}\": \"{share}\" is not share=I/N or share=I+K/N with digits only and 0 <= I (+K) < N <= 1024 (I counts from 0)")]
    BadShare { spec: String, share: String },
}

/// How an endpoint is used: connect to it or listen on it, plain or TLS,
/// and whether the stream inside is zstd-compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    Tcp,
    TcpListen,
    Tls,
    TlsListen,
    TcpZstd,
    TcpZstdListen,
    TlsZstd,
    TlsZstdListen,
}

impl Scheme {
    const ALL: [Scheme; 8] = [
        Scheme::Tcp,
        Scheme::TcpListen,
        Scheme::Tls,
        Scheme::TlsListen,
        Scheme::TcpZstd,
        Scheme::TcpZstdListen,
        Scheme::TlsZstd,
        Scheme::TlsZstdListen,
    ];

    /// Listens for the sender instead of connecting to it.
    pub fn is_listen(self) -> bool {
        matches!(
            self,
            Scheme::TcpListen | Scheme::TlsListen | Scheme::TcpZstdListen | Scheme::TlsZstdListen
        )
    }

    pub fn is_tls(self) -> bool {
        matches!(
            self,
            Scheme::Tls | Scheme::TlsListen | Scheme::TlsZstd | Scheme::TlsZstdListen
        )
    }

    /// The stream inside is zstd-compressed (`+zstd`).
    pub fn is_zstd(self) -> bool {
        matches!(
            self,
            Scheme::TcpZstd | Scheme::TcpZstdListen | Scheme::TlsZstd | Scheme::TlsZstdListen
        )
    }

    /// The name as written before `://`: "tcp", "tcp-listen", "tls",
    /// "tls-listen", and the same with "+zstd" after "tcp" or "tls".
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Tcp => "tcp",
            Scheme::TcpListen => "tcp-listen",
            Scheme::Tls => "tls",
            Scheme::TlsListen => "tls-listen",
            Scheme::TcpZstd => "tcp+zstd",
            Scheme::TcpZstdListen => "tcp+zstd-listen",
            Scheme::TlsZstd => "tls+zstd",
            Scheme::TlsZstdListen => "tls+zstd-listen",
        }
    }

    /// Case-sensitive: only the lower-case names.
    fn from_name(name: &str) -> Option<Scheme> {
        Scheme::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed PCAP-over-IP endpoint: the scheme, the host as written (name or
/// address; empty = every local address, listen schemes only) and the port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    scheme: Scheme,
    host: String,
    port: u16,
}

impl Endpoint {
    /// Parses one `[SCHEME://]HOST:PORT`: `host:port`, `[v6addr]:port` or
    /// `v4addr:port`, optionally behind a scheme (`tcp://`, `tcp-listen://`,
    /// `tls://`, `tls-listen://`, or one of them with `+zstd`). A list or a `?share=` is an error here; see
    /// [`Spec::parse`].
    pub fn parse(text: &str) -> Result<Endpoint, EndpointError> {
        if text.is_empty() {
            return Err(EndpointError::Empty);
        }
        if text.contains([',', '?']) {
            return Err(EndpointError::NotSingle(text.to_string()));
        }
        Endpoint::parse_one(text)
    }

    /// One ENDPOINT, already split out of its SPEC (no ',' or '?' in it).
    fn parse_one(text: &str) -> Result<Endpoint, EndpointError> {
        let (scheme, addr) = match text.find("://") {
            None => (Scheme::Tcp, text),
            Some(at) => {
                let name = &text[..at];
                let scheme =
                    Scheme::from_name(name).ok_or_else(|| EndpointError::UnknownScheme {
                        endpoint: text.to_string(),
                        scheme: name.to_string(),
                    })?;
                (scheme, &text[at + 3..])
            }
        };
        if addr.is_empty() {
            return Err(if addr.len() == text.len() {
                EndpointError::Empty
            } else {
                EndpointError::NoAddress(text.to_string())
            });
        }
        let bad_host = |host: &str| {
            host.chars()
                .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '/' | '@' | ',' | '?'))
        };
        let (host, port) = if let Some(rest) = addr.strip_prefix('[') {
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
            if addr.contains(['[', ']']) {
                return Err(EndpointError::Brackets(text.to_string()));
            }
            match addr.rsplit_once(':') {
                None => return Err(EndpointError::MissingPort(text.to_string())),
                Some((host, _)) if bad_host(host) => {
                    return Err(EndpointError::BadHost(text.to_string()))
                }
                Some((host, _)) if host.contains(':') => {
                    return Err(EndpointError::BareIpv6(text.to_string()))
                }
                Some(parts) => parts,
            }
        };
        if host.is_empty() && !scheme.is_listen() {
            return Err(EndpointError::EmptyHost(text.to_string()));
        }
        if bad_host(host) {
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
        // Port 0 listens on any free port (the listening line names it, and
        // `Source::listening` gives it); there is nothing to connect to.
        if port == 0 && !scheme.is_listen() {
            return Err(bad_port());
        }
        Ok(Endpoint {
            scheme,
            host: host.to_string(),
            port,
        })
    }

    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The host as written, without brackets; "" = every local address.
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address itself when the host is an IP literal: no resolver needed.
    /// None for names and for the empty host.
    pub fn literal_addrs(&self) -> Option<Vec<SocketAddr>> {
        let ip: IpAddr = self.host.parse().ok()?;
        Some(vec![SocketAddr::new(ip, self.port)])
    }

    /// Every address the host resolves to, in the resolver's order. The
    /// empty host (listen only) gives the same as [`Endpoint::bind_addrs`].
    pub fn resolve(&self) -> std::io::Result<Vec<SocketAddr>> {
        if self.host.is_empty() {
            return Ok(self.any_addrs());
        }
        (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map(|addrs| addrs.collect())
    }

    /// For listen endpoints: the addresses to bind. Empty host -> [::]:PORT
    /// first then 0.0.0.0:PORT (the caller tries a dual-stack [::] and falls
    /// back to 0.0.0.0); otherwise resolve().
    pub fn bind_addrs(&self) -> std::io::Result<Vec<SocketAddr>> {
        if self.host.is_empty() {
            Ok(self.any_addrs())
        } else {
            self.resolve()
        }
    }

    fn any_addrs(&self) -> Vec<SocketAddr> {
        vec![
            SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), self.port),
            SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), self.port),
        ]
    }

    /// Whether two endpoints name the same thing: same scheme and port, and
    /// the same host up to ASCII case or the same IP address however written.
    fn same_as(&self, other: &Endpoint) -> bool {
        self.scheme == other.scheme
            && self.port == other.port
            && (self.host.eq_ignore_ascii_case(&other.host)
                || matches!(
                    (self.host.parse::<IpAddr>(), other.host.parse::<IpAddr>()),
                    (Ok(a), Ok(b)) if a == b
                ))
    }
}

impl fmt::Display for Endpoint {
    /// `host:port` or `[v6]:port` for tcp (so existing messages read as
    /// before); `scheme://host:port` for the others. Parses back to itself.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.scheme != Scheme::Tcp {
            write!(f, "{}://", self.scheme)?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// `?share=I/N`: this instance takes share `index` (0-based) of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    pub index: u32,
    pub count: u32,
}

impl fmt::Display for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The whole interface name after `pcapovertcp::`: one or more endpoints
/// (distinct, at most [`MAX_ENDPOINTS`]) and an optional share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub endpoints: Vec<Endpoint>,
    pub share: Option<Share>,
}

impl Spec {
    /// Parses `ENDPOINT *( "," ENDPOINT ) [ "?share=" I "/" N ]`.
    pub fn parse(text: &str) -> Result<Spec, EndpointError> {
        if text.is_empty() {
            return Err(EndpointError::Empty);
        }
        // Split off the query first: neither ',' nor '?' occurs in a host.
        let (list, share) = match text.split_once('?') {
            None => (text, None),
            Some(_) if text.matches('?').nth(1).is_some() => {
                return Err(EndpointError::ExtraQuery(text.to_string()))
            }
            Some((list, query)) => (list, Some(parse_query(text, query)?)),
        };
        let count = list.split(',').count();
        if count > MAX_ENDPOINTS {
            return Err(EndpointError::TooMany {
                spec: text.to_string(),
                count,
            });
        }
        let mut endpoints: Vec<Endpoint> = Vec::with_capacity(count);
        for item in list.split(',') {
            if item.is_empty() {
                return Err(EndpointError::EmptyElement(text.to_string()));
            }
            let endpoint = Endpoint::parse_one(item)?;
            if endpoints.iter().any(|e| e.same_as(&endpoint)) {
                return Err(EndpointError::Duplicate {
                    spec: text.to_string(),
                    endpoint: item.to_string(),
                });
            }
            endpoints.push(endpoint);
        }
        Ok(Spec { endpoints, share })
    }
}

/// The text after '?': `share=I/N` or `share=I+K/N` and nothing else.
fn parse_query(spec: &str, query: &str) -> Result<Share, EndpointError> {
    if query.is_empty() {
        return Err(EndpointError::EmptyOption(spec.to_string()));
    }
    let bad_share = || EndpointError::BadShare {
        spec: spec.to_string(),
        share: query.to_string(),
    };
    let (key, value) = query.split_once('=').unwrap_or((query, ""));
    if key != "share" {
        return Err(EndpointError::UnknownOption {
            spec: spec.to_string(),
            key: key.to_string(),
        });
    }
    let (index, count) = value.split_once('/').ok_or_else(bad_share)?;
    let number = |digits: &str| -> Result<u32, EndpointError> {
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad_share());
        }
        digits.parse().map_err(|_| bad_share())
    };
    // I+K: the generator fills I per worker, the operator writes K per host.
    let index = match index.split_once('+') {
        Some((i, k)) => number(i)?.checked_add(number(k)?).ok_or_else(bad_share)?,
        None => number(index)?,
    };
    let count = number(count)?;
    if count == 0 || index >= count || count > MAX_SHARE_COUNT {
        return Err(bad_share());
    }
    Ok(Share { index, count })
}

impl fmt::Display for Spec {
    /// The endpoints joined by ',' and `?share=I/N`. Parses back to itself.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, endpoint) in self.endpoints.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{endpoint}")?;
        }
        if let Some(share) = self.share {
            write!(f, "?share={share}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> (String, u16) {
        let e = Endpoint::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        (e.host().to_string(), e.port())
    }

    fn spec(text: &str) -> Spec {
        Spec::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    /// (scheme, host, port) of each endpoint, and the share as (I, N).
    type Parts = (Vec<(Scheme, String, u16)>, Option<(u32, u32)>);

    fn parts(text: &str) -> Parts {
        let s = spec(text);
        let eps = s
            .endpoints
            .iter()
            .map(|e| (e.scheme(), e.host().to_string(), e.port()))
            .collect();
        (eps, s.share.map(|s| (s.index, s.count)))
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
    fn accepts_schemes() {
        use Scheme::*;
        let cases: &[(&str, Scheme, &str, u16)] = &[
            ("h:1", Tcp, "h", 1),
            ("tcp://h:1", Tcp, "h", 1),
            ("tcp://[::1]:2", Tcp, "::1", 2),
            ("tls://sensor.example:443", Tls, "sensor.example", 443),
            ("tcp-listen://:57012", TcpListen, "", 57012),
            ("tcp-listen://0.0.0.0:57012", TcpListen, "0.0.0.0", 57012),
            ("tcp-listen://[::]:57012", TcpListen, "::", 57012),
            ("tcp-listen://[fe80::1%lo]:3", TcpListen, "fe80::1%lo", 3),
            ("tls-listen://:4", TlsListen, "", 4),
            ("tls-listen://localhost:5", TlsListen, "localhost", 5),
            ("tcp+zstd://h:6", TcpZstd, "h", 6),
            ("tcp+zstd-listen://:7", TcpZstdListen, "", 7),
            ("tls+zstd://[::1]:8", TlsZstd, "::1", 8),
            ("tls+zstd-listen://0.0.0.0:9", TlsZstdListen, "0.0.0.0", 9),
        ];
        for &(text, scheme, host, port) in cases {
            let e = Endpoint::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(
                (e.scheme(), e.host(), e.port()),
                (scheme, host, port),
                "{text}"
            );
            assert_eq!(spec(text).endpoints, vec![e], "{text}");
        }
    }

    #[test]
    fn scheme_properties() {
        use Scheme::*;
        let table = [
            (Tcp, "tcp", false, false),
            (TcpListen, "tcp-listen", true, false),
            (Tls, "tls", false, true),
            (TlsListen, "tls-listen", true, true),
            (TcpZstd, "tcp+zstd", false, false),
            (TcpZstdListen, "tcp+zstd-listen", true, false),
            (TlsZstd, "tls+zstd", false, true),
            (TlsZstdListen, "tls+zstd-listen", true, true),
        ];
        for (s, name, listen, tls) in table {
            assert_eq!((s.as_str(), s.is_listen(), s.is_tls()), (name, listen, tls));
            assert_eq!(s.to_string(), name);
            assert_eq!(s.is_zstd(), name.contains("+zstd"), "{name}");
        }
    }

    #[test]
    fn accepts_lists_and_shares() {
        use Scheme::*;
        assert_eq!(
            parts("a:1,tcp-listen://:2"),
            (vec![(Tcp, "a".into(), 1), (TcpListen, "".into(), 2)], None)
        );
        assert_eq!(
            parts("h:1?share=2/4"),
            (vec![(Tcp, "h".into(), 1)], Some((2, 4)))
        );
        assert_eq!(
            parts("[::1]:1,[::2]:2"),
            (vec![(Tcp, "::1".into(), 1), (Tcp, "::2".into(), 2)], None)
        );
        assert_eq!(
            parts("[::1]:1,tls://[fe80::1%lo]:2?share=0/1"),
            (
                vec![(Tcp, "::1".into(), 1), (Tls, "fe80::1%lo".into(), 2)],
                Some((0, 1))
            )
        );
        assert_eq!(parts("h:1?share=1023/1024").1, Some((1023, 1024)));
        assert_eq!(parts("h:1?share=01/04").1, Some((1, 4)));
        // I+K: a host's offset K plus its worker's index I.
        assert_eq!(parts("h:1?share=0+4/8").1, Some((4, 8)));
        assert_eq!(parts("h:1?share=3+4/8").1, Some((7, 8)));
        assert_eq!(parts("h:1?share=2+0/4").1, Some((2, 4)));
        assert_eq!(parts("h:1?share=0+1023/1024").1, Some((1023, 1024)));
        // The same host and port under different schemes are different endpoints.
        assert_eq!(parts("h:1,tls://h:1,tcp-listen://h:1").0.len(), 3);
        assert_eq!(parts("h:1,tcp+zstd://h:1").0.len(), 2);
        let many: Vec<String> = (1..=MAX_ENDPOINTS).map(|p| format!("h:{p}")).collect();
        assert_eq!(spec(&many.join(",")).endpoints.len(), MAX_ENDPOINTS);
    }

    #[test]
    fn display_round_trips() {
        for text in ["127.0.0.1:57012", "[::1]:57012", "localhost:1"] {
            assert_eq!(Endpoint::parse(text).unwrap().to_string(), text);
        }
        for text in [
            "tcp-listen://:57012",
            "tcp-listen://0.0.0.0:57012",
            "tcp-listen://[::]:57012",
            "tls://h:443",
            "tls-listen://[fe80::1%lo]:1",
            "tcp+zstd://h:1",
            "tcp+zstd-listen://:2",
            "tls+zstd://h:3",
            "tls+zstd-listen://[::]:4",
        ] {
            assert_eq!(Endpoint::parse(text).unwrap().to_string(), text);
        }
        // tcp:// is the default and is not written back.
        assert_eq!(Endpoint::parse("tcp://h:1").unwrap().to_string(), "h:1");
        for text in [
            "h:1",
            "a:1,tcp-listen://:2",
            "h:1?share=2/4",
            "[::1]:1,[::2]:2,tls-listen://:3?share=0/1024",
        ] {
            let s = spec(text);
            assert_eq!(s.to_string(), text);
            assert_eq!(Spec::parse(&s.to_string()), Ok(s));
        }
        let s = spec("tcp://[::1]:1,tcp-listen://[]:2?share=002/3");
        assert_eq!(s.to_string(), "[::1]:1,tcp-listen://:2?share=2/3");
        assert_eq!(Spec::parse(&s.to_string()), Ok(s));
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
            ("a[b:5", |e| matches!(e, Brackets(_))),
            ("::1:57012", |e| matches!(e, BareIpv6(_))),
            ("[::1]x:57012", |e| matches!(e, TrailingGarbage(_))),
            ("[::1]:57012 ", |e| matches!(e, BadPort { .. })),
            ("bad host:1", |e| matches!(e, BadHost(_))),
            ("user@host:1", |e| matches!(e, BadHost(_))),
            ("tcp:/h:1", |e| matches!(e, BadHost(_))),
            ("tcp://tcp://h:1", |e| matches!(e, BadHost(_))),
            ("udp://h:1", |e| matches!(e, UnknownScheme { .. })),
            ("http://h:1", |e| matches!(e, UnknownScheme { .. })),
            ("TCP://h:1", |e| matches!(e, UnknownScheme { .. })),
            ("zstd://h:1", |e| matches!(e, UnknownScheme { .. })),
            ("tcp+gzip://h:1", |e| matches!(e, UnknownScheme { .. })),
            ("tcp-listen+zstd://:1", |e| {
                matches!(e, UnknownScheme { .. })
            }),
            ("tcp+zstd://:1", |e| matches!(e, EmptyHost(_))),
            ("://h:1", |e| matches!(e, UnknownScheme { .. })),
            (" tcp://h:1", |e| matches!(e, UnknownScheme { .. })),
            ("tcp://", |e| matches!(e, NoAddress(_))),
            ("tcp-listen://", |e| matches!(e, NoAddress(_))),
            ("tcp://:1", |e| matches!(e, EmptyHost(_))),
            ("tls://:1", |e| matches!(e, EmptyHost(_))),
            ("tcp://h:0", |e| matches!(e, BadPort { .. })),
            ("tls://h:0", |e| matches!(e, BadPort { .. })),
            ("tcp-listen://57012", |e| matches!(e, MissingPort(_))),
            ("tls-listen://:", |e| matches!(e, BadPort { .. })),
        ];
        for (text, want) in cases {
            match Endpoint::parse(text) {
                Ok(e) => panic!("{text:?} was accepted as {e}"),
                Err(e) => assert!(want(&e), "{text:?}: unexpected error {e:?}"),
            }
            // A single endpoint fails the same way as a SPEC.
            match Spec::parse(text) {
                Ok(s) => panic!("{text:?} was accepted as {s}"),
                Err(e) => assert!(want(&e), "{text:?} as a spec: unexpected error {e:?}"),
            }
        }
    }

    #[test]
    fn rejects_each_malformed_spec() {
        use EndpointError::*;
        type Check = fn(&EndpointError) -> bool;
        let cases: &[(&str, Check)] = &[
            ("a:1,,b:2", |e| matches!(e, EmptyElement(_))),
            ("a:1,", |e| matches!(e, EmptyElement(_))),
            (",a:1", |e| matches!(e, EmptyElement(_))),
            (",", |e| matches!(e, EmptyElement(_))),
            ("?share=1/2", |e| matches!(e, EmptyElement(_))),
            ("a:1,?share=1/2", |e| matches!(e, EmptyElement(_))),
            ("a:1,b", |e| matches!(e, MissingPort(_))),
            ("a:1, b:2", |e| matches!(e, BadHost(_))),
            ("a:1 ,b:2", |e| matches!(e, BadPort { .. })),
            ("a:1,udp://b:2", |e| matches!(e, UnknownScheme { .. })),
            ("a:1,tcp://", |e| matches!(e, NoAddress(_))),
            ("a:1,a:1", |e| matches!(e, Duplicate { .. })),
            ("a:1,tcp://a:1", |e| matches!(e, Duplicate { .. })),
            ("A:1,a:1", |e| matches!(e, Duplicate { .. })),
            ("[::1]:1,[0::1]:1", |e| matches!(e, Duplicate { .. })),
            ("tcp-listen://:1,tcp-listen://[]:1", |e| {
                matches!(e, Duplicate { .. })
            }),
            ("a:1?share=1/2?share=1/2", |e| matches!(e, ExtraQuery(_))),
            ("a:1??", |e| matches!(e, ExtraQuery(_))),
            ("a:1?", |e| matches!(e, EmptyOption(_))),
            ("a:1?shard=1/2", |e| matches!(e, UnknownOption { .. })),
            ("a:1?Share=1/2", |e| matches!(e, UnknownOption { .. })),
            ("a:1?=1/2", |e| matches!(e, UnknownOption { .. })),
            ("a:1? share=1/2", |e| matches!(e, UnknownOption { .. })),
            ("a:1?share", |e| matches!(e, BadShare { .. })),
            ("a:1?share=", |e| matches!(e, BadShare { .. })),
            ("a:1?share=1", |e| matches!(e, BadShare { .. })),
            ("a:1?share=/2", |e| matches!(e, BadShare { .. })),
            ("a:1?share=1/", |e| matches!(e, BadShare { .. })),
            ("a:1?share=2/2", |e| matches!(e, BadShare { .. })),
            ("a:1?share=3/2", |e| matches!(e, BadShare { .. })),
            ("a:1?share=0/0", |e| matches!(e, BadShare { .. })),
            ("a:1?share=1/1025", |e| matches!(e, BadShare { .. })),
            ("a:1?share=+1/2", |e| matches!(e, BadShare { .. })),
            ("a:1?share=1/2 ", |e| matches!(e, BadShare { .. })),
            ("a:1?share=1/2/3", |e| matches!(e, BadShare { .. })),
            ("a:1?share=4+4/8", |e| matches!(e, BadShare { .. })),
            ("a:1?share=1+/2", |e| matches!(e, BadShare { .. })),
            ("a:1?share=1++1/4", |e| matches!(e, BadShare { .. })),
            ("a:1?share=1+1+1/4", |e| matches!(e, BadShare { .. })),
            ("a:1?share=1+-1/4", |e| matches!(e, BadShare { .. })),
            ("a:1?share=4294967295+1/8", |e| matches!(e, BadShare { .. })),
            ("a:1?share=${host_worker_index0}+4/8", |e| {
                matches!(e, BadShare { .. })
            }),
            ("a:1?share=1/2&x=1", |e| matches!(e, BadShare { .. })),
            ("a:1?share=1/99999999999", |e| matches!(e, BadShare { .. })),
        ];
        for (text, want) in cases {
            match Spec::parse(text) {
                Ok(s) => panic!("{text:?} was accepted as {s}"),
                Err(e) => assert!(want(&e), "{text:?}: unexpected error {e:?}"),
            }
        }
        let many: Vec<String> = (1..=MAX_ENDPOINTS + 1).map(|p| format!("h:{p}")).collect();
        assert_eq!(
            Spec::parse(&many.join(",")),
            Err(TooMany {
                spec: many.join(","),
                count: MAX_ENDPOINTS + 1
            })
        );
    }

    #[test]
    fn a_single_endpoint_refuses_lists_and_options() {
        for text in ["a:1,b:2", "[::1]:1,[::2]:2", "h:1?share=1/2", "h:1,"] {
            assert!(
                matches!(Endpoint::parse(text), Err(EndpointError::NotSingle(_))),
                "{text}"
            );
        }
    }

    #[test]
    fn errors_name_the_endpoint() {
        let msg = Endpoint::parse("host:70000").unwrap_err().to_string();
        assert!(msg.contains("host:70000") && msg.contains("70000"), "{msg}");
        let msg = Spec::parse("a:1,udp://b:2").unwrap_err().to_string();
        assert!(
            msg.contains("udp://b:2")
                && msg.contains("tls-listen://")
                && msg.contains("tcp+zstd://"),
            "{msg}"
        );
        let msg = Spec::parse("a:1?max=3").unwrap_err().to_string();
        assert!(
            msg.contains("\"max\"") && msg.contains("share=I/N"),
            "{msg}"
        );
        let msg = Spec::parse("tcp://:1").unwrap_err().to_string();
        assert!(msg.contains("tcp-listen://"), "{msg}");
        let msg = Spec::parse("").unwrap_err().to_string();
        assert!(msg.contains("pcapovertcp::127.0.0.1:57012"), "{msg}");
        let msg = Spec::parse("a:1,a:1").unwrap_err().to_string();
        assert!(msg.contains("\"a:1\" more than once"), "{msg}");
        // Each message is one line.
        for text in ["", "x", "a:1,,b:2", "a:1?share=5/4", "ftp://h:1", "a:1??"] {
            let msg = Spec::parse(text).unwrap_err().to_string();
            assert!(!msg.contains('\n'), "{msg}");
        }
    }

    #[test]
    fn resolves_loopback_names() {
        let v6 = Endpoint::parse("[::1]:9").unwrap().resolve().unwrap();
        assert_eq!(v6, vec!["[::1]:9".parse().unwrap()]);
        let v4 = Endpoint::parse("127.0.0.1:9").unwrap().resolve().unwrap();
        assert_eq!(v4, vec!["127.0.0.1:9".parse().unwrap()]);
    }

    #[test]
    fn binds_every_address_for_an_empty_host() {
        let any = Endpoint::parse("tcp-listen://:57012").unwrap();
        let want: Vec<SocketAddr> = vec![
            "[::]:57012".parse().unwrap(),
            "0.0.0.0:57012".parse().unwrap(),
        ];
        assert_eq!(any.bind_addrs().unwrap(), want);
        assert_eq!(any.resolve().unwrap(), want);
        assert_eq!(any.literal_addrs(), None);
        let v4 = Endpoint::parse("tls-listen://0.0.0.0:1").unwrap();
        assert_eq!(v4.bind_addrs().unwrap(), vec!["0.0.0.0:1".parse().unwrap()]);
        let v6 = Endpoint::parse("tcp-listen://[::]:2").unwrap();
        assert_eq!(v6.bind_addrs().unwrap(), vec!["[::]:2".parse().unwrap()]);
        assert_eq!(v6.literal_addrs(), Some(vec!["[::]:2".parse().unwrap()]));
    }
}

//! Errors that reach the operator: each renders as one line that names the
//! endpoint and says what to check.

use std::io;

use crate::endpoint::EndpointError;
use crate::shared::setting::{self, Names, Setting};
use crate::stream::parse::StreamError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Endpoint(#[from] EndpointError),
    #[error("the interface name \"{0}\" is not valid UTF-8; expected pcapovertcp::HOST:PORT")]
    NotUtf8(String),
    #[error("cannot resolve {endpoint}: {source}; check the host name")]
    Resolve {
        endpoint: String,
        #[source]
        source: io::Error,
    },
    #[error("{endpoint} resolves to no address; check the host name")]
    NoAddress { endpoint: String },
    #[error("cannot connect to {endpoint}{tried}: {source}; is the PCAP-over-IP server running?")]
    Connect {
        endpoint: String,
        /// The addresses tried, as " (...)", when they are not the endpoint itself.
        tried: String,
        #[source]
        source: io::Error,
    },
    #[error("{endpoint}: reading failed: {source}")]
    Read {
        endpoint: String,
        #[source]
        source: io::Error,
    },
    #[error("{endpoint} closed the connection before a pcap header arrived; is it a PCAP-over-IP server?")]
    NoHeader { endpoint: String },
    #[error("{endpoint} closed the connection before a pcap header arrived; is it a PCAP-over-IP sender?")]
    SenderNoHeader { endpoint: String },
    #[error(
        "no PCAP-over-IP stream from {endpoint} within {} ({seconds:.1} s): {waiting_for}",
        Setting::OpenTimeout
    )]
    OpenTimeout {
        endpoint: String,
        seconds: f64,
        /// What the reader was waiting for when time ran out.
        waiting_for: String,
    },
    #[error(
        "{endpoint} sent no whole pcap header within {seconds:.1} s ({}; {bytes} bytes received)",
        Setting::HeaderTimeout
    )]
    HeaderTimeout {
        endpoint: String,
        seconds: f64,
        bytes: usize,
    },
    #[error("{endpoint} did not complete its TLS handshake within {seconds:.1} s of connecting ({setting})")]
    HandshakeTimeout {
        endpoint: String,
        seconds: f64,
        /// The setting that bounds it: header_timeout for a sender,
        /// connect_timeout for a server.
        setting: Setting,
    },
    #[error("cannot listen on {endpoint}: {source}; is another program (or another Zeek) using the port?")]
    Listen {
        endpoint: String,
        #[source]
        source: io::Error,
    },
    #[error("{setting}: \"{0}\" is not a subnet", setting = Setting::AllowedSenders)]
    BadSubnet(String),
    #[error(
        "{endpoint} sent nothing for {seconds:.1} s ({})",
        Setting::IdleTimeout
    )]
    Idle { endpoint: String, seconds: f64 },
    #[error("{endpoint} stopped answering: no reply to TCP keepalive probes within {seconds:.0} s ({}); is the capture host or the path to it down?", Setting::Keepalive)]
    DeadPeer { endpoint: String, seconds: f64 },
    #[error("{endpoint}: {what}")]
    Tls { endpoint: String, what: String },
    #[error("{endpoint} speaks TLS (its first bytes are a TLS handshake): use tls:// or tls-listen:// for it")]
    TlsOnPlain { endpoint: String },
    #[error("{endpoint} sends a zstd-compressed stream (its first bytes are a zstd frame): use tcp+zstd:// or tcp+zstd-listen:// for it (tls+zstd:// or tls+zstd-listen:// over TLS)")]
    ZstdOnPlain { endpoint: String },
    /// A `+zstd` endpoint's stream could not be decompressed.
    #[error("{endpoint}: {what}")]
    Compressed { endpoint: String, what: String },
    #[error("{0}; check the {tls} options", tls = Setting::Tls)]
    TlsSetup(#[from] crate::tls::SetupError),
    #[error("{endpoint}: {source}")]
    Stream {
        endpoint: String,
        #[source]
        source: StreamError,
    },
    #[error("{endpoint}: cannot set up the packet source: {source}")]
    Setup {
        endpoint: String,
        #[source]
        source: io::Error,
    },
    #[error("{endpoint}: internal error in the reader thread: {message}")]
    Internal { endpoint: String, message: String },
    /// A bug: a panic caught at the edge of the Zeek bridge (src/ffi.rs).
    #[error(
        "{endpoint}: internal error (a panic in {function}: {message}); please report it as a bug"
    )]
    Panic {
        endpoint: String,
        function: &'static str,
        message: String,
    },
}

impl Error {
    /// The one line, with settings named in a front end's words (its
    /// `Display` names them in this thread's, by default the plugin's).
    pub fn render(&self, names: Names) -> String {
        setting::with_names(names, || self.to_string())
    }

    /// Whether waiting and trying again may help. A malformed endpoint, or a
    /// peer that speaks something other than pcap, is a configuration
    /// mistake: reported at once rather than retried at start-up.
    pub fn is_transient(&self) -> bool {
        !matches!(
            self,
            Error::Endpoint(_)
                | Error::NotUtf8(_)
                | Error::OpenTimeout { .. }
                | Error::Stream { .. }
                | Error::Setup { .. }
                | Error::Listen { .. }
                | Error::BadSubnet(_)
                | Error::TlsSetup(_)
                | Error::TlsOnPlain { .. }
                | Error::ZstdOnPlain { .. }
                | Error::Compressed { .. }
                | Error::Internal { .. }
                | Error::Panic { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plugin's lines, byte for byte as in tests/Baseline; in another
    /// front end's words through `render`.
    #[test]
    fn settings_are_named_in_the_plugins_words_unless_rendered_otherwise() {
        let ep = || "127.0.0.1:PORT".to_string();
        let cases = [
            (
                Error::Idle { endpoint: ep(), seconds: 2.0 },
                "127.0.0.1:PORT sent nothing for 2.0 s (PcapOverTcp::idle_timeout)",
            ),
            (
                Error::HeaderTimeout { endpoint: ep(), seconds: 1.0, bytes: 0 },
                "127.0.0.1:PORT sent no whole pcap header within 1.0 s (PcapOverTcp::header_timeout; 0 bytes received)",
            ),
            (
                Error::OpenTimeout {
                    endpoint: ep(),
                    seconds: 2.0,
                    waiting_for: "127.0.0.1:PORT accepted the connection but sent no pcap header".into(),
                },
                "no PCAP-over-IP stream from 127.0.0.1:PORT within PcapOverTcp::open_timeout (2.0 s): 127.0.0.1:PORT accepted the connection but sent no pcap header",
            ),
            (
                Error::DeadPeer { endpoint: "ENDPOINT".into(), seconds: 3.0 },
                "ENDPOINT stopped answering: no reply to TCP keepalive probes within 3 s (PcapOverTcp::keepalive_*); is the capture host or the path to it down?",
            ),
            (
                Error::BadSubnet("x".into()),
                "PcapOverTcp::allowed_senders: \"x\" is not a subnet",
            ),
        ];
        for (e, line) in cases {
            assert_eq!(e.to_string(), line);
        }
        let e = Error::TlsSetup(crate::tls::SetupError::CertWithoutKey);
        let flags = |s: Setting| match s {
            Setting::TlsCertFile => Some("--tls-cert"),
            Setting::TlsKeyFile => Some("--tls-key"),
            Setting::Tls => Some("--tls-*"),
            _ => None,
        };
        assert_eq!(
            e.render(flags),
            "--tls-cert and --tls-key go together: set both or neither; check the --tls-* options"
        );
        assert!(e.to_string().starts_with("PcapOverTcp::tls_cert_file and"));
    }
}

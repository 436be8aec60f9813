//! Errors that reach the operator: each renders as one line that names the
//! endpoint and says what to check.

use std::io;

use crate::endpoint::EndpointError;
use crate::parse::StreamError;

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
    #[error("no PCAP-over-IP stream from {endpoint} within PcapOverTcp::open_timeout ({seconds:.1} s): {waiting_for}")]
    OpenTimeout {
        endpoint: String,
        seconds: f64,
        /// What the reader was waiting for when time ran out.
        waiting_for: String,
    },
    #[error("{endpoint} sent no whole pcap header within {seconds:.1} s (PcapOverTcp::header_timeout; {bytes} bytes received)")]
    HeaderTimeout {
        endpoint: String,
        seconds: f64,
        bytes: usize,
    },
    #[error("cannot listen on {endpoint}: {source}; is another program (or another Zeek) using the port?")]
    Listen {
        endpoint: String,
        #[source]
        source: io::Error,
    },
    #[error("PcapOverTcp::allowed_senders: \"{0}\" is not a subnet")]
    BadSubnet(String),
    #[error("{endpoint} sent nothing for {seconds:.1} s (PcapOverTcp::idle_timeout)")]
    Idle { endpoint: String, seconds: f64 },
    #[error("{endpoint} stopped answering: no reply to TCP keepalive probes within {seconds:.0} s (PcapOverTcp::keepalive_*); is the capture host or the path to it down?")]
    DeadPeer { endpoint: String, seconds: f64 },
    #[error("{endpoint}: {what}")]
    Tls { endpoint: String, what: String },
    #[error("{endpoint} speaks TLS (its first bytes are a TLS handshake): use tls:// or tls-listen:// for it")]
    TlsOnPlain { endpoint: String },
    #[error("{0}; check the PcapOverTcp::tls_* options")]
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
                | Error::Internal { .. }
                | Error::Panic { .. }
        )
    }
}

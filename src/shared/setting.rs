//! The settings that messages name, and whose words name them.
//!
//! The core's messages say which setting to change; the setting is typed
//! ([`Setting`]) and each front end names it in its own words ([`Names`]):
//! the Zeek plugin as `PcapOverTcp::open_timeout` ([`zeek`], the default),
//! pcapovertcp-serve by its flags. The names in use are per thread: a
//! source's threads take its names when they start (see
//! [`super::messages::Messages::with_names`]), and [`with_names`] renders
//! anything else (an error returned to a front end) in another's words.

use std::cell::Cell;
use std::fmt;

/// A setting that a message tells the operator to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    OpenTimeout,
    HeaderTimeout,
    IdleTimeout,
    ConnectTimeout,
    /// The keepalive settings together.
    Keepalive,
    AllowedSenders,
    /// The TLS settings together.
    Tls,
    TlsCaFile,
    TlsCertFile,
    TlsKeyFile,
    /// The certificate and its key, in one breath ("set ... and ...").
    TlsCertAndKey,
    TlsServerName,
    TlsAllowedNames,
    TlsRequireClientCert,
}

/// A front end's name for each setting; `None` where it has no such
/// setting (the message then describes it instead).
pub type Names = fn(Setting) -> Option<&'static str>;

/// The Zeek plugin's names: its script options.
pub fn zeek(s: Setting) -> Option<&'static str> {
    Some(match s {
        Setting::OpenTimeout => "PcapOverTcp::open_timeout",
        Setting::HeaderTimeout => "PcapOverTcp::header_timeout",
        Setting::IdleTimeout => "PcapOverTcp::idle_timeout",
        // Fixed in the plugin (10 s): no option to name.
        Setting::ConnectTimeout => return None,
        Setting::Keepalive => "PcapOverTcp::keepalive_*",
        Setting::AllowedSenders => "PcapOverTcp::allowed_senders",
        Setting::Tls => "PcapOverTcp::tls_*",
        Setting::TlsCaFile => "PcapOverTcp::tls_ca_file",
        Setting::TlsCertFile => "PcapOverTcp::tls_cert_file",
        Setting::TlsKeyFile => "PcapOverTcp::tls_key_file",
        Setting::TlsCertAndKey => "PcapOverTcp::tls_cert_file and tls_key_file",
        Setting::TlsServerName => "PcapOverTcp::tls_server_name",
        Setting::TlsAllowedNames => "PcapOverTcp::tls_allowed_names",
        Setting::TlsRequireClientCert => "PcapOverTcp::tls_require_client_cert",
    })
}

impl Setting {
    /// What the setting is, for a front end that has no name for it.
    fn described(self) -> &'static str {
        match self {
            Setting::OpenTimeout => "the open timeout",
            Setting::HeaderTimeout => "the header timeout",
            Setting::IdleTimeout => "the idle timeout",
            Setting::ConnectTimeout => "the connect timeout",
            Setting::Keepalive => "the TCP keepalive settings",
            Setting::AllowedSenders => "the allowed senders",
            Setting::Tls => "the TLS settings",
            Setting::TlsCaFile => "the CA file",
            Setting::TlsCertFile => "the certificate file",
            Setting::TlsKeyFile => "the key file",
            Setting::TlsCertAndKey => "a certificate and its key",
            Setting::TlsServerName => "the TLS server name",
            Setting::TlsAllowedNames => "the allowed client names",
            Setting::TlsRequireClientCert => "the client certificate requirement",
        }
    }

    /// This thread's name for the setting, if its front end has one.
    pub fn name(self) -> Option<&'static str> {
        NAMES.with(|n| n.get()(self))
    }
}

/// In this thread's front end's words.
impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name().unwrap_or(self.described()))
    }
}

thread_local! {
    static NAMES: Cell<Names> = const { Cell::new(zeek) };
}

/// From now on, this thread names settings with `names`.
pub fn use_names(names: Names) {
    NAMES.with(|n| n.set(names));
}

/// Runs `f` (which renders messages) with settings named by `names`, then
/// restores this thread's names.
pub fn with_names<T>(names: Names, f: impl FnOnce() -> T) -> T {
    let previous = NAMES.with(|n| n.replace(names));
    let out = f();
    NAMES.with(|n| n.set(previous));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(s: Setting) -> Option<&'static str> {
        match s {
            Setting::TlsCaFile => Some("--tls-ca"),
            _ => None,
        }
    }

    #[test]
    fn each_front_end_names_settings_in_its_words() {
        assert_eq!(Setting::TlsCaFile.to_string(), "PcapOverTcp::tls_ca_file");
        let (ca, open) = with_names(flags, || {
            (
                Setting::TlsCaFile.to_string(),
                Setting::OpenTimeout.to_string(),
            )
        });
        assert_eq!(ca, "--tls-ca");
        assert_eq!(open, "the open timeout");
        // Restored afterwards.
        assert_eq!(Setting::TlsCaFile.to_string(), "PcapOverTcp::tls_ca_file");
    }
}

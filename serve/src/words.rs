//! The tool's names for the settings the plugin's core names in its
//! messages (see `pcapovertcp::setting`): its flags, not the plugin's
//! script options.

use pcapovertcp::setting::Setting;

/// For the TLS the tool serves and dials with (--tls-*).
pub fn serve(s: Setting) -> Option<&'static str> {
    Some(match s {
        Setting::Tls => "--tls-*",
        Setting::TlsCaFile => "--tls-ca",
        Setting::TlsCertFile => "--tls-cert",
        Setting::TlsKeyFile => "--tls-key",
        Setting::TlsCertAndKey => "--tls-cert and --tls-key",
        Setting::TlsServerName => "--tls-server-name",
        // Listening with --tls-ca, clients must present a certificate.
        Setting::TlsRequireClientCert => "--tls-ca",
        _ => return None,
    })
}

/// For the servers of --upstream (--upstream-tls-*).
pub fn upstream(s: Setting) -> Option<&'static str> {
    Some(match s {
        Setting::Tls => "--upstream-tls-*",
        Setting::TlsCaFile => "--upstream-tls-ca",
        Setting::TlsCertFile => "--upstream-tls-cert",
        Setting::TlsKeyFile => "--upstream-tls-key",
        Setting::TlsCertAndKey => "--upstream-tls-cert and --upstream-tls-key",
        Setting::TlsServerName => "--upstream-tls-server-name",
        _ => return None,
    })
}

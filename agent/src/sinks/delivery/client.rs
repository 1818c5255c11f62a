//! The HTTP client of a sink: TLS (rustls with ring, extra CA, client certificate), timeouts,
//! no redirects; and error text without credentials.

use std::time::Duration;

use crate::config::DeliveryConfig;
use crate::error::{Error, Result};

/// Builds the HTTP client of a sink: rustls (ring), the configured CA, client
/// certificate and timeouts; no redirects (a POST must not silently become a GET).
pub fn build_client(name: &str, cfg: &DeliveryConfig) -> Result<reqwest::Client> {
    let err = |reason: String| Error::Client {
        sink: name.to_string(),
        reason,
    };
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .timeout(cfg.request_timeout)
        .connect_timeout(cfg.request_timeout.min(Duration::from_secs(10)))
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(Duration::from_secs(30))
        .user_agent(concat!("gapless/", env!("CARGO_PKG_VERSION")));
    if let Some(ca) = &cfg.tls.ca_file {
        let pem =
            std::fs::read(ca).map_err(|e| err(format!("tls.ca_file {}: {e}", ca.display())))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| err(format!("tls.ca_file {}: {e}", ca.display())))?
        {
            b = b.add_root_certificate(cert);
        }
    }
    if let (Some(cert), Some(key)) = (&cfg.tls.cert_file, &cfg.tls.key_file) {
        let mut pem = std::fs::read(cert)
            .map_err(|e| err(format!("tls.cert_file {}: {e}", cert.display())))?;
        pem.extend(
            std::fs::read(key).map_err(|e| err(format!("tls.key_file {}: {e}", key.display())))?,
        );
        let id = reqwest::Identity::from_pem(&pem)
            .map_err(|e| err(format!("client certificate: {e}")))?;
        b = b.identity(id);
    }
    if cfg.tls.insecure_skip_verify {
        tracing::warn!(
            sink = name,
            "TLS certificate verification is OFF for this sink"
        );
        b = b.danger_accept_invalid_certs(true);
    }
    b.build().map_err(|e| err(format!("HTTP client: {e}")))
}

/// The error and its causes, without URLs that might carry credentials.
pub fn error_chain(e: &reqwest::Error) -> String {
    let mut s = e.without_url_ref().to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

trait WithoutUrl {
    fn without_url_ref(&self) -> String;
}

impl WithoutUrl for reqwest::Error {
    fn without_url_ref(&self) -> String {
        let mut s = self.to_string();
        if let Some(url) = self.url() {
            s = s.replace(url.as_str(), "<uri>");
        }
        s
    }
}

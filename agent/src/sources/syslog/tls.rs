//! The rustls server setup of `mode = "tls"`: TLS 1.2 and 1.3 with the ring provider; with
//! `ca_file`, client certificates signed by that CA are required. Read at config load (so
//! that a bad file is a config error naming its key) and again when the source starts.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use crate::config::SyslogTls;

/// Why the TLS files cannot be used: the key (`cert_file`, `key_file`, `ca_file`) whose
/// file is at fault, when one is, and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct TlsFileError {
    /// The config key under `tls`.
    pub key: &'static str,
    /// What is wrong.
    pub reason: String,
}

fn err(key: &'static str, path: &Path, what: impl std::fmt::Display) -> TlsFileError {
    TlsFileError {
        key,
        reason: format!("{}: {what}", path.display()),
    }
}

fn certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(key, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(key, path, e))?;
    if certs.is_empty() {
        return Err(err(key, path, "no PEM certificate in it"));
    }
    Ok(certs)
}

/// The server configuration of `tls`.
pub fn server_config(tls: &SyslogTls) -> Result<Arc<ServerConfig>, TlsFileError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certs("cert_file", &tls.cert_file)?;
    let key = PrivateKeyDer::from_pem_file(&tls.key_file)
        .map_err(|e| err("key_file", &tls.key_file, e))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| err("cert_file", &tls.cert_file, e))?;
    let builder = match &tls.ca_file {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in certs("ca_file", ca)? {
                roots.add(cert).map_err(|e| err("ca_file", ca, e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| err("ca_file", ca, e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| err("key_file", &tls.key_file, e))?;
    // No TLS 1.3 session tickets: a syslog client never reads, and a socket closed with
    // unread tickets in it is reset instead of shut down, which throws away what it sent
    // last (seen with loggen -U). Clients reconnect rarely; resumption buys nothing here.
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

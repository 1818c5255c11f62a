//! A private certificate authority made for one test with rcgen, and a server certificate
//! it signed for `127.0.0.1` and `localhost`, and client certificates it signs on demand
//! (named in the subject only, or — for an agent's identity at a relay — in a
//! subjectAltName DNS name, also as PEM files).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// What a TLS server presents: its certificate chain and key.
pub struct ServerCert {
    /// The server certificate (the CA is not included: clients must have it).
    pub chain: Vec<CertificateDer<'static>>,
    /// The server's private key.
    pub key: PrivateKeyDer<'static>,
}

/// A CA and a server certificate it signed.
pub struct Pki {
    /// The CA certificate, PEM.
    pub ca_pem: String,
    /// The server's certificate and key.
    pub server: ServerCert,
    /// The server's certificate and key, PEM.
    server_pem: (String, String),
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    /// A fresh CA ("gapless e2e test CA") and a server certificate for 127.0.0.1 and
    /// localhost.
    pub fn new() -> Pki {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "gapless e2e test CA");
        let ca_key = KeyPair::generate().expect("a CA key");
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("the CA certificate");

        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .expect("server params");
        params
            .distinguished_name
            .push(DnType::CommonName, "gapless e2e receiver");
        let key = KeyPair::generate().expect("a server key");
        let cert = params.signed_by(&key, &ca).expect("the server certificate");
        Pki {
            ca_pem: ca.pem(),
            server: ServerCert {
                chain: vec![cert.der().clone()],
                key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            },
            server_pem: (cert.pem(), key.serialize_pem()),
            ca,
        }
    }

    /// A client certificate (for TLS client authentication) named `name`, signed by the CA.
    pub fn client(&self, name: &str) -> ServerCert {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("client params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().expect("a client key");
        let cert = params
            .signed_by(&key, &self.ca)
            .expect("the client certificate");
        ServerCert {
            chain: vec![cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        }
    }

    /// A client certificate whose subjectAltName is the DNS name `dns` (how a relay tells
    /// which agent speaks), signed by the CA, as PEM: (certificate, PKCS#8 key).
    pub fn client_pem(&self, dns: &str) -> (String, String) {
        let mut params = CertificateParams::new(vec![dns.to_string()]).expect("client params");
        params.distinguished_name.push(DnType::CommonName, dns);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().expect("a client key");
        let cert = params
            .signed_by(&key, &self.ca)
            .expect("the client certificate");
        (cert.pem(), key.serialize_pem())
    }

    /// [`Pki::client_pem`] written as `dir/<dns>.pem` and `dir/<dns>.key`; returns their
    /// paths.
    pub fn write_client(&self, dir: &Path, dns: &str) -> (PathBuf, PathBuf) {
        let (cert_pem, key_pem) = self.client_pem(dns);
        let (cert, key) = (
            dir.join(format!("{dns}.pem")),
            dir.join(format!("{dns}.key")),
        );
        std::fs::write(&cert, cert_pem).expect("write the client certificate");
        std::fs::write(&key, key_pem).expect("write the client key");
        (cert, key)
    }

    /// Writes the server certificate and key as `dir/server.pem` and `dir/server.key`
    /// (for the agent as a TLS server) and returns their paths.
    pub fn write_server(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let (cert, key) = (dir.join("server.pem"), dir.join("server.key"));
        std::fs::write(&cert, &self.server_pem.0).expect("write server.pem");
        std::fs::write(&key, &self.server_pem.1).expect("write server.key");
        (cert, key)
    }

    /// Writes the CA certificate as `dir/ca.pem` and returns its path.
    pub fn write_ca(&self, dir: &Path) -> PathBuf {
        let path = dir.join("ca.pem");
        std::fs::write(&path, &self.ca_pem).expect("write ca.pem");
        path
    }
}

//! TLS material every side shares: PEM certificates and keys read with
//! errors that name the file and say what is wrong, the check that a key
//! belongs to its certificate, and the client side of a connection to the
//! relay ([`ClientTls`]: `https://` endpoints for the probe and the `skymap`
//! commands, with an optional client certificate for mutual TLS). The
//! relay's server side lives in skymap-relay's `tls` module and reads its
//! files with the functions here. Crypto is rustls with ring.
//!
//! A failed connection is reported with [`describe`]: the whole error chain
//! (tonic's top-level "transport error" alone says nothing) and, for the
//! usual TLS mistakes, a [`hint`] in words.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject, SectionKind};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::sign::CertifiedKey;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// A TLS handshake that has not finished by then is abandoned, on either
/// side: a silent peer must not hold a connection attempt forever.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why TLS material or settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a PEM file: {reason}")]
    NotPem { path: PathBuf, reason: String },
    #[error("{path} holds no certificate (expected a '-----BEGIN CERTIFICATE-----' block{found})")]
    NoCertificate { path: PathBuf, found: String },
    #[error(
        "{path} holds no private key (expected a '-----BEGIN PRIVATE KEY-----', \
         'RSA PRIVATE KEY' or 'EC PRIVATE KEY' block{found})"
    )]
    NoKey { path: PathBuf, found: String },
    #[error("{path}: certificate {index} is not usable: {reason}")]
    BadCertificate {
        path: PathBuf,
        /// 1 for the first certificate in the file.
        index: usize,
        reason: String,
    },
    #[error("{path}: the private key is not usable: {reason}")]
    BadKey { path: PathBuf, reason: String },
    #[error("the private key in {key} does not match the certificate in {cert}")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error(
        "{url}: https:// needs --tls-ca FILE, the CA certificate that signed the relay's \
         certificate (system roots are not used)"
    )]
    NeedsCa { url: String },
    #[error("{flag} is given but {url} is not https://; use https://HOST:PORT for TLS")]
    NotHttps { url: String, flag: &'static str },
    #[error("--tls-cert and --tls-key go together; only {given} is given")]
    HalfIdentity { given: &'static str },
    #[error("--tls-server-name {name:?} is neither a DNS name nor an IP address")]
    BadServerName { name: String },
    #[error("TLS for {url}")]
    Setup {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
}

/// The crypto every TLS config here is built with: ring, chosen explicitly
/// so nothing depends on a process-wide default provider.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The bytes of a certificate or key file.
pub fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// The PEM block labels in `pem`, for saying what a file holds instead.
fn sections(path: &Path, pem: &[u8]) -> Result<Vec<SectionKind>, TlsError> {
    let not_pem = |reason: String| TlsError::NotPem {
        path: path.to_path_buf(),
        reason,
    };
    let kinds = <(SectionKind, Vec<u8>)>::pem_slice_iter(pem)
        .map(|item| item.map(|(kind, _)| kind))
        .collect::<Result<Vec<_>, pem::Error>>()
        .map_err(|e| not_pem(e.to_string()))?;
    if kinds.is_empty() && !pem.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(not_pem("no '-----BEGIN ...-----' block in it".to_string()));
    }
    Ok(kinds)
}

/// "; it holds PRIVATE KEY" for an error message, or nothing.
fn found(kinds: &[SectionKind]) -> String {
    if kinds.is_empty() {
        return String::new();
    }
    let labels: Vec<&str> = kinds
        .iter()
        .map(|kind| match kind {
            SectionKind::Certificate => "CERTIFICATE",
            SectionKind::PublicKey => "PUBLIC KEY",
            SectionKind::RsaPrivateKey => "RSA PRIVATE KEY",
            SectionKind::PrivateKey => "PRIVATE KEY",
            SectionKind::EcPrivateKey => "EC PRIVATE KEY",
            SectionKind::Crl => "X509 CRL",
            SectionKind::Csr => "CERTIFICATE REQUEST",
            _ => "another kind of block",
        })
        .collect();
    format!("; it holds {}", labels.join(", "))
}

/// Every certificate in a PEM file's contents, in order (a chain starts
/// with the end-entity certificate).
pub fn parse_certs(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let kinds = sections(path, pem)?;
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::NotPem {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
            found: found(&kinds),
        });
    }
    Ok(certs)
}

/// The private key (PKCS#8, RSA or EC) in a PEM file's contents.
pub fn parse_key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    let kinds = sections(path, pem)?;
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::NoKey {
            path: path.to_path_buf(),
            found: found(&kinds),
        },
        other => TlsError::NotPem {
            path: path.to_path_buf(),
            reason: other.to_string(),
        },
    })
}

/// A certificate chain and its key, checked to belong together.
pub fn certified_key(
    cert_path: &Path,
    certs: Vec<CertificateDer<'static>>,
    key_path: &Path,
    key: PrivateKeyDer<'static>,
) -> Result<CertifiedKey, TlsError> {
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::BadKey {
            path: key_path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let certified = CertifiedKey::new(certs, signing);
    match certified.keys_match() {
        Ok(()) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::KeyMismatch {
                cert: cert_path.to_path_buf(),
                key: key_path.to_path_buf(),
            })
        }
        // ring's keys all know their public half; anything else is a
        // certificate that does not parse.
        Err(e) => Err(TlsError::BadCertificate {
            path: cert_path.to_path_buf(),
            index: 1,
            reason: e.to_string(),
        }),
    }
}

/// A root store holding every certificate in a CA file.
pub fn root_store(path: &Path, pem: &[u8]) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for (i, cert) in parse_certs(path, pem)?.into_iter().enumerate() {
        roots.add(cert).map_err(|e| TlsError::BadCertificate {
            path: path.to_path_buf(),
            index: i + 1,
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// How a client reaches the relay over TLS: `--tls-ca`, `--tls-cert`,
/// `--tls-key`, `--tls-server-name`. All empty means plain `http://`.
/// The files are read by [`ClientTls::apply`], so calling it at each
/// connection attempt picks up renewed certificates.
///
/// It is also those flags: the probe and `skymap` flatten it into their
/// command lines (global, so `skymap`'s subcommands take them too).
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct ClientTls {
    /// PEM CA certificate that signed the relay's certificate (needed for an
    /// https:// --relay).
    #[arg(
        long = "tls-ca",
        id = "tls_ca",
        value_name = "FILE",
        env = "SKYMAP_TLS_CA",
        global = true
    )]
    pub ca: Option<PathBuf>,
    /// PEM client certificate chain, for a relay that requires one (mutual
    /// TLS: the probe's identity, or `skymap replay` feeding such a relay).
    /// Read again at each connection.
    #[arg(
        long = "tls-cert",
        id = "tls_cert",
        value_name = "FILE",
        env = "SKYMAP_TLS_CERT",
        global = true,
        requires = "tls_key"
    )]
    pub cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(
        long = "tls-key",
        id = "tls_key",
        value_name = "FILE",
        env = "SKYMAP_TLS_KEY",
        global = true,
        requires = "tls_cert"
    )]
    pub key: Option<PathBuf>,
    /// The name the relay's certificate must carry, if not the host in
    /// --relay (e.g. when connecting by IP address).
    #[arg(
        long = "tls-server-name",
        id = "tls_server_name",
        value_name = "NAME",
        env = "SKYMAP_TLS_SERVER_NAME",
        global = true
    )]
    pub server_name: Option<String>,
}

impl ClientTls {
    fn first_flag(&self) -> Option<&'static str> {
        [
            (self.ca.is_some(), "--tls-ca"),
            (self.cert.is_some(), "--tls-cert"),
            (self.key.is_some(), "--tls-key"),
            (self.server_name.is_some(), "--tls-server-name"),
        ]
        .into_iter()
        .find_map(|(given, flag)| given.then_some(flag))
    }

    /// Reads the files now and builds tonic's TLS settings for `url`
    /// (which must be `https://`; it only names the target in errors).
    pub fn load(&self, url: &str) -> Result<ClientTlsConfig, TlsError> {
        let ca_path = self.ca.as_deref().ok_or_else(|| TlsError::NeedsCa {
            url: url.to_string(),
        })?;
        let ca = read_file(ca_path)?;
        // Parsed here only to fail with the file's name; tonic parses again.
        root_store(ca_path, &ca)?;
        let mut config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca))
            .timeout(HANDSHAKE_TIMEOUT);
        match (&self.cert, &self.key) {
            (Some(cert_path), Some(key_path)) => {
                let cert = read_file(cert_path)?;
                let key = read_file(key_path)?;
                certified_key(
                    cert_path,
                    parse_certs(cert_path, &cert)?,
                    key_path,
                    parse_key(key_path, &key)?,
                )?;
                config = config.identity(Identity::from_pem(cert, key));
            }
            (Some(_), None) => {
                return Err(TlsError::HalfIdentity {
                    given: "--tls-cert",
                });
            }
            (None, Some(_)) => return Err(TlsError::HalfIdentity { given: "--tls-key" }),
            (None, None) => {}
        }
        if let Some(name) = &self.server_name {
            if ServerName::try_from(name.as_str()).is_err() {
                return Err(TlsError::BadServerName { name: name.clone() });
            }
            config = config.domain_name(name.clone());
        }
        Ok(config)
    }

    /// `endpoint` with TLS when its address is `https://` (reading the
    /// files now), unchanged for `http://` when no TLS option is set.
    pub fn apply(&self, endpoint: Endpoint) -> Result<Endpoint, TlsError> {
        let url = endpoint.uri().to_string();
        if endpoint.uri().scheme_str() != Some("https") {
            return match self.first_flag() {
                Some(flag) => Err(TlsError::NotHttps { url, flag }),
                None => Ok(endpoint),
            };
        }
        let config = self.load(&url)?;
        endpoint
            .tls_config(config)
            .map_err(|source| TlsError::Setup { url, source })
    }
}

/// "a: b: c" from an error and its sources.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    append_sources(&mut text, error.source());
    text
}

/// Appends ": cause" for each error in the chain starting at `source` whose
/// text `text` does not already contain.
pub fn append_sources(text: &mut String, mut source: Option<&dyn std::error::Error>) {
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
}

/// A failed connection on one line: the error chain, then the [`hint`] in
/// parentheses if one applies.
pub fn describe(error: &dyn std::error::Error) -> String {
    with_hint(error_chain(error))
}

/// `text`, then the [`hint`] for it in parentheses if one applies.
pub fn with_hint(text: String) -> String {
    match hint(&text) {
        Some(hint) => format!("{text} ({hint})"),
        None => text,
    }
}

/// What a failed connection's error text means for TLS, in words a user
/// can act on, when it is one of the usual mistakes.
pub fn hint(error: &str) -> Option<&'static str> {
    const HINTS: &[(&str, &str)] = &[
        (
            "UnknownIssuer",
            "the relay's certificate is not trusted: it is not signed by the CA in --tls-ca",
        ),
        (
            "certificate not valid for name",
            "the relay's certificate does not carry the name connected to: \
             use a name it has, or set --tls-server-name",
        ),
        ("certificate expired", "the relay's certificate has expired"),
        (
            "certificate not valid yet",
            "the relay's certificate is not valid yet (is the clock right?)",
        ),
        (
            "CertificateRequired",
            "the relay requires a client certificate: pass --tls-cert and --tls-key",
        ),
        (
            "alert: UnknownCA",
            "the relay refused the client certificate: it is not signed by the relay's --tls-client-ca",
        ),
        (
            "alert: BadCertificate",
            "the relay refused the client certificate (--tls-cert)",
        ),
        (
            "InvalidContentType",
            "the relay does not speak TLS there: use http:// instead of https://",
        ),
        (
            "corrupt message",
            "the relay does not speak TLS there: use http:// instead of https://",
        ),
    ];
    HINTS
        .iter()
        .find(|(needle, _)| error.contains(needle))
        .map(|(_, hint)| *hint)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("skymap-proto-tls-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir
    }

    struct Pair {
        cert: String,
        key: String,
    }

    fn self_signed(name: &str) -> Pair {
        let key = rcgen::KeyPair::generate().expect("key");
        let params = rcgen::CertificateParams::new(vec![name.to_string()]).expect("params");
        let cert = params.self_signed(&key).expect("cert");
        Pair {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    fn err_text<T: std::fmt::Debug>(result: Result<T, TlsError>) -> String {
        result.expect_err("must fail").to_string()
    }

    #[test]
    fn reading_names_the_file_and_the_problem() {
        let dir = scratch("read");
        let missing = dir.join("missing.pem");
        let text = err_text(read_file(&missing));
        assert!(
            text.starts_with(&format!("cannot read {}: ", missing.display())),
            "{text}"
        );
        assert!(text.contains("No such file"), "{text}");

        let path = Path::new("/etc/skymap/cert.pem");
        assert_eq!(
            err_text(parse_certs(path, b"hello")),
            "/etc/skymap/cert.pem is not a PEM file: no '-----BEGIN ...-----' block in it"
        );
        let pair = self_signed("relay");
        assert_eq!(
            err_text(parse_certs(path, pair.key.as_bytes())),
            "/etc/skymap/cert.pem holds no certificate (expected a '-----BEGIN CERTIFICATE-----' \
             block; it holds PRIVATE KEY)"
        );
        assert_eq!(
            err_text(parse_key(path, pair.cert.as_bytes())),
            "/etc/skymap/cert.pem holds no private key (expected a '-----BEGIN PRIVATE KEY-----', \
             'RSA PRIVATE KEY' or 'EC PRIVATE KEY' block; it holds CERTIFICATE)"
        );
        let truncated = &pair.cert[..pair.cert.len() - 30];
        let text = err_text(parse_certs(path, truncated.as_bytes()));
        assert!(
            text.starts_with("/etc/skymap/cert.pem is not a PEM file: missing section end"),
            "{text}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_key_must_belong_to_its_certificate() {
        let a = self_signed("a");
        let b = self_signed("b");
        let (cert, key) = (Path::new("a.crt"), Path::new("b.key"));
        let parsed = |pair: &Pair| {
            (
                parse_certs(cert, pair.cert.as_bytes()).expect("certs"),
                parse_key(key, pair.key.as_bytes()).expect("key"),
            )
        };
        let (certs, own_key) = parsed(&a);
        let (_, other_key) = parsed(&b);
        assert!(certified_key(cert, certs.clone(), key, own_key).is_ok());
        assert_eq!(
            err_text(certified_key(cert, certs, key, other_key)),
            "the private key in b.key does not match the certificate in a.crt"
        );
    }

    #[test]
    fn client_settings_follow_the_scheme() {
        let dir = scratch("client");
        let ca = self_signed("ca");
        let ca_path = dir.join("ca.pem");
        std::fs::write(&ca_path, &ca.cert).expect("write ca");
        let endpoint = |url: &'static str| Endpoint::from_static(url);

        // Plain stays plain; TLS options on http:// are a mistake, named.
        assert!(
            ClientTls::default()
                .apply(endpoint("http://relay:4245"))
                .is_ok()
        );
        let with_ca = ClientTls {
            ca: Some(ca_path.clone()),
            ..ClientTls::default()
        };
        assert_eq!(
            err_text(with_ca.apply(endpoint("http://relay:4245"))),
            "--tls-ca is given but http://relay:4245/ is not https://; use https://HOST:PORT for TLS"
        );
        // https:// without a CA says what to add.
        let text = err_text(ClientTls::default().apply(endpoint("https://relay:4245")));
        assert!(text.contains("https:// needs --tls-ca FILE"), "{text}");
        assert!(with_ca.apply(endpoint("https://relay:4245")).is_ok());

        let half = ClientTls {
            cert: Some(ca_path.clone()),
            ..with_ca.clone()
        };
        assert_eq!(
            err_text(half.load("https://relay:4245")),
            "--tls-cert and --tls-key go together; only --tls-cert is given"
        );
        let bad_name = ClientTls {
            server_name: Some("not a name".to_string()),
            ..with_ca.clone()
        };
        assert_eq!(
            err_text(bad_name.load("https://relay:4245")),
            "--tls-server-name \"not a name\" is neither a DNS name nor an IP address"
        );
        let missing_ca = ClientTls {
            ca: Some(dir.join("nope.pem")),
            ..ClientTls::default()
        };
        let text = err_text(missing_ca.load("https://relay:4245"));
        assert!(text.starts_with("cannot read "), "{text}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn usual_handshake_failures_get_words() {
        assert_eq!(
            hint("transport error: invalid peer certificate: UnknownIssuer"),
            Some("the relay's certificate is not trusted: it is not signed by the CA in --tls-ca")
        );
        assert_eq!(hint("connection refused"), None);
    }
}

//! Reaching the relay: address parsing, the TLS settings of this process,
//! and a connection with a clear error.
//!
//! TLS (`--tls-ca`, `--tls-server-name`) is one setting for the whole
//! process, given once by `main` with [`set_tls`]: every way `skymap` dials
//! the relay (the commands, the explorer's reconnecting link, its "why"
//! requests) builds its endpoint with [`endpoint`], so none can forget it.

use std::sync::OnceLock;
use std::time::Duration;

use skymap_proto::tls::{ClientTls, TlsError, hint};
use skymap_proto::v1::ingest_client::IngestClient;
use skymap_proto::v1::observer_client::ObserverClient;
use tonic::transport::{Channel, Endpoint};

pub use skymap_proto::tls::{append_sources, error_chain};

/// Where the relay is when nothing says otherwise.
pub const DEFAULT_RELAY: &str = "http://127.0.0.1:4245";

/// Largest message the commands accept from the relay (a full graph of a big
/// cluster is several MB).
const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// The process's TLS settings; plain `http://` until [`set_tls`].
static TLS: OnceLock<ClientTls> = OnceLock::new();

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(
        "relay address {given:?} is not valid: {reason} \
         (expected http://HOST:PORT, https://HOST:PORT or HOST:PORT)"
    )]
    BadAddress { given: String, reason: String },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(
        "cannot reach the relay at {url}: {reason}\n\
         is skymap-relay running there? Point to it with --relay URL or SKYMAP_RELAY, \
         or read a recording with --file FILE"
    )]
    Unreachable { url: String, reason: String },
    #[error("cannot connect to the relay at {url}: {reason}\n{hint}")]
    Refused {
        url: String,
        reason: String,
        hint: &'static str,
    },
    #[error("the TLS settings were already given")]
    TlsAlreadySet,
}

/// Sets the TLS settings every later connection of this process uses.
/// Once only: a second call is refused rather than changing them midway.
pub fn set_tls(tls: ClientTls) -> Result<(), ConnectError> {
    TLS.set(tls).map_err(|_| ConnectError::TlsAlreadySet)
}

/// The TLS settings connections use.
pub fn tls() -> &'static ClientTls {
    static PLAIN: ClientTls = ClientTls {
        ca: None,
        cert: None,
        key: None,
        server_name: None,
    };
    TLS.get().unwrap_or(&PLAIN)
}

/// Accepts `http://HOST:PORT`, `https://HOST:PORT`, `HOST:PORT` and
/// `[v6]:PORT` (the last two as `http://`).
pub fn normalize(address: &str) -> Result<String, ConnectError> {
    let trimmed = address.trim();
    let bad = |reason: &str| ConnectError::BadAddress {
        given: address.to_string(),
        reason: reason.to_string(),
    };
    if trimmed.is_empty() {
        return Err(bad("it is empty"));
    }
    let url = if trimmed.contains("://") {
        trimmed.to_string()
    } else {
        format!("http://{trimmed}")
    };
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| bad("only http:// and https:// are supported"))?;
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') {
        return Err(bad("it must be a host and a port, with no path"));
    }
    let port = authority
        .rsplit_once(':')
        .map(|(_, p)| p)
        .filter(|p| !p.contains(']'))
        .ok_or_else(|| bad("it has no port"))?;
    port.parse::<u16>()
        .map_err(|_| bad(&format!("port {port:?} is not a number from 0 to 65535")))?;
    Endpoint::from_shared(url.clone()).map_err(|e| bad(&e.to_string()))?;
    Ok(url)
}

/// The endpoint for `address` with `tls` applied (files read now), not yet
/// connected.
pub fn endpoint_with(address: &str, tls: &ClientTls) -> Result<Endpoint, ConnectError> {
    let url = normalize(address)?;
    let endpoint = Endpoint::from_shared(url).map_err(|e| ConnectError::BadAddress {
        given: address.to_string(),
        reason: e.to_string(),
    })?;
    Ok(tls.apply(endpoint)?)
}

/// [`endpoint_with`] the process's TLS settings.
pub fn endpoint(address: &str) -> Result<Endpoint, ConnectError> {
    endpoint_with(address, tls())
}

/// Connects with `tls`, failing within a few seconds with an explanation.
pub async fn channel_with(address: &str, tls: &ClientTls) -> Result<Channel, ConnectError> {
    let endpoint = endpoint_with(address, tls)?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true);
    let url = endpoint.uri().to_string();
    endpoint.connect().await.map_err(|e| {
        let reason = error_chain(&e);
        match hint(&reason) {
            Some(hint) => ConnectError::Refused { url, reason, hint },
            None => ConnectError::Unreachable { url, reason },
        }
    })
}

/// Connects with the process's TLS settings (see [`channel_with`]).
pub async fn channel(address: &str) -> Result<Channel, ConnectError> {
    channel_with(address, tls()).await
}

pub async fn observer(address: &str) -> Result<ObserverClient<Channel>, ConnectError> {
    Ok(ObserverClient::new(channel(address).await?).max_decoding_message_size(MAX_MESSAGE_BYTES))
}

pub async fn ingest(address: &str) -> Result<IngestClient<Channel>, ConnectError> {
    Ok(IngestClient::new(channel(address).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_forms() {
        assert_eq!(
            normalize("127.0.0.1:4245").ok().as_deref(),
            Some("http://127.0.0.1:4245")
        );
        assert_eq!(
            normalize("http://relay:4245/").ok().as_deref(),
            Some("http://relay:4245/")
        );
        assert_eq!(
            normalize("[::1]:4245").ok().as_deref(),
            Some("http://[::1]:4245")
        );
        assert_eq!(
            normalize("https://relay.example:4245").ok().as_deref(),
            Some("https://relay.example:4245")
        );
    }

    #[test]
    fn rejects_bad_addresses_with_a_reason() {
        for (input, words) in [
            ("", "empty"),
            ("relay", "no port"),
            ("relay:http", "not a number"),
            ("relay:99999", "not a number"),
            ("ftp://relay:1", "only http:// and https://"),
            ("http://relay:1/api", "no path"),
            ("[::1]", "no port"),
        ] {
            let err = normalize(input).expect_err(input).to_string();
            assert!(err.contains(words), "{input:?}: {err}");
        }
    }

    /// `dir/name` with `text` in it.
    fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    #[tokio::test]
    async fn tls_connections_trust_only_the_given_ca_and_say_why_not() {
        use skymap_proto::test_pki::Ca;
        use skymap_proto::v1::StatusRequest;
        use skymap_relay::server::{self, RelayConfig};
        use skymap_relay::tls::TlsConfig;

        let dir = std::env::temp_dir().join(format!("skymap-conn-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let ca = Ca::new("relay CA").expect("CA");
        let stranger = Ca::new("another CA").expect("CA");
        let pem = ca.sign("skymap-relay", &["127.0.0.1"]).expect("cert");
        let config = RelayConfig {
            tls: Some(TlsConfig::new(
                write(&dir, "relay.pem", &pem.cert),
                write(&dir, "relay-key.pem", &pem.key),
            )),
            ..RelayConfig::default()
        };
        let relay = server::start("127.0.0.1:0", config).await.expect("relay");
        let trusting = |ca_pem: &str, name: &str| ClientTls {
            ca: Some(write(&dir, name, ca_pem)),
            ..ClientTls::default()
        };
        let https = format!("https://{}", relay.addr);

        let channel = channel_with(&https, &trusting(&ca.cert, "ca.pem"))
            .await
            .expect("trusted");
        let status = ObserverClient::new(channel)
            .get_status(StatusRequest {})
            .await
            .expect("status over TLS");
        assert_eq!(status.into_inner().flows_total, 0);

        let refused = channel_with(&https, &trusting(&stranger.cert, "stranger.pem"))
            .await
            .expect_err("not trusted");
        assert!(
            matches!(refused, ConnectError::Refused { .. }),
            "{refused:?}"
        );
        let text = refused.to_string();
        assert!(
            text.ends_with(
                "\nthe relay's certificate is not trusted: it is not signed by the CA in --tls-ca"
            ),
            "{text}"
        );

        let plain = format!("http://{}", relay.addr);
        let refused = channel_with(&plain, &trusting(&ca.cert, "ca.pem"))
            .await
            .expect_err("TLS settings with http://");
        assert!(matches!(refused, ConnectError::Tls(_)), "{refused:?}");
        relay.shutdown().await.expect("shutdown");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

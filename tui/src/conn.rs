//! Reaching the relay: address parsing and a connection with a clear error.

use std::time::Duration;

use skymap_proto::v1::ingest_client::IngestClient;
use skymap_proto::v1::observer_client::ObserverClient;
use tonic::transport::{Channel, Endpoint};

/// Where the relay is when nothing says otherwise.
pub const DEFAULT_RELAY: &str = "http://127.0.0.1:4245";

/// Largest message the commands accept from the relay (a full graph of a big
/// cluster is several MB).
const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(
        "relay address {given:?} is not valid: {reason} (expected http://HOST:PORT or HOST:PORT)"
    )]
    BadAddress { given: String, reason: String },
    #[error(
        "cannot reach the relay at {url}: {reason}\n\
         is skymap-relay running there? Point to it with --relay URL or SKYMAP_RELAY, \
         or read a recording with --file FILE"
    )]
    Unreachable { url: String, reason: String },
}

/// Accepts `http://HOST:PORT`, `HOST:PORT` and `[v6]:PORT`.
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
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        bad("only http:// is supported for now (TLS comes with the deployment work)")
    })?;
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

/// Connects, failing within a few seconds with an explanation.
pub async fn channel(address: &str) -> Result<Channel, ConnectError> {
    let url = normalize(address)?;
    let endpoint = Endpoint::from_shared(url.clone())
        .map_err(|e| ConnectError::BadAddress {
            given: address.to_string(),
            reason: e.to_string(),
        })?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true);
    endpoint
        .connect()
        .await
        .map_err(|e| ConnectError::Unreachable {
            url,
            reason: error_chain(&e),
        })
}

pub async fn observer(address: &str) -> Result<ObserverClient<Channel>, ConnectError> {
    Ok(ObserverClient::new(channel(address).await?).max_decoding_message_size(MAX_MESSAGE_BYTES))
}

pub async fn ingest(address: &str) -> Result<IngestClient<Channel>, ConnectError> {
    Ok(IngestClient::new(channel(address).await?))
}

/// "a: b: c" from an error and its sources, since tonic's top-level message
/// alone ("transport error") does not say what went wrong.
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
    }

    #[test]
    fn rejects_bad_addresses_with_a_reason() {
        for (input, words) in [
            ("", "empty"),
            ("relay", "no port"),
            ("relay:http", "not a number"),
            ("relay:99999", "not a number"),
            ("ftp://relay:1", "only http://"),
            ("http://relay:1/api", "no path"),
            ("[::1]", "no port"),
        ] {
            let err = normalize(input).expect_err(input).to_string();
            assert!(err.contains(words), "{input:?}: {err}");
        }
    }
}

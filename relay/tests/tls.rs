//! The relay over real TLS on 127.0.0.1, with certificates made here: the
//! explorer's side (trusted CA, wrong CA, plain text against TLS), mutual
//! TLS for probes (a client certificate streams flows, none is refused),
//! certificate reload (a new certificate reaches new connections, a broken
//! replacement keeps the old one) and the start-up errors, of the library
//! and of the binary.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use skymap_proto::test_pki::{Ca, Pem};
use skymap_proto::tls::{ClientTls, hint};
use skymap_proto::v1::ingest_client::IngestClient;
use skymap_proto::v1::observer_client::ObserverClient;
use skymap_proto::v1::{Flow, FlowBatch, IngestSummary, StatusRequest, StatusResponse};
use skymap_relay::server::{self, CLIENT_CERT_REQUIRED, RelayConfig, RelayHandle};
use skymap_relay::tls::{PLAIN_TEXT_REFUSED, TlsConfig, TlsStatus};
use tonic::transport::{Channel, Endpoint};

/// Bounds every wait on the relay, so a broken build fails instead of hanging.
const LIMIT: Duration = Duration::from_secs(20);

/// A scratch directory with the test's files, removed at the end.
struct Dir(PathBuf);

impl Dir {
    fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("skymap-tls-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Self(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write file");
        path
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Everything a test needs: the relay's CA and certificate, a probe's
/// client certificate from the same CA, and a stranger CA with its own
/// server and client certificates.
struct Pki {
    dir: Dir,
    ca: PathBuf,
    other_ca: PathBuf,
    client: ClientTls,
    stranger_client: ClientTls,
    server: Pem,
    other_server: Pem,
}

impl Pki {
    fn new(test: &str) -> Self {
        let dir = Dir::new(test);
        let ca = Ca::new("skymap test CA").expect("CA");
        let other = Ca::new("someone else's CA").expect("CA");
        let relay_names = ["localhost", "127.0.0.1"];
        let server = ca.sign("skymap-relay", &relay_names).expect("cert");
        let other_server = other
            .sign("skymap-relay renewed", &relay_names)
            .expect("cert");
        let client_pem = ca.sign("node-a", &["node-a"]).expect("cert");
        let stranger_pem = other.sign("node-x", &["node-x"]).expect("cert");
        let ca_path = dir.write("ca.pem", &ca.cert);
        let other_ca = dir.write("other-ca.pem", &other.cert);
        let client = ClientTls {
            ca: Some(ca_path.clone()),
            cert: Some(dir.write("client.pem", &client_pem.cert)),
            key: Some(dir.write("client-key.pem", &client_pem.key)),
            server_name: None,
        };
        let stranger_client = ClientTls {
            cert: Some(dir.write("stranger.pem", &stranger_pem.cert)),
            key: Some(dir.write("stranger-key.pem", &stranger_pem.key)),
            ..client.clone()
        };
        Self {
            dir,
            ca: ca_path,
            other_ca,
            client,
            stranger_client,
            server,
            other_server,
        }
    }

    /// Trusts `ca`, presents no certificate: the explorer.
    fn explorer(&self, ca: &Path) -> ClientTls {
        ClientTls {
            ca: Some(ca.to_path_buf()),
            ..ClientTls::default()
        }
    }

    /// The relay's certificate and key as files, as a Kubernetes Secret
    /// volume has them: `live/` is a symbolic link to the current version,
    /// swapped in one step, so a reload never sees half a change.
    fn serve(&self, version: &str, pem: &Pem) {
        let dir = self.dir.0.join(version);
        std::fs::create_dir_all(&dir).expect("version dir");
        std::fs::write(dir.join("tls.crt"), &pem.cert).expect("cert");
        std::fs::write(dir.join("tls.key"), &pem.key).expect("key");
        let next = self.dir.0.join("live.next");
        let _ = std::fs::remove_file(&next);
        std::os::unix::fs::symlink(&dir, &next).expect("symlink");
        std::fs::rename(&next, self.dir.0.join("live")).expect("swap");
    }

    fn tls_config(&self, mutual: bool) -> TlsConfig {
        TlsConfig {
            client_ca: mutual.then(|| self.ca.clone()),
            reload_every: Duration::from_millis(50),
            ..TlsConfig::new(
                self.dir.0.join("live/tls.crt"),
                self.dir.0.join("live/tls.key"),
            )
        }
    }

    async fn relay(&self, mutual: bool) -> RelayHandle {
        self.serve("v1", &self.server);
        let config = RelayConfig {
            tls: Some(self.tls_config(mutual)),
            ..RelayConfig::default()
        };
        server::start("127.0.0.1:0", config)
            .await
            .expect("the TLS relay starts")
    }
}

/// "error: cause: cause" for assertions on what a user would read.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

async fn channel(url: String, tls: &ClientTls) -> Result<Channel, String> {
    let endpoint = Endpoint::from_shared(url).map_err(|e| chain(&e))?;
    let endpoint = tls.apply(endpoint).map_err(|e| chain(&e))?;
    match tokio::time::timeout(LIMIT, endpoint.connect()).await {
        Ok(connected) => connected.map_err(|e| chain(&e)),
        Err(_) => panic!("connecting did not finish within {LIMIT:?}"),
    }
}

fn https(relay: &RelayHandle) -> String {
    format!("https://{}", relay.addr)
}

async fn status(channel: Channel) -> Result<StatusResponse, tonic::Status> {
    let mut client = ObserverClient::new(channel);
    match tokio::time::timeout(LIMIT, client.get_status(StatusRequest {})).await {
        Ok(answer) => answer.map(tonic::Response::into_inner),
        Err(_) => panic!("GetStatus did not finish within {LIMIT:?}"),
    }
}

/// Streams one batch of `flows` flows as node-a.
async fn ingest(channel: Channel, flows: usize) -> Result<IngestSummary, tonic::Status> {
    let batch = FlowBatch {
        node_name: "node-a".to_string(),
        seq: 1,
        flows: (0..flows)
            .map(|i| Flow {
                time_ns: skymap_relay::aggregator::now_ns() + i as i64,
                node_name: "node-a".to_string(),
                ..Flow::default()
            })
            .collect(),
        ..FlowBatch::default()
    };
    let mut client = IngestClient::new(channel);
    match tokio::time::timeout(LIMIT, client.stream(tokio_stream::iter([batch]))).await {
        Ok(answer) => answer.map(tonic::Response::into_inner),
        Err(_) => panic!("Ingest did not finish within {LIMIT:?}"),
    }
}

/// Waits for the reloader to have done `done`.
async fn reloader(relay: &RelayHandle, done: impl FnMut(&TlsStatus) -> bool) -> TlsStatus {
    let mut status = relay.tls_status().expect("serving TLS");
    tokio::time::timeout(LIMIT, status.wait_for(done))
        .await
        .expect("the reloader acts within the limit")
        .expect("the reloader runs")
        .clone()
}

#[tokio::test]
async fn the_explorer_trusting_the_relays_ca_gets_status_and_a_stranger_ca_is_refused() {
    let pki = Pki::new("explorer");
    let relay = pki.relay(false).await;

    let trusted = channel(https(&relay), &pki.explorer(&pki.ca))
        .await
        .expect("TLS connection");
    let answer = status(trusted).await.expect("status over TLS");
    assert_eq!(answer.flows_total, 0);

    // By name instead of the address the certificate also carries.
    let by_name = ClientTls {
        server_name: Some("localhost".to_string()),
        ..pki.explorer(&pki.ca)
    };
    let answer = status(channel(https(&relay), &by_name).await.expect("by name")).await;
    assert!(answer.is_ok(), "{answer:?}");

    let refused = channel(https(&relay), &pki.explorer(&pki.other_ca))
        .await
        .expect_err("a certificate from another CA is not trusted");
    assert!(refused.contains("UnknownIssuer"), "{refused}");
    assert_eq!(
        hint(&refused),
        Some("the relay's certificate is not trusted: it is not signed by the CA in --tls-ca")
    );

    let wrong_name = ClientTls {
        server_name: Some("relay.example".to_string()),
        ..pki.explorer(&pki.ca)
    };
    let refused = channel(https(&relay), &wrong_name)
        .await
        .expect_err("the certificate does not carry that name");
    assert!(
        hint(&refused).is_some_and(|h| h.contains("--tls-server-name")),
        "{refused}"
    );
    relay.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn under_mutual_tls_a_probe_with_a_client_certificate_streams_and_one_without_is_refused() {
    let pki = Pki::new("mutual");
    let relay = pki.relay(true).await;

    let probe = channel(https(&relay), &pki.client).await.expect("mTLS");
    let summary = ingest(probe, 3).await.expect("ingest with a client cert");
    assert_eq!((summary.batches, summary.flows), (1, 3));

    // The explorer needs no certificate, and sees the probe's flows.
    let explorer = channel(https(&relay), &pki.explorer(&pki.ca))
        .await
        .expect("TLS without a client certificate");
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let answer = status(explorer.clone()).await.expect("status");
        if answer.flows_total == 3 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "flows never counted: {answer:?}"
        );
        // The batch goes to the aggregator on another channel than status
        // questions; ask again shortly.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let refused = ingest(explorer, 1)
        .await
        .expect_err("no client certificate, no ingest");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    assert_eq!(refused.message(), CLIENT_CERT_REQUIRED);
    assert_eq!(
        CLIENT_CERT_REQUIRED,
        "probes must present a client certificate signed by --tls-client-ca"
    );

    // A certificate from a CA the relay does not trust fails the handshake.
    let stranger = match channel(https(&relay), &pki.stranger_client).await {
        Err(e) => e,
        Ok(channel) => match ingest(channel, 1).await {
            Err(status) => chain(&status),
            Ok(summary) => panic!("a stranger's certificate was let in: {summary:?}"),
        },
    };
    assert_eq!(
        hint(&stranger),
        Some(
            "the relay refused the client certificate: it is not signed by the relay's --tls-client-ca"
        ),
        "{stranger}"
    );
    relay.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_silent_client_does_not_hold_up_the_others() {
    let pki = Pki::new("silent");
    let relay = pki.relay(false).await;
    // One connects and says nothing; one starts a TLS record and stops.
    let _silent = tokio::net::TcpStream::connect(relay.addr)
        .await
        .expect("connect");
    let mut stalled = tokio::net::TcpStream::connect(relay.addr)
        .await
        .expect("connect");
    tokio::io::AsyncWriteExt::write_all(&mut stalled, &[0x16, 0x03, 0x01])
        .await
        .expect("write");
    let started = std::time::Instant::now();
    let trusted = channel(https(&relay), &pki.explorer(&pki.ca))
        .await
        .expect("TLS connection");
    status(trusted).await.expect("status over TLS");
    // Well inside the 10 s the stalled handshakes may take.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    relay.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn plain_text_and_tls_mismatches_fail_quickly_and_say_so() {
    let pki = Pki::new("mismatch");
    let relay = pki.relay(false).await;
    let plain = format!("http://{}", relay.addr);
    let plain_channel = channel(plain, &ClientTls::default())
        .await
        .expect("TCP connects");
    let refused = status(plain_channel)
        .await
        .expect_err("plain text against TLS");
    assert_eq!(refused.code(), tonic::Code::Unavailable);
    assert_eq!(refused.message(), PLAIN_TEXT_REFUSED);
    assert_eq!(
        PLAIN_TEXT_REFUSED,
        "this relay serves TLS: connect to https://HOST:PORT and trust its CA with --tls-ca FILE"
    );
    // The TLS clients are unaffected.
    let trusted = channel(https(&relay), &pki.explorer(&pki.ca))
        .await
        .expect("TLS");
    status(trusted).await.expect("status over TLS");
    relay.shutdown().await.expect("shutdown");

    // The other way round: TLS against a plain relay.
    let plain_relay = server::start("127.0.0.1:0", RelayConfig::default())
        .await
        .expect("plain relay");
    let refused = channel(
        format!("https://{}", plain_relay.addr),
        &pki.explorer(&pki.ca),
    )
    .await
    .expect_err("TLS against plain text");
    assert_eq!(
        hint(&refused),
        Some("the relay does not speak TLS there: use http:// instead of https://"),
        "{refused}"
    );
    plain_relay.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_renewed_certificate_reaches_new_connections_and_a_broken_one_is_ignored() {
    let pki = Pki::new("reload");
    let relay = pki.relay(false).await;
    let before = channel(https(&relay), &pki.explorer(&pki.ca))
        .await
        .expect("first certificate");
    assert!(
        channel(https(&relay), &pki.explorer(&pki.other_ca))
            .await
            .is_err(),
        "the renewed CA is not in use yet"
    );

    pki.serve("v2", &pki.other_server);
    let seen = reloader(&relay, |s| s.reloads == 1).await;
    assert_eq!(seen.problem, None);
    let after = channel(https(&relay), &pki.explorer(&pki.other_ca))
        .await
        .expect("a new connection gets the renewed certificate");
    status(after)
        .await
        .expect("status with the new certificate");
    let old = channel(https(&relay), &pki.explorer(&pki.ca))
        .await
        .expect_err("the old certificate is gone from new connections");
    assert!(old.contains("UnknownIssuer"), "{old}");
    // An open connection keeps the certificate it was made with.
    status(before)
        .await
        .expect("the connection from before still works");

    // Not PEM at all: refused, named, and the renewed certificate stays.
    let garbage = Pem {
        cert: "garbage".to_string(),
        ..pki.other_server.clone()
    };
    pki.serve("v3", &garbage);
    let seen = reloader(&relay, |s| s.rejected == 1).await;
    let problem = seen.problem.expect("a problem is named");
    assert!(
        problem.ends_with("live/tls.crt is not a PEM file: no '-----BEGIN ...-----' block in it"),
        "{problem}"
    );
    let still = channel(https(&relay), &pki.explorer(&pki.other_ca))
        .await
        .expect("the renewed certificate is still served");
    status(still).await.expect("status");

    // A certificate with someone else's key: refused too.
    let mismatched = Pem {
        cert: pki.server.cert.clone(),
        ..pki.other_server.clone()
    };
    pki.serve("v4", &mismatched);
    let seen = reloader(&relay, |s| s.rejected == 2).await;
    let problem = seen.problem.expect("a problem is named");
    assert!(
        problem.contains("live/tls.key does not match the certificate in")
            && problem.ends_with("live/tls.crt"),
        "{problem}"
    );
    assert_eq!(seen.reloads, 1);
    let still = channel(https(&relay), &pki.explorer(&pki.other_ca))
        .await
        .expect("the renewed certificate is still served");
    status(still).await.expect("status");
    relay.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn bad_files_stop_the_start_with_the_file_and_the_problem() {
    let pki = Pki::new("start");
    let start = async |tls: TlsConfig| {
        let config = RelayConfig {
            tls: Some(tls),
            ..RelayConfig::default()
        };
        server::start("127.0.0.1:0", config)
            .await
            .expect_err("bad TLS files")
            .to_string()
    };
    let missing = pki.dir.0.join("missing.pem");
    let key = pki.dir.write("key.pem", &pki.server.key);
    let text = start(TlsConfig::new(missing.clone(), key.clone())).await;
    assert!(
        text.starts_with(&format!("TLS: cannot read {}: ", missing.display())),
        "{text}"
    );

    let cert = pki.dir.write("cert.pem", &pki.server.cert);
    let other_key = pki.dir.write("other-key.pem", &pki.other_server.key);
    let text = start(TlsConfig::new(cert.clone(), other_key.clone())).await;
    assert_eq!(
        text,
        format!(
            "TLS: the private key in {} does not match the certificate in {}",
            other_key.display(),
            cert.display()
        )
    );

    let text = start(TlsConfig::new(key.clone(), key.clone())).await;
    assert!(text.contains("holds no certificate"), "{text}");

    // The binary: one line naming the file, status 1, no backtrace.
    let out = Command::new(env!("CARGO_BIN_EXE_skymap-relay"))
        .args(["--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&cert)
        .arg("--tls-key")
        .arg(&other_key)
        .env("NO_COLOR", "1")
        .output()
        .expect("the relay binary runs");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim_end(),
        format!(
            "skymap-relay: TLS: the private key in {} does not match the certificate in {}",
            other_key.display(),
            cert.display()
        )
    );
}

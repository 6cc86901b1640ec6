//! The side effects of the explorer's "why was this dropped?": asking the
//! relay, copying text to the user's clipboard with OSC 52 (which the
//! terminal on the user's desk carries out, so it works over SSH), and
//! saving text to a new file.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use skymap_proto::v1::observer_client::ObserverClient;
use skymap_proto::v1::{
    ExplainRequest, Explanation, Flow, FlowFilter, GetFlowsRequest, get_flows_response,
};
use tonic::transport::Channel;

use crate::conn;

/// How long an explanation may take before the overlay says so.
const EXPLAIN_TIMEOUT: Duration = Duration::from_secs(10);

type Observer = ObserverClient<Channel>;

fn too_slow() -> String {
    format!(
        "the relay did not answer within {} s",
        EXPLAIN_TIMEOUT.as_secs()
    )
}

/// Asks the relay at `url` why `flow` was dropped; errors are one line for
/// the overlay.
pub async fn explain(url: &str, flow: Flow) -> Result<Explanation, String> {
    let mut client = conn::observer(url).await.map_err(|e| e.to_string())?;
    explain_with(&mut client, flow).await
}

/// [`explain`] on a connection already open (`skymap explain` asks once per
/// group of drops).
pub async fn explain_with(client: &mut Observer, flow: Flow) -> Result<Explanation, String> {
    let call = client.explain(ExplainRequest { flow: Some(flow) });
    match tokio::time::timeout(EXPLAIN_TIMEOUT, call).await {
        Err(_) => Err(too_slow()),
        Ok(Ok(reply)) => Ok(reply.into_inner()),
        Ok(Err(status)) if status.code() == tonic::Code::Unimplemented => Err(
            "the relay cannot explain drops: it is older than this skymap (upgrade skymap-relay)"
                .into(),
        ),
        Ok(Err(status)) => Err(format!(
            "the relay refused to explain the drop: {}",
            status.message()
        )),
    }
}

/// The newest flow matching `filter` in the relay's history, explained over
/// the same connection; `None` for the flow when the relay has none.
pub async fn explain_newest(
    url: &str,
    filter: FlowFilter,
) -> (Option<Flow>, Result<Explanation, String>) {
    let mut client = match conn::observer(url).await {
        Ok(client) => client,
        Err(e) => return (None, Err(e.to_string())),
    };
    let found = match tokio::time::timeout(EXPLAIN_TIMEOUT, newest(&mut client, filter)).await {
        Err(_) => Err(too_slow()),
        Ok(found) => found,
    };
    match found {
        Err(e) => (None, Err(e)),
        Ok(None) => (
            None,
            Err("the relay's history has no dropped flow on this edge any more".to_owned()),
        ),
        Ok(Some(flow)) => {
            let answer = explain_with(&mut client, flow.clone()).await;
            (Some(flow), answer)
        }
    }
}

/// The newest flow of the relay's history that `filter` matches.
async fn newest(client: &mut Observer, filter: FlowFilter) -> Result<Option<Flow>, String> {
    let request = GetFlowsRequest {
        number: 1,
        whitelist: vec![filter],
        ..GetFlowsRequest::default()
    };
    let mut stream = client
        .get_flows(request)
        .await
        .map_err(|s| format!("the relay said: {}", s.message()))?
        .into_inner();
    while let Some(item) = stream.message().await.map_err(|s| s.message().to_owned())? {
        if let Some(get_flows_response::Response::Flow(flow)) = item.response {
            return Ok(Some(flow));
        }
    }
    Ok(None)
}

/// The OSC 52 sequence that sets the clipboard to `text`.
pub fn osc52(text: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(text);
    format!("\x1b]52;c;{encoded}\x07")
}

/// Writes the OSC 52 sequence for `text` to `out`.
pub fn copy(out: &mut impl Write, text: &str) -> io::Result<()> {
    out.write_all(osc52(text).as_bytes())?;
    out.flush()
}

/// Writes `text` to `file_name` in `dir`, or to `NAME-2.EXT`, `NAME-3.EXT`…
/// when taken: never overwrites. Returns the path written.
pub fn save_new(dir: &Path, file_name: &str, text: &str) -> io::Result<PathBuf> {
    let (stem, ext) = match file_name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => (stem, format!(".{ext}")),
        _ => (file_name, String::new()),
    };
    for n in 1..=100 {
        let name = if n == 1 {
            file_name.to_owned()
        } else {
            format!("{stem}-{n}{ext}")
        };
        let path = dir.join(name);
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut file) => {
                file.write_all(text.as_bytes())?;
                return Ok(path);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("{file_name} and 99 numbered variants exist already"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn osc52_carries_the_text_in_base64() {
        assert_eq!(
            osc52("kind: NetworkPolicy\n"),
            "\x1b]52;c;a2luZDogTmV0d29ya1BvbGljeQo=\x07"
        );
        let mut out = Vec::new();
        copy(&mut out, "a").expect("written");
        assert_eq!(out, b"\x1b]52;c;YQ==\x07");
    }

    #[test]
    fn saving_never_overwrites() {
        let dir = std::env::temp_dir().join(format!("skymap-save-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let first = save_new(&dir, "fix.yaml", "one").expect("first");
        let second = save_new(&dir, "fix.yaml", "two").expect("second");
        assert_eq!(first, dir.join("fix.yaml"));
        assert_eq!(second, dir.join("fix-2.yaml"));
        assert_eq!(std::fs::read_to_string(&first).expect("read"), "one");
        assert_eq!(std::fs::read_to_string(&second).expect("read"), "two");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

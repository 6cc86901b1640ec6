//! `skymap graph`: the service graph now, from a relay or a recording.

use std::io::{self, BufWriter, Write};
use std::process::ExitCode;
use std::sync::Arc;

use color_eyre::eyre::{Result, eyre};
use skymap_proto::v1::{GetGraphRequest, GraphUpdate, Zoom};
use skymap_relay::engine;
use skymap_relay::metadata::Metadata;

use super::{open_recording, report_rejects};
use crate::{GraphArgs, GraphOutput, conn};
use skymap_tui::output::graph::{GraphFormat, render_graph};

pub async fn run(args: GraphArgs) -> Result<ExitCode> {
    let zoom = skymap_tui::state::Zoom::from(args.zoom).to_wire();
    let graph = match &args.source.file {
        Some(path) => {
            let metadata = match &args.metadata {
                Some(md) => {
                    let (metadata, warnings) = Metadata::load(md)?;
                    for warning in warnings {
                        eprintln!("skymap: {}: {warning}", md.display());
                    }
                    metadata
                }
                None => Metadata::empty(),
            };
            let mut reader = open_recording(path)?;
            let engine = engine::aggregate_flows(&mut reader, Arc::new(metadata));
            report_rejects(&path.display().to_string(), reader.report());
            if reader.report().flows == 0 && reader.report().rejected > 0 {
                return Err(eyre!("{}: no flow could be read", path.display()));
            }
            engine.graph_snapshot(zoom, &args.namespaces)
        }
        None => from_relay(&args.source.relay, zoom, &args.namespaces).await?,
    };
    let format = match args.output {
        GraphOutput::Json => GraphFormat::Json,
        GraphOutput::Dot => GraphFormat::Dot,
        GraphOutput::Text => GraphFormat::Text,
    };
    let mut out = BufWriter::new(io::stdout());
    render_graph(&graph, format, &mut out)?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

async fn from_relay(relay: &str, zoom: Zoom, namespaces: &[String]) -> Result<GraphUpdate> {
    let mut client = conn::observer(relay).await?;
    let graph = client
        .get_graph(GetGraphRequest {
            zoom: zoom as i32,
            namespaces: namespaces.to_vec(),
        })
        .await
        .map_err(|s| eyre!("relay refused the request: {}", s.message()))?
        .into_inner();
    Ok(graph)
}

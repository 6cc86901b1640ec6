//! `skymap snapshot`: one frame of the explorer, drawn with no terminal and
//! printed as plain text, from a relay, a recording or the demo recording.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use color_eyre::eyre::{Result, eyre};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use skymap_proto::v1::{GetFlowsRequest, GetGraphRequest, StatusRequest, get_flows_response};
use skymap_themes::ColorDepth;
use skymap_tui::app::{App, Options, Selection, View};
use skymap_tui::live::{ConnState, Event};
use skymap_tui::map::Glyphs;
use skymap_tui::offline::{self, demo_flows};
use skymap_tui::state::{NamespaceFilter, Zoom};
use skymap_tui::ui;

use super::{open_recording, report_rejects};
use crate::{SnapshotArgs, SnapshotView, conn};

/// Largest frame drawn, in cells per side.
const MAX_SIDE: u16 = 1000;

pub async fn run(args: SnapshotArgs) -> Result<ExitCode> {
    if args.width == 0 || args.height == 0 || args.width > MAX_SIDE || args.height > MAX_SIDE {
        return Err(eyre!(
            "--width and --height must be between 1 and {MAX_SIDE}"
        ));
    }
    let at_ns = match args.at {
        Some(at) if !(at.is_finite() && at >= 0.0) => {
            return Err(eyre!("--at must be a number of seconds, 0 or more"));
        }
        Some(at) => Some(Duration::from_secs_f64(at).as_nanos() as i64),
        None => None,
    };
    let source = if args.demo {
        "demo recording".to_string()
    } else if let Some(file) = &args.file {
        file.display().to_string()
    } else {
        conn::normalize(&args.relay)?
    };
    let mut app = App::new(Options {
        source,
        glyphs: if args.ascii {
            Glyphs::Ascii
        } else {
            Glyphs::Unicode
        },
        theme: skymap_themes::default_theme(),
        depth: ColorDepth::None,
        flow_capacity: 10_000,
    });
    app.zoom = Zoom::from(args.zoom);
    if let Some(ns) = &args.namespace {
        app.namespaces = NamespaceFilter::One(ns.clone());
    }

    if args.demo {
        offline::play(&mut app, demo_flows(), at_ns);
    } else if let Some(path) = &args.file {
        let mut reader = open_recording(path)?;
        let played = offline::play(&mut app, &mut reader, at_ns);
        report_rejects(&path.display().to_string(), reader.report());
        if played.flows == 0 {
            return Err(eyre!("{}: no flow could be read", path.display()));
        }
    } else {
        if at_ns.is_some() {
            return Err(eyre!("--at needs --file or --demo (a relay shows now)"));
        }
        from_relay(&mut app, &args.relay).await?;
    }

    app.view = match args.view {
        SnapshotView::Map => View::Map,
        SnapshotView::Flows => View::Flows,
        SnapshotView::Drops => View::Drops,
        SnapshotView::Dns => View::Dns,
        SnapshotView::Nodes => View::Nodes,
    };
    if let Some(filter) = &args.filter {
        app.set_filter(filter).map_err(|e| eyre!("--filter: {e}"))?;
    }
    // The first frame tells the map its size; the second shows the result.
    let mut terminal = Terminal::new(TestBackend::new(args.width, args.height))?;
    app.settle();
    terminal.draw(|frame| ui::draw(frame, &mut app))?;
    if let Some(name) = &args.select {
        let selection = find(&app, name)?;
        app.selection = Some(selection);
        app.keep_selection_in_view();
    }
    terminal.draw(|frame| ui::draw(frame, &mut app))?;
    let text = ui::buffer_text(terminal.backend().buffer());
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// `NAME`, `NS/NAME` or a node id selects a box; `A->B` the edge between.
fn find(app: &App, name: &str) -> Result<Selection> {
    if let Some((from, to)) = name.split_once("->") {
        let (from, to) = (node(app, from.trim())?, node(app, to.trim())?);
        if app.graph.edges_from(&from).all(|e| e.destination != to) {
            return Err(eyre!("--select {name:?}: no traffic from {from} to {to}"));
        }
        return Ok(Selection::Pair(app.model.map_source(&from), to));
    }
    Ok(Selection::Node(node(app, name)?))
}

fn node(app: &App, name: &str) -> Result<String> {
    let matches: Vec<&str> = app
        .graph
        .nodes()
        .filter(|n| n.id == name || n.name == name || format!("{}/{}", n.namespace, n.name) == name)
        .map(|n| n.id.as_str())
        .collect();
    match matches.as_slice() {
        [one] => Ok(one.to_string()),
        [] => Err(eyre!("--select: nothing called {name:?} on the map")),
        many => Err(eyre!(
            "--select: {name:?} is ambiguous: {} (use NAMESPACE/NAME)",
            many.join(", ")
        )),
    }
}

async fn from_relay(app: &mut App, relay: &str) -> Result<()> {
    let mut client = conn::observer(relay).await?;
    let refused = |s: tonic::Status| eyre!("relay refused the request: {}", s.message());
    let sub = app.subscription();
    let graph = client
        .get_graph(GetGraphRequest {
            zoom: sub.zoom as i32,
            namespaces: Vec::new(),
        })
        .await
        .map_err(refused)?
        .into_inner();
    let status = client
        .get_status(StatusRequest {})
        .await
        .map_err(refused)?
        .into_inner();
    let mut flows = client
        .get_flows(GetFlowsRequest {
            number: 2_000,
            ..GetFlowsRequest::default()
        })
        .await
        .map_err(refused)?
        .into_inner();
    app.apply(Event::State(ConnState::Connected {
        since: tokio::time::Instant::now(),
    }));
    while let Some(message) = flows.message().await.map_err(refused)? {
        match message.response {
            Some(get_flows_response::Response::Flow(flow)) => app.apply(Event::Flow(flow)),
            Some(get_flows_response::Response::Lost(lost)) => {
                app.apply(Event::Lost(lost.count));
            }
            None => {}
        }
    }
    app.apply(Event::Graph(graph));
    app.apply(Event::Status(status));
    Ok(())
}

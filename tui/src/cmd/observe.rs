//! `skymap observe` and `skymap record`: flows from a relay or a recording.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use color_eyre::eyre::{Result, WrapErr, eyre};
use futures::StreamExt;
use skymap_proto::filter::FlowFilterSet;
use skymap_proto::v1::{Flow, GetFlowsRequest, get_flows_response};

use super::{now_ns, open_recording, parse_time, report_rejects};
use crate::{FlowOutput, ObserveArgs, RecordArgs, conn};
use skymap_tui::output::flows::{FlowFormat, FlowPrinter};

/// How many flows `observe` shows when asked for none in particular (as Hubble).
const DEFAULT_LAST: u64 = 20;

/// What to ask for, whichever the source.
pub(super) struct Query {
    pub number: u64,
    pub follow: bool,
    pub since_ns: i64,
    pub until_ns: i64,
}

pub async fn run(args: ObserveArgs) -> Result<ExitCode> {
    let now = now_ns();
    let since_ns = time_flag("--since", args.since.as_deref(), now)?;
    let until_ns = time_flag("--until", args.until.as_deref(), now)?;
    let number = match (args.last, args.all) {
        (Some(n), _) => n,
        (None, true) => u64::MAX,
        (None, false) if args.follow || since_ns > 0 => 0,
        (None, false) => DEFAULT_LAST,
    };
    let query = Query {
        number,
        follow: args.follow,
        since_ns,
        until_ns,
    };
    let format = match args.output {
        FlowOutput::Compact => FlowFormat::Compact,
        FlowOutput::Json => FlowFormat::Json,
        FlowOutput::Table => FlowFormat::Table,
    };
    let mut printer = FlowPrinter::new(BufWriter::new(io::stdout()), format, args.follow);
    let code = match &args.source.file {
        Some(path) => {
            if args.follow {
                return Err(eyre!(
                    "--follow needs a relay; with --file the whole recording is read"
                ));
            }
            let filter = FlowFilterSet::new(&args.filters.whitelist, &args.filters.blacklist)
                .map_err(|e| eyre!("{e}"))?;
            let mut reader = open_recording(path)?;
            let flows = select_from(&mut reader, &filter, &query);
            for flow in &flows {
                printer.print(flow)?;
            }
            printer.finish()?;
            let report = reader.report();
            report_rejects(&path.display().to_string(), report);
            if report.flows == 0 && report.rejected > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        None => {
            stream_from_relay(
                &args.source.relay,
                &args.filters,
                &query,
                |item| match item {
                    Item::Flow(flow) => printer.print(&flow),
                    Item::Lost(count) => printer.lost(count),
                },
            )
            .await?;
            printer.finish()?;
            ExitCode::SUCCESS
        }
    };
    Ok(code)
}

/// A time flag in Unix nanoseconds; 0 (unbounded) when not given.
fn time_flag(flag: &str, value: Option<&str>, now: i64) -> Result<i64> {
    value.map_or(Ok(0), |text| parse_time(flag, text, now))
}

/// Applies filters, time bounds and "last N" to a recording.
fn select_from(
    flows: impl Iterator<Item = Flow>,
    filter: &FlowFilterSet,
    query: &Query,
) -> Vec<Flow> {
    let limit = usize::try_from(query.number).unwrap_or(usize::MAX);
    let unlimited = query.number == 0 || limit == usize::MAX;
    let mut kept: VecDeque<Flow> = VecDeque::new();
    for flow in flows {
        if (query.since_ns > 0 && flow.time_ns < query.since_ns)
            || (query.until_ns > 0 && flow.time_ns > query.until_ns)
            || !filter.matches(&flow)
        {
            continue;
        }
        if !unlimited && kept.len() == limit {
            kept.pop_front();
        }
        kept.push_back(flow);
    }
    kept.into()
}

// Lives for one call; boxing the flow would cost an allocation per flow.
#[allow(clippy::large_enum_variant)]
pub(super) enum Item {
    Flow(Flow),
    Lost(u64),
}

/// Streams flows from the relay into `sink` until the relay ends the stream,
/// or, when following, until Ctrl-C.
pub(super) async fn stream_from_relay(
    relay: &str,
    filters: &crate::filters::FilterArgs,
    query: &Query,
    mut sink: impl FnMut(Item) -> io::Result<()>,
) -> Result<()> {
    let mut client = conn::observer(relay).await?;
    let request = GetFlowsRequest {
        number: query.number,
        follow: query.follow,
        since_ns: query.since_ns,
        until_ns: query.until_ns,
        whitelist: filters.whitelist.clone(),
        blacklist: filters.blacklist.clone(),
    };
    let mut stream = client
        .get_flows(request)
        .await
        .map_err(|s| eyre!("relay refused the request: {}", s.message()))?
        .into_inner();
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let next = tokio::select! {
            next = stream.next() => next,
            _ = &mut interrupted => break,
        };
        match next {
            None if query.follow => {
                return Err(eyre!(
                    "the relay closed the stream (did it stop?); run again to reconnect"
                ));
            }
            None => break,
            Some(Err(status)) => {
                return Err(eyre!("relay stream ended: {}", status.message()));
            }
            Some(Ok(response)) => match response.response {
                Some(get_flows_response::Response::Flow(flow)) => sink(Item::Flow(flow))?,
                Some(get_flows_response::Response::Lost(lost)) => sink(Item::Lost(lost.count))?,
                None => {}
            },
        }
    }
    Ok(())
}

pub async fn record(args: RecordArgs) -> Result<ExitCode> {
    let since_ns = time_flag("--since", args.since.as_deref(), now_ns())?;
    let number = match args.last {
        Some(n) => n,
        None if args.follow || since_ns > 0 => 0,
        None => u64::MAX,
    };
    let query = Query {
        number,
        follow: args.follow,
        since_ns,
        until_ns: 0,
    };
    let name = args.output.display().to_string();
    let out: Box<dyn Write + Send> = if name == "-" {
        Box::new(io::stdout())
    } else {
        Box::new(File::create(&args.output).wrap_err_with(|| format!("cannot create {name}"))?)
    };
    let mut out = BufWriter::new(out);
    let progress = io::stderr().is_terminal() && name != "-";
    let mut written: u64 = 0;
    let mut lost: u64 = 0;
    let mut last_report = Instant::now();
    stream_from_relay(&args.relay, &args.filters, &query, |item| {
        match item {
            Item::Flow(flow) => {
                skymap_proto::jsonl::write_flow(&mut out, &flow)?;
                written += 1;
                if args.follow {
                    out.flush()?;
                }
            }
            Item::Lost(count) => lost += count,
        }
        if progress && last_report.elapsed() > Duration::from_millis(500) {
            eprint!("\rrecorded {written} flows");
            last_report = Instant::now();
        }
        Ok(())
    })
    .await?;
    out.flush()
        .wrap_err_with(|| format!("cannot write {name}"))?;
    if progress {
        eprint!("\r");
    }
    eprintln!("recorded {written} flows to {name}");
    if lost > 0 {
        eprintln!("skymap: {lost} flows were lost because the recording could not keep up");
    }
    Ok(ExitCode::SUCCESS)
}

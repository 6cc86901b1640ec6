//! `skymap status`: what the relay knows about its nodes and its losses.

use std::io::{self, Write};
use std::process::ExitCode;

use color_eyre::eyre::{Result, eyre};
use skymap_proto::names::sanitize;
use skymap_proto::v1::{NodeState, StatusRequest, StatusResponse};

use crate::{StatusArgs, StatusOutput, conn};
use skymap_tui::output::{duration, rfc3339};

pub async fn run(args: StatusArgs) -> Result<ExitCode> {
    let mut client = conn::observer(&args.relay).await?;
    let status = client
        .get_status(StatusRequest {})
        .await
        .map_err(|s| eyre!("relay refused the request: {}", s.message()))?
        .into_inner();
    let mut out = io::stdout().lock();
    match args.output {
        StatusOutput::Text => write_text(&status, &mut out)?,
        StatusOutput::Json => {
            serde_json::to_writer_pretty(&mut out, &to_json(&status))?;
            writeln!(out)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn state_name(state: i32) -> &'static str {
    match NodeState::try_from(state) {
        Ok(NodeState::Connected) => "connected",
        Ok(NodeState::Unavailable) => "unavailable",
        _ => "unknown",
    }
}

/// "for 3m12s" from a Unix-nanosecond instant to the status time.
fn since(status: &StatusResponse, since_ns: i64) -> String {
    let span = status.time_ns.saturating_sub(since_ns).max(0);
    format!("for {}", duration(u64::try_from(span).unwrap_or(0)))
}

fn write_text(status: &StatusResponse, out: &mut impl Write) -> io::Result<()> {
    let connected = status
        .nodes
        .iter()
        .filter(|n| n.state == NodeState::Connected as i32)
        .count();
    writeln!(
        out,
        "relay {} at {}: {connected}/{} nodes connected, {:.1} flows/s, {} flows, {} rejected",
        sanitize(&status.version),
        rfc3339(status.time_ns),
        status.nodes.len(),
        status.flows_per_s,
        status.flows_total,
        status.rejected,
    )?;
    writeln!(
        out,
        "history {}/{} flows, graph {} nodes {} edges, {} clients",
        status.history_len,
        status.history_capacity,
        status.graph_nodes,
        status.graph_edges,
        status.watchers
    )?;
    write_kubernetes(status, out)?;
    if !status.nodes.is_empty() {
        writeln!(out)?;
        writeln!(
            out,
            "{:<24} {:<12} {:<14} {:>10} {:>12} {:>9}  LOSSES",
            "NODE", "STATE", "SINCE", "FLOWS/S", "FLOWS", "REJECTED"
        )?;
    }
    for node in &status.nodes {
        let losses: Vec<String> = node
            .losses
            .iter()
            .filter(|l| l.count > 0)
            .map(|l| format!("{} {}", sanitize(&l.stage), l.count))
            .collect();
        writeln!(
            out,
            "{:<24} {:<12} {:<14} {:>10.1} {:>12} {:>9}  {}",
            sanitize(&node.name),
            state_name(node.state),
            since(status, node.since_ns),
            node.flows_per_s,
            node.flows_total,
            node.rejected,
            if losses.is_empty() {
                "-".to_string()
            } else {
                losses.join(", ")
            }
        )?;
    }
    Ok(())
}

/// With --kube: one line of states, then each problem on its own line.
fn write_kubernetes(status: &StatusResponse, out: &mut impl Write) -> io::Result<()> {
    if status.metadata_kinds.is_empty() {
        return Ok(());
    }
    let states: Vec<String> = status
        .metadata_kinds
        .iter()
        .map(|k| format!("{} {}", sanitize(&k.resource), sanitize(&k.state)))
        .collect();
    writeln!(out, "kubernetes: {}", states.join(", "))?;
    for kind in status
        .metadata_kinds
        .iter()
        .filter(|k| !k.detail.is_empty())
    {
        writeln!(out, "  {}", sanitize(&kind.detail))?;
    }
    Ok(())
}

fn to_json(status: &StatusResponse) -> serde_json::Value {
    let losses = |list: &[skymap_proto::v1::LossCounter]| -> Vec<serde_json::Value> {
        list.iter()
            .map(|l| serde_json::json!({"node": l.node_name, "stage": l.stage, "count": l.count}))
            .collect()
    };
    serde_json::json!({
        "time": rfc3339(status.time_ns),
        "version": status.version,
        "flows_per_s": status.flows_per_s,
        "flows_total": status.flows_total,
        "rejected": status.rejected,
        "history_len": status.history_len,
        "history_capacity": status.history_capacity,
        "graph_nodes": status.graph_nodes,
        "graph_edges": status.graph_edges,
        "clients": status.watchers,
        "losses": losses(&status.losses),
        "kubernetes": status.metadata_kinds.iter().map(|k| serde_json::json!({
            "resource": k.resource,
            "state": k.state,
            "detail": k.detail,
        })).collect::<Vec<_>>(),
        "nodes": status.nodes.iter().map(|n| serde_json::json!({
            "name": n.name,
            "state": state_name(n.state),
            "since": rfc3339(n.since_ns),
            "flows_per_s": n.flows_per_s,
            "flows_total": n.flows_total,
            "rejected": n.rejected,
            "losses": losses(&n.losses),
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use skymap_proto::v1::MetadataKind;

    use super::*;

    #[test]
    fn kubernetes_states_are_one_line_and_problems_follow() {
        let kind = |resource: &str, state: &str, detail: &str| MetadataKind {
            resource: resource.into(),
            state: state.into(),
            detail: detail.into(),
        };
        let status = StatusResponse {
            metadata_kinds: vec![
                kind("pods", "synced", ""),
                kind(
                    "networkpolicies.networking.k8s.io",
                    "forbidden",
                    "cannot list \x1b[2J it",
                ),
            ],
            ..StatusResponse::default()
        };
        let mut out = Vec::new();
        write_kubernetes(&status, &mut out).expect("written");
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "kubernetes: pods synced, networkpolicies.networking.k8s.io forbidden\n  cannot list \u{fffd}[2J it\n"
        );
        let mut none = Vec::new();
        write_kubernetes(&StatusResponse::default(), &mut none).expect("written");
        assert!(none.is_empty());
    }
}

//! The filter flags of `skymap observe` and `skymap record`, in Hubble's
//! vocabulary, turned into `FlowFilter`s.
//!
//! Order matters (`--not` negates only the flag after it), so the flags are
//! read from clap's matches with their positions instead of through derive.

use clap::{Arg, ArgAction, ArgMatches, Args, FromArgMatches};
use skymap_proto::filter::{FilterBuilder, FilterFlag};
use skymap_proto::v1::FlowFilter;

/// Filters given on the command line.
#[derive(Debug, Clone, Default)]
pub struct FilterArgs {
    pub whitelist: Vec<FlowFilter>,
    pub blacklist: Vec<FlowFilter>,
}

const NOT: &str = "not";

fn help(flag: FilterFlag) -> &'static str {
    use FilterFlag::*;
    match flag {
        Namespace => "Flows from or to this namespace",
        FromNamespace => "Flows from this namespace",
        ToNamespace => "Flows to this namespace",
        Pod => "Flows from or to pods: [NAMESPACE/]POD-PREFIX",
        FromPod => "Flows from pods: [NAMESPACE/]POD-PREFIX",
        ToPod => "Flows to pods: [NAMESPACE/]POD-PREFIX",
        Label => {
            "Flows from or to endpoints with labels: key=value, key!=value, key, !key (commas AND)"
        }
        FromLabel => "Flows from endpoints with these labels",
        ToLabel => "Flows to endpoints with these labels",
        Ip => "Flows from or to an IP address or CIDR",
        FromIp => "Flows from an IP address or CIDR",
        ToIp => "Flows to an IP address or CIDR",
        Port => "Flows from or to a port",
        FromPort => "Flows from a port",
        ToPort => "Flows to a port",
        Service => "Flows from or to a service: [NAMESPACE/]NAME",
        FromService => "Flows from a service",
        ToService => "Flows to a service",
        Workload => "Flows from or to a workload: [NAMESPACE/]NAME",
        FromWorkload => "Flows from a workload",
        ToWorkload => "Flows to a workload",
        Verdict => "FORWARDED, DROPPED, ERROR, AUDIT, REDIRECTED, TRACED, TRANSLATED",
        DropReason => {
            "Drop reason (kernel name such as NETFILTER_DROP, or Hubble's drop_reason_desc)"
        }
        Protocol => "tcp, udp, icmp, icmpv4, icmpv6, sctp, dns, http",
        DnsQuery => "DNS query name; * is a wildcard",
        HttpStatus => "HTTP status: 200, 5+ (any 5xx), 40+ (400-409)",
        HttpMethod => "HTTP method",
        HttpPath => "HTTP path prefix",
        NodeName => "Node name; * is a wildcard",
        TrafficDirection => "ingress or egress",
        TcpFlags => "TCP flags the flow has, e.g. SYN or SYN,ACK",
        Reply => "Only replies (true) or only requests (false)",
    }
}

fn short(flag: FilterFlag) -> Option<char> {
    match flag {
        FilterFlag::Namespace => Some('n'),
        FilterFlag::Label => Some('l'),
        _ => None,
    }
}

impl Args for FilterArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        let mut cmd = cmd.arg(
            Arg::new(NOT)
                .long(NOT)
                .action(ArgAction::Count)
                .help_heading("Filters")
                .help("Negate the filter flag that follows"),
        );
        for flag in FilterFlag::ALL {
            let mut arg = Arg::new(flag.name())
                .long(flag.name())
                .action(ArgAction::Append)
                .value_name("VALUE")
                .help_heading("Filters")
                .help(help(*flag));
            if let Some(c) = short(*flag) {
                arg = arg.short(c);
            }
            cmd = cmd.arg(arg);
        }
        cmd
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for FilterArgs {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut given: Vec<(usize, FilterFlag, String)> = Vec::new();
        for flag in FilterFlag::ALL {
            let (Some(indices), Some(values)) = (
                matches.indices_of(flag.name()),
                matches.get_many::<String>(flag.name()),
            ) else {
                continue;
            };
            for (index, value) in indices.zip(values) {
                given.push((index, *flag, value.clone()));
            }
        }
        given.sort_by_key(|(index, _, _)| *index);
        // A count flag has a default value, and with it an index: only what
        // was typed counts.
        let typed = matches.value_source(NOT) == Some(clap::parser::ValueSource::CommandLine);
        let nots: Vec<usize> = if typed {
            matches
                .indices_of(NOT)
                .map(Iterator::collect)
                .unwrap_or_default()
        } else {
            Vec::new()
        };

        let mut builder = FilterBuilder::new();
        let mut used_nots = 0;
        let mut previous = 0;
        for (index, flag, value) in given {
            // A --not applies to the first filter flag after it.
            let negated = nots.iter().any(|n| *n > previous && *n < index);
            used_nots += nots
                .iter()
                .filter(|n| **n > previous && **n < index)
                .count();
            previous = index;
            builder.add(flag, &value, negated).map_err(|e| {
                clap::Error::raw(clap::error::ErrorKind::ValueValidation, format!("{e}\n"))
            })?;
        }
        if used_nots < nots.len() {
            return Err(clap::Error::raw(
                clap::error::ErrorKind::ArgumentConflict,
                "--not must be followed by the filter flag it negates\n",
            ));
        }
        let (whitelist, blacklist) = builder.build();
        Ok(Self {
            whitelist,
            blacklist,
        })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

//! What a drop reason means and what to check, for reasons that are not a
//! NetworkPolicy. Names are the kernel's `SKB_DROP_REASON_*` without the
//! prefix (as the probe reports them) and Hubble's drop descriptions.

/// Help for one drop reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReasonHelp {
    /// What happened, in a sentence.
    pub meaning: &'static str,
    /// What to look at next.
    pub check: &'static str,
    /// Whether the reason is (or can be) a firewall or policy verdict, so
    /// that evaluating NetworkPolicies is worthwhile.
    pub policy: bool,
}

const fn help(meaning: &'static str, check: &'static str) -> ReasonHelp {
    ReasonHelp {
        meaning,
        check,
        policy: false,
    }
}

/// Help for `reason` (case-insensitive); unknown reasons get a generic text.
pub fn reason_help(reason: &str) -> ReasonHelp {
    let upper = reason.trim().to_ascii_uppercase();
    match upper.as_str() {
        "NETFILTER_DROP" | "IPTABLES" => ReasonHelp {
            meaning: "a netfilter rule (nftables or iptables) dropped the packet; NetworkPolicies are enforced this way by many CNIs",
            check: "the NetworkPolicies selecting both pods; if none denies this flow, the node's own firewall rules (`nft list ruleset`, `iptables-save`)",
            policy: true,
        },
        "POLICY_DENIED" | "POLICY_DENY" | "AUTH_REQUIRED" => ReasonHelp {
            meaning: "the CNI's policy engine denied the flow",
            check: "the NetworkPolicies selecting the source (egress) and the destination (ingress)",
            policy: true,
        },
        "NO_SOCKET" => help(
            "the packet reached the destination, but nothing listens on that port (TCP answers with a reset, UDP with ICMP port unreachable)",
            "that the server is running and listening on this port and address (`ss -ltnup` in the pod); the Service's targetPort; readiness of the pod",
        ),
        "SOCKET_FILTER" => help(
            "a socket filter (BPF attached to the socket) discarded the packet",
            "programs attached to the receiving socket (`bpftool net`, `bpftool prog`)",
        ),
        "SOCKET_RCVBUFF" | "SOCKET_BACKLOG" | "PROTO_MEM" => help(
            "the receiving socket was full: the application reads more slowly than data arrives",
            "the receiving process's CPU (throttling) and read loop; net.core.rmem_max and the socket's receive buffer",
        ),
        "TCP_CSUM" | "UDP_CSUM" | "IP_CSUM" => help(
            "the packet's checksum was wrong",
            "checksum offload on the interfaces (`ethtool -k`), and any middlebox rewriting packets",
        ),
        "PKT_TOO_SMALL" | "PKT_TOO_BIG" | "IP_INHDR" => help(
            "the packet was malformed or its size did not fit the path",
            "MTU settings along the path (overlay encapsulation reduces it) and `ip link` on both ends",
        ),
        "OTHERHOST" => help(
            "the frame was addressed to another host's MAC address",
            "ARP/neighbour entries and bridge forwarding; usually harmless noise on shared segments",
        ),
        "IP_NOROUTE" | "IP_OUTNOROUTES" | "IP_INADDRERRORS" | "IP_INNOROUTES" => help(
            "the kernel had no route for the destination address",
            "routes on the node and in the pod (`ip route`), and the CNI's route for the destination's pod CIDR",
        ),
        "IP_RPFILTER" => help(
            "reverse-path filtering dropped the packet: its source address would not be routed back through the interface it came in on",
            "net.ipv4.conf.*.rp_filter and asymmetric routes",
        ),
        "NEIGH_FAILED" | "NEIGH_CREATEFAIL" | "NEIGH_DEAD" | "NEIGH_QUEUEFULL" => help(
            "the next hop's link-layer address could not be resolved (ARP or neighbour discovery failed), so the packet was never sent",
            "that the next hop or destination exists and answers ARP (`ip neigh`), and the node's link",
        ),
        "QDISC_DROP" | "TC_EGRESS" | "TC_INGRESS" | "TC_RECLASSIFY_LOOP" => help(
            "a traffic-control queue or TC program dropped the packet",
            "qdisc statistics (`tc -s qdisc`), rate limits, and TC programs on the interface",
        ),
        "CPU_BACKLOG" | "FULL_RING" | "DEV_READY" | "NOMEM" => help(
            "the node was overloaded: a receive queue or ring was full, or memory ran out",
            "node CPU and softirq load, interface ring sizes (`ethtool -g`), net.core.netdev_max_backlog",
        ),
        "TCP_INVALID_SEQUENCE"
        | "TCP_OLD_DATA"
        | "TCP_OFO_DROP"
        | "TCP_ZEROWINDOW"
        | "TCP_OVERWINDOW"
        | "TCP_OLD_SEQUENCE"
        | "TCP_RFC7323_PAWS"
        | "TCP_OLD_ACK"
        | "TCP_TOO_OLD_ACK"
        | "TCP_ACK_UNSENT_DATA"
        | "TCP_OFOMERGE"
        | "TCP_FLAGS"
        | "TCP_RESET"
        | "TCP_CLOSE"
        | "TCP_INVALID_SYN" => help(
            "TCP discarded a segment that did not fit the connection's state (retransmissions, late packets, a closed or reset connection)",
            "retransmissions and resets on this connection; a few are normal, many point at loss or a peer restarting",
        ),
        "UNHANDLED_PROTO" | "UNICAST_IN_L2_MULTICAST" => help(
            "the kernel does not handle this protocol here",
            "what sends it; usually harmless",
        ),
        "XDP" => help(
            "an XDP program dropped the packet",
            "XDP programs on the interface (`ip link`, `bpftool net`)",
        ),
        "QUEUE_PURGE" => help(
            "data was still queued on a socket when it closed",
            "whether the application closes sockets without reading the peer's last data",
        ),
        "NOT_SPECIFIED" | "" => help(
            "the kernel did not say why",
            "the interface's counters (`ip -s link`) and the drop location if the probe recorded it",
        ),
        _ => help(
            "the kernel dropped the packet for this reason",
            "the kernel's documentation of enum skb_drop_reason for this name",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_reasons_are_marked_and_others_are_not() {
        assert!(reason_help("NETFILTER_DROP").policy);
        assert!(reason_help("policy_denied").policy);
        assert!(!reason_help("NO_SOCKET").policy);
        assert!(reason_help("NO_SOCKET").meaning.contains("nothing listens"));
        assert!(reason_help("neigh_failed").meaning.contains("link-layer"));
        assert!(
            reason_help("SOMETHING_NEW")
                .check
                .contains("skb_drop_reason")
        );
    }
}

/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * The records the kernel programs put on the ring buffer, shared by
 * probe.bpf.c and mirrored field by field in src/event.rs (a test there checks
 * the sizes and offsets). Everything is little-endian host order except where
 * a field says "network order". Every record starts with struct event_header;
 * `kind` says which body follows. Records are at most 128 bytes, except
 * payload events (200).
 */
#ifndef SKYMAP_EVENTS_H
#define SKYMAP_EVENTS_H

#define SKYMAP_EVENT_VERSION 1

/*
 * Bytes of payload copied for userspace to parse: a DNS header and question
 * (a 100-character name fits), or an HTTP/1.x request or status line. Payload
 * events are the one record above 128 bytes (200); they come once per DNS
 * message or HTTP exchange, not per packet.
 */
#define SKYMAP_SNIPPET_LEN 128

enum event_kind {
	/* First packet of a flow the flow table had not seen. */
	EV_FLOW_NEW = 1,
	/* SYN seen, then SYN/ACK: connect latency. */
	EV_TCP_HANDSHAKE = 2,
	/* FIN or RST: the flow's final counters. */
	EV_FLOW_CLOSE = 3,
	/* Counters of a long-lived flow, every flush interval. */
	EV_FLOW_FLUSH = 4,
	/* The first bytes of a UDP/53 or TCP payload (DNS or HTTP/1.x). */
	EV_PAYLOAD = 5,
	/* A packet freed with a drop reason (tp_btf/kfree_skb). */
	EV_DROP = 6,
};

enum event_direction {
	DIR_INGRESS = 0,
	DIR_EGRESS = 1,
	/* kfree_skb: not seen at a TC hook. */
	DIR_UNKNOWN = 2,
};

/* 8 bytes of header fields, then 8-byte aligned. 24 bytes. */
struct event_header {
	__u8 kind;		/* enum event_kind */
	__u8 direction;		/* enum event_direction */
	__u8 version;		/* SKYMAP_EVENT_VERSION */
	__u8 pad;
	__u32 ifindex;		/* interface the packet was seen on (0: unknown) */
	__u64 ts_ns;		/* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	__u32 netns_ino;	/* inode of the packet's network namespace (0: unknown) */
	__u32 cpu;		/* bpf_get_smp_processor_id() */
};

/*
 * The 5-tuple as the packet carried it (source = sender of this packet).
 * IPv4 addresses are IPv4-mapped IPv6 (::ffff:a.b.c.d). Ports are host order;
 * 0 for protocols without ports. 40 bytes.
 */
struct flow_tuple {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u8 protocol;		/* IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP, IPPROTO_ICMPV6 */
	__u8 pad[3];
};

/* EV_FLOW_NEW, EV_FLOW_CLOSE, EV_FLOW_FLUSH. 24 + 40 + 32 = 96 bytes. */
struct flow_event {
	struct event_header h;
	struct flow_tuple t;
	__u64 packets;		/* since the flow's previous flow event */
	__u64 bytes;		/* since the flow's previous flow event */
	__u8 tcp_flags;		/* OR of the TCP flags seen (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10) */
	__u8 pad[7];
	__u64 first_ns;		/* ktime of the flow's first packet */
};

/* EV_TCP_HANDSHAKE: t is the SYN's tuple (client -> server). 24 + 40 + 16 = 80 bytes. */
struct handshake_event {
	struct event_header h;
	struct flow_tuple t;
	__u64 syn_ns;
	__u64 synack_ns;
};

/* EV_PAYLOAD. */
struct payload_event {
	struct event_header h;
	struct flow_tuple t;
	__u16 len;		/* bytes of snippet that are valid */
	__u16 payload_len;	/* the packet's whole L4 payload length (capped at 65535) */
	__u8 pad[4];
	__u8 snippet[SKYMAP_SNIPPET_LEN];
};				/* 24 + 40 + 8 + 128 = 200 bytes */

/* EV_DROP. 24 + 40 + 16 = 80 bytes. */
struct drop_event {
	struct event_header h;
	struct flow_tuple t;
	__u32 reason;		/* enum skb_drop_reason of the running kernel: resolve its name from BTF */
	__u32 pad;
	__u64 location;		/* kernel address that freed the skb */
};

/* Per-CPU counters in the `counters` array map (index = enum counter). */
enum counter {
	CNT_RINGBUF_FULL = 0,	/* bpf_ringbuf_reserve failed: an event lost */
	CNT_PACKETS = 1,	/* packets seen at TC */
	CNT_TABLE_FULL = 2,	/* flow table insert failed */
	CNT_NON_IP_DROPS = 3,	/* kfree_skb of non-IP packets, ignored */
	CNT_SUBMITTED = 4,	/* events put on the ring buffer */
	CNT_DISCARDED = 5,	/* events reserved, then given up (payload unreadable) */
	CNT_MAX = 6,
	/*
	 * Every event the programs start is submitted, discarded or lost to a
	 * full ring: attempted = SUBMITTED + DISCARDED + RINGBUF_FULL, and
	 * userspace must read exactly SUBMITTED of them.
	 */
};

#endif

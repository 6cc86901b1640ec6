// SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0)
/*
 * skymap's kernel programs.
 *
 *  - tc_ingress / tc_egress (and the _l3 variants for devices without an
 *    Ethernet header, ARPHRD_NONE: tun, wireguard): keep a flow table in the
 *    kernel and put an event on the ring buffer only when something happens
 *    (new flow, handshake, close, periodic flush, a DNS or HTTP/1.x snippet).
 *    They never change the packet and always return TC_ACT_OK.
 *  - kfree_skb (tp_btf): every freed IPv4/IPv6 packet that carries a drop
 *    reason, with its 5-tuple.
 *
 * The records are defined in events.h. Userspace (src/event.rs) decodes them.
 * Build with build.sh; the object is committed next to this file.
 */
#include "vmlinux_min.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_tracing.h>
#include "events.h"

/* tp_btf and bpf_probe_read_kernel need a GPL-compatible program. */
char LICENSE[] SEC("license") = "GPL";

#define EEXIST 17

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10

/* Indexes of the `config` array map, written by userspace before attaching. */
enum config_key {
	CFG_FLUSH_NS = 0,	/* flush interval of long flows, ns (0: DEFAULT_FLUSH_NS) */
	CFG_PAYLOAD = 1,	/* nonzero: emit EV_PAYLOAD snippets (DNS, HTTP/1.x) */
	CFG_PAUSED = 2,		/* nonzero: every program returns at once (loss accounting) */
	CFG_WAKE_BYTES = 3,	/* wake the reader once this much is waiting (0: every event) */
	CFG_MAX = 4,
};

#define DEFAULT_FLUSH_NS 1000000000ULL

/* From uapi/linux/bpf.h, which vmlinux_min.h leaves out. */
#define SKYMAP_RB_NO_WAKEUP (1ULL << 0)
#define SKYMAP_RB_FORCE_WAKEUP (1ULL << 1)
#define SKYMAP_RB_AVAIL_DATA 0

/* Userspace may resize it before load (aya: EbpfLoader::map_max_entries). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} events SEC(".maps");

/*
 * A packet crosses several hooks on its way (pod eth0 egress, host veth
 * ingress, ...), so the table keys the tuple by where it was seen: each hook
 * counts its own copy and the event header's ifindex/direction stay true.
 */
struct flow_key {
	struct flow_tuple t;
	__u32 ifindex;
	__u8 direction;
	__u8 pad[3];
};

struct flow_state {
	__u64 packets;		/* since the last flow event (events carry deltas) */
	__u64 bytes;
	__u64 first_ns;
	__u64 last_flush_ns;
	__u64 syn_ns;		/* first SYN, until a SYN/ACK answers it */
	__u32 tcp_flags;	/* u32: BPF atomics work on 32/64-bit words only */
	/*
	 * Set once the close event went out. The entry stays (LRU evicts it) so
	 * the last ACKs of the connection do not look like a new flow.
	 */
	__u32 closed;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct flow_key);
	__type(value, struct flow_state);
} flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, CFG_MAX);
	__type(key, __u32);
	__type(value, __u64);
} config SEC(".maps");

/* One parsed packet. */
struct pkt {
	struct flow_key k;
	__u32 len;		/* skb->len: bytes counted for the flow */
	__u32 payload_off;	/* offset of the L4 payload from skb->data */
	__u8 tcp_flags;
};

static __always_inline void count(__u32 idx)
{
	__u64 *c = bpf_map_lookup_elem(&counters, &idx);

	/* Per-CPU slot: no other CPU writes it, a plain add is enough. */
	if (c)
		*c += 1;
}

static __always_inline __u64 config_get(__u32 key)
{
	__u64 *v = bpf_map_lookup_elem(&config, &key);

	return v ? *v : 0;
}

/*
 * At TC the context is the kernel's struct sk_buff behind the __sk_buff view,
 * and __sk_buff has no namespace. Read it the way kfree_skb does, through the
 * device. Needs CAP_PERFMON (the verifier then lets the context pointer reach
 * bpf_probe_read_kernel); done only when an event is written, not per packet.
 */
static __always_inline __u32 tc_netns_ino(struct __sk_buff *ctx)
{
	struct sk_buff *skb = (struct sk_buff *)ctx;

	return BPF_CORE_READ(skb, dev, nd_net.net, ns.inum);
}

static __always_inline void fill_header(struct event_header *h, __u8 kind, __u8 direction,
					__u32 ifindex, __u32 netns_ino, __u64 now)
{
	h->kind = kind;
	h->direction = direction;
	h->version = SKYMAP_EVENT_VERSION;
	h->pad = 0;
	h->ifindex = ifindex;
	h->ts_ns = now;
	h->netns_ino = netns_ino;
	h->cpu = bpf_get_smp_processor_id();
}

/* Reserve a record and fill its header from the key; NULL (counted) when the ring is full. */
static __always_inline void *reserve(struct __sk_buff *skb, __u32 size, __u8 kind,
				     const struct flow_key *k, __u64 now)
{
	struct event_header *h = bpf_ringbuf_reserve(&events, size, 0);

	if (!h) {
		count(CNT_RINGBUF_FULL);
		return 0;
	}
	fill_header(h, kind, k->direction, k->ifindex, tc_netns_ino(skb), now);
	return h;
}

/*
 * Waking the reader costs an interrupt (a VM exit on virtual machines): more
 * than everything else an event costs. So the reader is woken only once a
 * backlog builds up, and looks by itself every few tens of milliseconds.
 */
static __always_inline void submit(void *ev)
{
	__u64 wake = config_get(CFG_WAKE_BYTES);
	__u64 waiting = bpf_ringbuf_query(&events, SKYMAP_RB_AVAIL_DATA);

	count(CNT_SUBMITTED);
	bpf_ringbuf_submit(ev, waiting >= wake ? SKYMAP_RB_FORCE_WAKEUP : SKYMAP_RB_NO_WAKEUP);
}

static __always_inline void reverse_key(const struct flow_key *k, struct flow_key *r)
{
	__builtin_memcpy(r->t.saddr, k->t.daddr, 16);
	__builtin_memcpy(r->t.daddr, k->t.saddr, 16);
	r->t.sport = k->t.dport;
	r->t.dport = k->t.sport;
	r->t.protocol = k->t.protocol;
	r->t.pad[0] = r->t.pad[1] = r->t.pad[2] = 0;
	r->ifindex = k->ifindex;
	r->direction = k->direction == DIR_INGRESS ? DIR_EGRESS : DIR_INGRESS;
	r->pad[0] = r->pad[1] = r->pad[2] = 0;
}

static __always_inline void emit_flow(struct __sk_buff *skb, __u8 kind, const struct flow_key *k,
				      __u64 packets, __u64 bytes, __u32 tcp_flags, __u64 first_ns,
				      __u64 now)
{
	struct flow_event *ev = reserve(skb, sizeof(*ev), kind, k, now);

	if (!ev)
		return;
	ev->t = k->t;
	ev->packets = packets;
	ev->bytes = bytes;
	ev->tcp_flags = tcp_flags;
	__builtin_memset(ev->pad, 0, sizeof(ev->pad));
	ev->first_ns = first_ns;
	submit(ev);
}

/* Emits the close event once, whichever CPU gets here first. */
static __always_inline void close_flow(struct __sk_buff *skb, struct flow_state *st,
				       const struct flow_key *k, __u64 now)
{
	if (__sync_val_compare_and_swap(&st->closed, 0, 1) != 0)
		return;
	emit_flow(skb, EV_FLOW_CLOSE, k, __sync_lock_test_and_set(&st->packets, 0),
		  __sync_lock_test_and_set(&st->bytes, 0), st->tcp_flags, st->first_ns, now);
}

/* Counters of a long flow, at most once per interval. */
static __always_inline void maybe_flush(struct __sk_buff *skb, struct flow_state *st,
					const struct flow_key *k, __u64 now)
{
	__u64 interval = config_get(CFG_FLUSH_NS);
	__u64 last = st->last_flush_ns;
	struct flow_event *ev;

	if (!interval)
		interval = DEFAULT_FLUSH_NS;
	/* `now` is the coarse clock, which may lag a precise `last`. */
	if (now <= last || now - last < interval)
		return;
	if (__sync_val_compare_and_swap(&st->last_flush_ns, last, now) != last)
		return;		/* another CPU flushes this interval */
	/* Reserve first: when the ring is full the counts stay for the next flush. */
	ev = reserve(skb, sizeof(*ev), EV_FLOW_FLUSH, k, now);
	if (!ev)
		return;
	ev->t = k->t;
	ev->packets = __sync_lock_test_and_set(&st->packets, 0);
	ev->bytes = __sync_lock_test_and_set(&st->bytes, 0);
	ev->tcp_flags = st->tcp_flags;
	__builtin_memset(ev->pad, 0, sizeof(ev->pad));
	ev->first_ns = st->first_ns;
	submit(ev);
}

/* A SYN/ACK: connect latency from the SYN recorded on the reverse entry. */
static __always_inline void handshake(struct __sk_buff *skb, const struct flow_key *k)
{
	struct flow_key r;
	struct flow_state *syn;
	struct handshake_event *ev;
	__u64 syn_ns, now;

	reverse_key(k, &r);
	syn = bpf_map_lookup_elem(&flows, &r);
	if (!syn || !syn->syn_ns)
		return;
	/* Take the SYN time so a retransmitted SYN/ACK does not report twice. */
	syn_ns = __sync_lock_test_and_set(&syn->syn_ns, 0);
	if (!syn_ns)
		return;
	now = bpf_ktime_get_ns();
	ev = reserve(skb, sizeof(*ev), EV_TCP_HANDSHAKE, k, now);
	if (!ev)
		return;
	ev->t = r.t;
	ev->syn_ns = syn_ns;
	ev->synack_ns = now;
	submit(ev);
}

/* An RST ends both directions; FIN only the sender's. */
static __always_inline void close_reverse(struct __sk_buff *skb, const struct flow_key *k,
					  __u64 now)
{
	struct flow_key r;
	struct flow_state *st;

	reverse_key(k, &r);
	st = bpf_map_lookup_elem(&flows, &r);
	if (st)
		close_flow(skb, st, &r, now);
}

/*
 * `coarse` is the coarse clock (a tick's resolution, but no clock read):
 * enough for counters and flush intervals. What latency is computed from
 * (SYN, SYN/ACK, payloads) and new flows take the precise clock.
 */
static __always_inline void update_flow(struct __sk_buff *skb, const struct pkt *p, __u64 coarse)
{
	const struct flow_key *k = &p->k;
	__u8 flags = p->tcp_flags;
	bool is_syn = (flags & (TCP_SYN | TCP_ACK)) == TCP_SYN;
	bool counted = false;
	struct flow_state *st = bpf_map_lookup_elem(&flows, k);

	/* A new flow, or a new connection on the tuple of a closed one. */
	if (!st || (st->closed && is_syn)) {
		__u64 now = bpf_ktime_get_ns();
		/* Zero counts: the new-flow event carries this packet. */
		struct flow_state init = {
			.first_ns = now,
			.last_flush_ns = now,
			.syn_ns = is_syn ? now : 0,
			.tcp_flags = flags,
		};
		long err = bpf_map_update_elem(&flows, k, &init, st ? BPF_ANY : BPF_NOEXIST);

		if (err == 0) {
			emit_flow(skb, EV_FLOW_NEW, k, 1, p->len, flags, now, now);
			counted = true;
		} else if (err != -EEXIST) {
			count(CNT_TABLE_FULL);
			return;
		}
		/* EEXIST: another CPU inserted it first; count the packet there. */
		st = bpf_map_lookup_elem(&flows, k);
		if (!st)
			return;
	}
	/* The last ACKs of a closed connection. */
	if (st->closed)
		return;
	if (!counted) {
		__sync_fetch_and_add(&st->packets, 1);
		__sync_fetch_and_add(&st->bytes, p->len);
		if (flags & ~st->tcp_flags)
			__sync_fetch_and_or(&st->tcp_flags, flags);
		if (is_syn && !st->syn_ns)
			st->syn_ns = bpf_ktime_get_ns();
	}
	if ((flags & (TCP_SYN | TCP_ACK)) == (TCP_SYN | TCP_ACK))
		handshake(skb, k);
	if (flags & (TCP_FIN | TCP_RST)) {
		close_flow(skb, st, k, coarse);
		if (flags & TCP_RST)
			close_reverse(skb, k, coarse);
		return;
	}
	if (!counted)
		maybe_flush(skb, st, k, coarse);
}

#define W4(a, b, c, d) ((__u32)(a) | (__u32)(b) << 8 | (__u32)(c) << 16 | (__u32)(d) << 24)

/* Does a TCP payload start like an HTTP/1.x request or status line? */
static __always_inline bool looks_like_http(const __u8 *b)
{
	__u32 w = W4(b[0], b[1], b[2], b[3]);

	if (w == W4('H', 'T', 'T', 'P'))
		return b[4] == '/' && b[5] == '1' && b[6] == '.';
	return w == W4('G', 'E', 'T', ' ') || w == W4('P', 'O', 'S', 'T') ||
	       w == W4('P', 'U', 'T', ' ') || w == W4('H', 'E', 'A', 'D') ||
	       w == W4('D', 'E', 'L', 'E') || w == W4('P', 'A', 'T', 'C') ||
	       w == W4('O', 'P', 'T', 'I') || w == W4('C', 'O', 'N', 'N') ||
	       w == W4('T', 'R', 'A', 'C');
}

/* The first bytes of a DNS message (UDP/53) or an HTTP/1.x line, for userspace to parse. */
static __always_inline void payload(struct __sk_buff *skb, const struct pkt *p)
{
	const struct flow_tuple *t = &p->k.t;
	struct payload_event *ev;
	__u8 head[8];
	__u32 payload_len, len;

	if (p->len <= p->payload_off)
		return;
	payload_len = p->len - p->payload_off;
	if (t->protocol == IPPROTO_UDP) {
		if (t->sport != 53 && t->dport != 53)
			return;
	} else if (t->protocol == IPPROTO_TCP) {
		if (payload_len < sizeof(head) ||
		    bpf_skb_load_bytes(skb, p->payload_off, head, sizeof(head)) < 0 ||
		    !looks_like_http(head))
			return;
	} else {
		return;
	}
	len = payload_len < SKYMAP_SNIPPET_LEN ? payload_len : SKYMAP_SNIPPET_LEN;
	ev = reserve(skb, sizeof(*ev), EV_PAYLOAD, &p->k, bpf_ktime_get_ns());
	if (!ev)
		return;
	ev->t = *t;
	ev->len = len;
	ev->payload_len = payload_len > 0xffff ? 0xffff : payload_len;
	__builtin_memset(ev->pad, 0, sizeof(ev->pad));
	/* Bytes past len are not sent as garbage: clear them. */
	__builtin_memset(ev->snippet, 0, sizeof(ev->snippet));
	/* The verifier needs len proven in [1, SNIPPET_LEN]; the mask keeps it visible. */
	len &= 0xff;
	if (len == 0 || len > SKYMAP_SNIPPET_LEN ||
	    bpf_skb_load_bytes(skb, p->payload_off, ev->snippet, len) < 0) {
		count(CNT_DISCARDED);
		bpf_ringbuf_discard(ev, 0);
		return;
	}
	submit(ev);
}

/*
 * Parse IPv4/IPv6 + TCP/UDP/ICMP with direct packet access. l2len is 14
 * (Ethernet) or 0 (no link header). Headers outside the linear part of the
 * skb are not pulled in: such packets are skipped. Returns false to skip.
 */
static __always_inline bool parse(struct __sk_buff *skb, __u32 l2len, struct pkt *p)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct flow_tuple *t = &p->k.t;
	__u32 l3_off = l2len, l4_off;
	__u8 proto;
	void *l4;

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = data + l3_off;

		if ((void *)(ip + 1) > end)
			return false;
		/* A later fragment has no L4 header. */
		if (ip->frag_off & bpf_htons(0x1fff))
			return false;
		if (ip->ihl < 5)
			return false;
		l4_off = l3_off + ip->ihl * 4;
		proto = ip->protocol;
		/* IPv4-mapped IPv6: ::ffff:a.b.c.d */
		t->saddr[10] = t->saddr[11] = 0xff;
		t->daddr[10] = t->daddr[11] = 0xff;
		__builtin_memcpy(&t->saddr[12], &ip->saddr, 4);
		__builtin_memcpy(&t->daddr[12], &ip->daddr, 4);
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = data + l3_off;

		if ((void *)(ip6 + 1) > end)
			return false;
		/* Extension headers are not walked: such packets are skipped. */
		l4_off = l3_off + sizeof(*ip6);
		proto = ip6->nexthdr;
		__builtin_memcpy(t->saddr, ip6->saddr, 16);
		__builtin_memcpy(t->daddr, ip6->daddr, 16);
	} else {
		return false;
	}

	/* l4_off <= 14 + 60: a constant bound the verifier can follow. */
	if (l4_off > ETH_HLEN + 60)
		return false;
	l4 = data + l4_off;
	t->protocol = proto;
	if (proto == IPPROTO_TCP) {
		struct tcphdr *th = l4;

		if ((void *)(th + 1) > end)
			return false;
		t->sport = bpf_ntohs(th->source);
		t->dport = bpf_ntohs(th->dest);
		p->tcp_flags = th->flags;
		p->payload_off = l4_off + th->doff * 4;
	} else if (proto == IPPROTO_UDP) {
		struct udphdr *uh = l4;

		if ((void *)(uh + 1) > end)
			return false;
		t->sport = bpf_ntohs(uh->source);
		t->dport = bpf_ntohs(uh->dest);
		p->payload_off = l4_off + sizeof(*uh);
	} else if (proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6) {
		p->payload_off = l4_off;
	} else {
		return false;
	}
	p->len = skb->len;
	return true;
}

static __always_inline int handle(struct __sk_buff *skb, __u32 l2len, __u8 direction)
{
	struct pkt p = {};

	if (config_get(CFG_PAUSED))
		return TC_ACT_OK;
	count(CNT_PACKETS);
	if (!parse(skb, l2len, &p))
		return TC_ACT_OK;
	p.k.ifindex = skb->ifindex;
	p.k.direction = direction;
	update_flow(skb, &p, bpf_ktime_get_coarse_ns());
	if (config_get(CFG_PAYLOAD))
		payload(skb, &p);
	return TC_ACT_OK;
}

SEC("classifier")
int tc_ingress(struct __sk_buff *skb)
{
	return handle(skb, ETH_HLEN, DIR_INGRESS);
}

SEC("classifier")
int tc_egress(struct __sk_buff *skb)
{
	return handle(skb, ETH_HLEN, DIR_EGRESS);
}

/* For devices without a link header (ARPHRD_NONE: tun, wireguard). */
SEC("classifier")
int tc_ingress_l3(struct __sk_buff *skb)
{
	return handle(skb, 0, DIR_INGRESS);
}

SEC("classifier")
int tc_egress_l3(struct __sk_buff *skb)
{
	return handle(skb, 0, DIR_EGRESS);
}

/*
 * Dropped packets. The tracepoint also fires for non-IP traffic (vsock, ...)
 * and, on kernels before the consume_skb split, for packets consumed
 * normally: both are skipped. Reason numbers differ between kernels, so the
 * ones compared here are relocated from the running kernel's BTF.
 */
SEC("tp_btf/kfree_skb")
int BPF_PROG(kfree_skb, struct sk_buff *skb, void *location, enum skb_drop_reason reason)
{
	struct drop_event *ev;
	struct net_device *dev;
	struct flow_tuple t = {};
	unsigned char *head;
	__u32 ifindex = 0, netns_ino = 0, l4_off;
	__u16 nh, proto;
	__u16 ports[2] = {};
	__u8 l4proto;
	bool has_ports = true;

	if (config_get(CFG_PAUSED))
		return 0;
	if (reason == bpf_core_enum_value(enum skb_drop_reason, SKB_NOT_DROPPED_YET))
		return 0;
	if (bpf_core_enum_value_exists(enum skb_drop_reason, SKB_CONSUMED) &&
	    reason == bpf_core_enum_value(enum skb_drop_reason, SKB_CONSUMED))
		return 0;

	proto = BPF_CORE_READ(skb, protocol);
	head = BPF_CORE_READ(skb, head);
	nh = BPF_CORE_READ(skb, network_header);
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;

		if (bpf_probe_read_kernel(&ip, sizeof(ip), head + nh) < 0 || ip.version != 4)
			return 0;
		l4proto = ip.protocol;
		l4_off = nh + ip.ihl * 4;
		t.saddr[10] = t.saddr[11] = 0xff;
		t.daddr[10] = t.daddr[11] = 0xff;
		__builtin_memcpy(&t.saddr[12], &ip.saddr, 4);
		__builtin_memcpy(&t.daddr[12], &ip.daddr, 4);
		has_ports = !(ip.frag_off & bpf_htons(0x1fff));	/* later fragments: none */
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;

		if (bpf_probe_read_kernel(&ip6, sizeof(ip6), head + nh) < 0 || ip6.version != 6)
			return 0;
		l4proto = ip6.nexthdr;
		l4_off = nh + sizeof(ip6);
		__builtin_memcpy(t.saddr, ip6.saddr, 16);
		__builtin_memcpy(t.daddr, ip6.daddr, 16);
	} else {
		count(CNT_NON_IP_DROPS);
		return 0;
	}
	t.protocol = l4proto;
	/* TCP and UDP both start with the two ports. */
	if (has_ports && (l4proto == IPPROTO_TCP || l4proto == IPPROTO_UDP)) {
		if (bpf_probe_read_kernel(ports, sizeof(ports), head + l4_off) == 0) {
			t.sport = bpf_ntohs(ports[0]);
			t.dport = bpf_ntohs(ports[1]);
		}
	}

	dev = BPF_CORE_READ(skb, dev);
	if (dev) {
		ifindex = BPF_CORE_READ(dev, ifindex);
		netns_ino = BPF_CORE_READ(dev, nd_net.net, ns.inum);
	} else {
		netns_ino = BPF_CORE_READ(skb, sk, __sk_common.skc_net.net, ns.inum);
	}

	ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (!ev) {
		count(CNT_RINGBUF_FULL);
		return 0;
	}
	fill_header(&ev->h, EV_DROP, DIR_UNKNOWN, ifindex, netns_ino, bpf_ktime_get_ns());
	ev->t = t;
	ev->reason = reason;
	ev->pad = 0;
	ev->location = (__u64)location;
	submit(ev);
	return 0;
}

//! NetworkPolicy semantics: a table of flows judged by `evaluate`, the
//! nftables scripts `compile` writes (exactly, and loaded into a scratch
//! network namespace by the real `nft`), and the story of the default
//! scenario: DNS denied by `frontend-egress`, allowed after `allow-dns.yaml`.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;

use k8s_openapi::api::networking::v1::NetworkPolicy;
use skymap_lab::policy::explain::explain;
use skymap_lab::policy::{
    Cluster, CompileError, ContainerPort, Decision, Direction, FlowQuery, Namespace, Node, Pod,
    PolicyRef, Protocol, SideDecision, compile, evaluate, validate,
};
use skymap_lab::scenario::{Scenario, load_policies, policies_from_yaml_str};

fn labels(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn pod(
    namespace: &str,
    name: &str,
    pod_labels: &[(&str, &str)],
    ip: [u8; 4],
    node: &str,
    ports: &[(&str, u16, Protocol)],
) -> Pod {
    Pod {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        labels: labels(pod_labels),
        ip: Ipv4Addr::from(ip),
        node: node.to_owned(),
        ports: ports
            .iter()
            .map(|(name, port, protocol)| ContainerPort {
                name: (*name).to_owned(),
                port: *port,
                protocol: *protocol,
            })
            .collect(),
    }
}

/// Two nodes; shop (web, two api pods), data (db), other (a tool that is
/// also labelled app=web, to catch selectors leaking across namespaces).
fn cluster() -> Cluster {
    use Protocol::{Tcp, Udp};
    Cluster {
        nodes: vec![
            Node {
                name: "n1".to_owned(),
                addresses: vec![Ipv4Addr::new(10, 244, 1, 1)],
            },
            Node {
                name: "n2".to_owned(),
                addresses: vec![Ipv4Addr::new(10, 244, 2, 1)],
            },
        ],
        namespaces: vec![
            Namespace {
                name: "shop".to_owned(),
                labels: labels(&[("team", "web")]),
            },
            Namespace {
                name: "data".to_owned(),
                labels: labels(&[("team", "db")]),
            },
            Namespace {
                name: "other".to_owned(),
                labels: labels(&[]),
            },
        ],
        pods: vec![
            pod(
                "shop",
                "web-a",
                &[("app", "web"), ("tier", "front")],
                [10, 244, 1, 2],
                "n1",
                &[("http", 8080, Tcp)],
            ),
            pod(
                "shop",
                "api-a",
                &[("app", "api")],
                [10, 244, 1, 3],
                "n1",
                &[("http", 9090, Tcp), ("metrics", 9100, Tcp)],
            ),
            pod(
                "shop",
                "api-b",
                &[("app", "api"), ("version", "v2")],
                [10, 244, 2, 2],
                "n2",
                &[("http", 9091, Tcp)],
            ),
            pod(
                "data",
                "db-a",
                &[("app", "db")],
                [10, 244, 2, 3],
                "n2",
                &[("sql", 5432, Tcp), ("dns", 53, Udp)],
            ),
            pod(
                "other",
                "tool",
                &[("app", "web")],
                [10, 244, 1, 4],
                "n1",
                &[],
            ),
        ],
    }
}

const WEB_A: [u8; 4] = [10, 244, 1, 2];
const API_A: [u8; 4] = [10, 244, 1, 3];
const API_B: [u8; 4] = [10, 244, 2, 2];
const DB_A: [u8; 4] = [10, 244, 2, 3];
const TOOL: [u8; 4] = [10, 244, 1, 4];
const NODE_1: [u8; 4] = [10, 244, 1, 1];
const NODE_2: [u8; 4] = [10, 244, 2, 1];

/// Policies written compactly: `(namespace, name, spec as YAML flow)`.
fn policies(specs: &[(&str, &str, &str)]) -> Vec<NetworkPolicy> {
    if specs.is_empty() {
        return Vec::new();
    }
    let text: Vec<String> = specs
        .iter()
        .map(|(namespace, name, spec)| {
            format!(
                "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec: {spec}\n"
            )
        })
        .collect();
    policies_from_yaml_str(&text.join("---\n"), "case.yaml").expect("valid test policies")
}

fn flow(src: [u8; 4], dst: [u8; 4], protocol: Protocol, dst_port: u16) -> FlowQuery {
    FlowQuery {
        src_ip: Ipv4Addr::from(src),
        dst_ip: Ipv4Addr::from(dst),
        protocol,
        dst_port,
    }
}

/// `E:<egress> I:<ingress>`, each `-` (not isolated), `node` (from the
/// local node), `+a,b` (allowed by) or `x:a,b` (denied, isolated by).
fn summary(decision: &Decision) -> String {
    let side = |s: &SideDecision| match s {
        SideDecision::NotIsolated => "-".to_owned(),
        SideDecision::FromLocalNode => "node".to_owned(),
        SideDecision::Allowed { by } => format!("+{}", refs(by)),
        SideDecision::Denied { isolated_by } => format!("x:{}", refs(isolated_by)),
    };
    format!("E:{} I:{}", side(&decision.egress), side(&decision.ingress))
}

fn refs(refs: &[PolicyRef]) -> String {
    let names: Vec<String> = refs.iter().map(ToString::to_string).collect();
    names.join(",")
}

/// What is checked, the policies, the flow, and the expected [`summary`].
type Case = (
    &'static str,
    Vec<(&'static str, &'static str, &'static str)>,
    FlowQuery,
    &'static str,
);

/// The table of evaluation cases, shared by the evaluation and the
/// explanation tests.
fn cases() -> Vec<Case> {
    use Protocol::{Tcp, Udp};
    let deny_all = ("shop", "deny-all", "{podSelector: {}}");
    let api_from_web = (
        "shop",
        "api-from-web",
        "{podSelector: {matchLabels: {app: api}}, ingress: [{from: [{podSelector: {matchLabels: {app: web}}}], ports: [{port: 9090}]}]}",
    );
    let api_from_db_ns = (
        "shop",
        "api-from-db",
        "{podSelector: {matchLabels: {app: api}}, ingress: [{from: [{namespaceSelector: {matchLabels: {team: db}}}]}]}",
    );
    // (what, policies, flow, expected summary)
    let cases: Vec<Case> = vec![
        (
            "no policies",
            vec![],
            flow(WEB_A, API_A, Tcp, 9090),
            "E:- I:-",
        ),
        (
            "default deny: empty podSelector, no rules",
            vec![deny_all],
            flow(WEB_A, API_A, Tcp, 9090),
            "E:- I:x:shop/deny-all",
        ),
        (
            "default deny isolates ingress only",
            vec![deny_all],
            flow(API_A, DB_A, Tcp, 5432),
            "E:- I:-",
        ),
        (
            "default deny stays in its namespace",
            vec![deny_all],
            flow(WEB_A, TOOL, Tcp, 80),
            "E:- I:-",
        ),
        (
            "the local node may always reach its pods",
            vec![deny_all],
            flow(NODE_1, API_A, Tcp, 9090),
            "E:- I:node",
        ),
        (
            "another node may not",
            vec![deny_all],
            flow(NODE_2, API_A, Tcp, 9090),
            "E:- I:x:shop/deny-all",
        ),
        (
            "podSelector peer",
            vec![api_from_web],
            flow(WEB_A, API_A, Tcp, 9090),
            "E:- I:+shop/api-from-web",
        ),
        (
            "podSelector peer only in the policy's namespace",
            vec![api_from_web],
            flow(TOOL, API_A, Tcp, 9090),
            "E:- I:x:shop/api-from-web",
        ),
        (
            "podSelector peer: other labels denied",
            vec![api_from_web],
            flow(API_B, API_A, Tcp, 9090),
            "E:- I:x:shop/api-from-web",
        ),
        (
            "numbered port: other port denied",
            vec![api_from_web],
            flow(WEB_A, API_A, Tcp, 9100),
            "E:- I:x:shop/api-from-web",
        ),
        (
            "numbered port without protocol means TCP",
            vec![api_from_web],
            flow(WEB_A, API_A, Udp, 9090),
            "E:- I:x:shop/api-from-web",
        ),
        (
            "namespaceSelector peer",
            vec![api_from_db_ns],
            flow(DB_A, API_A, Tcp, 1234),
            "E:- I:+shop/api-from-db",
        ),
        (
            "namespaceSelector peer: own namespace not matched",
            vec![api_from_db_ns],
            flow(WEB_A, API_A, Tcp, 1234),
            "E:- I:x:shop/api-from-db",
        ),
        (
            "multiple policies: union, the allowing one named",
            vec![api_from_web, api_from_db_ns],
            flow(DB_A, API_A, Tcp, 9090),
            "E:- I:+shop/api-from-db",
        ),
        (
            "a default deny does not cancel an allow",
            vec![deny_all, api_from_web],
            flow(WEB_A, API_A, Tcp, 9090),
            "E:- I:+shop/api-from-web",
        ),
        (
            "multiple policies: none allows, both named",
            vec![api_from_web, api_from_db_ns],
            flow(TOOL, API_A, Tcp, 9090),
            "E:- I:x:shop/api-from-db,shop/api-from-web",
        ),
        (
            "namespaceSelector and podSelector together",
            vec![(
                "shop",
                "both",
                "{podSelector: {matchLabels: {app: api}}, ingress: [{from: [{namespaceSelector: {}, podSelector: {matchLabels: {app: web}}}]}]}",
            )],
            flow(TOOL, API_A, Tcp, 1),
            "E:- I:+shop/both",
        ),
        (
            "namespaceSelector and podSelector together: both must match",
            vec![(
                "shop",
                "both",
                "{podSelector: {matchLabels: {app: api}}, ingress: [{from: [{namespaceSelector: {matchLabels: {team: db}}, podSelector: {matchLabels: {app: web}}}]}]}",
            )],
            flow(WEB_A, API_A, Tcp, 1),
            "E:- I:x:shop/both",
        ),
        (
            "two peers in one rule are a union",
            vec![(
                "shop",
                "either",
                "{podSelector: {matchLabels: {app: api}}, ingress: [{from: [{namespaceSelector: {matchLabels: {team: db}}}, {podSelector: {matchLabels: {app: web}}}]}]}",
            )],
            flow(WEB_A, API_A, Tcp, 1),
            "E:- I:+shop/either",
        ),
        (
            "the namespace name label is implied",
            vec![(
                "shop",
                "by-name",
                "{podSelector: {matchLabels: {app: api}}, ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: data}}}]}]}",
            )],
            flow(DB_A, API_A, Tcp, 1),
            "E:- I:+shop/by-name",
        ),
        (
            "ipBlock",
            vec![(
                "shop",
                "block",
                "{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 192.168.0.0/16, except: [192.168.1.0/24]}}]}]}",
            )],
            flow([192, 168, 2, 7], API_A, Tcp, 9090),
            "E:- I:+shop/block",
        ),
        (
            "ipBlock except",
            vec![(
                "shop",
                "block",
                "{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 192.168.0.0/16, except: [192.168.1.0/24]}}]}]}",
            )],
            flow([192, 168, 1, 10], API_A, Tcp, 9090),
            "E:- I:x:shop/block",
        ),
        (
            "ipBlock matches pod addresses",
            vec![(
                "shop",
                "to-n2",
                "{podSelector: {matchLabels: {app: web}}, policyTypes: [Egress], egress: [{to: [{ipBlock: {cidr: 10.244.2.0/24, except: [10.244.2.3/32]}}]}]}",
            )],
            flow(WEB_A, API_B, Tcp, 9091),
            "E:+shop/to-n2 I:-",
        ),
        (
            "ipBlock except on a pod address",
            vec![(
                "shop",
                "to-n2",
                "{podSelector: {matchLabels: {app: web}}, policyTypes: [Egress], egress: [{to: [{ipBlock: {cidr: 10.244.2.0/24, except: [10.244.2.3/32]}}]}]}",
            )],
            flow(WEB_A, DB_A, Tcp, 5432),
            "E:x:shop/to-n2 I:-",
        ),
        (
            "selectors never match addresses of no pod",
            vec![(
                "shop",
                "all-pods",
                "{podSelector: {}, ingress: [{from: [{namespaceSelector: {}}]}]}",
            )],
            flow([192, 168, 1, 10], API_A, Tcp, 9090),
            "E:- I:x:shop/all-pods",
        ),
        (
            "an empty rule allows everything",
            vec![("shop", "open", "{podSelector: {}, ingress: [{}]}")],
            flow([192, 168, 1, 10], API_A, Udp, 7),
            "E:- I:+shop/open",
        ),
        (
            "named port on ingress resolves on the destination",
            vec![(
                "shop",
                "named",
                "{podSelector: {matchLabels: {app: api}}, ingress: [{ports: [{port: http}]}]}",
            )],
            flow(WEB_A, API_B, Tcp, 9091),
            "E:- I:+shop/named",
        ),
        (
            "named port on ingress: another pod's number does not count",
            vec![(
                "shop",
                "named",
                "{podSelector: {matchLabels: {app: api}}, ingress: [{ports: [{port: http}]}]}",
            )],
            flow(WEB_A, API_B, Tcp, 9090),
            "E:- I:x:shop/named",
        ),
        (
            "named port on egress resolves on the destination pod",
            vec![(
                "shop",
                "sql",
                "{podSelector: {matchLabels: {app: web}}, policyTypes: [Egress], egress: [{ports: [{port: sql}]}]}",
            )],
            flow(WEB_A, DB_A, Tcp, 5432),
            "E:+shop/sql I:-",
        ),
        (
            "named port on egress: a pod without it",
            vec![(
                "shop",
                "sql",
                "{podSelector: {matchLabels: {app: web}}, policyTypes: [Egress], egress: [{ports: [{port: sql}]}]}",
            )],
            flow(WEB_A, API_A, Tcp, 5432),
            "E:x:shop/sql I:-",
        ),
        (
            "named port on egress: never an address of no pod",
            vec![(
                "shop",
                "sql",
                "{podSelector: {matchLabels: {app: web}}, policyTypes: [Egress], egress: [{ports: [{port: sql}]}]}",
            )],
            flow(WEB_A, [10, 0, 0, 5], Tcp, 5432),
            "E:x:shop/sql I:-",
        ),
        (
            "protocol UDP",
            vec![(
                "shop",
                "dns",
                "{podSelector: {matchLabels: {app: web}}, policyTypes: [Egress], egress: [{ports: [{protocol: UDP, port: 53}]}]}",
            )],
            flow(WEB_A, DB_A, Udp, 53),
            "E:+shop/dns I:-",
        ),
        (
            "protocol UDP: TCP on the same port denied",
            vec![(
                "shop",
                "dns",
                "{podSelector: {matchLabels: {app: web}}, policyTypes: [Egress], egress: [{ports: [{protocol: UDP, port: 53}]}]}",
            )],
            flow(WEB_A, DB_A, Tcp, 53),
            "E:x:shop/dns I:-",
        ),
        (
            "endPort: upper end included",
            vec![(
                "shop",
                "range",
                "{podSelector: {matchLabels: {app: api}}, ingress: [{ports: [{port: 9000, endPort: 9100}]}]}",
            )],
            flow(WEB_A, API_A, Tcp, 9100),
            "E:- I:+shop/range",
        ),
        (
            "endPort: beyond denied",
            vec![(
                "shop",
                "range",
                "{podSelector: {matchLabels: {app: api}}, ingress: [{ports: [{port: 9000, endPort: 9100}]}]}",
            )],
            flow(WEB_A, API_A, Tcp, 9101),
            "E:- I:x:shop/range",
        ),
        (
            "endPort: below denied",
            vec![(
                "shop",
                "range",
                "{podSelector: {matchLabels: {app: api}}, ingress: [{ports: [{port: 9000, endPort: 9100}]}]}",
            )],
            flow(WEB_A, API_A, Tcp, 8999),
            "E:- I:x:shop/range",
        ),
        (
            "SCTP ports match nothing here",
            vec![(
                "shop",
                "sctp",
                "{podSelector: {matchLabels: {app: api}}, ingress: [{ports: [{protocol: SCTP}]}]}",
            )],
            flow(WEB_A, API_A, Tcp, 9090),
            "E:- I:x:shop/sctp",
        ),
        (
            "both directions: allowed on both sides",
            vec![
                (
                    "shop",
                    "web-out",
                    "{podSelector: {matchLabels: {app: web}}, policyTypes: [Egress], egress: [{to: [{podSelector: {matchLabels: {app: api}}}]}]}",
                ),
                api_from_web,
            ],
            flow(WEB_A, API_A, Tcp, 9090),
            "E:+shop/web-out I:+shop/api-from-web",
        ),
        (
            "both directions: egress denies first",
            vec![
                (
                    "shop",
                    "web-out",
                    "{podSelector: {matchLabels: {app: web}}, policyTypes: [Egress], egress: [{to: [{podSelector: {matchLabels: {app: api}}}]}]}",
                ),
                api_from_web,
            ],
            flow(WEB_A, DB_A, Tcp, 5432),
            "E:x:shop/web-out I:-",
        ),
        (
            "both directions: egress allows, ingress denies",
            vec![
                (
                    "shop",
                    "web-out",
                    "{podSelector: {matchLabels: {app: web}}, policyTypes: [Egress], egress: [{to: [{podSelector: {matchLabels: {app: api}}}]}]}",
                ),
                api_from_web,
            ],
            flow(WEB_A, API_A, Tcp, 9100),
            "E:+shop/web-out I:x:shop/api-from-web",
        ),
        (
            "policyTypes default: egress rules imply Egress",
            vec![(
                "shop",
                "implied",
                "{podSelector: {matchLabels: {app: web}}, egress: [{to: [{podSelector: {matchLabels: {app: api}}}]}]}",
            )],
            flow(WEB_A, DB_A, Tcp, 5432),
            "E:x:shop/implied I:-",
        ),
        (
            "policyTypes default: Ingress always, so nothing comes in",
            vec![(
                "shop",
                "implied",
                "{podSelector: {matchLabels: {app: web}}, egress: [{to: [{podSelector: {matchLabels: {app: api}}}]}]}",
            )],
            flow(API_A, WEB_A, Tcp, 8080),
            "E:- I:x:shop/implied",
        ),
        (
            "policyTypes default: an empty egress list is no Egress",
            vec![(
                "shop",
                "empty-egress",
                "{podSelector: {matchLabels: {app: web}}, egress: []}",
            )],
            flow(WEB_A, DB_A, Tcp, 5432),
            "E:- I:-",
        ),
        (
            "policyTypes [Egress] without rules denies all egress",
            vec![(
                "shop",
                "no-out",
                "{podSelector: {matchLabels: {app: web}}, policyTypes: [Egress]}",
            )],
            flow(WEB_A, [10, 0, 0, 5], Udp, 53),
            "E:x:shop/no-out I:-",
        ),
        (
            "policyTypes [Egress] leaves ingress open",
            vec![(
                "shop",
                "no-out",
                "{podSelector: {matchLabels: {app: web}}, policyTypes: [Egress]}",
            )],
            flow(API_A, WEB_A, Tcp, 8080),
            "E:- I:-",
        ),
        (
            "a policy selects only in its own namespace",
            vec![(
                "data",
                "elsewhere",
                "{podSelector: {matchLabels: {app: web}}, policyTypes: [Ingress, Egress]}",
            )],
            flow(WEB_A, TOOL, Tcp, 80),
            "E:- I:-",
        ),
        (
            "matchExpressions In",
            vec![(
                "shop",
                "in",
                "{podSelector: {matchLabels: {app: api}}, ingress: [{from: [{namespaceSelector: {}, podSelector: {matchExpressions: [{key: app, operator: In, values: [web, db]}]}}]}]}",
            )],
            flow(DB_A, API_A, Tcp, 1),
            "E:- I:+shop/in",
        ),
        (
            "matchExpressions In: other value",
            vec![(
                "shop",
                "in",
                "{podSelector: {matchLabels: {app: api}}, ingress: [{from: [{namespaceSelector: {}, podSelector: {matchExpressions: [{key: app, operator: In, values: [web, db]}]}}]}]}",
            )],
            flow(API_B, API_A, Tcp, 1),
            "E:- I:x:shop/in",
        ),
        (
            "matchExpressions NotIn",
            vec![(
                "shop",
                "not-in",
                "{podSelector: {matchLabels: {app: api}}, ingress: [{from: [{podSelector: {matchExpressions: [{key: app, operator: NotIn, values: [web]}]}}]}]}",
            )],
            flow(API_B, API_A, Tcp, 1),
            "E:- I:+shop/not-in",
        ),
        (
            "matchExpressions NotIn: listed value",
            vec![(
                "shop",
                "not-in",
                "{podSelector: {matchLabels: {app: api}}, ingress: [{from: [{podSelector: {matchExpressions: [{key: app, operator: NotIn, values: [web]}]}}]}]}",
            )],
            flow(WEB_A, API_A, Tcp, 1),
            "E:- I:x:shop/not-in",
        ),
        (
            "matchExpressions NotIn matches a missing label",
            vec![(
                "shop",
                "not-in",
                "{podSelector: {matchLabels: {app: api}}, ingress: [{from: [{podSelector: {matchExpressions: [{key: version, operator: NotIn, values: [v2]}]}}]}]}",
            )],
            flow(WEB_A, API_A, Tcp, 1),
            "E:- I:+shop/not-in",
        ),
        (
            "matchExpressions Exists",
            vec![(
                "shop",
                "exists",
                "{podSelector: {matchLabels: {app: api}}, ingress: [{from: [{podSelector: {matchExpressions: [{key: version, operator: Exists}]}}]}]}",
            )],
            flow(API_B, API_A, Tcp, 1),
            "E:- I:+shop/exists",
        ),
        (
            "matchExpressions Exists: label missing",
            vec![(
                "shop",
                "exists",
                "{podSelector: {matchLabels: {app: api}}, ingress: [{from: [{podSelector: {matchExpressions: [{key: version, operator: Exists}]}}]}]}",
            )],
            flow(WEB_A, API_A, Tcp, 1),
            "E:- I:x:shop/exists",
        ),
        (
            "matchExpressions DoesNotExist",
            vec![(
                "shop",
                "absent",
                "{podSelector: {matchLabels: {app: api}}, ingress: [{from: [{podSelector: {matchExpressions: [{key: tier, operator: DoesNotExist}]}}]}]}",
            )],
            flow(API_B, API_A, Tcp, 1),
            "E:- I:+shop/absent",
        ),
        (
            "matchExpressions DoesNotExist: label present",
            vec![(
                "shop",
                "absent",
                "{podSelector: {matchLabels: {app: api}}, ingress: [{from: [{podSelector: {matchExpressions: [{key: tier, operator: DoesNotExist}]}}]}]}",
            )],
            flow(WEB_A, API_A, Tcp, 1),
            "E:- I:x:shop/absent",
        ),
        (
            "matchExpressions select the isolated pods too",
            vec![(
                "shop",
                "v2-closed",
                "{podSelector: {matchExpressions: [{key: version, operator: In, values: [v2]}]}}",
            )],
            flow(WEB_A, API_A, Tcp, 9090),
            "E:- I:-",
        ),
    ];
    cases
}

#[test]
fn evaluate_follows_kubernetes_semantics() {
    let cluster = cluster();
    let mut wrong = Vec::new();
    for (what, specs, query, expected) in &cases() {
        let got = summary(&evaluate(&cluster, &policies(specs), query));
        if got != *expected {
            wrong.push(format!("{what}: wanted {expected}, got {got}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn every_denied_case_is_explained_and_its_suggestion_allows_only_more() {
    let cluster = cluster();
    let cases = cases();
    let mut wrong = Vec::new();
    for (what, specs, query, _) in &cases {
        let policies = policies(specs);
        let decision = evaluate(&cluster, &policies, query);
        let Some(explanation) = explain(&cluster, &policies, query) else {
            if !decision.is_allowed() {
                wrong.push(format!("{what}: denied but not explained"));
            }
            continue;
        };
        if decision.is_allowed() {
            wrong.push(format!("{what}: allowed but explained"));
            continue;
        }
        // The sides named are exactly the denying sides, with their policies.
        let denied: Vec<(Direction, Vec<PolicyRef>)> = [
            (Direction::Egress, &decision.egress),
            (Direction::Ingress, &decision.ingress),
        ]
        .into_iter()
        .filter_map(|(direction, side)| match side {
            SideDecision::Denied { isolated_by } => Some((direction, isolated_by.clone())),
            _ => None,
        })
        .collect();
        let named: Vec<(Direction, Vec<PolicyRef>)> = explanation
            .sides
            .iter()
            .map(|side| (side.direction, side.policies.clone()))
            .collect();
        if named != denied {
            wrong.push(format!("{what}: names {named:?}, denied by {denied:?}"));
        }
        for side in &explanation.sides {
            for policy in &side.policies {
                if !side.summary.contains(&policy.name) {
                    wrong.push(format!("{what}: {:?} does not name {policy}", side.summary));
                }
            }
        }
        // The suggestions are valid objects, survive YAML, and fix the flow.
        for suggestion in &explanation.suggestions {
            if let Err(invalid) = validate(suggestion) {
                wrong.push(format!("{what}: invalid suggestion: {invalid:?}"));
            }
        }
        let reparsed = policies_from_yaml_str(&explanation.suggestions_yaml(), "suggested.yaml")
            .expect("suggested YAML parses");
        if reparsed != explanation.suggestions {
            wrong.push(format!("{what}: YAML does not round-trip"));
        }
        let mut fixed = policies.clone();
        fixed.extend(reparsed);
        if !evaluate(&cluster, &fixed, query).is_allowed() {
            wrong.push(format!("{what}: still denied with the suggestion"));
        }
        // Nothing the table allowed before is denied after, unless a caveat
        // says the selector isolates more pods.
        if explanation.caveats.is_empty() {
            for (other, _, other_query, _) in &cases {
                let before = evaluate(&cluster, &policies, other_query).is_allowed();
                if before && !evaluate(&cluster, &fixed, other_query).is_allowed() {
                    wrong.push(format!("{what}: its suggestion denies {other:?}"));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_story_drop_is_explained_in_words_with_a_fix() {
    let scenario = Scenario::load(scenario_path("default.yaml")).expect("default.yaml");
    let plan = scenario.plan();
    let cluster = plan.cluster();
    let ip_of = |workload: &str| {
        plan.pods
            .iter()
            .find(|p| p.workload == workload)
            .map(|p| p.ip)
            .expect("pod")
    };
    let query = FlowQuery {
        src_ip: ip_of("frontend"),
        dst_ip: ip_of("kube-dns"),
        protocol: Protocol::Udp,
        dst_port: 53,
    };
    let explanation = explain(&cluster, scenario.policies(), &query).expect("denied");
    assert_eq!(explanation.sides.len(), 1);
    assert_eq!(
        explanation.sides[0].summary,
        "egress of shop/frontend is limited by policy frontend-egress, which allows only \
         app in (catalog, cart) on TCP/8080; nothing allows UDP/53 to kube-system/kube-dns"
    );
    assert_eq!(
        explanation.sides[0].allows,
        ["shop/frontend-egress allows to app in (catalog, cart) on TCP/8080"]
    );
    assert!(explanation.caveats.is_empty(), "{:?}", explanation.caveats);
    assert_eq!(
        explanation.suggestions_yaml(),
        "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: frontend-egress-to-kube-dns-udp-53
  namespace: shop
spec:
  egress:
  - ports:
    - port: 53
      protocol: UDP
    to:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: kube-system
      podSelector:
        matchLabels:
          k8s-app: kube-dns
  podSelector:
    matchLabels:
      app: frontend
  policyTypes:
  - Egress
"
    );
    // Every frontend replica may now reach every kube-dns replica.
    let mut fixed = scenario.policies().to_vec();
    fixed.extend(explanation.suggestions.iter().cloned());
    for frontend in plan.pods.iter().filter(|p| p.workload == "frontend") {
        for dns in plan.pods.iter().filter(|p| p.workload == "kube-dns") {
            let query = FlowQuery {
                src_ip: frontend.ip,
                dst_ip: dns.ip,
                ..query
            };
            assert!(evaluate(&cluster, &fixed, &query).is_allowed());
        }
    }
}

#[test]
fn decision_names_the_denying_side() {
    let cluster = cluster();
    let policies = policies(&[
        (
            "shop",
            "web-out",
            "{podSelector: {matchLabels: {app: web}}, policyTypes: [Egress]}",
        ),
        ("shop", "deny-all", "{podSelector: {}}"),
    ]);
    let both = evaluate(
        &cluster,
        &policies,
        &flow(WEB_A, API_A, Protocol::Tcp, 9090),
    );
    assert!(!both.is_allowed());
    let (side, refs) = both.denied().expect("denied");
    assert_eq!(side, Direction::Egress);
    assert_eq!(
        refs,
        [PolicyRef {
            namespace: "shop".to_owned(),
            name: "web-out".to_owned()
        }]
    );
    let ingress_only = evaluate(&cluster, &policies, &flow(DB_A, API_A, Protocol::Tcp, 9090));
    assert_eq!(
        ingress_only
            .denied()
            .map(|(side, refs)| (side, refs[0].to_string())),
        Some((Direction::Ingress, "shop/deny-all".to_owned()))
    );
    let open = evaluate(&cluster, &policies, &flow(API_A, DB_A, Protocol::Tcp, 5432));
    assert!(open.is_allowed());
    assert_eq!(open.denied(), None);
}

#[test]
fn compile_writes_this_exact_script() {
    let cluster = cluster();
    let policies = policies(&[
        (
            "shop",
            "web-out",
            "{podSelector: {matchLabels: {app: web}}, policyTypes: [Egress], egress: [{to: [{podSelector: {matchLabels: {app: api}}}, {ipBlock: {cidr: 192.168.0.0/16, except: [192.168.1.0/24]}}], ports: [{port: 9000, endPort: 9100}, {protocol: UDP, port: 53}]}, {ports: [{port: sql}]}]}",
        ),
        (
            "shop",
            "api-in",
            "{podSelector: {matchLabels: {app: api}}, ingress: [{from: [{podSelector: {matchLabels: {app: web}}}], ports: [{port: http}]}, {from: [{namespaceSelector: {matchLabels: {team: db}}}]}]}",
        ),
    ]);
    let scripts = compile(&cluster, &policies, "skymap_lab_t").expect("compiles");
    assert_eq!(scripts.keys().collect::<Vec<_>>(), ["n1", "n2"]);
    let expected_n1 = "\
# skymap lab: NetworkPolicies for node n1
table inet skymap_lab_t {}
delete table inet skymap_lab_t
table inet skymap_lab_t {
\tchain forward {
\t\ttype filter hook forward priority filter; policy accept;
\t\tct state established,related accept
\t\tip saddr vmap { 10.244.1.2 : jump egress/shop/web-a }
\t\tip daddr vmap { 10.244.1.3 : jump ingress/shop/api-a }
\t}
\tchain ingress/shop/api-a {
\t\tcomment \"Ingress of shop/api-a\"
\t\tip saddr { 10.244.1.2 } tcp dport { 9090 } return comment \"allowed by shop/api-in\"
\t\tip saddr { 10.244.2.3 } return comment \"allowed by shop/api-in\"
\t\tcounter drop comment \"isolated by shop/api-in\"
\t}
\tchain egress/shop/web-a {
\t\tcomment \"Egress of shop/web-a\"
\t\tip daddr { 10.244.1.3, 10.244.2.2, 192.168.0.0/24, 192.168.2.0-192.168.255.255 } tcp dport { 9000-9100 } return comment \"allowed by shop/web-out\"
\t\tip daddr { 10.244.1.3, 10.244.2.2, 192.168.0.0/24, 192.168.2.0-192.168.255.255 } udp dport { 53 } return comment \"allowed by shop/web-out\"
\t\tip daddr { 10.244.2.3 } tcp dport { 5432 } return comment \"allowed by shop/web-out\"
\t\tcounter drop comment \"isolated by shop/web-out\"
\t}
}
";
    assert_eq!(scripts["n1"], expected_n1);
    // On n2 only api-b is isolated; its named port resolves to its own 9091.
    assert!(scripts["n2"].contains("\t\tip daddr vmap { 10.244.2.2 : jump ingress/shop/api-b }\n"));
    assert!(scripts["n2"].contains(
        "\t\tip saddr { 10.244.1.2 } tcp dport { 9091 } return comment \"allowed by shop/api-in\"\n"
    ));
    assert!(!scripts["n2"].contains("ip saddr vmap"));

    assert_eq!(
        compile(&cluster, &policies, "bad name"),
        Err(CompileError::TableName("bad name".to_owned()))
    );
}

fn scenario_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(name)
}

/// The body of chain `name` in `script`.
fn chain_body<'a>(script: &'a str, name: &str) -> &'a str {
    let start = script
        .find(&format!("\tchain {name} {{\n"))
        .unwrap_or_else(|| panic!("no chain {name} in:\n{script}"));
    let body = &script[start..];
    &body[..body.find("\n\t}").expect("chain end")]
}

#[test]
fn story_dns_is_denied_until_allow_dns_is_applied() {
    let scenario = Scenario::load(scenario_path("default.yaml")).expect("default.yaml");
    let plan = scenario.plan();
    let cluster = plan.cluster();
    let frontends: Vec<_> = plan
        .pods
        .iter()
        .filter(|p| p.workload == "frontend")
        .collect();
    let dns_pods: Vec<_> = plan
        .pods
        .iter()
        .filter(|p| p.workload == "kube-dns")
        .collect();
    assert_eq!((frontends.len(), dns_pods.len()), (2, 2));

    let before = scenario.policies().to_vec();
    let mut after = before.clone();
    after.extend(load_policies(scenario_path("allow-dns.yaml")).expect("allow-dns.yaml"));

    let scripts_before = compile(&cluster, &before, "skymap_lab_story").expect("compiles");
    let scripts_after = compile(&cluster, &after, "skymap_lab_story").expect("compiles");
    for frontend in &frontends {
        let chain = format!("egress/shop/{}", frontend.name);
        let body = chain_body(&scripts_before[&frontend.node], &chain);
        assert!(!body.contains("udp"), "{body}");
        assert!(body.contains(" tcp dport { 8080 } return "), "{body}");
        let body = chain_body(&scripts_after[&frontend.node], &chain);
        let dns_ips: Vec<String> = dns_pods.iter().map(|p| p.ip.to_string()).collect();
        let dns_set = format!("ip daddr {{ {} }}", sorted(&dns_ips).join(", "));
        assert!(
            body.contains(&format!(
                "{dns_set} udp dport {{ 53 }} return comment \"allowed by shop/frontend-allow-dns\""
            )),
            "{body}"
        );
        assert!(
            body.contains(&format!("{dns_set} tcp dport {{ 53 }} return")),
            "{body}"
        );

        for dns in &dns_pods {
            let query = FlowQuery {
                src_ip: frontend.ip,
                dst_ip: dns.ip,
                protocol: Protocol::Udp,
                dst_port: 53,
            };
            let frontend_egress = PolicyRef {
                namespace: "shop".to_owned(),
                name: "frontend-egress".to_owned(),
            };
            assert_eq!(
                evaluate(&cluster, &before, &query),
                Decision {
                    egress: SideDecision::Denied {
                        isolated_by: vec![frontend_egress]
                    },
                    ingress: SideDecision::NotIsolated,
                }
            );
            assert_eq!(
                evaluate(&cluster, &after, &query),
                Decision {
                    egress: SideDecision::Allowed {
                        by: vec![PolicyRef {
                            namespace: "shop".to_owned(),
                            name: "frontend-allow-dns".to_owned(),
                        }]
                    },
                    ingress: SideDecision::NotIsolated,
                }
            );
        }
    }
    // The frontend's calls to its backends were allowed all along.
    let catalog = plan
        .pods
        .iter()
        .find(|p| p.workload == "catalog")
        .expect("catalog");
    let call = FlowQuery {
        src_ip: frontends[0].ip,
        dst_ip: catalog.ip,
        protocol: Protocol::Tcp,
        dst_port: 8080,
    };
    assert!(evaluate(&cluster, &before, &call).is_allowed());
}

fn sorted(ips: &[String]) -> Vec<String> {
    let mut ips: Vec<Ipv4Addr> = ips.iter().filter_map(|ip| ip.parse().ok()).collect();
    ips.sort();
    ips.iter().map(ToString::to_string).collect()
}

/// A network namespace for this test, deleted when dropped.
struct ScratchNetns(String);

impl ScratchNetns {
    fn new(tag: &str) -> ScratchNetns {
        let name = format!("skymap-policy-{tag}-{}", std::process::id());
        run("ip", &["netns", "add", &name]);
        ScratchNetns(name)
    }

    fn nft(&self, args: &[&str]) -> String {
        let mut full = vec!["netns", "exec", &self.0, "nft"];
        full.extend_from_slice(args);
        run("ip", &full)
    }
}

impl Drop for ScratchNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Chain names in `nft list table` output.
fn chains(listing: &str) -> BTreeSet<String> {
    listing
        .lines()
        .filter_map(|line| line.trim().strip_prefix("chain "))
        .filter_map(|rest| rest.strip_suffix(" {"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn compiled_scripts_load_into_nftables_and_replace_each_other() {
    let table = format!("skymap_policy_{}", std::process::id());
    let netns = ScratchNetns::new("load");
    let dir = std::env::temp_dir();

    // The large scenario with its policies plus a few of every kind.
    let scenario = Scenario::load(scenario_path("large.yaml")).expect("large.yaml");
    let plan = scenario.plan();
    let cluster = plan.cluster();
    let mut policies = scenario.policies().to_vec();
    policies.extend(load_policies(scenario_path("allow-dns.yaml")).expect("allow-dns.yaml"));
    let scripts = compile(&cluster, &policies, &table).expect("compiles");
    assert_eq!(scripts.len(), 3);

    for (node, script) in &scripts {
        let file = dir.join(format!("{table}-{node}.nft"));
        std::fs::write(&file, script).expect("write script");
        let loaded = std::panic::catch_unwind(|| {
            netns.nft(&["-f", file.to_str().expect("utf-8 path")]);
            netns.nft(&["list", "table", "inet", &table])
        });
        let _ = std::fs::remove_file(&file);
        let listing = loaded.unwrap_or_else(|_| panic!("loading the script for {node}:\n{script}"));

        let mut expected: BTreeSet<String> = BTreeSet::from(["forward".to_owned()]);
        for pod in cluster.pods.iter().filter(|p| &p.node == node) {
            for (direction, prefix) in [
                (Direction::Egress, "egress"),
                (Direction::Ingress, "ingress"),
            ] {
                let isolated = cluster.pods.iter().filter(|q| q.ip != pod.ip).any(|q| {
                    let query = match direction {
                        Direction::Egress => flow(pod.ip.octets(), q.ip.octets(), Protocol::Udp, 1),
                        Direction::Ingress => {
                            flow(q.ip.octets(), pod.ip.octets(), Protocol::Udp, 1)
                        }
                    };
                    let decision = evaluate(&cluster, &policies, &query);
                    let side = match direction {
                        Direction::Egress => decision.egress,
                        Direction::Ingress => decision.ingress,
                    };
                    side != SideDecision::NotIsolated
                });
                if isolated {
                    expected.insert(format!("{prefix}/{}/{}", pod.namespace, pod.name));
                }
            }
        }
        // Data pods are ingress-isolated, search and frontend egress-isolated:
        // every node has some per-pod chains.
        assert!(expected.len() > 1, "{node}: {expected:?}");
        // Loading a node's script replaced the previous node's table.
        assert_eq!(chains(&listing), expected, "{node}:\n{listing}");
    }

    // A script without isolated pods loads too, and leaves only `forward`.
    let file = dir.join(format!("{table}-open.nft"));
    let open = compile(&cluster, &[], &table).expect("compiles");
    std::fs::write(&file, &open["node-1"]).expect("write script");
    let loaded = std::panic::catch_unwind(|| {
        netns.nft(&["-f", file.to_str().expect("utf-8 path")]);
        netns.nft(&["list", "table", "inet", &table])
    });
    let _ = std::fs::remove_file(&file);
    let listing = loaded.unwrap_or_else(|_| panic!("loading the open script"));
    assert_eq!(chains(&listing), BTreeSet::from(["forward".to_owned()]));
    assert!(
        listing.contains("ct state established,related accept"),
        "{listing}"
    );
}

//! The scenario file and policy files: the shipped scenarios parse and plan
//! to exact addresses, and every kind of mistake is reported with file,
//! line, column and field.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use skymap_lab::policy::{ContainerPort, Protocol};
use skymap_lab::scenario::{
    Latency, Scenario, ScenarioError, TargetPort, load_policies, policies_from_yaml_str,
};

fn scenario_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(name)
}

fn parse(text: &str) -> Result<Scenario, ScenarioError> {
    Scenario::from_yaml_str(text, "lab/scenarios/x.yaml")
}

fn error(text: &str) -> String {
    match parse(text) {
        Ok(_) => "parsed without error".to_owned(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn default_scenario_plans_to_exact_addresses() {
    let scenario = Scenario::load(scenario_path("default.yaml")).expect("default.yaml");
    assert_eq!(scenario.name(), "story");
    assert_eq!(scenario.nodes(), ["node-1", "node-2", "node-3"]);
    let namespaces: Vec<&str> = scenario
        .namespaces()
        .iter()
        .map(|n| n.name.as_str())
        .collect();
    assert_eq!(namespaces, ["users", "shop", "kube-system"]);
    assert_eq!(scenario.policies().len(), 1);

    let frontend = &scenario.workloads()[1];
    assert_eq!(frontend.name, "frontend");
    assert_eq!(frontend.replicas, 2);
    let serve = frontend.serve.as_ref().expect("frontend serves");
    assert_eq!(
        serve.latency,
        Latency::Percentiles {
            p50: Duration::from_millis(15),
            p99: Duration::from_millis(60)
        }
    );
    assert_eq!(serve.errors, 0.01);
    let calls: Vec<String> = frontend
        .calls
        .iter()
        .map(|c| format!("{}:{} {} {}", c.to, c.port, c.rate, c.path))
        .collect();
    assert_eq!(
        calls,
        ["catalog.shop:8080 4 /products", "cart.shop:8080 2 /cart"]
    );
    let loadgen = &scenario.workloads()[0];
    assert_eq!(
        loadgen.labels.get("app").map(String::as_str),
        Some("loadgen")
    );
    assert_eq!(loadgen.nodes, ["node-1", "node-2", "node-3"]);

    let plan = scenario.plan();
    let pods: Vec<String> = plan
        .pods
        .iter()
        .map(|p| format!("{}/{} {} {}", p.namespace, p.name, p.node, p.ip))
        .collect();
    assert_eq!(
        pods,
        [
            "users/loadgen-v2plc node-1 10.244.1.2",
            "shop/frontend-6jp7l node-2 10.244.2.2",
            "shop/frontend-t5lbh node-3 10.244.3.2",
            "shop/catalog-8rf44 node-1 10.244.1.3",
            "shop/cart-cg944 node-2 10.244.2.3",
            "kube-system/kube-dns-7b4nl node-3 10.244.3.3",
            "kube-system/kube-dns-hq6kq node-1 10.244.1.4",
        ]
    );
    let nodes: Vec<String> = plan
        .nodes
        .iter()
        .map(|n| format!("{} {} {} {}", n.name, n.index, n.address, n.pod_subnet))
        .collect();
    assert_eq!(
        nodes,
        [
            "node-1 1 10.244.1.1 10.244.1.0",
            "node-2 2 10.244.2.1 10.244.2.0",
            "node-3 3 10.244.3.1 10.244.3.0",
        ]
    );
    let services: Vec<String> = plan
        .services
        .iter()
        .map(|s| {
            let ports: Vec<String> = s
                .ports
                .iter()
                .map(|p| {
                    let eps: Vec<String> = p
                        .endpoints
                        .iter()
                        .map(|e| format!("{}:{}", e.ip, e.port))
                        .collect();
                    format!("{}/{} -> {}", p.port, p.protocol, eps.join(","))
                })
                .collect();
            format!(
                "{}/{} {} {}",
                s.namespace,
                s.name,
                s.cluster_ip,
                ports.join(" ")
            )
        })
        .collect();
    assert_eq!(
        services,
        [
            "shop/frontend 10.96.0.11 8080/TCP -> 10.244.2.2:8080,10.244.3.2:8080",
            "shop/catalog 10.96.0.12 8080/TCP -> 10.244.1.3:8080",
            "shop/cart 10.96.0.13 8080/TCP -> 10.244.2.3:8080",
            "kube-system/kube-dns 10.96.0.10 53/UDP -> 10.244.3.3:53,10.244.1.4:53",
        ]
    );
    assert_eq!(plan.dns, Some(Ipv4Addr::new(10, 96, 0, 10)));
    assert_eq!(
        plan.pods[5].ports,
        [ContainerPort {
            name: "dns".to_owned(),
            port: 53,
            protocol: Protocol::Udp
        }]
    );
    assert_eq!(
        plan.service("shop", "cart").map(|s| s.cluster_ip),
        Some(Ipv4Addr::new(10, 96, 0, 13))
    );

    // The same file always gives the same plan.
    let again = Scenario::load(scenario_path("default.yaml")).expect("default.yaml");
    assert_eq!(again.plan(), plan);

    let cluster = plan.cluster();
    assert_eq!(cluster.nodes[2].addresses, [Ipv4Addr::new(10, 244, 3, 1)]);
    assert_eq!(cluster.pods.len(), 7);
    assert_eq!(cluster.pods[1].name, "frontend-6jp7l");
    assert_eq!(cluster.pods[1].ports[0].name, "http");
    assert_eq!(
        cluster.namespaces[1].labels.get("team").map(String::as_str),
        Some("web")
    );
}

#[test]
fn the_demo_scenario_keeps_the_story_the_demo_tests_read() {
    let scenario = Scenario::load(scenario_path("demo.yaml")).expect("demo.yaml");
    let plan = scenario.plan();
    assert_eq!(plan.nodes.len(), 3);
    let workloads: Vec<&str> = scenario
        .workloads()
        .iter()
        .map(|w| w.name.as_str())
        .collect();
    for name in [
        "loadgen", "frontend", "catalog", "cart", "checkout", "kube-dns",
    ] {
        assert!(workloads.contains(&name), "{name} in {workloads:?}");
    }
    let policies: Vec<String> = scenario
        .policies()
        .iter()
        .map(|p| p.metadata.name.clone().unwrap_or_default())
        .collect();
    assert_eq!(policies, ["frontend-egress"]);
    assert_eq!(plan.dns, Some(Ipv4Addr::new(10, 96, 0, 10)));
}

#[test]
fn large_scenario_parses_and_plans() {
    let scenario = Scenario::load(scenario_path("large.yaml")).expect("large.yaml");
    assert_eq!(scenario.name(), "large");
    assert_eq!(scenario.nodes().len(), 3);
    assert_eq!(scenario.namespaces().len(), 5);
    assert_eq!(scenario.workloads().len(), 30);
    assert_eq!(scenario.services().len(), 28);
    assert_eq!(scenario.policies().len(), 4);
    let plan = scenario.plan();
    assert_eq!(plan.pods.len(), 39);
    let per_node: Vec<usize> = plan
        .nodes
        .iter()
        .map(|n| plan.pods.iter().filter(|p| p.node == n.name).count())
        .collect();
    assert_eq!(per_node, [12, 13, 14]);
    let ips: BTreeSet<Ipv4Addr> = plan.pods.iter().map(|p| p.ip).collect();
    assert_eq!(ips.len(), plan.pods.len());
    let cluster_ips: BTreeSet<Ipv4Addr> = plan.services.iter().map(|s| s.cluster_ip).collect();
    assert_eq!(cluster_ips.len(), plan.services.len());
    for service in &plan.services {
        for port in &service.ports {
            assert!(
                !port.endpoints.is_empty(),
                "{}/{} has no endpoints",
                service.namespace,
                service.name
            );
        }
    }
    // Placement lists are honoured: redis only on node-3.
    let redis: Vec<&str> = plan
        .pods
        .iter()
        .filter(|p| p.workload == "redis")
        .map(|p| p.node.as_str())
        .collect();
    assert_eq!(redis, ["node-3", "node-3"]);
    // Same workload name and replica: same pod name in any scenario.
    assert!(plan.pods.iter().any(|p| p.name == "frontend-6jp7l"));
    assert_eq!(scenario.plan(), plan);
}

#[test]
fn allow_dns_policy_file_loads() {
    let policies = load_policies(scenario_path("allow-dns.yaml")).expect("allow-dns.yaml");
    assert_eq!(policies.len(), 1);
    assert_eq!(
        policies[0].metadata.name.as_deref(),
        Some("frontend-allow-dns")
    );
    assert_eq!(policies[0].metadata.namespace.as_deref(), Some("shop"));
}

#[test]
fn pod_names_use_the_kubernetes_suffix_alphabet() {
    let text = "nodes: 2\nnamespaces: [{name: shop}]\nworkloads:\n  - {name: web, namespace: shop, replicas: 200}\n";
    let plan = parse(text).expect("valid").plan();
    let names: BTreeSet<&str> = plan.pods.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names.len(), 200);
    for name in names {
        let suffix = name.strip_prefix("web-").expect("workload prefix");
        assert_eq!(suffix.len(), 5, "{name}");
        assert!(
            suffix
                .bytes()
                .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b)),
            "{name}"
        );
    }
    // 200 replicas over 2 nodes: 100 each, addresses .2 to .101.
    let last = plan.pods.last().expect("pods");
    assert_eq!(
        (last.node.as_str(), last.ip),
        ("node-2", Ipv4Addr::new(10, 244, 2, 101))
    );
}

#[test]
fn placement_continues_round_robin_across_workloads() {
    let text = "\
nodes: [a, b, c]
namespaces: [{name: shop}]
workloads:
  - {name: one, namespace: shop}
  - {name: two, namespace: shop}
  - {name: three, namespace: shop, replicas: 4}
  - {name: pinned, namespace: shop, replicas: 3, nodes: [c, a]}
";
    let plan = parse(text).expect("valid").plan();
    let placed: Vec<String> = plan
        .pods
        .iter()
        .map(|p| format!("{}#{}@{}", p.workload, p.replica, p.node))
        .collect();
    assert_eq!(
        placed,
        [
            "one#0@a",
            "two#0@b",
            "three#0@c",
            "three#1@a",
            "three#2@b",
            "three#3@c",
            // 6 pods placed before: start at slot 6 % 2 = 0 of [c, a].
            "pinned#0@c",
            "pinned#1@a",
            "pinned#2@c",
        ]
    );
}

#[test]
fn cluster_ips_honour_explicit_ones_and_kube_dns() {
    let text = "\
nodes: 1
namespaces: [{name: kube-system}, {name: shop}]
workloads:
  - {name: dns, namespace: kube-system, labels: {k8s-app: kube-dns}, dns: true}
  - {name: a, namespace: shop, serve: {port: 80}}
services:
  - {name: a1, namespace: shop, selector: {app: a}, ports: [{port: 80}]}
  - {name: a2, namespace: shop, selector: {app: a}, ports: [{port: 80}], clusterIP: 10.96.0.12}
  - {name: a3, namespace: shop, selector: {app: a}, ports: [{port: 80}]}
  - {name: kube-dns, namespace: kube-system, selector: {k8s-app: kube-dns}, ports: [{port: 53, protocol: UDP, targetPort: dns}]}
  - {name: a4, namespace: shop, selector: {app: a}, ports: [{port: 80}]}
";
    let scenario = parse(text).expect("valid");
    let ips: Vec<String> = scenario
        .services()
        .iter()
        .map(|s| format!("{} {}", s.name, s.cluster_ip))
        .collect();
    assert_eq!(
        ips,
        [
            "a1 10.96.0.11",
            "a2 10.96.0.12",
            "a3 10.96.0.13",
            "kube-dns 10.96.0.10",
            "a4 10.96.0.14",
        ]
    );
    assert_eq!(
        scenario.services()[3].ports[0].target_port,
        TargetPort::Name("dns".to_owned())
    );
    assert_eq!(scenario.plan().dns, Some(Ipv4Addr::new(10, 96, 0, 10)));
}

#[test]
fn defaults_and_value_forms() {
    let text = "\
nodes: 2
namespaces: [{name: shop}]
workloads:
  - name: a
    namespace: shop
    serve: {port: 80, latency: 1.5s}
    calls: [{to: a.shop, port: 80, rate: 0.5}]
services:
  - {name: a, namespace: shop, selector: {app: a}, ports: [{port: 80}]}
";
    let scenario = Scenario::from_yaml_str(text, "some/dir/my-lab.yaml").expect("valid");
    assert_eq!(scenario.name(), "my-lab");
    let a = &scenario.workloads()[0];
    assert_eq!(a.replicas, 1);
    let serve = a.serve.as_ref().expect("serves");
    assert_eq!(serve.latency, Latency::Fixed(Duration::from_millis(1500)));
    assert_eq!(serve.errors, 0.0);
    assert_eq!(a.calls[0].path, "/");
    assert_eq!(a.calls[0].rate, 0.5);
    let port = &scenario.services()[0].ports[0];
    assert_eq!(
        (port.target_port.clone(), port.protocol, port.name.clone()),
        (TargetPort::Number(80), Protocol::Tcp, None)
    );
    assert_eq!(scenario.plan().dns, None);

    let unnamed = Scenario::from_yaml_str("nodes: 1\n", "My Lab.yaml")
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        unnamed.as_deref(),
        Some(
            "My Lab.yaml:1:1: name: the default (the file's stem) is not usable, set one: \"My Lab\" is not a valid name (1-63 lowercase letters, digits or '-', starting and ending with a letter or digit)"
        )
    );
}

/// A minimal valid prefix that the cases below extend.
const BASE: &str = "nodes: 2\nnamespaces: [{name: shop}, {name: web, labels: {team: web}}]\n";

#[test]
fn mistakes_are_reported_with_file_line_column_and_field() {
    let cases: &[(&str, &str)] = &[
        (
            "workloads:\n  - name: a\n    namespace: shop\n    serve:\n      port: 80\n      errors: 1.5\n",
            "lab/scenarios/x.yaml:8:7: workloads[0].serve.errors: 1.5 is not between 0 and 1",
        ),
        (
            "workloads:\n  - name: a\n    namespace: shop\n    replica: 2\n",
            "lab/scenarios/x.yaml:6:5: workloads[0]: unknown field `replica`, expected one of `name`, `namespace`, `replicas`, `labels`, `nodes`, `serve`, `dns`, `calls`",
        ),
        (
            "colour: blue\n",
            "lab/scenarios/x.yaml:3:1: unknown field `colour`, expected one of `name`, `nodes`, `namespaces`, `workloads`, `services`, `policies`",
        ),
        (
            "workloads:\n  - {name: a, namespace: shop, serve: {port: 0}}\n",
            "lab/scenarios/x.yaml:4:46: workloads[0].serve.port: 0 is not a port number (1-65535)",
        ),
        (
            "workloads:\n  - {name: a, namespace: shop, serve: {port: 70000}}\n",
            "lab/scenarios/x.yaml:4:46: workloads[0].serve.port: 70000 is not a port number (1-65535)",
        ),
        (
            "workloads:\n  - {name: a, namespace: shop, serve: {port: -1}}\n",
            "lab/scenarios/x.yaml:4:46: workloads[0].serve.port: -1 is not a port number (1-65535)",
        ),
        (
            "workloads:\n  - {name: a, namespace: shop, serve: {port: 80, latency: 20xs}}\n",
            "lab/scenarios/x.yaml:4:59: workloads[0].serve.latency: \"20xs\" is not a duration like 20ms or 1.5s: unknown time unit \"xs\", supported units: ns, us/µs, ms, sec, min, hours, days, weeks, months, years (and few variations)",
        ),
        (
            "workloads:\n  - {name: a, namespace: shop, serve: {port: 80, latency: {p50: 20ms}}}\n",
            "lab/scenarios/x.yaml:4:59: workloads[0].serve.latency: missing field `p99`",
        ),
        (
            "workloads:\n  - name: a\n    namespace: shop\n    serve:\n      port: 80\n      latency: {p50: 1.5s, p99: 20ms}\n",
            "lab/scenarios/x.yaml:8:28: workloads[0].serve.latency.p99: p99 (20ms) is below p50 (1s 500ms)",
        ),
        (
            "workloads:\n  - name: a\n    namespace: shp\n",
            "lab/scenarios/x.yaml:5:5: workloads[0].namespace: namespace shp is not listed under namespaces",
        ),
        (
            "workloads:\n  - name: a\n    namespace: shop\n    nodes: [node-1, node-3]\n",
            "lab/scenarios/x.yaml:6:21: workloads[0].nodes[1]: unknown node node-3 (nodes: node-1, node-2)",
        ),
        (
            "workloads:\n  - name: a\n    namespace: shop\n  - name: a\n    namespace: shop\n",
            "lab/scenarios/x.yaml:6:5: workloads[1].name: workload a is listed twice in namespace shop",
        ),
        (
            "workloads:\n  - {name: Frontend, namespace: shop}\n",
            "lab/scenarios/x.yaml:4:6: workloads[0].name: \"Frontend\" is not a valid name (1-63 lowercase letters, digits or '-', starting and ending with a letter or digit)",
        ),
        (
            "workloads:\n  - {name: a, namespace: shop, replicas: 0}\n",
            "lab/scenarios/x.yaml:4:32: workloads[0].replicas: at least 1",
        ),
        (
            "workloads:\n  - name: a\n    namespace: shop\n    calls:\n      - {to: b, port: 80, rate: 1}\n",
            "lab/scenarios/x.yaml:7:10: workloads[0].calls[0].to: unknown service b in namespace shop",
        ),
        (
            "workloads:\n  - name: a\n    namespace: shop\n    serve: {port: 80}\n    calls:\n      - {to: a.web, port: 80, rate: 1}\nservices:\n  - {name: a, namespace: shop, selector: {app: a}, ports: [{port: 80}]}\n",
            "lab/scenarios/x.yaml:8:10: workloads[0].calls[0].to: unknown service a in namespace web",
        ),
        (
            "workloads:\n  - name: a\n    namespace: shop\n    serve: {port: 80}\n    calls:\n      - {to: a, port: 81, rate: 1}\nservices:\n  - {name: a, namespace: shop, selector: {app: a}, ports: [{port: 80}]}\n",
            "lab/scenarios/x.yaml:8:17: workloads[0].calls[0].port: service a.shop does not expose 81/TCP (it exposes 80/TCP)",
        ),
        (
            "workloads:\n  - name: a\n    namespace: shop\n    serve: {port: 80}\n    calls:\n      - {to: a, port: 80, rate: -1}\nservices:\n  - {name: a, namespace: shop, selector: {app: a}, ports: [{port: 80}]}\n",
            "lab/scenarios/x.yaml:8:27: workloads[0].calls[0].rate: -1 is not a rate (requests per second, above 0)",
        ),
        (
            "workloads:\n  - name: a\n    namespace: shop\n    serve: {port: 80}\n    calls:\n      - {to: a, port: 80, rate: .nan}\nservices:\n  - {name: a, namespace: shop, selector: {app: a}, ports: [{port: 80}]}\n",
            "lab/scenarios/x.yaml:8:27: workloads[0].calls[0].rate: NaN is not a rate (requests per second, above 0)",
        ),
        (
            "workloads:\n  - name: a\n    namespace: shop\n    serve: {port: 80}\n    calls:\n      - {to: a, port: 80, rate: 1, path: x y}\nservices:\n  - {name: a, namespace: shop, selector: {app: a}, ports: [{port: 80}]}\n",
            "lab/scenarios/x.yaml:8:36: workloads[0].calls[0].path: \"x y\" is not a URL path (starts with /, no spaces)",
        ),
        (
            "workloads:\n  - name: a\n    namespace: shop\nservices:\n  - name: b\n    namespace: shop\n    selector: {app: b}\n    ports: [{port: 80}]\n",
            "lab/scenarios/x.yaml:9:5: services[0].selector: selects no workload in namespace shop",
        ),
        (
            "workloads:\n  - {name: a, namespace: shop}\nservices:\n  - {name: a, namespace: shop, selector: {app: a}, ports: [{port: 80}, {port: 81}]}\n",
            "lab/scenarios/x.yaml:6:60: services[0].ports[0]: a service with several ports must name each",
        ),
        (
            "workloads:\n  - {name: a, namespace: shop}\nservices:\n  - {name: a, namespace: shop, selector: {app: a}, ports: [{port: 80, targetPort: http}]}\n",
            "lab/scenarios/x.yaml:6:71: services[0].ports[0].targetPort: no selected workload has a TCP container port named \"http\" (a server has \"http\"/TCP, the DNS server \"dns\"/UDP)",
        ),
        (
            "workloads:\n  - {name: a, namespace: shop}\nservices:\n  - {name: a, namespace: shop, selector: {app: a}, ports: [{port: 80}], clusterIP: 10.97.0.1}\n",
            "lab/scenarios/x.yaml:6:73: services[0].clusterIP: 10.97.0.1 is not a host address in the service range 10.96.0.0/16",
        ),
        (
            "workloads:\n  - {name: a, namespace: shop}\nservices:\n  - {name: a, namespace: shop, selector: {app: a}, ports: [{port: 80}], clusterIP: 10.96.0.5}\n  - {name: b, namespace: shop, selector: {app: a}, ports: [{port: 80}], clusterIP: 10.96.0.5}\n",
            "lab/scenarios/x.yaml:7:73: services[1].clusterIP: 10.96.0.5 is already the clusterIP of services[0]",
        ),
        (
            "workloads:\n  - {name: a, namespace: shop}\nservices:\n  - {name: a, namespace: shop, selector: {app: a}, ports: [{port: 80, protocol: SCTP}]}\n",
            "lab/scenarios/x.yaml:6:81: services[0].ports[0].protocol: unknown variant `SCTP`, expected `TCP` or `UDP`",
        ),
        (
            "workloads:\n  - {name: a, namespace: shop, dns: true}\n  - {name: b, namespace: shop, dns: true}\n",
            "lab/scenarios/x.yaml:5:32: workloads[1].dns: workloads[0] is already the DNS server",
        ),
        (
            "workloads:\n  - {name: a, namespace: shop, dns: true}\n",
            "lab/scenarios/x.yaml:4:32: workloads[0].dns: no service exposes this DNS server on 53/UDP",
        ),
        (
            "workloads:\n  - name: a\n    namespace: shop\n    replicas: 250\n  - name: b\n    namespace: shop\n    replicas: 251\n",
            "lab/scenarios/x.yaml:9:5: workloads[1].replicas: node node-1 would hold more than 250 pods (its pod network is a /24)",
        ),
        (
            "workloads:\n  - {name: a, namespace: shop, replicas: 4000000000}\n",
            "lab/scenarios/x.yaml:4:32: workloads[0].replicas: node node-1 would hold more than 250 pods (its pod network is a /24)",
        ),
        (
            "policies:\n  - apiVersion: networking.k8s.io/v1\n    kind: NetworkPolicy\n    metadata: {name: p, namespace: shop}\n    spec:\n      podSelector: {}\n      egress:\n        - to:\n            - ipBlock: {cidr: 10.0.0.0/33}\n",
            "lab/scenarios/x.yaml:11:25: policies[0].spec.egress[0].to[0].ipBlock.cidr: \"10.0.0.0/33\" is not a CIDR like 10.0.0.0/8",
        ),
        (
            "policies:\n  - apiVersion: networking.k8s.io/v1\n    kind: NetworkPolicy\n    metadata: {name: p, namespace: other}\n    spec: {podSelector: {}}\n",
            "lab/scenarios/x.yaml:6:25: policies[0].metadata.namespace: namespace other is not listed under namespaces",
        ),
        (
            "policies:\n  - apiVersion: networking.k8s.io/v1\n    kind: NetworkPolicy\n    metadata: {name: p}\n    spec: {podSelector: {}}\n",
            "lab/scenarios/x.yaml:6:15: policies[0].metadata.namespace: a policy needs a namespace (the lab has no current namespace to default to)",
        ),
        (
            "policies:\n  - apiVersion: networking.k8s.io/v1\n    kind: NetworkPolicy\n    metadata: {name: p, namespace: shop}\n    spec:\n      podSelector: {matchLabels: [a]}\n",
            "lab/scenarios/x.yaml:8:34: policies[0].spec.podSelector.matchLabels: invalid type: sequence, expected a map",
        ),
        (
            "policies:\n  - apiVersion: networking.k8s.io/v1\n    kind: NetworkPolicy\n    metadata: {name: p, namespace: shop}\n    spec:\n      podSelecter: {matchLabels: {app: a}}\n",
            "lab/scenarios/x.yaml:8:7: policies[0].spec.podSelecter: unknown field `podSelecter`",
        ),
        (
            "policies:\n  - kind: NetworkPolicy\n    metadata: {name: p, namespace: shop}\n    spec: {podSelector: {}}\n",
            "lab/scenarios/x.yaml:4:5: policies[0].apiVersion: missing (must be networking.k8s.io/v1)",
        ),
        (
            "policies:\n  - apiVersion: v1\n    kind: NetworkPolicy\n    metadata: {name: p, namespace: shop}\n    spec: {podSelector: {}}\n",
            "lab/scenarios/x.yaml:4:5: policies[0].apiVersion: \"v1\" is not networking.k8s.io/v1",
        ),
        (
            "policies:\n  - apiVersion: networking.k8s.io/v1\n    kind: NetworkPolicy\n    metadata: {name: p, namespace: shop}\n    spec: {podSelector: {}}\n  - apiVersion: networking.k8s.io/v1\n    kind: NetworkPolicy\n    metadata: {name: p, namespace: shop}\n    spec: {podSelector: {}}\n",
            "lab/scenarios/x.yaml:10:16: policies[1].metadata.name: policy p is listed twice in namespace shop",
        ),
        (
            "policies:\n  - apiVersion: networking.k8s.io/v1\n    kind: NetworkPolicy\n    metadata: {name: p, namespace: shop}\n    spec:\n      podSelector:\n        matchExpressions: [{key: app, operator: Is, values: [a]}]\n",
            "lab/scenarios/x.yaml:9:39: policies[0].spec.podSelector.matchExpressions[0].operator: \"Is\" is not an operator (In, NotIn, Exists, DoesNotExist)",
        ),
        (
            "policies:\n  - apiVersion: networking.k8s.io/v1\n    kind: NetworkPolicy\n    metadata: {name: p, namespace: shop}\n    spec:\n      podSelector: {}\n      ingress:\n        - ports: [{port: 9000, endPort: 8000}]\n",
            "lab/scenarios/x.yaml:10:32: policies[0].spec.ingress[0].ports[0].endPort: 8000 must be between port 9000 and 65535",
        ),
        (
            "policies:\n  - apiVersion: networking.k8s.io/v1\n    kind: NetworkPolicy\n    metadata: {name: p, namespace: shop}\n    spec:\n      podSelector: {}\n      ingress:\n        - from: [{ipBlock: {cidr: 10.0.0.0/8, except: [192.168.0.0/16]}}]\n",
            "lab/scenarios/x.yaml:10:56: policies[0].spec.ingress[0].from[0].ipBlock.except[0]: 192.168.0.0/16 must be a strict subset of cidr 10.0.0.0/8",
        ),
        (
            "policies:\n  - apiVersion: networking.k8s.io/v1\n    kind: NetworkPolicy\n    metadata: {name: p, namespace: shop}\n    spec:\n      podSelector: {}\n      ingress:\n        - from: [{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}]\n",
            "lab/scenarios/x.yaml:10:18: policies[0].spec.ingress[0].from[0]: ipBlock cannot be combined with podSelector or namespaceSelector",
        ),
        (
            "policies:\n  - apiVersion: networking.k8s.io/v1\n    kind: NetworkPolicy\n    metadata: {name: p, namespace: shop}\n    spec:\n      podSelector: {}\n      ingress:\n        - ports: [{port: http, endPort: 90}]\n",
            "lab/scenarios/x.yaml:10:32: policies[0].spec.ingress[0].ports[0].endPort: endPort cannot be used with a named port",
        ),
        (
            "policies:\n  - apiVersion: networking.k8s.io/v1\n    kind: NetworkPolicy\n    metadata: {name: p, namespace: shop}\n    spec:\n      policyTypes: [Egress, Outbound]\n",
            "lab/scenarios/x.yaml:8:29: policies[0].spec.policyTypes[1]: \"Outbound\" is not a policy type (Ingress or Egress)",
        ),
        (
            "namespaces: [{name: x}]\n",
            "lab/scenarios/x.yaml:1:1: duplicate entry with key \"namespaces\"",
        ),
        (
            "workloads:\n  - {name: a, namespace: web, labels: {app: a b}}\n",
            "lab/scenarios/x.yaml:4:40: workloads[0].labels.app: \"a b\" is not a label value (up to 63 letters, digits, '-', '_', '.')",
        ),
    ];
    let wrong: Vec<String> = cases
        .iter()
        .filter_map(|(tail, expected)| {
            let got = error(&format!("{BASE}{tail}"));
            (got != *expected).then(|| format!("for:\n{tail}\nwanted: {expected}\ngot:    {got}"))
        })
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
}

#[test]
fn mistakes_in_the_head_of_the_file() {
    let cases: &[(&str, &str)] = &[
        ("", "lab/scenarios/x.yaml: the file is empty"),
        (
            "nodes: 0\n",
            "lab/scenarios/x.yaml:1:1: nodes: 0 is not a node count (1-255)",
        ),
        (
            "nodes: [a, b, a]\n",
            "lab/scenarios/x.yaml:1:15: nodes[2]: node a is listed twice",
        ),
        (
            "nodes: 2\nnamespaces: [{name: shop}\n",
            "lab/scenarios/x.yaml:3:1: did not find expected ',' or ']', while parsing a flow sequence at line 2 column 13",
        ),
        (
            "nodes: 2\nnamespaces:\n  - name: shop\n    labels: {kubernetes.io/metadata.name: web}\n",
            "lab/scenarios/x.yaml:4:14: namespaces[0].labels.kubernetes.io/metadata.name: Kubernetes sets this label to the namespace's name, shop",
        ),
        (
            "name: story\n",
            "lab/scenarios/x.yaml:1:1: missing field `nodes`",
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(error(text), *expected, "for:\n{text}");
    }
}

#[test]
fn policy_files_take_documents_and_lists() {
    let policy = |name: &str| {
        format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  podSelector: {{}}\n"
        )
    };
    let two = format!("{}---\n{}---\n", policy("a"), policy("b"));
    let names: Vec<String> = policies_from_yaml_str(&two, "p.yaml")
        .expect("two documents")
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    assert_eq!(names, ["a", "b"]);

    let list = "\
apiVersion: v1
kind: List
metadata: {resourceVersion: \"\"}
items:
  - apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: a, namespace: shop}
    spec: {podSelector: {}}
  - apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: b, namespace: web}
    spec: {podSelector: {}, policyTypes: [Egress]}
";
    let policies = policies_from_yaml_str(list, "list.yaml").expect("a List");
    assert_eq!(policies.len(), 2);
    assert_eq!(policies[1].metadata.namespace.as_deref(), Some("web"));

    let cases: &[(String, &str)] = &[
        (
            // Line numbers count from the top of the file, not the document.
            format!(
                "{}---\n{}",
                policy("a"),
                policy("b").replace(
                    "podSelector: {}",
                    "podSelector: {matchLabels: {app: x}}\n  egress: [{to: [{}]}]"
                )
            ),
            "p.yaml:12:18: spec.egress[0].to[0]: a peer needs podSelector, namespaceSelector or ipBlock",
        ),
        (
            format!("{}---\n{}", policy("a"), policy("a")),
            "p.yaml:9:12: metadata.name: policy a is in the file twice in namespace shop",
        ),
        (
            "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n".to_owned(),
            "p.yaml:2:1: kind: \"Service\" is not NetworkPolicy or List",
        ),
        (
            list.replace(
                "spec: {podSelector: {}, policyTypes",
                "spec: {podSelector: {}, policyType",
            ),
            "p.yaml:12:29: items[1].spec.policyType: unknown field `policyType`",
        ),
        (
            list.replace(
                "    kind: NetworkPolicy\n    metadata: {name: b",
                "    kind: Pod\n    metadata: {name: b",
            ),
            "p.yaml:10:5: items[1].kind: \"Pod\" is not NetworkPolicy",
        ),
        (
            "# nothing here\n".to_owned(),
            "p.yaml: no NetworkPolicy in the file",
        ),
        (
            format!("{}---\nkind: [\n", policy("a")),
            "p.yaml:8:1: did not find expected node content, while parsing a flow node",
        ),
    ];
    for (text, expected) in cases {
        let got = match policies_from_yaml_str(text, "p.yaml") {
            Ok(p) => format!("parsed {} policies", p.len()),
            Err(e) => e.to_string(),
        };
        assert_eq!(got, *expected, "for:\n{text}");
    }

    let missing = load_policies("/nonexistent/skymap/p.yaml")
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        missing.as_deref(),
        Some("/nonexistent/skymap/p.yaml: No such file or directory (os error 2)")
    );
}

#[test]
fn errors_carry_their_parts() {
    let Err(ScenarioError::Invalid {
        file,
        line,
        column,
        field,
        message,
    }) = parse(
        "nodes: 2\nnamespaces: [{name: shop}]\nworkloads: [{name: a, namespace: shop, serve: {port: 80, errors: 2}}]\n",
    )
    else {
        panic!("expected an Invalid error");
    };
    assert_eq!(
        (
            file.as_str(),
            line,
            column,
            field.as_str(),
            message.as_str()
        ),
        (
            "lab/scenarios/x.yaml",
            Some(3),
            Some(58),
            "workloads[0].serve.errors",
            "2 is not between 0 and 1"
        )
    );
}

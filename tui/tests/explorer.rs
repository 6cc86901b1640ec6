//! The explorer as a user meets it: frames drawn into ratatui's TestBackend
//! from the demo recording, keys pressed, each step looked at.
//!
//! - snapshots of every view at 80×24 and 160×48, Unicode and ASCII;
//! - styles checked cell by cell (snapshots are plain text);
//! - app stories: start, data, keys, one frame per step;
//! - hostile strings and tiny terminals.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::style::Modifier;
use skymap_proto::names::ip_to_bytes;
use skymap_proto::v1::layer7::Record;
use skymap_proto::v1::{
    CpuUsage, Dns, Endpoint, Flow, GraphNode, GraphUpdate, Http, L7Type, Layer4, Layer7, NodeKind,
    Protocol, Verdict, Workload, Zoom,
};
use skymap_themes::{ColorDepth, Role, default_theme};
use skymap_tui::app::{App, Effect, Options, Selection, View};
use skymap_tui::live::{ConnState, Event};
use skymap_tui::map::{EdgeHealth, Glyphs};
use skymap_tui::offline::{self, demo_flows};
use skymap_tui::ui::{self, style::Styles};

const SECOND: i64 = 1_000_000_000;
/// In the demo recording, the allow-DNS policy lands at 60 s.
const DURING_DROPS: i64 = 45 * SECOND;

fn new_app(glyphs: Glyphs, depth: ColorDepth) -> App {
    App::new(Options {
        source: "demo recording".to_string(),
        glyphs,
        theme: default_theme(),
        depth,
        flow_capacity: 10_000,
    })
}

/// The demo recording played up to `at_ns`.
fn demo_app(glyphs: Glyphs, depth: ColorDepth, at_ns: i64) -> App {
    let mut app = new_app(glyphs, depth);
    offline::play(&mut app, demo_flows(), Some(at_ns));
    app
}

/// Draws twice (the first frame tells the app the map's size), returns the
/// last frame.
fn frame(app: &mut App, width: u16, height: u16) -> Buffer {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("test backend");
    for _ in 0..2 {
        app.settle();
        terminal
            .draw(|f| ui::draw(f, app))
            .expect("drawing into a test backend");
    }
    terminal.backend().buffer().clone()
}

fn text(app: &mut App, width: u16, height: u16) -> String {
    ui::buffer_text(&frame(app, width, height))
}

fn key(app: &mut App, code: KeyCode) -> Effect {
    app.handle_key(KeyEvent::new(code, KeyModifiers::NONE))
}

fn keys(app: &mut App, typed: &str) {
    for c in typed.chars() {
        let code = match c {
            '\n' => KeyCode::Enter,
            c => KeyCode::Char(c),
        };
        key(app, code);
    }
}

fn pair_health(app: &App, from: &str, to: &str) -> Option<EdgeHealth> {
    app.model.pair(from, to).map(|p| p.health)
}

const FRONTEND: &str = "workload:shop/frontend";
const KUBE_DNS: &str = "workload:kube-system/kube-dns";

// ------------------------------------------------------------ snapshots

#[test]
fn every_view_at_two_sizes_unicode_and_ascii() {
    for (glyphs, suffix) in [(Glyphs::Unicode, "unicode"), (Glyphs::Ascii, "ascii")] {
        for (width, height) in [(80, 24), (160, 48)] {
            for view in View::ALL {
                let mut app = demo_app(glyphs, ColorDepth::None, DURING_DROPS);
                app.view = view;
                let picture = text(&mut app, width, height);
                let name = format!("{}_{width}x{height}_{suffix}", view.name());
                insta::assert_snapshot!(name.clone(), picture);
                if glyphs == Glyphs::Ascii {
                    assert!(
                        picture.is_ascii(),
                        "{name} has non-ASCII characters:\n{picture}"
                    );
                }
            }
        }
    }
}

// ------------------------------------------------------------ styles

/// Cells whose text starts a run equal to `word` on one row.
fn find_word(buffer: &Buffer, word: &str) -> Vec<(u16, u16)> {
    let area = buffer.area;
    let mut found = Vec::new();
    for y in area.top()..area.bottom() {
        let row: Vec<&str> = (area.left()..area.right())
            .map(|x| buffer[(x, y)].symbol())
            .collect();
        let chars: Vec<char> = word.chars().collect();
        for x in 0..row.len().saturating_sub(chars.len()) {
            if chars
                .iter()
                .enumerate()
                .all(|(i, c)| row[x + i] == c.to_string())
            {
                found.push((x as u16, y));
            }
        }
    }
    found
}

#[test]
fn a_dropped_edge_is_styled_as_dropped() {
    let mut app = demo_app(Glyphs::Unicode, ColorDepth::TrueColor, DURING_DROPS);
    let buffer = frame(&mut app, 160, 48);
    let dropped = Styles::new(&default_theme(), ColorDepth::TrueColor).get(Role::Dropped);
    let at = find_word(&buffer, "DROPPED 53/UDP");
    assert!(!at.is_empty(), "{}", ui::buffer_text(&buffer));
    for (x, y) in at {
        assert_eq!(buffer[(x, y)].fg, dropped.fg.expect("dropped has a colour"));
    }
    // A healthy edge's label is not.
    let healthy = app
        .model
        .pairs
        .values()
        .find(|p| p.health == EdgeHealth::Ok)
        .expect("a healthy pair")
        .label
        .trim()
        .to_string();
    let at = find_word(&buffer, &healthy);
    assert!(!at.is_empty(), "{healthy:?} on screen");
    assert!(
        at.iter()
            .all(|&(x, y)| buffer[(x, y)].fg != dropped.fg.unwrap_or_default())
    );
}

#[test]
fn without_colour_the_selection_is_reverse_video_and_drops_are_words() {
    let mut app = demo_app(Glyphs::Unicode, ColorDepth::None, DURING_DROPS);
    app.selection = Some(Selection::Node(FRONTEND.to_string()));
    let buffer = frame(&mut app, 160, 48);
    let text = ui::buffer_text(&buffer);
    assert!(text.contains("DROPPED 53/UDP"), "{text}");
    let area = buffer.area;
    let mut colours = 0;
    let mut reversed = 0;
    for y in area.top()..area.bottom() {
        for x in area.left()..area.right() {
            let cell = &buffer[(x, y)];
            if cell.fg != ratatui::style::Color::Reset || cell.bg != ratatui::style::Color::Reset {
                colours += 1;
            }
            if cell.modifier.contains(Modifier::REVERSED) {
                reversed += 1;
            }
        }
    }
    assert_eq!(colours, 0, "no colour at all with NO_COLOR");
    assert!(reversed > 0, "the selected box is in reverse video");
}

// ------------------------------------------------------------ stories

#[test]
fn story_the_frontend_cannot_resolve_then_the_fix_lands() {
    let mut app = demo_app(Glyphs::Unicode, ColorDepth::None, DURING_DROPS);
    app.settle();
    assert_eq!(
        pair_health(&app, FRONTEND, KUBE_DNS),
        Some(EdgeHealth::Dropped)
    );
    // The explorer opens on the trouble: the frontend is selected.
    assert_eq!(app.selection, Some(Selection::Node(FRONTEND.to_string())));

    // Walk the frontend's edges to the dropped one; the details say why.
    let mut found = false;
    for _ in 0..10 {
        key(&mut app, KeyCode::Char(']'));
        if app.selection == Some(Selection::Pair(FRONTEND.to_string(), KUBE_DNS.to_string())) {
            found = true;
            break;
        }
    }
    assert!(found, "] reaches frontend -> kube-dns");
    let picture = text(&mut app, 160, 48);
    assert!(picture.contains("DROPPED NETFILTER_DROP"), "{picture}");
    assert!(
        picture.contains("policy     shop/frontend-egress"),
        "{picture}"
    );
    insta::assert_snapshot!("story_1_dropped_edge_details", picture);

    // enter: the flows on that edge: the queries leaving the frontend's
    // veth, then the kernel dropping them; never an answer.
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.view, View::Flows);
    let flows = app.visible_flows();
    let workload = |e: Option<&Endpoint>| {
        e.and_then(|e| e.workload.as_ref())
            .map_or(String::new(), |w| w.name.clone())
    };
    assert!(flows.iter().all(|f| {
        let (a, b) = (
            workload(f.source.as_ref()),
            workload(f.destination.as_ref()),
        );
        (a.as_str(), b.as_str()) == ("frontend", "kube-dns") && !f.is_reply
    }));
    assert!(
        flows
            .iter()
            .any(|f| f.verdict == Verdict::Dropped as i32 && f.drop_reason == "NETFILTER_DROP")
    );
    let picture = text(&mut app, 160, 48);
    insta::assert_snapshot!("story_2_flows_of_the_edge", picture);

    // esc twice: all flows again, then back to the map.
    key(&mut app, KeyCode::Esc);
    assert!(app.visible_flows().len() > flows_len_of_dropped(&app));
    key(&mut app, KeyCode::Esc);
    assert_eq!(app.view, View::Map);

    // Later in the recording the policy allows DNS: no more drops on the edge.
    let mut after = demo_app(Glyphs::Unicode, ColorDepth::None, 150 * SECOND);
    after.settle();
    let health = pair_health(&after, FRONTEND, KUBE_DNS).expect("the edge is still there");
    assert_ne!(health, EdgeHealth::Dropped, "the DNS edge turned healthy");
    assert!(
        after
            .model
            .pairs
            .keys()
            .any(|(from, to)| from == FRONTEND && to != KUBE_DNS && !to.starts_with("world")),
        "after the fix the frontend calls its backends"
    );
}

#[test]
fn story_why_explains_the_dropped_edge_and_offers_the_fix() {
    let mut app = demo_app(Glyphs::Unicode, ColorDepth::None, DURING_DROPS);
    app.settle();
    // Nothing to explain on the nodes view.
    key(&mut app, KeyCode::Char('5'));
    assert_eq!(key(&mut app, KeyCode::Char('w')), Effect::None);
    assert!(
        app.flash.as_ref().is_some_and(|f| f.error),
        "{:?}",
        app.flash
    );
    key(&mut app, KeyCode::Char('1'));

    app.selection = Some(Selection::Pair(FRONTEND.to_string(), KUBE_DNS.to_string()));
    let Effect::Explain(flow) = key(&mut app, KeyCode::Char('w')) else {
        panic!("w on a dropped edge asks the relay");
    };
    assert_eq!(flow.drop_reason, "NETFILTER_DROP");
    assert_eq!(flow.destination.as_ref().map(|d| d.port), Some(53));
    let waiting = text(&mut app, 120, 40);
    assert!(waiting.contains("asking the relay..."), "{waiting}");

    // The relay's answer, computed as the demo's relay computes it.
    let metadata = offline::demo_metadata().expect("the demo scenario builds");
    let answer = skymap_relay::explain::explain_flow(&metadata, &flow);
    assert_eq!(answer.policies, ["shop/frontend-egress"]);
    app.explained(Ok(answer.clone()));
    let picture = text(&mut app, 120, 40);
    insta::assert_snapshot!("story_why_overlay", picture);

    // c copies the policy, s saves it under its own name; esc closes.
    assert_eq!(
        key(&mut app, KeyCode::Char('c')),
        Effect::Copy(answer.suggested_policy_yaml.clone())
    );
    assert_eq!(
        key(&mut app, KeyCode::Char('s')),
        Effect::Save {
            file_name: "frontend-egress-to-kube-dns-udp-53.yaml".to_string(),
            text: answer.suggested_policy_yaml.clone(),
        }
    );
    // What is copied or saved is stripped of escape sequences, line by line.
    let mut hostile = answer.clone();
    hostile.suggested_policy_yaml = "metadata:\n  name: a\x1b]52;c;x\x07b\n".to_string();
    app.explained(Ok(hostile));
    assert_eq!(
        key(&mut app, KeyCode::Char('c')),
        Effect::Copy("metadata:\n  name: a\u{fffd}]52;c;x\u{fffd}b\n".to_string())
    );
    key(&mut app, KeyCode::Esc);
    assert!(app.why.is_none());
    // A failed call says why in the overlay instead of hanging.
    key(&mut app, KeyCode::Char('w'));
    app.explained(Err("cannot reach the relay".to_string()));
    assert!(text(&mut app, 120, 40).contains("cannot reach the relay"));
}

#[test]
fn why_on_an_edge_whose_drops_left_the_log_asks_the_relays_history() {
    let mut app = App::new(Options {
        source: "demo recording".to_string(),
        glyphs: Glyphs::Unicode,
        theme: default_theme(),
        depth: ColorDepth::None,
        flow_capacity: 1,
    });
    offline::play(&mut app, demo_flows(), Some(DURING_DROPS));
    app.settle();
    assert_eq!(
        flows_len_of_dropped(&app),
        0,
        "the one flow kept is not a drop"
    );
    app.selection = Some(Selection::Pair(FRONTEND.to_string(), KUBE_DNS.to_string()));
    let Effect::ExplainNewest(filter) = key(&mut app, KeyCode::Char('w')) else {
        panic!("w asks the relay's history");
    };
    assert_eq!(filter.source_workload, ["shop/frontend"]);
    assert_eq!(filter.destination_workload, ["kube-system/kube-dns"]);
    assert_eq!(filter.verdict, [Verdict::Dropped as i32]);
    // A healthy edge has nothing to explain.
    key(&mut app, KeyCode::Esc);
    app.selection = Some(Selection::Node("workload:users/loadgen".to_string()));
    assert_eq!(key(&mut app, KeyCode::Char('w')), Effect::None);
}

fn flows_len_of_dropped(app: &App) -> usize {
    app.flows
        .iter()
        .filter(|f| f.verdict == Verdict::Dropped as i32)
        .count()
}

#[test]
fn story_commands_filter_help_and_quit() {
    let mut app = demo_app(Glyphs::Ascii, ColorDepth::None, DURING_DROPS);
    text(&mut app, 100, 30);

    keys(&mut app, ":dns\n");
    assert_eq!(app.view, View::Dns);
    let picture = text(&mut app, 100, 30);
    assert!(picture.contains("NXDOMAIN"), "{picture}");

    keys(&mut app, ":ns payments\n");
    let picture = text(&mut app, 100, 30);
    assert!(picture.contains("ns payments"), "{picture}");
    key(&mut app, KeyCode::Char('0'));
    assert_eq!(app.namespaces, skymap_tui::state::NamespaceFilter::All);

    keys(&mut app, ":ns nowhere\n");
    let picture = text(&mut app, 100, 30);
    assert!(picture.contains("no namespace \"nowhere\""), "{picture}");

    keys(&mut app, ":theme nope\n");
    assert!(
        app.flash
            .as_ref()
            .is_some_and(|f| f.error && f.text.contains("nope"))
    );
    keys(&mut app, ":theme light\n");
    assert_eq!(app.theme_name(), "light");

    // `/` with the observe vocabulary; `!` negates.
    keys(&mut app, "/verdict:DROPPED\n");
    assert_eq!(app.view, View::Dns, "a filter keeps the table view");
    keys(&mut app, ":flows\n");
    let dropped = app.visible_flows().len();
    assert!(dropped > 0);
    assert!(
        app.visible_flows()
            .iter()
            .all(|f| f.verdict == Verdict::Dropped as i32)
    );
    key(&mut app, KeyCode::Esc);
    keys(&mut app, "/!verdict:DROPPED\n");
    assert!(
        app.visible_flows()
            .iter()
            .all(|f| f.verdict != Verdict::Dropped as i32)
    );
    keys(&mut app, "/nonsense:x\n");
    assert!(app.flash.as_ref().is_some_and(|f| f.error));

    key(&mut app, KeyCode::Char('?'));
    let picture = text(&mut app, 100, 30);
    insta::assert_snapshot!("story_help", picture);
    for entry in skymap_tui::app::HELP {
        assert!(picture.contains(entry.keys), "help lists {:?}", entry.keys);
    }
    key(&mut app, KeyCode::Char('x'));
    assert!(!app.help, "any key closes help");

    assert_eq!(key(&mut app, KeyCode::Char('q')), Effect::Quit);
}

#[test]
fn story_map_navigation_focus_noise_and_zoom() {
    let mut app = demo_app(Glyphs::Unicode, ColorDepth::None, DURING_DROPS);
    text(&mut app, 160, 48);
    let all = app.model.nodes.len();

    // Focus: the frontend and its neighbours only.
    app.selection = Some(Selection::Node(FRONTEND.to_string()));
    key(&mut app, KeyCode::Char('f'));
    app.settle();
    let focused = app.model.nodes.len();
    assert!(focused < all, "{focused} of {all}");
    assert!(app.model.nodes.iter().any(|n| n.id == KUBE_DNS));
    key(&mut app, KeyCode::Esc);
    app.settle();
    assert_eq!(app.model.nodes.len(), all);

    // Noise: kube-dns (a DNS server) goes, and comes back.
    key(&mut app, KeyCode::Char('x'));
    app.settle();
    assert!(app.model.nodes.iter().all(|n| n.id != KUBE_DNS));
    assert!(app.model.hidden_noise >= 1);
    key(&mut app, KeyCode::Char('x'));
    app.settle();
    assert!(app.model.nodes.iter().any(|n| n.id == KUBE_DNS));

    // Arrow keys move between boxes.
    let before = app.selection.clone();
    let moved = [KeyCode::Left, KeyCode::Right, KeyCode::Down, KeyCode::Up]
        .into_iter()
        .any(|code| {
            key(&mut app, code);
            app.selection != before
        });
    assert!(moved, "some arrow leads to another box");

    // Zoom out asks the relay for the namespace graph.
    match key(&mut app, KeyCode::Char('-')) {
        Effect::Resubscribe(sub) => assert_eq!(sub.zoom, Zoom::Namespace),
        other => panic!("zoom out should resubscribe, got {other:?}"),
    }
}

#[test]
fn header_says_reconnecting_and_paused_and_keeps_the_picture() {
    let mut app = demo_app(Glyphs::Ascii, ColorDepth::None, DURING_DROPS);
    let before = text(&mut app, 120, 30);
    assert!(before.contains("frontend"));
    app.apply(Event::State(ConnState::Reconnecting {
        attempt: 2,
        retry_at: tokio::time::Instant::now() + std::time::Duration::from_secs(3),
        last_error: "connection refused".to_string(),
    }));
    let after = text(&mut app, 120, 30);
    assert!(after.contains("reconnecting in"), "{after}");
    assert!(after.contains("frontend"), "the last picture stays");

    key(&mut app, KeyCode::Char('p'));
    let paused_flows = app.flows.len();
    let flow = app.flows.iter().next().cloned().expect("a flow");
    app.apply(Event::Flow(flow));
    assert_eq!(app.flows.len(), paused_flows, "paused: queued, not shown");
    let paused = text(&mut app, 120, 30);
    assert_eq!(paused.matches("PAUSED").count(), 1, "{paused}");
    key(&mut app, KeyCode::Char('p'));
    assert!(app.flows.len() > paused_flows || app.flows.evicted() > 0);
}

// ------------------------------------------------------------ hostile input

fn endpoint(ns: &str, pod: &str, workload: &str, ip: &str, port: u32) -> Endpoint {
    Endpoint {
        ip: ip_to_bytes(ip.parse().expect("ip")),
        port,
        namespace: ns.to_string(),
        pod_name: pod.to_string(),
        labels: vec![format!("app={workload}")],
        workload: Some(Workload {
            name: workload.to_string(),
            kind: "Deployment".to_string(),
        }),
        ..Endpoint::default()
    }
}

fn hostile_flows() -> Vec<Flow> {
    let evil = "evil\x1b]0;pwned\x07\x1b[2J\x1b[31mred\u{9b}31m\r\n";
    let client = endpoint(
        evil,
        &format!("pod-{evil}"),
        &format!("wl-{evil}"),
        "10.0.0.1",
        40000,
    );
    let server = endpoint("shop", "api-0", "api", "10.0.0.2", 80);
    let mut flows = Vec::new();
    for i in 0..20 {
        let time_ns = 1_795_672_800_000_000_000 + i * SECOND;
        flows.push(Flow {
            time_ns,
            node_name: format!("node-{evil}"),
            verdict: if i % 2 == 0 {
                Verdict::Dropped as i32
            } else {
                Verdict::Forwarded as i32
            },
            drop_reason: format!("REASON{evil}"),
            policy_reason: format!("policy{evil}"),
            source: Some(client.clone()),
            destination: Some(server.clone()),
            l4: Some(Layer4 {
                protocol: Protocol::Udp as i32,
                ..Layer4::default()
            }),
            l7: Some(Layer7 {
                r#type: L7Type::Request as i32,
                latency_ns: 0,
                record: Some(if i % 3 == 0 {
                    Record::Dns(Dns {
                        query: format!("{evil}.svc.cluster.local."),
                        qtype: 1,
                        ..Dns::default()
                    })
                } else {
                    Record::Http(Http {
                        method: format!("GET{evil}"),
                        url: format!("/path{evil}"),
                        ..Http::default()
                    })
                }),
            }),
            ..Flow::default()
        });
    }
    flows
}

#[test]
fn hostile_strings_never_reach_the_terminal() {
    for view in View::ALL {
        let mut app = new_app(Glyphs::Unicode, ColorDepth::TrueColor);
        offline::play(&mut app, hostile_flows(), None);
        app.view = view;
        let buffer = frame(&mut app, 160, 48);
        let area = buffer.area;
        for y in area.top()..area.bottom() {
            for x in area.left()..area.right() {
                let symbol = buffer[(x, y)].symbol();
                assert!(
                    !symbol.chars().any(|c| c.is_control()),
                    "{}: control character {symbol:?} at {x},{y}",
                    view.name()
                );
            }
        }
    }
}

/// A delta that gives the frontend workload this CPU figure.
fn frontend_cpu(app: &mut App, cpu: CpuUsage) {
    app.apply(Event::Graph(GraphUpdate {
        time_ns: app.graph.time_ns(),
        full: false,
        zoom: Zoom::Workload as i32,
        nodes: vec![GraphNode {
            id: FRONTEND.into(),
            kind: NodeKind::Workload as i32,
            namespace: "shop".into(),
            name: "frontend".into(),
            cpu: Some(cpu),
            ..GraphNode::default()
        }],
        ..GraphUpdate::default()
    }));
}

#[test]
fn details_show_the_servers_cpu_against_its_limit() {
    let mut app = demo_app(Glyphs::Unicode, ColorDepth::TrueColor, DURING_DROPS);
    app.selection = Some(Selection::Node(FRONTEND.into()));
    let screen = text(&mut app, 160, 48);
    assert!(screen.contains("cpu        not reported"), "{screen}");

    frontend_cpu(
        &mut app,
        CpuUsage {
            cores: 0.48,
            limit_cores: 0.5,
            throttled: 0.314,
            pods: 2,
            time_ns: 1,
        },
    );
    let buffer = frame(&mut app, 160, 48);
    let (line, more) = ("0.48 of 0.50 cores (96%)", "throttled 31%, 2 pods");
    let warning = Styles::new(&default_theme(), ColorDepth::TrueColor).get(Role::Warning);
    for words in [line, more] {
        let at = find_word(&buffer, words);
        assert_eq!(
            at.len(),
            1,
            "{words:?} once in {}",
            ui::buffer_text(&buffer)
        );
        // Near the limit and throttled: the warning colour.
        let (x0, y) = at[0];
        let cells = x0..x0 + words.chars().count() as u16;
        assert!(
            cells
                .into_iter()
                .all(|x| Some(buffer[(x, y)].fg) == warning.fg)
        );
    }

    // An edge into the frontend shows the frontend's CPU too.
    let caller = app
        .graph
        .edges_to(FRONTEND)
        .next()
        .expect("someone calls the frontend")
        .source
        .clone();
    app.selection = Some(Selection::Pair(caller, FRONTEND.into()));
    assert!(text(&mut app, 160, 48).contains(line));

    // Garbage from a relay is no figure at all, and never a panic.
    app.selection = Some(Selection::Node(FRONTEND.into()));
    frontend_cpu(
        &mut app,
        CpuUsage {
            cores: f64::NAN,
            limit_cores: f64::INFINITY,
            throttled: -3.0,
            pods: 1,
            time_ns: 1,
        },
    );
    let screen = text(&mut app, 160, 48);
    assert!(
        screen.contains("cpu        0.00 cores (no limit)"),
        "{screen}"
    );
}

#[test]
fn tiny_and_odd_terminals_do_not_panic() {
    let mut app = demo_app(Glyphs::Unicode, ColorDepth::None, DURING_DROPS);
    for (w, h) in [
        (1, 1),
        (2, 2),
        (10, 3),
        (59, 14),
        (60, 15),
        (61, 40),
        (300, 10),
        (80, 200),
    ] {
        for view in View::ALL {
            app.view = view;
            frame(&mut app, w, h);
        }
    }
    let small = text(&mut app, 50, 10);
    assert!(small.contains("terminal too small"), "{small}");
    // The empty app (nothing received yet) draws too.
    let mut empty = new_app(Glyphs::Ascii, ColorDepth::None);
    let picture = text(&mut empty, 80, 24);
    assert!(picture.contains("connecting"), "{picture}");
}

#[test]
fn the_readme_key_table_is_the_help_screen() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    for entry in skymap_tui::app::HELP {
        let row = format!(
            "| `{}` | {} |",
            entry.keys,
            entry.action.replace('|', "\\|")
        );
        assert!(readme.contains(&row), "README lacks the key row {row}");
    }
}

#[test]
fn pausing_keeps_a_bounded_queue_and_counts_the_rest() {
    let mut app = new_app(Glyphs::Ascii, ColorDepth::None);
    let flow = demo_flows().next().expect("a flow");
    key(&mut app, KeyCode::Char('p'));
    let extra = 5;
    for _ in 0..skymap_tui::app::PAUSE_QUEUE_FLOWS + extra {
        app.apply(Event::Flow(flow.clone()));
    }
    assert_eq!(app.lost, extra as u64, "beyond the bound, counted as lost");
    assert!(app.flows.is_empty(), "nothing shown while paused");
    key(&mut app, KeyCode::Char('p'));
    assert_eq!(
        app.flows.len() + app.flows.evicted() as usize,
        skymap_tui::app::PAUSE_QUEUE_FLOWS,
        "the queue is applied on resume"
    );
}

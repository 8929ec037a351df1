//! Panel snapshots: the dashboard drawn into ratatui's TestBackend at 80×24 (the smallest
//! size it promises to be usable at), asserting on what the buffer shows.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use addond_tui::app::{App, Avail, DockerState, Event, LogLine, Options, Update, View};
use addond_tui::model::{MetricsSample, Service};
use addond_tui::net::parse_log_line;
use addond_tui::ui;
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::style::Color;
use ratatui::Terminal;
use serde_json::json;

fn app_with(color: bool, ports: Option<(u16, u16)>) -> App {
    let mut a = App::new(Options { socket: "/run/addond/addond.sock".into(), color, ports });
    a.handle(Event::Resize(80, 24));
    a.handle(Event::Daemon(Update::Connected { version: Some("0.1.0".into()), docker: Some(DockerState::Reachable), polling: false }));
    a
}

fn service(id: &str, name: &str, health: &str, ports: &[u16], started: i64) -> Service {
    let instances: Vec<_> = ports
        .iter()
        .enumerate()
        .map(|(k, p)| {
            json!({"ordinal": k, "host_port": p, "health": health, "restarts": k, "state": "running",
                   "started_at": rfc3339(started)})
        })
        .collect();
    Service::from_json(&json!({
        "id": id, "name": name, "plugin_id": "shop", "service_type": "rest_api", "image": "addond-sample:latest",
        "resource_limits": {"memory": "512m", "cpu": "0.5"}, "replicas": ports.len(), "desired": "started",
        "phase": if health == "unhealthy" { "Starting" } else { "Started" }, "health_status": health, "instances": instances,
    }))
    .unwrap()
}

fn rfc3339(unix: i64) -> String {
    // Good enough for tests: seconds since 2024-01-01T00:00:00Z within one day.
    let base = 1_704_067_200;
    let s = unix - base;
    format!("2024-01-01T{:02}:{:02}:{:02}Z", s / 3600, s / 60 % 60, s % 60)
}

const T0: i64 = 1_704_067_200 + 3600; // 01:00:00

fn key(a: &mut App, c: KeyCode) {
    a.handle(Event::Key(KeyEvent::new(c, KeyModifiers::NONE)));
}

fn chars(a: &mut App, s: &str) {
    for c in s.chars() {
        key(a, KeyCode::Char(c));
    }
}

fn render(app: &App) -> Buffer {
    let mut term = Terminal::new(TestBackend::new(app.size.0, app.size.1)).unwrap();
    term.draw(|f| ui::draw(app, f)).unwrap();
    term.backend().buffer().clone()
}

fn lines(buf: &Buffer) -> Vec<String> {
    (0..buf.area.height).map(|y| (0..buf.area.width).map(|x| buf[(x, y)].symbol()).collect()).collect()
}

fn text(buf: &Buffer) -> String {
    lines(buf).join("\n")
}

/// Finds `needle` on screen; returns (x, y) of its first cell.
fn find(buf: &Buffer, needle: &str) -> Option<(u16, u16)> {
    for (y, l) in lines(buf).iter().enumerate() {
        if let Some(bx) = l.find(needle) {
            let x = l[..bx].chars().count();
            return Some((x as u16, y as u16));
        }
    }
    None
}

fn three_services() -> App {
    let mut a = app_with(true, None);
    a.handle(Event::Daemon(Update::Services(vec![
        service("svc_a", "shop-api", "healthy", &[8000, 8001], T0 - 3 * 60),
        service("svc_b", "mailer", "unhealthy", &[8002], T0 - 30),
        service("svc_c", "zz-worker", "starting", &[], T0),
    ])));
    a
}

#[test]
fn the_header_says_when_docker_is_not_answering() {
    let mut a = app_with(false, None);
    assert!(!text(&render(&a)).contains("docker"), "{}", text(&render(&a)));
    a.handle(Event::Daemon(Update::Health { version: None, docker: Some(DockerState::Unresponsive) }));
    let screen = text(&render(&a));
    assert!(screen.lines().next().unwrap_or_default().contains("docker unresponsive"), "{screen}");
    a.handle(Event::Daemon(Update::Health { version: None, docker: Some(DockerState::Reachable) }));
    assert!(!text(&render(&a)).lines().next().unwrap_or_default().contains("docker"));
}

#[test]
fn services_table_at_80x24() {
    let mut a = three_services();
    a.handle(Event::Daemon(Update::Metrics {
        id: "svc_b".into(),
        result: Ok(MetricsSample {
            cpu_percent: 12.5,
            memory_usage_mb: 40.0,
            memory_limit_mb: 512.0,
            memory_percent: 7.8,
            ..Default::default()
        }),
    }));
    a.now = T0;
    let buf = render(&a);
    let screen = text(&buf);
    let l = lines(&buf);
    // Tabs and the connection badge.
    assert!(l[0].starts_with(" addond  1:Services  2:Logs  3:Ports  4:Events  5:Addons  6:Grants"), "{screen}");
    assert!(l[0].trim_end().ends_with("● connected"), "{screen}");
    // Title with counts and sort; header with the columns that fit at 80 columns.
    assert!(l[1].contains(" Services 3/3 sort name ↑ "), "{screen}");
    let header = &l[2];
    for col in ["NAME↑", "PHASE", "HEALTH", "REPL", "PORTS", "CPU", "MEM", "RST", "UP"] {
        assert!(header.contains(col), "{col} missing: {header}");
    }
    assert!(!header.contains("TYPE") && !header.contains("ADDON"), "{header}");
    // Rows sorted by name, the first one selected.
    assert!(l[3].contains("▶ mailer") && l[3].contains("Starting") && l[3].contains("unhealthy") && l[3].contains("1/1"), "{screen}");
    assert!(l[3].contains("8002") && l[3].contains("12.5%") && l[3].contains("40.0M") && l[3].contains("30s"), "{}", l[3]);
    assert!(l[4].contains("shop-api") && l[4].contains("8000,8001") && l[4].contains("healthy") && l[4].contains("2/2"), "{}", l[4]);
    assert!(l[4].contains("3m00s"), "{}", l[4]);
    assert!(l[5].contains("zz-worker") && l[5].contains("0/0") && l[5].contains(" - "), "{}", l[5]);
    // Colour by health.
    let (x, y) = find(&buf, "unhealthy").unwrap();
    assert_eq!(buf[(x, y)].fg, Color::Red);
    let (x, y) = find(&buf, "starting").unwrap();
    assert_eq!(buf[(x, y)].fg, Color::Yellow);
    let (x, y) = find(&buf, " healthy").unwrap();
    assert_eq!(buf[(x + 1, y)].fg, Color::Green);
    // Hints in the status line.
    assert!(l[23].contains("/ filter") && l[23].contains("? help"), "{screen}");
}

#[test]
fn filter_and_sort_show_in_the_title() {
    let mut a = three_services();
    key(&mut a, KeyCode::Char('/'));
    chars(&mut a, "shop-");
    let buf = render(&a);
    let screen = text(&buf);
    assert!(screen.contains("Services 1/3 filter \"shop-\""), "{screen}");
    assert!(screen.contains("filter: shop-█"), "{screen}");
    assert!(!screen.contains("mailer"), "{screen}");
    key(&mut a, KeyCode::Esc);
    for _ in 0..4 {
        key(&mut a, KeyCode::Char('o'));
    }
    let buf = render(&a);
    let l = lines(&buf);
    assert!(l[1].contains("sort health ↑") && l[2].contains("HEALTH↑"), "{}", text(&buf));
    // Sick first.
    assert!(l[3].contains("mailer") && l[4].contains("zz-worker") && l[5].contains("shop-api"), "{}", text(&buf));
}

#[test]
fn no_color_uses_no_colours() {
    let mut a = app_with(false, None);
    a.handle(Event::Daemon(Update::Services(vec![service("svc_b", "mailer", "unhealthy", &[8002], T0)])));
    let buf = render(&a);
    for c in buf.content() {
        assert!(matches!(c.fg, Color::Reset) && matches!(c.bg, Color::Reset), "coloured cell {c:?}");
    }
    // The selection is still visible: reversed.
    let (x, y) = find(&buf, "▶ mailer").unwrap();
    assert!(buf[(x + 2, y)].modifier.contains(ratatui::style::Modifier::REVERSED));
}

#[test]
fn detail_pane_with_sparklines_and_last_error() {
    let mut a = app_with(true, None);
    let mut s = service("svc_a", "shop-api", "unhealthy", &[8000], T0 - 65);
    s.last_error = Some("health check failed: GET /health answered 500".into());
    s.instances[0].last_error = None;
    a.handle(Event::Daemon(Update::Services(vec![s])));
    let start = Instant::now();
    for k in 0..30u32 {
        let m = MetricsSample {
            cpu_percent: f64::from(k % 7) * 3.0,
            memory_usage_mb: 20.0 + f64::from(k),
            memory_limit_mb: 512.0,
            memory_percent: 8.0,
            network_rx_mb: f64::from(k) * 0.5,
            network_tx_mb: f64::from(k) * 0.1,
        };
        a.handle(Event::Daemon(Update::Metrics { id: "svc_a".into(), result: Ok(m) }));
        // Pretend the samples were 2 s apart.
        if let Some(h) = a.metrics.get_mut("svc_a") {
            if let Some(p) = h.prev_net.as_mut() {
                p.2 = start.checked_sub(Duration::from_secs(2)).unwrap_or(start);
            }
        }
    }
    a.now = T0;
    let buf = render(&a);
    let screen = text(&buf);
    assert!(screen.contains(" shop-api svc_a "), "{screen}");
    assert!(screen.contains("type rest_api  addon shop"), "{screen}");
    assert!(screen.contains("phase Starting  health unhealthy"), "{screen}");
    assert!(screen.contains("error health check failed: GET /health"), "{screen}");
    assert!(screen.contains("answered 500"), "{screen}");
    assert!(screen.contains("#0 :8000 running unhealthy ↻0 up 1m05s"), "{screen}");
    assert!(screen.contains("CPU 3.00%"), "{screen}");
    assert!(screen.contains("MEM 49.0M / 512.0M (8.0%)"), "{screen}");
    assert!(screen.contains("NET rx "), "{screen}");
    // Sparkline bars are drawn.
    let bars = buf.content().iter().filter(|c| "▁▂▃▄▅▆▇█".contains(c.symbol())).count();
    assert!(bars >= 30, "{bars} bar cells\n{screen}");
    let (x, y) = find(&buf, "error health").unwrap();
    assert_eq!(buf[(x, y)].fg, Color::Red);
}

#[test]
fn detail_pane_before_metrics_and_on_error() {
    let mut a = three_services();
    let screen = text(&render(&a));
    assert!(screen.contains("metrics: waiting for a sample"), "{screen}");
    a.handle(Event::Daemon(Update::Metrics { id: "svc_b".into(), result: Err("Docker is unavailable".into()) }));
    let screen = text(&render(&a));
    assert!(screen.contains("metrics: Docker is unavailable"), "{screen}");
}

#[test]
fn help_overlay() {
    let mut a = three_services();
    key(&mut a, KeyCode::Char('?'));
    let screen = text(&render(&a));
    for s in [
        " Keys ",
        "filter (Esc clears)",
        "scale (asks for N)",
        "stop, delete (confirm)",
        "search, next, previous",
        "save to a file, clear",
        "Esc or ? closes",
    ] {
        assert!(screen.contains(s), "{s} missing\n{screen}");
    }
    key(&mut a, KeyCode::Esc);
    assert!(!text(&render(&a)).contains(" Keys "));
}

#[test]
fn port_map_shows_ours_held_and_free() {
    let mut a = app_with(true, Some((8700, 8750)));
    a.handle(Event::Daemon(Update::Services(vec![
        service("svc_a", "alpha", "healthy", &[8700], T0),
        service("svc_b", "beta", "unhealthy", &[8701, 8703], T0),
    ])));
    key(&mut a, KeyCode::Char('3'));
    assert_eq!(a.view, View::Ports);
    let held: BTreeSet<u16> = [8700, 8705, 8749].into_iter().collect();
    a.handle(Event::Daemon(Update::PortsHeld { range: (8700, 8750), held }));
    let buf = render(&a);
    let screen = text(&buf);
    assert!(screen.contains(" Port map 8700–8750 (from --ports)"), "{screen}");
    assert!(screen.contains("■ ours 3   × held by another program 2   · free 46"), "{screen}");
    assert!(screen.contains(" 8700 ■■·■·×····"), "{screen}");
    assert!(screen.contains(" 8700  alpha #0  healthy"), "{screen}");
    assert!(screen.contains(" 8703  beta #1  unhealthy"), "{screen}");
    assert!(screen.contains(" 8705  held by another program"), "{screen}");
    assert!(screen.contains(" 8749  held by another program"), "{screen}");
}

#[test]
fn port_map_inferred_from_the_daemon_totals() {
    let mut a = app_with(true, None);
    a.handle(Event::Daemon(Update::Services(vec![service("svc_a", "alpha", "healthy", &[8700], T0)])));
    a.handle(Event::Daemon(Update::PortTotals { in_use: 1, free: 50 }));
    let cmds = a.handle(Event::Key(KeyEvent::new(KeyCode::Char('3'), KeyModifiers::NONE)));
    assert!(cmds.contains(&addond_tui::app::Command::ProbePorts(Some((8700, 8750)))), "{cmds:?}");
    let screen = text(&render(&a));
    assert!(screen.contains("Port map 8700–8750 (inferred"), "{screen}");
    assert!(screen.contains("(probing…)"), "{screen}");
}

fn logs_app() -> App {
    let mut a = three_services();
    key(&mut a, KeyCode::Char('j')); // shop-api
    key(&mut a, KeyCode::Char('l'));
    let session = a.logs.session;
    let mut batch: Vec<LogLine> = Vec::new();
    for k in 0..40 {
        let text = if k % 10 == 3 { format!("request {k} failed: ERROR timeout") } else { format!("request {k} ok") };
        batch.push(parse_log_line(&format!("[{}] 2024-01-01T01:00:{:02}Z {text}", k % 2, k)));
    }
    a.handle(Event::Daemon(Update::LogLines { session, lines: batch }));
    a.handle(Event::Daemon(Update::LogStatus { session, status: "streaming".into(), live: true }));
    a
}

#[test]
fn logs_follow_the_end() {
    let a = logs_app();
    let buf = render(&a);
    let screen = text(&buf);
    let l = lines(&buf);
    assert!(l[1].contains(" Logs: shop-api (all instances) "), "{screen}");
    // 20 rows of text: lines 20..39, the newest at the bottom.
    assert!(l[2].contains("[0] request 20 ok"), "{screen}");
    assert!(l[21].contains("[1] request 39 ok"), "{screen}");
    assert!(l[22].contains("40 line(s) · following · streaming"), "{screen}");
    assert!(l[23].contains("f follow") && l[23].contains("s save"), "{screen}");
}

#[test]
fn logs_with_search_highlight_wrap_and_timestamps() {
    let mut a = logs_app();
    key(&mut a, KeyCode::Char('/'));
    chars(&mut a, "error");
    let screen = text(&render(&a));
    assert!(screen.contains("search: error█"), "{screen}");
    assert!(screen.contains("4 matching line(s)"), "{screen}");
    key(&mut a, KeyCode::Enter);
    // Jumped to the newest match, following stopped.
    assert_eq!(a.logs.current, Some(33));
    let buf = render(&a);
    let screen = text(&buf);
    assert!(screen.contains("· paused") && screen.contains("\"error\": 4 match(es)"), "{screen}");
    let (_, y) = find(&buf, "request 33 failed").unwrap();
    let x = lines(&buf)[y as usize].find("ERROR").unwrap() as u16 - 2; // "│" is 3 bytes, 1 cell
    assert_eq!(buf[(x, y)].bg, Color::Yellow, "{screen}");
    assert_eq!(buf[(x + 5, y)].bg, Color::Reset);
    // The current match is underlined.
    assert!(buf[(x + 7, y)].modifier.contains(ratatui::style::Modifier::UNDERLINED));
    // Previous match.
    key(&mut a, KeyCode::Char('N'));
    assert_eq!(a.logs.current, Some(23));
    // Timestamps and wrap.
    key(&mut a, KeyCode::Char('t'));
    key(&mut a, KeyCode::Char('G'));
    let screen = text(&render(&a));
    assert!(screen.contains("01:00:39 [1] request 39 ok"), "{screen}");
    let session = a.logs.session;
    a.handle(Event::Daemon(Update::LogLines {
        session,
        lines: vec![parse_log_line(&format!("2024-01-01T01:01:00Z {}END", "x".repeat(150)))],
    }));
    key(&mut a, KeyCode::Char('w'));
    let buf = render(&a);
    let l = lines(&buf);
    assert!(l[21].starts_with("│xxxEND "), "{}", text(&buf));
    assert!(l[20].starts_with("│xxxx") && l[20].ends_with("x│"), "{}", text(&buf));
    assert!(l[19].contains("01:01:00 xxxx"), "{}", text(&buf));
}

#[test]
fn escape_sequences_in_names_and_logs_render_harmlessly() {
    let mut a = app_with(true, None);
    // What a hostile daemon reply or container could carry, through the real parsing path.
    let evil = Service::from_json(&json!({
        "id": "svc_e", "name": "evil\u{1b}[2J\u{1b}[H\u{1b}]0;pwned\u{7}-svc", "phase": "Failed", "health_status": "unhealthy",
        "last_error": "crash\u{1b}[1A\u{1b}[2K\rFAKE ROW\u{1b}]52;c;aGk=\u{7}", "replicas": 1,
        "instances": [{"ordinal": 0, "host_port": 8000, "state": "exited", "health": "unhealthy"}],
    }))
    .unwrap();
    a.handle(Event::Daemon(Update::Services(vec![evil])));
    let buf = render(&a);
    let screen = text(&buf);
    assert!(screen.contains("▶ evil-svc"), "{screen}");
    assert!(screen.contains("error crash FAKE ROW"), "{screen}");
    key(&mut a, KeyCode::Char('l'));
    let session = a.logs.session;
    let raw = [
        "2024-01-01T01:00:00Z \u{1b}[31mred\u{1b}[0m text",
        "2024-01-01T01:00:01Z \u{1b}]0;title\u{7}\u{1b}[2Jcleared?\u{1b}[10;10Hmoved",
        "2024-01-01T01:00:02Z bell\u{7}\u{8}\u{8}back\u{9b}6nquery",
        "2024-01-01T01:00:03Z \u{202e}reversed",
    ];
    a.handle(Event::Daemon(Update::LogLines { session, lines: raw.iter().map(|l| parse_log_line(l)).collect() }));
    let buf = render(&a);
    let screen = text(&buf);
    for want in ["red text", "cleared?moved", "bellbackquery", "reversed"] {
        assert!(screen.contains(want), "{want}\n{screen}");
    }
    for c in buf.content() {
        assert!(
            !c.symbol().chars().any(|ch| ch.is_control() || ('\u{202a}'..='\u{202e}').contains(&ch)),
            "control character in cell {c:?}"
        );
    }
    assert!(!screen.contains("pwned") && !screen.contains("title") && !screen.contains("aGk="), "{screen}");
}

#[test]
fn status_line_when_the_daemon_is_down() {
    let mut a = three_services();
    a.handle(Event::Daemon(Update::Down {
        error: "addond is not running (no socket at /run/addond/addond.sock)".into(),
        retry_in: Duration::from_millis(1900),
    }));
    let buf = render(&a);
    let l = lines(&buf);
    assert!(l[0].trim_end().ends_with("✖ offline"), "{}", text(&buf));
    assert!(l[23].starts_with("✖ reconnecting in 2s · addond is not running (no socket at /run/addond/addond.so"), "{}", text(&buf));
    // The last known services stay on screen.
    assert!(text(&buf).contains("shop-api"));
}

#[test]
fn prompts_and_confirmations() {
    let mut a = three_services();
    key(&mut a, KeyCode::Char('='));
    let screen = text(&render(&a));
    assert!(screen.contains(" Scale mailer ") && screen.contains("replicas (0–64): 1█"), "{screen}");
    key(&mut a, KeyCode::Esc);
    key(&mut a, KeyCode::Char('D'));
    let screen = text(&render(&a));
    assert!(screen.contains("Delete mailer?") && screen.contains("ports freed") && screen.contains("y yes"), "{screen}");
    key(&mut a, KeyCode::Char('n'));
    key(&mut a, KeyCode::Char('n'));
    let screen = text(&render(&a));
    assert!(screen.contains("New service from a template") && screen.contains("loading…"), "{screen}");
    a.handle(Event::Daemon(Update::Templates(Ok(vec![addond_tui::model::Template {
        id: "rest_api_basic".into(),
        description: "REST API, 512m, 0.5 CPU".into(),
        service_type: "rest_api".into(),
    }]))));
    let screen = text(&render(&a));
    assert!(screen.contains("▶ rest_api_basic") && screen.contains("REST API, 512m"), "{screen}");
}

#[test]
fn views_for_apis_this_daemon_lacks() {
    let mut a = three_services();
    key(&mut a, KeyCode::Char('6'));
    a.handle(Event::Daemon(Update::Grants(Avail::NotAvailable)));
    let screen = text(&render(&a));
    assert!(screen.contains("Applications and grants: not available in this daemon version"), "{screen}");
    key(&mut a, KeyCode::Char('5'));
    a.handle(Event::Daemon(Update::Addons(Avail::NotAvailable)));
    let screen = text(&render(&a));
    assert!(screen.contains("Addons: not available in this daemon version"), "{screen}");
    a.handle(Event::Daemon(Update::Addons(Avail::Ready(addond_tui::model::Addon::list_from_json(&json!({"addons": [
        {"name": "payment-gateway", "version": "1.2.0", "category": "ecommerce", "description": "Payments\u{1b}[5m",
         "installed": [{"instance": "payment-gateway", "version": "1.2.0"}]}
    ]}))))));
    let screen = text(&render(&a));
    assert!(screen.contains("▶ payment-gateway") && screen.contains("1.2.0") && screen.contains("ecommerce"), "{screen}");
    key(&mut a, KeyCode::Char('i'));
    let screen = text(&render(&a));
    assert!(screen.contains("Install payment-gateway") && screen.contains("instance name: payment-gateway-2█"), "{screen}");
}

#[test]
fn events_view_lists_pushed_changes() {
    let mut a = three_services();
    a.handle(Event::Daemon(Update::Service(service("svc_b", "mailer", "healthy", &[8002], T0))));
    a.handle(Event::Daemon(Update::Deleted("svc_c".into())));
    a.handle(Event::Daemon(Update::EventsApi(true)));
    a.handle(Event::Daemon(Update::AddonEvents(vec![
        addond_tui::model::AddonEvent::from_json(&json!({"id": 42, "name": "payment.completed", "source": "payment",
            "timestamp": "2024-01-01T01:00:05Z", "data": {"order": 1}}))
        .unwrap(),
        addond_tui::model::AddonEvent::from_json(&json!({"id": 43, "name": "service.failed", "source": "addond",
            "timestamp": "2024-01-01T01:00:06Z", "data": {"service": "mailer"}}))
        .unwrap(),
    ])));
    key(&mut a, KeyCode::Char('4'));
    let buf = render(&a);
    let screen = text(&buf);
    assert!(screen.contains("01:00:05 event #42 payment.completed from payment {\"order\":1}"), "{screen}");
    let (x, y) = find(&buf, "event #43 service.failed from addond").unwrap();
    assert_eq!(buf[(x, y)].fg, Color::Red);
    assert!(screen.contains("connected to addond 0.1.0"), "{screen}");
    assert!(screen.contains("service list loaded: 3 service(s)"), "{screen}");
    assert!(screen.contains("mailer: phase Starting → Started, health unhealthy → healthy"), "{screen}");
    assert!(screen.contains("zz-worker: deleted"), "{screen}");
}

#[test]
fn tiny_terminal_says_so() {
    let mut a = three_services();
    a.handle(Event::Resize(50, 10));
    let screen = text(&render(&a));
    assert!(screen.contains("needs at least 60×12"), "{screen}");
}

#[test]
fn two_hundred_services_and_a_full_log_stay_fast() {
    let mut a = app_with(true, None);
    let list: Vec<Service> = (0..200)
        .map(|k| {
            service(&format!("svc_{k:03}"), &format!("svc-{k:03}"), ["healthy", "unhealthy", "starting"][k % 3], &[8000 + k as u16], T0)
        })
        .collect();
    a.handle(Event::Daemon(Update::Services(list)));
    let started = Instant::now();
    for k in 0..200u16 {
        // Every service changes once, the view redraws each time.
        a.handle(Event::Daemon(Update::Service(service(&format!("svc_{k:03}"), &format!("svc-{k:03}"), "healthy", &[8000 + k], T0))));
        a.handle(Event::Key(KeyEvent::new(KeyCode::Down, KeyModifiers::NONE)));
        render(&a);
    }
    assert_eq!(a.selected_service().unwrap().name, "svc-199");
    let screen = text(&render(&a));
    assert!(screen.contains("▶ svc-199"), "{screen}");
    key(&mut a, KeyCode::Char('l'));
    let session = a.logs.session;
    for batch in 0..30 {
        let lines = (0..1000).map(|k| parse_log_line(&format!("2024-01-01T01:00:00Z line {batch}-{k}"))).collect();
        a.handle(Event::Daemon(Update::LogLines { session, lines }));
        render(&a);
    }
    assert_eq!(a.logs.lines.len(), addond_tui::app::LOG_CAP);
    assert!(text(&render(&a)).contains("line 29-999"));
    // Generous: this is about complexity, not speed on a loaded CI box.
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
}

#[test]
fn grants_view_lists_applications_without_keys() {
    let mut a = three_services();
    key(&mut a, KeyCode::Char('6'));
    let apps = addond_tui::model::Application::list_from_json(&json!([
        {"id": "app_1", "name": "shop-front", "organization": "ACME", "grants": [
            {"id": "grant_1", "addon": "payments", "key_prefix": "ak_3f9c_…", "status": "active",
             "rate_limit": {"requests_per_second": 10.0, "burst": 20}, "allowed_origins": ["https://shop.example"]},
            {"id": "grant_2", "addon": "mailer", "key_prefix": "ak_77aa_…", "status": "revoked", "rate_limit": null}]},
        {"id": "app_2", "name": "backoffice", "grants": []}
    ]));
    a.handle(Event::Daemon(Update::Grants(Avail::Ready(apps))));
    let screen = text(&render(&a));
    assert!(screen.contains("shop-front (ACME)") && screen.contains("2 grant(s)"), "{screen}");
    assert!(screen.contains("└ payments") && screen.contains("ak_3f9c_… · active · 10/s burst 20 · https://shop.example"), "{screen}");
    assert!(screen.contains("└ mailer") && screen.contains("ak_77aa_… · revoked · -"), "{screen}");
    assert!(screen.contains("backoffice") && screen.contains("0 grant(s)"), "{screen}");
}

#[test]
fn events_view_without_an_event_log() {
    let mut a = three_services();
    a.handle(Event::Daemon(Update::EventsApi(false)));
    key(&mut a, KeyCode::Char('4'));
    let screen = text(&render(&a));
    assert!(screen.contains("event log: not available in this daemon version"), "{screen}");
    assert!(screen.contains("service list loaded"), "{screen}");
}

#[test]
fn addon_view_shows_deployments_and_a_rollback_with_its_reason() {
    let mut a = three_services();
    key(&mut a, KeyCode::Char('5'));
    let mut list = addond_tui::model::Addon::list_from_json(&json!({"addons": [
        {"name": "pay", "version": "2.0.0", "category": "ecommerce", "description": "Payments",
         "installed": [{"instance": "pay", "version": "1.0.0"}]}
    ]}));
    list[0].instances = vec![addond_tui::model::InstalledAddon::from_json(
        &json!({"instance": "pay", "version": "1.0.0", "phase": "Started", "deploying": false}),
        &json!([
            {"id": 1, "kind": "install", "to_version": "1.0.0", "outcome": "succeeded", "started_at": "2026-12-06T06:00:00Z", "who": "uid:0"},
            {"id": 2, "kind": "upgrade", "from_version": "1.0.0", "to_version": "2.0.0", "outcome": "rolled_back",
             "reason": "pay-api: the new instance failed: exited with code 3", "started_at": "2026-12-06T06:05:00Z", "who": "uid:0"}
        ]),
    )
    .unwrap()];
    a.handle(Event::Daemon(Update::Addons(Avail::Ready(list))));
    let buf = render(&a);
    let screen = text(&buf);
    assert!(screen.contains("Deployments of pay"), "{screen}");
    assert!(screen.contains("pay  1.0.0  Started"), "{screen}");
    assert!(screen.contains("[prod] none"), "an install without environments is prod: {screen}");
    // Newest first: the rolled-back upgrade above the install, with its reason.
    let up = screen.find("upgrade   1.0.0 → 2.0.0  rolled_back").unwrap_or_else(|| panic!("{screen}"));
    let inst = screen.find("install   1.0.0  succeeded").unwrap_or_else(|| panic!("{screen}"));
    assert!(up < inst, "{screen}");
    assert!(screen.contains("exited with code 3"), "{screen}");
}

use super::*;
use ratatui::crossterm::event::{KeyCode, KeyModifiers};

pub fn svc(id: &str, name: &str, health: &str, ports: &[u16]) -> Service {
    Service {
        id: id.into(),
        name: name.into(),
        service_type: "rest_api".into(),
        phase: "Started".into(),
        desired: "started".into(),
        health: health.into(),
        replicas: ports.len() as u32,
        instances: ports
            .iter()
            .enumerate()
            .map(|(k, p)| model::Instance {
                ordinal: k as u32,
                host_port: Some(*p),
                health: health.into(),
                state: "running".into(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

pub(super) fn app() -> App {
    let mut a = App::new(Options { socket: "/tmp/x.sock".into(), color: true, ports: None });
    a.handle(Event::Daemon(Update::Connected { version: Some("0.1.0".into()), docker: Some(DockerState::Reachable), polling: false }));
    a
}

pub(super) fn key(c: char) -> Event {
    Event::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE))
}

pub(super) fn code(c: KeyCode) -> Event {
    Event::Key(KeyEvent::new(c, KeyModifiers::NONE))
}

pub(super) fn typed(a: &mut App, s: &str) -> Vec<Command> {
    s.chars().flat_map(|c| a.handle(key(c))).collect()
}

#[test]
fn push_updates_and_deletes() {
    let mut a = app();
    a.handle(Event::Daemon(Update::Services(vec![svc("1", "one", "starting", &[8000])])));
    a.handle(Event::Daemon(Update::Service(svc("1", "one", "healthy", &[8000]))));
    a.handle(Event::Daemon(Update::Service(svc("2", "two", "healthy", &[8001, 8002]))));
    assert_eq!(a.rows.len(), 2);
    assert!(a.events.iter().any(|e| e.text == "one: health starting → healthy"), "{:?}", a.events);
    assert!(a.events.iter().any(|e| e.text.starts_with("two: created")));
    a.handle(Event::Daemon(Update::Deleted("1".into())));
    assert_eq!(a.services.len(), 1);
    assert_eq!(a.selected_service().unwrap().name, "two");
}

#[test]
fn metrics_polled_only_for_the_selected_service() {
    let mut a = app();
    let cmds = a.handle(Event::Daemon(Update::Services(vec![svc("1", "a", "healthy", &[8000]), svc("2", "b", "healthy", &[8001])])));
    assert_eq!(cmds, vec![Command::WatchMetrics(Some("1".into()))]);
    assert_eq!(a.handle(key('j')), vec![Command::WatchMetrics(Some("2".into()))]);
    assert!(a.handle(Event::Tick).is_empty());
    // Hiding the detail pane or leaving the view stops the polling.
    assert_eq!(a.handle(key('d')), vec![Command::WatchMetrics(None)]);
    a.handle(key('d'));
    let cmds = a.handle(key('4'));
    assert_eq!(cmds, vec![Command::WatchMetrics(None)]);
    // Samples build the sparklines; network becomes a rate.
    let t0 = Instant::now();
    let mut h = MetricsHistory::default();
    h.push(MetricsSample { cpu_percent: 1.5, memory_usage_mb: 2.0, network_rx_mb: 1.0, ..Default::default() }, t0);
    h.push(MetricsSample { cpu_percent: 3.0, memory_usage_mb: 2.0, network_rx_mb: 2.0, ..Default::default() }, t0 + Duration::from_secs(2));
    assert_eq!(h.cpu, [150, 300]);
    assert_eq!(h.mem, [2048, 2048]);
    assert_eq!(h.rx, [512 * 1024]);
}

#[test]
fn logs_follow_search_cap_and_sessions() {
    let mut a = app();
    a.handle(Event::Daemon(Update::Services(vec![svc("1", "web", "healthy", &[8000, 8001])])));
    let cmds = a.handle(key('l'));
    assert_eq!(a.view, View::Logs);
    assert!(cmds.contains(&Command::OpenLogs { session: 1, id: "1".into(), instance: None }));
    let line = |t: &str| LogLine { instance: None, ts: None, text: t.into() };
    a.handle(Event::Daemon(Update::LogLines { session: 1, lines: (0..50).map(|i| line(&format!("line {i}"))).collect() }));
    // Lines of an older session are ignored.
    a.handle(Event::Daemon(Update::LogLines { session: 0, lines: vec![line("stale")] }));
    assert_eq!(a.logs.lines.len(), 50);
    a.handle(key('/'));
    typed(&mut a, "LINE 4");
    assert_eq!(a.logs.matches, 11); // 4, 40..49
    a.handle(code(KeyCode::Enter));
    assert_eq!(a.logs.current, Some(49));
    assert!(!a.logs.follow);
    a.handle(key('N'));
    assert_eq!(a.logs.current, Some(48));
    a.handle(key('n'));
    assert_eq!(a.logs.current, Some(49));
    a.handle(key('G'));
    assert!(a.logs.follow);
    // The buffer is bounded; match counts and positions follow the eviction.
    a.handle(Event::Daemon(Update::LogLines { session: 1, lines: (0..LOG_CAP).map(|_| line("x")).collect() }));
    assert_eq!(a.logs.lines.len(), LOG_CAP);
    assert_eq!(a.logs.matches, 0);
    assert_eq!(a.logs.dropped, 50);
    // `i` cycles instances: all → 0 → 1 → all, each a new session.
    assert_eq!(a.handle(key('i')), vec![Command::OpenLogs { session: 2, id: "1".into(), instance: Some(0) }]);
    assert_eq!(a.handle(key('i')), vec![Command::OpenLogs { session: 3, id: "1".into(), instance: Some(1) }]);
    assert_eq!(a.handle(key('i')), vec![Command::OpenLogs { session: 4, id: "1".into(), instance: None }]);
    // Save asks for a file name, then hands over the text.
    a.handle(Event::Daemon(Update::LogLines { session: 4, lines: vec![line("a"), line("b")] }));
    a.handle(key('s'));
    a.handle(Event::Key(KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL)));
    typed(&mut a, "out.log");
    assert_eq!(a.handle(code(KeyCode::Enter)), vec![Command::SaveLogs { path: "out.log".into(), text: "a\nb\n".into() }]);
    // Deleting the service closes the stream.
    assert!(a.handle(Event::Daemon(Update::Deleted("1".into()))).contains(&Command::CloseLogs));
}

#[test]
fn port_range_sources() {
    let ours = |p: &[u16]| p.iter().copied().collect::<BTreeSet<u16>>();
    let mut pv = PortView::default();
    assert_eq!(pv.range(&ours(&[])), None);
    pv.totals = Some((2, 999));
    assert_eq!(pv.range(&ours(&[8000, 8005])), Some(((8000, 9000), RangeSource::Inferred)));
    pv.totals = Some((2, 49));
    assert_eq!(pv.range(&ours(&[8700, 8712])), Some(((8700, 8750), RangeSource::Inferred)));
    assert_eq!(pv.range(&ours(&[8700, 8760])), Some(((8710, 8760), RangeSource::Inferred)));
    pv.reported = Some((8100, 8200));
    assert_eq!(pv.range(&ours(&[8700])), Some(((8100, 8200), RangeSource::Daemon)));
    pv.flag = Some((9000, 9010));
    assert_eq!(pv.range(&ours(&[8700])), Some(((9000, 9010), RangeSource::Flag)));
    pv.flag = Some((1024, 65535));
    assert_eq!(pv.range(&ours(&[])), Some(((1024, 1024 + MAP_MAX - 1), RangeSource::Flag)));
}

#[test]
fn views_that_need_apis_load_once_and_degrade() {
    let mut a = app();
    assert_eq!(a.handle(key('5')), vec![Command::LoadAddons]);
    a.handle(Event::Daemon(Update::Addons(Avail::NotAvailable)));
    assert!(a.handle(key('i')).is_empty());
    assert!(a.flash_text().unwrap().text.contains("addons API"));
    assert_eq!(a.handle(key('6')), vec![Command::LoadGrants]);
    a.handle(Event::Daemon(Update::Grants(Avail::NotAvailable)));
    assert!(a.handle(key('6')).is_empty());
}

#[test]
fn connection_state_and_quit() {
    let mut a = app();
    a.handle(Event::Daemon(Update::Down { error: "addond is not running".into(), retry_in: Duration::from_secs(2) }));
    assert!(matches!(a.conn, Conn::Down { .. }));
    assert!(a.events.back().unwrap().text.contains("not running"));
    // "connecting" during a retry keeps showing why it went down.
    a.handle(Event::Daemon(Update::Connecting));
    assert!(matches!(a.conn, Conn::Down { .. }));
    a.handle(Event::Daemon(Update::Connected { version: None, docker: None, polling: false }));
    assert!(matches!(a.conn, Conn::Up { .. }));
    a.handle(key('?'));
    assert_eq!(a.mode, Mode::Help);
    a.handle(key('q'));
    assert!(!a.quit);
    a.handle(key('q'));
    assert!(a.quit);
}

#[test]
fn names_and_stamps() {
    assert!(valid_name("shop-api") && valid_name("a") && valid_name("9x"));
    assert!(!valid_name("") && !valid_name("-a") && !valid_name("A") && !valid_name("a b") && !valid_name(&"a".repeat(64)));
    assert_eq!(stamp(1_709_208_000), "20240229-120000");
    assert!(contains_ci("Hello World", "WORLD"));
    assert!(contains_ci("Ünïcode", "ÜNÏ"));
}

#[test]
fn a_deployment_event_reloads_the_addon_view() {
    let mut a = app();
    assert_eq!(a.handle(key('5')), vec![Command::LoadAddons]);
    let ev = crate::model::AddonEvent::from_json(
        &serde_json::json!({"id": 7, "name": "deployment.rolled_back", "source": "addond", "data": {}}),
    )
    .unwrap();
    assert_eq!(a.handle(Event::Daemon(Update::AddonEvents(vec![ev.clone()]))), vec![Command::LoadAddons]);
    assert!(!a.events.back().unwrap().ok, "a rollback is logged as a failure");
    a.handle(key('1'));
    assert!(a.handle(Event::Daemon(Update::AddonEvents(vec![ev]))).is_empty(), "only while the addon view is shown");
}

#[test]
fn promotion_asks_which_environments_then_confirms() {
    let mut a = app();
    assert_eq!(a.handle(key('5')), vec![Command::LoadAddons]);
    let inst = |env: &str| model::InstalledAddon {
        instance: if env == "prod" { "pay".into() } else { format!("pay--{env}") },
        base: "pay".into(),
        environment: env.into(),
        ..Default::default()
    };
    let addon = model::Addon {
        name: "pay".into(),
        version: "1.0.0".into(),
        category: "utilities".into(),
        description: String::new(),
        image: None,
        runtime: "container".into(),
        installed: vec!["pay@1.0.0".into(), "pay--dev@1.0.0".into()],
        instances: vec![inst("dev"), inst("prod")],
    };
    a.handle(Event::Daemon(Update::Addons(Avail::Ready(vec![addon]))));
    assert!(a.handle(key('p')).is_empty());
    assert!(matches!(&a.mode, Mode::Prompt { kind: PromptKind::Promote { base }, .. } if base == "pay"));
    // Replace the suggestion; one name alone is refused.
    a.handle(Event::Key(KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL)));
    typed(&mut a, "dev");
    assert!(a.handle(code(KeyCode::Enter)).is_empty());
    assert!(matches!(&a.mode, Mode::Prompt { error: Some(_), .. }));
    typed(&mut a, " prod");
    assert!(a.handle(code(KeyCode::Enter)).is_empty(), "nothing is sent before the confirmation");
    assert!(matches!(&a.mode, Mode::Confirm(Confirm::Promote { .. })));
    assert_eq!(a.handle(key('y')), vec![Command::Promote { base: "pay".into(), from: "dev".into(), to: "prod".into() }]);
}

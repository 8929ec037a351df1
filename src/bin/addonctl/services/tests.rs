use super::*;
use crate::render::timestamp;
use crate::tests::parse;
use crate::Command;

#[test]
fn create_body_from_flags() {
    let c = parse(&[
        "services",
        "create",
        "--name",
        "payments-api",
        "--image",
        "addond-sample:latest",
        "--plugin-id",
        "pay",
        "--type",
        "rest_api",
        "--port",
        "8080",
        "--replicas",
        "2",
        "--env",
        "A=B",
        "--env",
        "URL=http://x?a=b",
        "--volume",
        "data:/data:ro",
        "-v",
        "./files:/files",
        "--network",
        "addond",
        "--memory",
        "256m",
        "--cpu",
        "0.5",
        "--pids",
        "64",
        "--health-path",
        "/healthz",
        "--health-interval",
        "5",
        "--health-retries",
        "2",
        "--restart-policy",
        "on-failure",
        "--version",
        "1.2.3",
    ]);
    let Command::Services(ServiceCmd::Create(a)) = c.command else { panic!() };
    let body = build_create_body(&a, None).unwrap();
    assert_eq!(
        body,
        json!({
            "name": "payments-api", "image": "addond-sample:latest", "plugin_id": "pay",
            "service_type": "rest_api", "port": 8080, "replicas": 2,
            "environment": {"A": "B", "URL": "http://x?a=b"},
            "volumes": [{"source": "data", "target": "/data", "read_only": true},
                        {"source": "./files", "target": "/files", "read_only": false}],
            "networks": ["addond"],
            "resource_limits": {"memory": "256m", "cpu": "0.5", "pids": 64},
            "health_check": {"path": "/healthz", "interval": 5.0, "retries": 2},
            "restart_policy": "on-failure", "version": "1.2.3"
        })
    );
}

#[test]
fn create_body_flags_override_file() {
    let c =
        parse(&["services", "create", "--file", "body.json", "--replicas", "3", "--env", "A=flag", "--memory", "1g", "--volume", "b:/b"]);
    let Command::Services(ServiceCmd::Create(a)) = c.command else { panic!() };
    let file = json!({
        "name": "from-file", "image": "img", "replicas": 1, "environment": {"A": "file", "B": "keep"},
        "resource_limits": {"memory": "512m", "cpu": "0.5"}, "volumes": ["a:/a"], "depends_on": ["db"]
    });
    let body = build_create_body(&a, Some(file)).unwrap();
    assert_eq!(
        body,
        json!({
            "name": "from-file", "image": "img", "replicas": 3, "environment": {"A": "flag", "B": "keep"},
            "resource_limits": {"memory": "1g", "cpu": "0.5"},
            "volumes": ["a:/a", {"source": "b", "target": "/b", "read_only": false}], "depends_on": ["db"]
        })
    );
    // A file without a name and no --name: a usage error.
    let e = build_create_body(&a, Some(json!({"image": "img"}))).unwrap_err();
    assert!(e.0.contains("--name"), "{e}");
    // Wrong shapes in the file are named.
    let c = parse(&["services", "create", "--file", "f", "--env", "A=1"]);
    let Command::Services(ServiceCmd::Create(a)) = c.command else { panic!() };
    let e = build_create_body(&a, Some(json!({"name": "n", "image": "i", "environment": []}))).unwrap_err();
    assert!(e.0.contains("environment"), "{e}");
}

#[test]
fn template_body() {
    let c = parse(&["templates", "create", "rest_api_basic", "--name", "t1", "--port", "9000", "-e", "X=1", "--wait"]);
    let Command::Templates(TemplateCmd::Create(a)) = c.command else { panic!() };
    assert_eq!(build_template_body(&a), json!({"name": "t1", "port": 9000, "environment": {"X": "1"}}));
    assert_eq!(wait_query(Op::Create, &a.wait), "?wait=started");
}

#[test]
fn wait_phase_mapping() {
    assert_eq!(wait_phase(Op::Create), "started");
    assert_eq!(wait_phase(Op::Start), "started");
    assert_eq!(wait_phase(Op::Restart), "started");
    assert_eq!(wait_phase(Op::Scale), "started");
    assert_eq!(wait_phase(Op::Stop), "stopped");
    assert_eq!(wait_phase(Op::Delete), "deleted");
    assert_eq!(wait_query(Op::Stop, &WaitArgs::default()), "");
    assert_eq!(wait_query(Op::Stop, &WaitArgs { wait: true, timeout: None }), "?wait=stopped");
    assert_eq!(wait_query(Op::Delete, &WaitArgs { wait: false, timeout: Some(9) }), "?wait=deleted&timeout=9");
}

fn sample_service() -> Value {
    json!({
        "id": "svc_3f9c2a7b1d04", "name": "payments-api", "plugin_id": "payment-gateway",
        "service_type": "rest_api", "image": "addond-sample:latest", "port": 8080, "host": "127.0.0.1",
        "environment": {"KEY": "value"},
        "volumes": [{"source": "data", "target": "/data", "read_only": true, "kind": "named"}],
        "networks": ["addond"], "depends_on": [],
        "health_check": {"path": "/health", "interval": 30, "timeout": 10, "retries": 3, "start_period": 0},
        "resource_limits": {"memory": "512m", "cpu": "0.5", "pids": 256},
        "restart_policy": "unless-stopped", "version": "1.0.0", "replicas": 2, "desired": "started",
        "phase": "Started", "status": "partial", "health_status": "unhealthy", "host_port": 8000,
        "endpoint": "http://127.0.0.1:8000", "last_error": null, "exit_code": null,
        "created_at": "2026-11-21T23:40:00Z", "updated_at": "2026-11-21T23:40:01.5+00:00",
        "instances": [
            {"id": "inst_a", "ordinal": 0, "container_id": "9c1e0123456789abcdef", "host_port": 8000, "health": "healthy",
             "restarts": 1, "started_at": "2026-11-21T23:40:01Z", "last_error": null, "state": "running"},
            {"id": "inst_b", "ordinal": 1, "container_id": null, "host_port": 8001, "health": "unhealthy",
             "restarts": 2, "started_at": null, "last_error": "exited \x1b[31mcode 1", "state": "exited"}
        ]
    })
}

#[test]
fn service_list_table() {
    let now = timestamp(&json!("2026-11-22T02:40:00Z")).unwrap();
    let mut evil = sample_service();
    evil["id"] = json!("svc_2");
    evil["name"] = json!("evil\x1b]0;owned\x07-name\n");
    evil["plugin_id"] = Value::Null;
    evil["instances"] = json!([]);
    evil["created_at"] = json!("2026-11-22T02:39:15Z");
    let out = render_service_list(&json!([sample_service(), evil]), now);
    let expected = "\
ID                NAME           PLUGIN            TYPE       PHASE     HEALTH      REPLICAS   PORTS       RESTARTS   AGE
svc_3f9c2a7b1d04  payments-api   payment-gateway   rest_api   Started   unhealthy   1/2        8000,8001   3          3h
svc_2             evil-name      -                 rest_api   Started   unhealthy   0/2        -           0          45s
";
    // Columns are three spaces apart; compare after normalising our expectation's spacing.
    let norm = |s: &str| s.lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).collect::<Vec<_>>();
    assert_eq!(norm(&out), norm(expected));
    let header_end = out.lines().next().unwrap();
    assert!(header_end.starts_with("ID                 NAME"), "{out}");
    assert!(!out.contains('\x1b') && !out.contains("owned"));
    assert_eq!(render_service_list(&json!([]), now), "no services\n");
    assert_eq!(ids(&json!([sample_service()])), "svc_3f9c2a7b1d04\n");
}

#[test]
fn service_show_block() {
    let now = timestamp(&json!("2026-11-21T23:45:00Z")).unwrap();
    let out = render_service(&sample_service(), now);
    assert!(out.contains("Phase:           Started (desired: started)\n"), "{out}");
    assert!(out.contains("Endpoints:       http://127.0.0.1:8000, http://127.0.0.1:8001\n"), "{out}");
    assert!(out.contains("Volumes:         data:/data:ro (named)\n"), "{out}");
    assert!(out.contains("Health check:    GET /health every 30s, timeout 10s, 3 retries\n"), "{out}");
    let mut floats = sample_service();
    floats["health_check"] = json!({"path": "/h", "interval": 30.0, "timeout": 2.5, "retries": 3});
    assert!(render_service(&floats, now).contains("GET /h every 30s, timeout 2.5s, 3 retries"));
    assert!(out.contains("Created:         2026-11-21T23:40:00Z (5m ago)\n"), "{out}");
    assert!(out.contains("Depends on:      -\n"), "{out}");
    let table: Vec<&str> = out.lines().skip_while(|l| !l.starts_with('#')).collect();
    assert_eq!(table.len(), 3, "{out}");
    assert!(table[1].contains("9c1e01234567") && !table[1].contains("9c1e0123456789"), "{out}");
    assert!(table[2].contains("exited code 1") && !out.contains('\x1b'), "{out}");
}

#[test]
fn reports() {
    let s = sample_service();
    assert_eq!(
        render_report(Op::Start, true, &s),
        "payments-api (svc_3f9c2a7b1d04): Started\n  http://127.0.0.1:8000\n  http://127.0.0.1:8001\n"
    );
    let mut stopped = s.clone();
    stopped["phase"] = json!("Stopped");
    stopped["instances"] = json!([]);
    assert_eq!(render_report(Op::Stop, true, &stopped), "payments-api (svc_3f9c2a7b1d04): Stopped\n");
    let mut creating = s.clone();
    creating["phase"] = json!("Creating");
    assert_eq!(render_report(Op::Create, false, &creating), "created payments-api (svc_3f9c2a7b1d04): Creating\n");
    assert!(render_report(Op::Scale, false, &s).starts_with("payments-api (svc_3f9c2a7b1d04): Started, 2 replica(s)\n"));
    // Scaled to zero: no endpoint, even if the daemon still names one.
    let mut zero = s.clone();
    zero["replicas"] = json!(0);
    zero["instances"] = json!([]);
    assert_eq!(render_report(Op::Scale, true, &zero), "payments-api (svc_3f9c2a7b1d04): Started, 0 replica(s)\n");
    let mut bare = s.clone();
    bare.as_object_mut().unwrap().remove("instances");
    assert_eq!(endpoints(&bare), vec!["http://127.0.0.1:8000".to_string()]);
}

#[test]
fn logs_metrics_discovery_templates_cleanup() {
    assert_eq!(render_log_lines(&json!(["a\x1b[0m", "b\tc\n", "d\ne"])), "a\nb\tc\nd\ne\n");
    assert_eq!(render_log_lines(&json!({"lines": ["old", "shape"]})), "old\nshape\n");
    let m = render_metrics(&json!({"cpu_percent": 1.234, "memory_usage_mb": 45.25, "memory_limit_mb": 512.0,
        "memory_percent": 8.8, "network_rx_mb": 0.1, "network_tx_mb": 0.02, "timestamp": "t",
        "instances": [{"ordinal": 0, "cpu_percent": 1.2}, {"ordinal": 1, "metrics": {"cpu_percent": 2.5, "memory_usage_mb": 3.0}}]}));
    assert!(m.contains("\n1   2.5    3.0 "), "{m}");
    assert!(m.contains("CPU:      1.2%\n") && m.contains("Memory:   45.2 MB / 512 MB (8.8%)\n"), "{m}");
    assert!(m.contains("#   CPU%   MEM MB"), "{m}");
    let d = render_discovery(&json!({
        "services": [{"id": "svc_1", "name": "a", "plugin_id": null, "service_type": "rest_api",
            "endpoint": "http://127.0.0.1:8000", "endpoints": ["http://127.0.0.1:8000", "http://127.0.0.1:8001"],
            "health_status": "healthy", "phase": "Started", "networks": ["addond"]}],
        "networks": [{"name": "addond", "subnet": "172.30.0.0/16", "internal": false}],
        "totals": {"services": 1, "instances": 2, "healthy": 2, "unhealthy": 0}}));
    assert!(d.contains("http://127.0.0.1:8000, http://127.0.0.1:8001"), "{d}");
    assert!(d.contains("addond    172.30.0.0/16   false"), "{d}");
    assert!(d.ends_with("\n1 services, 2 instances, 2 healthy, 0 unhealthy\n"), "{d}");
    let t = render_templates(&json!([{"id": "rest_api_basic", "name": "REST API", "description": "A basic REST API",
        "service_type": "rest_api", "resource_limits": {"memory": "512m", "cpu": "0.5"}, "health_check": {"path": "/health"}, "port": 8080}]));
    assert_eq!(
        t.lines().nth(1).unwrap().split_whitespace().collect::<Vec<_>>(),
        ["rest_api_basic", "rest_api", "8080", "512m", "0.5", "/health", "A", "basic", "REST", "API"]
    );
    assert_eq!(render_cleanup(&json!({"removed": []})), "nothing to remove\n");
    assert!(render_cleanup(&json!({"removed": [{"id": "svc_1", "name": "a", "phase": "Stopped"}]})).starts_with("removed 1 service(s)\nID"));
}

#[test]
fn paths() {
    assert_eq!(svc_path("a b", "logs"), "/api/plugin-microservice/services/a%20b/logs");
    assert_eq!(svc_path("svc_1", ""), "/api/plugin-microservice/services/svc_1");
}

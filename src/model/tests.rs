use super::*;

fn req(json: serde_json::Value) -> CreateRequest {
    serde_json::from_value(json).unwrap()
}

fn cfg() -> Config {
    Config::default()
}

#[test]
fn minimal_request_gets_defaults() {
    let (spec, replicas) = req(serde_json::json!({"name": "api", "image": "addond-sample:latest"})).validate(&cfg()).unwrap();
    assert_eq!(replicas, 1);
    assert_eq!(spec.port, 8080);
    assert_eq!(spec.health_check.path, "/health");
    assert_eq!(spec.health_check.interval, 30.0);
    assert_eq!(spec.health_check.timeout, 10.0);
    assert_eq!(spec.health_check.retries, 3);
    assert_eq!(spec.resource_limits.memory, "512m");
    assert_eq!(spec.networks, vec!["addond".to_string()]);
    assert_eq!(spec.restart_policy, RestartPolicy::UnlessStopped);
}

#[test]
fn legacy_body_is_accepted() {
    let body = serde_json::json!({
        "plugin_id": "payment-gateway", "name": "payments", "service_type": "rest_api",
        "image": "addond-sample:latest", "port": 8080, "host": "localhost",
        "environment": {"MODE": "test"}, "volumes": ["data:/data", "./cache:/cache:ro"],
        "networks": ["addond"], "depends_on": [],
        "health_check": {"url": "http://localhost:8080/healthz", "interval": 30, "timeout": 10, "retries": 3},
        "resource_limits": {"memory": "256m", "cpu": "0.3"}, "restart_policy": "on-failure",
        "version": "1.2.3", "replicas": 2
    });
    let (spec, replicas) = req(body).validate(&cfg()).unwrap();
    assert_eq!(replicas, 2);
    assert_eq!(spec.health_check.path, "/healthz");
    assert_eq!(spec.volumes[0].kind, VolumeKind::Named);
    assert_eq!(spec.volumes[1].kind, VolumeKind::Dir);
    assert_eq!(spec.volumes[1].source, "cache");
    assert!(spec.volumes[1].read_only);
    assert_eq!(spec.resource_limits.nano_cpus(), 300_000_000);
}

fn field_of(json: serde_json::Value) -> (String, &'static str) {
    let e = req(json).validate(&cfg()).unwrap_err();
    (e.field, e.code)
}

#[test]
fn bad_fields_are_named() {
    let base = |extra: serde_json::Value| {
        let mut b = serde_json::json!({"name": "api", "image": "img:1"});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    assert_eq!(field_of(serde_json::json!({"image": "x"})).0, "name");
    // Any text is a display name; these are not.
    assert_eq!(field_of(base(serde_json::json!({"name": "bad\u{7}name"}))).0, "name");
    assert_eq!(field_of(base(serde_json::json!({"name": "   "}))).0, "name");
    assert_eq!(field_of(base(serde_json::json!({"name": "x".repeat(101)}))).0, "name");
    assert_eq!(field_of(base(serde_json::json!({"plugin_id": "Test Plugin"}))).0, "plugin_id");
    assert_eq!(field_of(base(serde_json::json!({"plugin_id": "test_"}))).0, "plugin_id");
    assert_eq!(field_of(base(serde_json::json!({"host": "not an address"}))).0, "host");
    assert_eq!(field_of(base(serde_json::json!({"port": 0}))).0, "port");
    assert_eq!(field_of(base(serde_json::json!({"port": 70000}))).0, "port");
    assert_eq!(field_of(base(serde_json::json!({"host_port": 80}))).0, "host_port");
    assert_eq!(field_of(base(serde_json::json!({"replicas": -1}))).0, "replicas");
    assert_eq!(field_of(base(serde_json::json!({"replicas": 100000}))).0, "replicas");
    assert_eq!(field_of(base(serde_json::json!({"resource_limits": {"memory": "-5m"}}))).0, "resource_limits.memory");
    assert_eq!(field_of(base(serde_json::json!({"resource_limits": {"memory": "900t"}}))).0, "resource_limits.memory");
    assert_eq!(field_of(base(serde_json::json!({"resource_limits": {"cpu": "-1"}}))).0, "resource_limits.cpu");
    assert_eq!(field_of(base(serde_json::json!({"resource_limits": {"cpu": 5000}}))).0, "resource_limits.cpu");
    assert_eq!(field_of(base(serde_json::json!({"resource_limits": {"pids": 0}}))).0, "resource_limits.pids");
    assert_eq!(field_of(base(serde_json::json!({"health_check": {"interval": -1}}))).0, "health_check.interval");
    assert_eq!(field_of(base(serde_json::json!({"environment": {"ADDOND_TOKEN": "x"}}))).0, "environment.ADDOND_TOKEN");
    assert_eq!(field_of(base(serde_json::json!({"environment": {"1X": "x"}}))).0, "environment.1X");
    assert_eq!(field_of(base(serde_json::json!({"networks": ["host"]}))).0, "networks[0]");
    assert_eq!(field_of(base(serde_json::json!({"image": "bad image"}))).0, "image");
}

#[test]
fn hostile_volumes_are_refused() {
    for (v, needle) in [
        ("/etc:/data", "host path"),
        ("/var/run/docker.sock:/var/run/docker.sock", "Docker socket"),
        ("../../etc:/data", ".."),
        ("./a/../../b:/data", ".."),
        ("data:/", "absolute"),
        ("data:relative", "absolute"),
        ("data:/proc/x", "kernel"),
        ("~/x:/data", "host path"),
        ("a:b:c:d", "SOURCE:TARGET"),
        ("./a b:/data", "clean relative"),
    ] {
        let e = parse_volume(&VolumeRequest::Short(v.into()), "volumes[0]").unwrap_err();
        assert_eq!(e.code, "invalid_volume", "{v}");
        assert!(e.message.contains(needle), "{v}: {}", e.message);
    }
    let ok = parse_volume(&VolumeRequest::Short("./files/sub:/srv".into()), "v").unwrap();
    assert_eq!(ok.source, "files/sub");
    assert_eq!(ok.kind, VolumeKind::Dir);
}

#[test]
fn nested_directory_volumes() {
    let vols = |v: &[&str]| v.iter().map(|s| parse_volume(&VolumeRequest::Short(s.to_string()), "v").unwrap()).collect::<Vec<_>>();
    assert_eq!(nested_dir_volumes(&vols(&["./d:/d", "./d/inner:/inner"])), Some((0, 1)));
    assert_eq!(nested_dir_volumes(&vols(&["./d/inner:/inner", "./d:/d"])), Some((0, 1)));
    assert_eq!(nested_dir_volumes(&vols(&["./d:/a", "./d:/b"])), Some((0, 1)));
    assert_eq!(nested_dir_volumes(&vols(&["x:/x", "./a:/a", "./b:/b", "./a/b/c:/c"])), Some((1, 3)));
    assert_eq!(nested_dir_volumes(&vols(&["./d:/d", "./dd:/dd", "./d2/d:/e", "d:/named"])), None);
    let e = req(serde_json::json!({"name": "n", "image": "i", "volumes": ["./d:/d", "./d/inner:/inner"]}))
        .validate(&Config::default())
        .unwrap_err();
    assert_eq!((e.field.as_str(), e.code), ("volumes[1]", "invalid_volume"));
    assert!(e.message.contains("sibling"), "{}", e.message);
    let shared = serde_json::json!([{"source": "c", "target": "/c", "shared": true}]);
    let e = req(serde_json::json!({"name": "n", "image": "i", "volumes": shared})).validate(&Config::default()).unwrap_err();
    assert_eq!(e.field, "volumes[0].shared");
    let (spec, _) =
        req(serde_json::json!({"name": "n", "image": "i", "plugin_id": "p", "volumes": shared})).validate(&Config::default()).unwrap();
    assert!(spec.volumes[0].shared);
    let e = req(
        serde_json::json!({"name": "n", "image": "i", "plugin_id": "p", "volumes": [{"source": "./c", "target": "/c", "shared": true}]}),
    )
    .validate(&Config::default())
    .unwrap_err();
    assert_eq!(e.field, "volumes[0].shared");
}

#[test]
fn backoff_doubles_and_caps() {
    assert_eq!(backoff_ms(10.0, 300.0, 0), 10_000);
    assert_eq!(backoff_ms(10.0, 300.0, 1), 20_000);
    assert_eq!(backoff_ms(10.0, 300.0, 4), 160_000);
    assert_eq!(backoff_ms(10.0, 300.0, 5), 300_000);
    assert_eq!(backoff_ms(10.0, 300.0, 99), 300_000);
}

#[test]
fn restart_policies() {
    assert!(!RestartPolicy::No.restarts_after(1));
    assert!(RestartPolicy::OnFailure.restarts_after(1));
    assert!(!RestartPolicy::OnFailure.restarts_after(0));
    assert!(RestartPolicy::Always.restarts_after(0));
    assert!(RestartPolicy::UnlessStopped.restarts_after(137));
}

#[test]
fn templates_carry_their_limits() {
    let t = template("background_worker").unwrap();
    let req = t.request(TemplateCreateRequest { name: Some("w".into()), ..Default::default() }, "img:1");
    let (spec, _) = req.validate(&cfg()).unwrap();
    assert_eq!(spec.resource_limits.memory, "1g");
    assert_eq!(spec.resource_limits.cpu, "1.0");
    assert_eq!(spec.image, "img:1");
    assert_eq!(spec.health_check.path, "/health");
    assert_eq!(template("scheduler_service").unwrap().cpu, "0.2");
    assert!(template("nope").is_none());
}

#[test]
fn display_names_get_slugs() {
    // A valid slug is its own: today's names keep working.
    let (spec, _) = req(serde_json::json!({"name": "payments-api", "image": "i"})).validate(&cfg()).unwrap();
    assert_eq!((spec.name.as_str(), spec.display_name.as_deref(), spec.display()), ("payments-api", None, "payments-api"));
    // Korean, spaces, capitals: a display name beside a derived slug.
    let (spec, _) = req(serde_json::json!({"name": "테스트 서비스", "image": "i", "plugin_id": "test_plugin"})).validate(&cfg()).unwrap();
    assert_eq!(spec.display(), "테스트 서비스");
    assert!(valid_name(&spec.name) && spec.name.starts_with("svc-"), "{}", spec.name);
    assert_eq!(spec.plugin_id.as_deref(), Some("test_plugin"));
    let (again, _) = req(serde_json::json!({"name": "테스트 서비스", "image": "i"})).validate(&cfg()).unwrap();
    assert_ne!(spec.name, again.name, "two services of one display name get two slugs");
    // The display name is kept in the stored spec, and old specs without it still load.
    let stored: ServiceSpec = serde_json::from_str(&serde_json::to_string(&spec).unwrap()).unwrap();
    assert_eq!(stored.display_name.as_deref(), Some("테스트 서비스"));
    let mut old = serde_json::to_value(&again).unwrap();
    old.as_object_mut().unwrap().remove("display_name");
    assert_eq!(serde_json::from_value::<ServiceSpec>(old).unwrap().display_name, None);

    assert_eq!(derive_slug("My API v2!", "3f9c2a7b"), "my-api-v2-3f9c2a7b");
    assert_eq!(derive_slug("모바일 앱", "3f9c2a7b"), "svc-3f9c2a7b");
    assert_eq!(derive_slug("  --Shop 상점--  ", "ab"), "shop-ab");
    let long = derive_slug(&"A".repeat(100), "12345678");
    assert!(valid_name(&long) && long.len() <= 63, "{long}");
    assert!(valid_name(&derive_slug("x-", "1")));

    assert!(check_display_name("템플릿 서비스").is_ok());
    assert!(check_display_name(&"가".repeat(100)).is_ok());
    assert!(check_display_name(&"가".repeat(101)).is_err());
    assert!(check_display_name("").is_err());
    assert!(check_display_name("tab\there").is_err());
    assert!(check_display_name("line\nbreak").is_err());
    assert!(check_display_name(" padded").is_err());
}

#[test]
fn plugin_ids_take_underscores() {
    for ok in ["test_plugin", "payment-gateway", "p1", "a_b-c"] {
        assert!(valid_plugin_id(ok), "{ok}");
    }
    for bad in ["", "_x", "x_", "x-", "Test", "a.b", "a b", &"p".repeat(64)] {
        assert!(!valid_plugin_id(bad), "{bad}");
    }
}

#[test]
fn documented_network_names_choose_the_kinds() {
    let d = cfg().docker;
    assert_eq!(network_kind(&d, "plugin_network"), Some(false));
    assert_eq!(network_kind(&d, "addond"), Some(false));
    assert_eq!(network_kind(&d, "plugin_isolated"), Some(true));
    assert_eq!(network_kind(&d, "addond_isolated"), Some(true));
    assert_eq!(network_kind(&d, "host"), None);
    let (spec, _) = req(serde_json::json!({"name": "n", "image": "i", "networks": ["plugin_isolated"]})).validate(&cfg()).unwrap();
    assert!(wants_isolated(&d, &spec));
    assert_eq!(spec.networks, vec!["plugin_isolated".to_string()], "kept as sent");
}

#[test]
fn host_binding_follows_the_config() {
    let lo: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let any: std::net::IpAddr = "0.0.0.0".parse().unwrap();
    let lan: std::net::IpAddr = "10.0.0.5".parse().unwrap();
    assert_eq!(bind_address(Some(any), lo), lo, "loopback config: never wider");
    assert_eq!(bind_address(Some(any), any), any, "honoured when the config publishes everywhere");
    assert_eq!(bind_address(Some(lo), any), lo, "a loopback host narrows");
    assert_eq!(bind_address(None, any), any);
    assert_eq!(bind_address(Some(any), lan), lan);
    let (spec, _) = req(serde_json::json!({"name": "n", "image": "i", "host": "0.0.0.0"})).validate(&cfg()).unwrap();
    assert_eq!(spec.host, Some(any));
    let (spec, _) = req(serde_json::json!({"name": "n", "image": "i", "host": "localhost"})).validate(&cfg()).unwrap();
    assert_eq!(spec.host, Some(lo));
}

#[test]
fn templates_have_their_documented_ports_and_variables() {
    let expect = [
        ("rest_api_basic", 8080, ["FLASK_ENV", "FLASK_DEBUG"]),
        ("websocket_service", 8081, ["WS_HOST", "WS_PORT"]),
        ("background_worker", 8082, ["WORKER_POOL_SIZE", "TASK_TIMEOUT"]),
        ("scheduler_service", 8083, ["SCHEDULER_INTERVAL", "MAX_JOBS"]),
    ];
    for (id, port, vars) in expect {
        let t = template(id).unwrap();
        assert_eq!(t.port, port, "{id}");
        let keys: Vec<&str> = t.environment.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, vars, "{id}");
        let body = TemplateCreateRequest {
            name: Some("템플릿 서비스".into()),
            plugin_id: Some("test_plugin".into()),
            environment: Some([(vars[0].to_string(), "mine".to_string())].into()),
            ..Default::default()
        };
        let (spec, _) = t.request(body, "img:1").validate(&cfg()).unwrap();
        assert_eq!((spec.port, spec.display()), (port, "템플릿 서비스"));
        assert_eq!(spec.environment[vars[0]], "mine", "the caller's value wins");
        assert!(spec.environment.contains_key(vars[1]));
    }
}

#[test]
fn phase_parse_round_trip() {
    for p in ["Creating", "started", "FAILED", "deleted"] {
        assert!(Phase::parse(p).is_some(), "{p}");
    }
    assert!(Phase::parse("running").is_none());
}

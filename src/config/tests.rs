use super::*;

fn load_str(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, text).unwrap();
    let env: Vec<(String, String)> = env.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
    Config::load_with_env(Some(&path), false, &env)
}

#[test]
fn defaults_are_valid_and_round_trip() {
    let c = Config::default();
    c.validate().unwrap();
    assert_eq!(c.ports.range_start, 8000);
    assert_eq!(c.ports.range_end, 9000);
    assert_eq!(c.health.interval_seconds, 30.0);
    let text = c.to_toml();
    let back = load_str(&text, &[]).unwrap();
    assert_eq!(back, c);
}

#[test]
fn environment_names_are_checked() {
    assert!(load_str("[environments]\npipeline = [\"dev\", \"qa-1\", \"prod\"]\n", &[]).is_ok());
    for bad in ["[\"dev\", \"dev\"]", "[\"a--b\"]", "[\"Dev\"]", "[\"averyveryverylongname\"]", "[\"-x\"]"] {
        let err = load_str(&format!("[environments]\npipeline = {bad}\n"), &[]).unwrap_err().to_string();
        assert!(err.contains("environments.pipeline["), "{bad}: {err}");
    }
    assert!(load_str("[gateway]\nbase_domain = \"addons.example.com\"\n", &[]).is_ok());
    let err = load_str("[gateway]\nbase_domain = \"https://x\"\n", &[]).unwrap_err().to_string();
    assert!(err.contains("gateway.base_domain"), "{err}");
}

#[test]
fn example_config_is_the_default() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml")).unwrap();
    let c = load_str(&text, &[]).unwrap();
    assert_eq!(c, Config::default());
}

#[test]
fn metrics_listen_is_loopback_unless_allowed_and_webhooks_are_http() {
    let c = load_str("[metrics]\nlisten = \"127.0.0.1:9464\"\n", &[]).unwrap();
    assert_eq!(c.metrics.listen_addr(), Some("127.0.0.1:9464".parse().unwrap()));
    assert_eq!(Config::default().metrics.listen_addr(), None, "off by default");
    let err = load_str("[metrics]\nlisten = \"localhost\"\n", &[]).unwrap_err().to_string();
    assert!(err.contains("metrics.listen") && err.contains("127.0.0.1:9464"), "{err}");
    assert!(load_str("[metrics]\nlisten = \"[::1]:9464\"\n", &[]).is_ok());
    let err = load_str("[metrics]\nlisten = \"0.0.0.0:9464\"\n", &[]).unwrap_err().to_string();
    assert!(err.contains("metrics.listen") && err.contains("metrics.allow_non_loopback = true"), "{err}");
    assert!(load_str("[metrics]\nlisten = \"0.0.0.0:9464\"\nallow_non_loopback = true\n", &[]).is_ok());
    let env = [("ADDOND_METRICS_LISTEN", "127.0.0.1:9999")];
    assert_eq!(load_str("", &env).unwrap().metrics.listen_addr(), Some("127.0.0.1:9999".parse().unwrap()));
    assert!(load_str("[notify]\nwebhook_url = \"http://127.0.0.1:9000/hook\"\n", &[]).is_ok());
    let err = load_str("[notify]\nwebhook_url = \"https://hooks.example/x\"\n", &[]).unwrap_err().to_string();
    assert!(err.contains("notify.webhook_url") && err.contains("http://"), "{err}");
    let err = load_str("[notify]\nwebhook_url = \"127.0.0.1:9000\"\n", &[]).unwrap_err().to_string();
    assert!(err.contains("notify.webhook_url"), "{err}");
    let err = load_str("[notify]\nqueue_size = 0\n", &[]).unwrap_err().to_string();
    assert!(err.contains("notify.queue_size"), "{err}");
    let err = load_str("[http]\nmetrics_max_connections = 1000\n", &[]).unwrap_err().to_string();
    assert!(err.contains("http.metrics_max_connections"), "{err}");
}

#[test]
fn unknown_key_is_named() {
    let err = load_str("[ports]\nrange_strat = 8100\n", &[]).unwrap_err().to_string();
    assert!(err.contains("range_strat"), "{err}");
    let err = load_str("[bogus]\nx = 1\n", &[]).unwrap_err().to_string();
    assert!(err.contains("bogus"), "{err}");
}

#[test]
fn bad_values_are_named() {
    let err = load_str("[graphql]\nmax_depth = 0\n", &[]).unwrap_err().to_string();
    assert!(err.contains("graphql.max_depth"), "{err}");
    assert!(load_str("[graphql]\nmax_aliases = 0\ngateway_introspection = true\n", &[]).is_ok());
    let err = load_str("[ports]\nrange_start = 9500\n", &[]).unwrap_err().to_string();
    assert!(err.contains("ports.range_start"), "{err}");
    let err = load_str("[ports]\nrange_start = \"x\"\n", &[]).unwrap_err().to_string();
    assert!(err.contains("ports.range_start"), "{err}");
    let err = load_str("[sandbox]\nuser = \"0:0\"\n", &[]).unwrap_err().to_string();
    assert!(err.contains("sandbox.user"), "{err}");
    let err = load_str("[docker]\nsubnet = \"10.0.0.0\"\n", &[]).unwrap_err().to_string();
    assert!(err.contains("docker.subnet"), "{err}");
    let err = load_str("[limits]\nmemory = \"lots\"\n", &[]).unwrap_err().to_string();
    assert!(err.contains("limits.memory"), "{err}");
    // Each quota and retention bound is named on its own.
    for (toml, key) in [
        ("[events]\nretention_days = 0.0\n", "events.retention_days"),
        ("[events]\nretention_max_events = 0\n", "events.retention_max_events"),
        ("[events]\ndelivery_timeout_seconds = -1.0\n", "events.delivery_timeout_seconds"),
        ("[addon_api]\nkv_max_keys = 0\n", "addon_api.kv_max_keys"),
        ("[docker]\nsubnet_pool = \"10.1.2.3/16\"\n", "docker.subnet_pool"),
        ("[docker]\nsubnet_pool = \"10.0.0.0\"\n", "docker.subnet_pool"),
        ("[docker]\nsubnet_prefix = 12\n", "docker.subnet_prefix"),
        ("[docker]\nsubnet_prefix = 30\n", "docker.subnet_prefix"),
        ("[addon_api]\nkv_max_value_bytes = 0\n", "addon_api.kv_max_value_bytes"),
    ] {
        let err = load_str(toml, &[]).unwrap_err().to_string();
        assert!(err.contains(key) && err.contains("must be"), "{toml}: {err}");
    }
}

#[test]
fn env_overrides_apply_and_unknown_env_keys_fail() {
    let c = load_str(
        "",
        &[
            ("ADDOND_PORTS_RANGE_START", "8100"),
            ("ADDOND_HEALTH_INTERVAL_SECONDS", "2"),
            ("ADDOND_DAEMON_SOCKET_GROUP", "123"),
            ("ADDOND_SOCKET", "/x"),
        ],
    )
    .unwrap();
    assert_eq!(c.ports.range_start, 8100);
    assert_eq!(c.health.interval_seconds, 2.0);
    assert_eq!(c.daemon.socket_group, "123");
    let err = load_str("", &[("ADDOND_PORTS_NOPE", "1")]).unwrap_err().to_string();
    assert!(err.contains("ports.nope") && err.contains("ADDOND_PORTS_NOPE"), "{err}");
}

#[test]
fn missing_explicit_file_is_an_error() {
    let err = Config::load_with_env(Some(Path::new("/nonexistent/addond.toml")), false, &[]).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/addond.toml"));
}

#[test]
fn cidrs() {
    let (n, l) = parse_any_cidr("10.0.0.0/8").unwrap();
    assert!(cidr_contains(n, l, "10.2.3.4".parse().unwrap()));
    assert!(!cidr_contains(n, l, "11.0.0.1".parse().unwrap()));
    let (n, l) = parse_any_cidr("127.0.0.1").unwrap();
    assert!(cidr_contains(n, l, "127.0.0.1".parse().unwrap()));
    assert!(!cidr_contains(n, l, "127.0.0.2".parse().unwrap()));
    let (n, l) = parse_any_cidr("::1/128").unwrap();
    assert!(cidr_contains(n, l, "::1".parse().unwrap()));
    assert!(parse_any_cidr("10.0.0.0/33").is_none());
    assert!(parse_any_cidr("nope").is_none());
}

#[test]
fn sizes_parse() {
    assert_eq!(parse_size("512m"), Some(512 << 20));
    assert_eq!(parse_size("1g"), Some(1 << 30));
    assert_eq!(parse_size("1.5g"), Some(3 << 29));
    assert_eq!(parse_size("1024"), Some(1024));
    assert_eq!(parse_size("64MB"), Some(64 << 20));
    assert_eq!(parse_size("-1m"), None);
    assert_eq!(parse_size(""), None);
    assert_eq!(parse_size("m"), None);
    assert_eq!(parse_size("99999999999999999t"), None);
}

use super::*;

fn validate(v: Value) -> Result<Manifest, FieldError> {
    ManifestRequest::from_value(&v)?.validate(&Config::default())
}

/// A manifest written in the addon-server's own field names.
fn addon_server() -> Value {
    json!({
        "id": "payment-gateway",
        "name": "결제 게이트웨이",
        "version": "1.0.0",
        "author": "Acme Payments",
        "description": "Takes payments",
        "category": "ecommerce",
        "apis": [
            "refund",
            {"id": "process-payment", "name": "Process payment", "inputSchema": {"type": "object"}, "timeoutSeconds": 5}
        ],
        "dependencies": ["inventory"],
        "configSchema": {"type": "object", "properties": {"currency": {"type": "string", "default": "KRW"}}},
        "widgets": [{
            "id": "checkout",
            "displayName": "결제 위젯",
            "description": "A checkout form",
            "category": "form",
            "configSchema": {"type": "object", "properties": {"title": {"type": "string"}}},
            "renderEndpoint": "/widgets/checkout/render",
            "previewImage": "https://example.com/checkout.png",
            "responsive": true
        }]
    })
}

#[test]
fn addon_server_field_names_are_aliases() {
    let m = validate(addon_server()).unwrap();
    assert_eq!(m.name, "payment-gateway");
    assert_eq!(m.display_name.as_deref(), Some("결제 게이트웨이"));
    assert_eq!(m.author, "Acme Payments");
    assert_eq!(m.actions.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(), ["refund", "process-payment"]);
    assert_eq!(m.actions[1].display_name.as_deref(), Some("Process payment"));
    assert_eq!(m.actions[1].timeout_seconds, Some(5.0));
    assert_eq!(m.actions[1].input_schema, json!({"type": "object"}));
    assert_eq!(m.dependencies, BTreeMap::from([("inventory".to_string(), "*".to_string())]));
    assert_eq!(m.config_schema["properties"]["currency"]["default"], "KRW");
    let w = &m.widgets[0];
    assert_eq!((w.name.as_str(), w.display_name.as_deref(), w.category.as_str()), ("checkout", Some("결제 위젯"), "form"));
    assert_eq!(w.config_schema["properties"]["title"]["type"], "string");
    assert_eq!(w.render_endpoint.as_deref(), Some("/widgets/checkout/render"));
    assert_eq!(w.preview_image.as_deref(), Some("https://example.com/checkout.png"));
    assert_eq!(w.responsive, Some(true));
    // The view gives every widget field back under the name it was sent with.
    let v = m.view();
    assert_eq!(v["id"], "payment-gateway");
    assert_eq!(v["displayName"], "결제 게이트웨이");
    let sent = &addon_server()["widgets"][0];
    for k in ["id", "displayName", "description", "category", "configSchema", "renderEndpoint", "previewImage", "responsive"] {
        assert_eq!(v["widgets"][0][k], sent[k], "{k}");
    }
    // What is stored reads back the same.
    let text = serde_json::to_string(&m).unwrap();
    assert_eq!(serde_json::from_str::<Manifest>(&text).unwrap(), m);
}

#[test]
fn snake_case_camel_case_and_toml_are_one_manifest() {
    let camel = validate(addon_server()).unwrap();
    let mut snake = addon_server();
    let w = snake["widgets"][0].as_object_mut().unwrap();
    for (from, to) in [
        ("displayName", "display_name"),
        ("configSchema", "config_schema"),
        ("renderEndpoint", "render_endpoint"),
        ("previewImage", "preview_image"),
    ] {
        let x = w.remove(from).unwrap();
        w.insert(to.into(), x);
    }
    let top = snake.as_object_mut().unwrap();
    let x = top.remove("configSchema").unwrap();
    top.insert("config_schema".into(), x);
    let x = top.remove("apis").unwrap();
    top.insert("actions".into(), x);
    assert_eq!(validate(snake).unwrap(), camel);
    // An `addon.toml` is read into the same value, so it takes the same names.
    let toml_text = r#"
        id = "payment-gateway"
        name = "결제 게이트웨이"
        version = "1.0.0"
        author = "Acme Payments"
        description = "Takes payments"
        category = "ecommerce"
        dependencies = ["inventory"]
        apis = ["refund", { id = "process-payment", name = "Process payment", inputSchema = { type = "object" }, timeoutSeconds = 5 }]

        [configSchema]
        type = "object"
        properties = { currency = { type = "string", default = "KRW" } }

        [[widgets]]
        id = "checkout"
        displayName = "결제 위젯"
        description = "A checkout form"
        category = "form"
        configSchema = { type = "object", properties = { title = { type = "string" } } }
        renderEndpoint = "/widgets/checkout/render"
        previewImage = "https://example.com/checkout.png"
        responsive = true
    "#;
    let table: toml::Table = toml::from_str(toml_text).unwrap();
    assert_eq!(validate(serde_json::to_value(table).unwrap()).unwrap(), camel);
}

#[test]
fn manifests_without_the_new_fields_store_the_same_text() {
    let m = validate(json!({"name": "p", "version": "1.0.0", "actions": ["a"], "widgets": [{"name": "w", "category": "form"}]})).unwrap();
    let text = serde_json::to_string(&m).unwrap();
    for k in ["display_name", "render_endpoint", "preview_image", "responsive", "displayName"] {
        assert!(!text.contains(k), "{k} in {text}");
    }
    // `name` alone stays the slug, and `name` equal to `id` is no display name.
    let m = validate(json!({"id": "p", "name": "p", "version": "1.0.0"})).unwrap();
    assert_eq!((m.name.as_str(), m.display_name.as_deref()), ("p", None));
    let m = validate(json!({"name": "p", "display_name": "My P", "version": "1.0.0"})).unwrap();
    assert_eq!((m.name.as_str(), m.display_name.as_deref()), ("p", Some("My P")));
}

#[test]
fn dependencies_are_a_map_or_a_list() {
    let with = |d: Value| validate(json!({"name": "p", "version": "1.0.0", "dependencies": d}));
    let m = with(json!({"inventory": "^1.0"})).unwrap();
    assert_eq!(m.dependencies["inventory"], "^1.0");
    let m = with(json!(["inventory", "mailer"])).unwrap();
    assert_eq!(m.dependencies.len(), 2);
    assert!(semver::VersionReq::parse(&m.dependencies["mailer"]).unwrap().matches(&semver::Version::new(3, 1, 4)));
    let e = with(json!(["inventory", "Bad Name"])).unwrap_err();
    assert_eq!(e.field, "dependencies[1]");
    let e = with(json!(["inventory", "inventory"])).unwrap_err();
    assert_eq!((e.field.as_str(), e.message.contains("twice")), ("dependencies[1]", true), "{e:?}");
    let e = with(json!(["p"])).unwrap_err();
    assert!(e.message.contains("itself"), "{e:?}");
    let e = with(json!(3)).unwrap_err();
    assert_eq!(e.field, "dependencies");
    assert!(e.message.contains("a list of addon names") && e.message.contains("of version requirements"), "{e:?}");
    assert!(!e.message.contains("untagged") && !e.message.contains("variant"), "{e:?}");
}

#[test]
fn unknown_fields_name_their_path_and_the_known_fields() {
    let with = |f: &dyn Fn(&mut Value)| {
        let mut m = addon_server();
        f(&mut m);
        validate(m).unwrap_err()
    };
    type Case<'a> = (&'a dyn Fn(&mut Value), &'a str, &'a [&'a str]);
    let cases: [Case; 6] = [
        (&|m| m["colour"] = json!("blue"), "colour", &["`apis`", "`displayName`", "`configSchema`"]),
        (&|m| m["widgets"][0]["previewImg"] = json!("x"), "widgets[0].previewImg", &["`previewImage`", "`renderEndpoint`", "`responsive`"]),
        (&|m| m["apis"][1]["input"] = json!({}), "apis[1].input", &["`inputSchema`", "`timeoutSeconds`", "`id`"]),
        (&|m| m["events"] = json!({"emit": []}), "events.emit", &["`emits`", "`subscribes`"]),
        (&|m| m["schedules"] = json!([{"cron": "* * * * *", "action": "refund", "tz": "UTC"}]), "schedules[0].tz", &["`cron`", "`action`"]),
        (&|m| m["dependencies"] = json!({"inventory": {"version": "1"}}), "dependencies.inventory", &[]),
    ];
    for (f, field, known) in cases {
        let e = with(f);
        assert_eq!(e.field, field, "{e:?}");
        for k in known {
            assert!(e.message.contains(k), "{k} missing from {e:?}");
        }
        assert!(!e.message.contains("untagged") && !e.message.contains("did not match"), "{e:?}");
    }
    // Neither a name nor an object: both shapes are named.
    let e = with(&|m| m["widgets"][0] = json!(7));
    assert_eq!(e.field, "widgets[0]");
    assert!(e.message.contains("its name like") && e.message.contains("displayName"), "{e:?}");
    let e = with(&|m| m["apis"][0] = json!(["refund"]));
    assert_eq!(e.field, "apis[0]");
    assert!(e.message.contains("an action"), "{e:?}");
}

#[test]
fn display_names_are_human_text_and_slugs_stay_safe() {
    assert!(check_display_name("모바일 앱").is_ok());
    assert!(check_display_name("템플릿 서비스").is_ok());
    assert!(check_display_name(&"가".repeat(100)).is_ok());
    assert!(check_display_name(&"가".repeat(101)).unwrap_err().contains("at most 100"));
    assert!(check_display_name("a\nb").unwrap_err().contains("control"));
    assert!(check_display_name("  ").is_err());
    assert!(check_display_name(" a").is_err());
    let e = validate(json!({"id": "Payment Gateway", "version": "1.0.0"})).unwrap_err();
    assert_eq!(e.field, "id");
    let e = validate(json!({"name": "Payment Gateway", "version": "1.0.0"})).unwrap_err();
    assert!(e.message.contains("display_name"), "{e:?}");
    let e = validate(json!({"id": "p", "name": "a\u{7}b", "version": "1.0.0"})).unwrap_err();
    assert_eq!(e.field, "name");
    let e = validate(json!({"name": "p", "version": "1.0.0", "widgets": [{"id": "w", "displayName": ""}]})).unwrap_err();
    assert_eq!(e.field, "widgets[0].display_name");
    let e = validate(json!({"name": "p", "version": "1.0.0", "widgets": [{"displayName": "W"}]})).unwrap_err();
    assert_eq!(e.field, "widgets[0].name");
    let e = validate(json!({"name": "p", "version": "1.0.0", "apis": [{"id": "Bad Id"}]})).unwrap_err();
    assert_eq!(e.field, "apis[0].id");
    let e = validate(json!({"name": "p", "version": "1.0.0", "actions": ["a"], "apis": [{"id": "b", "inputSchema": {"minLenght": 1}}]}))
        .unwrap_err();
    assert_eq!(e.field, "apis[0].input_schema");
    let e = validate(json!({"name": "p", "version": "1.0.0", "actions": ["a"], "apis": ["a"]})).unwrap_err();
    assert_eq!(e.field, "apis[0].name");
    assert!(e.message.contains("declared twice"), "{e:?}");
}

#[test]
fn render_endpoints_are_paths_on_the_addon() {
    let with = |p: &str| validate(json!({"name": "p", "version": "1.0.0", "widgets": [{"id": "w", "renderEndpoint": p}]}));
    assert_eq!(with("/render/w").unwrap().widgets[0].render_path(), "/render/w");
    assert_eq!(validate(json!({"name": "p", "version": "1.0.0", "widgets": ["w"]})).unwrap().widgets[0].render_path(), "/widgets/w/render");
    for bad in ["render", "//evil/x", "/a/../b", "/a b", "/a?x=1", "http://x/y"] {
        assert_eq!(with(bad).unwrap_err().field, "widgets[0].render_endpoint", "{bad}");
    }
}

#[test]
fn short_form_expands() {
    let m = validate(json!({"name": "payment-gateway", "version": "1.0.0", "widgets": ["checkout"], "endpoints": ["process-payment"]}))
        .unwrap();
    assert_eq!(m.actions[0].name, "process-payment");
    assert_eq!(m.actions[0].input_schema, json!({}));
    assert_eq!(m.widgets[0].name, "checkout");
    assert_eq!(m.widgets[0].category, "content");
    assert_eq!(m.category, "utilities");
    assert_eq!(m.services.len(), 1);
    assert!(m.service_requests("pg", &Config::default()).is_err(), "no image: cannot install");
}

#[test]
fn output_schemas_are_object_schemas() {
    let with = |o: Value| validate(json!({"name": "p", "version": "1.0.0", "actions": [{"name": "a", "output_schema": o}]}));
    let m = with(json!({"type": "object", "properties": {"sum": {"type": "number"}}})).unwrap();
    assert_eq!(m.actions[0].output_schema["properties"]["sum"]["type"], "number");
    assert_eq!(with(json!({"type": "array"})).unwrap_err().field, "actions[0].output_schema");
    assert_eq!(with(json!({"type": "object", "oneOf": []})).unwrap_err().field, "actions[0].output_schema");
    // Stored manifests without one read back the same, and write back the same text.
    let m = validate(json!({"name": "p", "version": "1.0.0", "actions": ["a"]})).unwrap();
    assert!(m.actions[0].output_schema.is_null());
    assert!(!serde_json::to_string(&m).unwrap().contains("output_schema"));
}

#[test]
fn wasm_addons_have_no_services_image_or_internet() {
    let m =
        validate(json!({"name": "echo", "version": "1.0.0", "runtime": "wasm", "actions": ["echo"], "resource_limits": {"memory": "1m"}}))
            .unwrap();
    assert!(m.is_wasm());
    assert!(m.services.is_empty());
    assert_eq!(m.memory_bytes, Some(1 << 20));
    assert!(m.service_requests("echo", &Config::default()).unwrap().is_empty());
    let e = validate(json!({"name": "e", "version": "1.0.0", "runtime": "wasm", "image": "x:1"})).unwrap_err();
    assert_eq!(e.field, "image");
    let e = validate(json!({"name": "e", "version": "1.0.0", "runtime": "wasm", "services": [{"name": "a"}]})).unwrap_err();
    assert_eq!(e.field, "services");
    let e = validate(json!({"name": "e", "version": "1.0.0", "runtime": "wasm", "permissions": ["network.internet"]})).unwrap_err();
    assert_eq!(e.field, "permissions");
    let e = validate(json!({"name": "e", "version": "1.0.0", "runtime": "lambda"})).unwrap_err();
    assert_eq!(e.field, "runtime");
    let e = validate(json!({"name": "e", "version": "1.0.0", "resource_limits": {"memory": "1m"}})).unwrap_err();
    assert_eq!(e.field, "resource_limits");
    let e = validate(json!({"name": "e", "version": "1.0.0", "runtime": "wasm", "resource_limits": {"memory": "100g"}})).unwrap_err();
    assert_eq!(e.field, "resource_limits.memory");
}

#[test]
fn events_and_crons() {
    assert!(valid_event("payment.completed", false));
    assert!(!valid_event("payment.*", false));
    assert!(valid_event("payment.*", true));
    assert!(valid_event("*", true));
    assert!(!valid_event("Payment", false));
    assert!(!valid_event("a..b", false));
}

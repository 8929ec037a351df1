//! Addon manifests written in the addon-server's own field names (`id`, `apis`,
//! `displayName`, `configSchema`, `renderEndpoint`, …), sent verbatim to a real daemon as
//! JSON and as an `addon.toml` through addonctl, installed under a Korean display name and
//! used: the widget catalogue gives every field back as sent, a widget renders through its
//! `renderEndpoint`, and an `apis` action runs in the sample addon's container.

use serde_json::{json, Value};

use crate::common::*;
use addond::client::encode_path_segment;

/// The manifest as an addon-server client writes it (plus the image addond runs).
fn addon_server_manifest(id: &str) -> Value {
    json!({
        "id": id,
        "name": "결제 위젯 모음",
        "version": "1.0.0",
        "author": "Acme Payments",
        "description": "Checkout widgets and a calculator",
        "category": "ecommerce",
        "image": IMAGE,
        "dependencies": ["shapes-inventory"],
        "apis": [
            {
                "id": "add",
                "name": "Add two numbers",
                "description": "a + b",
                "inputSchema": {"type": "object", "required": ["a", "b"], "properties": {"a": {"type": "number"}, "b": {"type": "number"}}}
            },
            "echo"
        ],
        "configSchema": {"type": "object", "properties": {"currency": {"type": "string", "default": "KRW"}}},
        "widgets": [
            {
                "id": "checkout",
                "displayName": "결제",
                "description": "The full checkout form",
                "category": "form",
                "configSchema": {"type": "object", "properties": {"title": {"type": "string", "default": "지금 결제"}}},
                "renderEndpoint": "/widgets/checkout/render",
                "previewImage": "https://example.com/previews/checkout.png",
                "responsive": true
            },
            {
                // The sample addon knows no widget of this id: it renders only because its
                // renderEndpoint points at the checkout renderer.
                "id": "checkout-compact",
                "displayName": "간단 결제",
                "description": "A smaller checkout",
                "category": "display",
                "configSchema": {"type": "object", "properties": {"title": {"type": "string"}}},
                "renderEndpoint": "/widgets/checkout/render",
                "previewImage": "https://example.com/previews/compact.png",
                "responsive": false
            }
        ]
    })
}

const WIDGET_FIELDS: [&str; 8] =
    ["id", "displayName", "description", "category", "configSchema", "renderEndpoint", "previewImage", "responsive"];

#[tokio::test(flavor = "multi_thread")]
async fn addon_server_manifest_verbatim() {
    let d = Daemon::start().await;
    let sent = addon_server_manifest("shapes-pay");
    let r = d.post("/api/addons/register", sent.clone()).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.data()["name"], "shapes-pay");
    assert_eq!(r.data()["id"], "shapes-pay");
    assert_eq!(r.data()["display_name"], "결제 위젯 모음");
    assert_eq!(r.data()["author"], "Acme Payments");
    assert_eq!(r.data()["actions"][0]["name"], "add");
    assert_eq!(r.data()["actions"][1]["name"], "echo");
    for k in WIDGET_FIELDS {
        assert_eq!(r.data()["widgets"][0][k], sent["widgets"][0][k], "register reply: {k}");
    }

    // An unknown field anywhere, also inside a widget's long form, names its path and the
    // fields known there.
    let mut typo = addon_server_manifest("shapes-typo");
    typo["widgets"][1]["previewImg"] = json!("x.png");
    let r = d.post("/api/addons/register", typo).await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert_eq!(r.body["error"]["field"], "widgets[1].previewImg", "{:?}", r.body);
    let msg = r.body["error"]["message"].as_str().unwrap();
    assert!(msg.contains("`previewImage`") && msg.contains("`renderEndpoint`"), "{msg}");
    assert!(!msg.contains("untagged") && !msg.contains("variant"), "{msg}");
    let mut typo = addon_server_manifest("shapes-typo");
    typo["apis"][0]["schema"] = json!({});
    let r = d.post("/api/addons/register", typo).await;
    assert_eq!((r.status, r.body["error"]["field"].as_str()), (400, Some("apis[0].schema")), "{:?}", r.body);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("`inputSchema`"), "{:?}", r.body);

    // The same manifest as an addon.toml, registered by addonctl.
    let dir = tempfile::tempdir().unwrap();
    let toml_path = dir.path().join("addon.toml");
    std::fs::write(
        &toml_path,
        format!(
            r#"
id = "shapes-toml"
name = "결제 위젯 모음"
version = "1.0.0"
author = "Acme Payments"
image = "{IMAGE}"
dependencies = ["shapes-inventory"]
apis = [{{ id = "add", name = "Add two numbers", inputSchema = {{ type = "object" }} }}, "echo"]

[[widgets]]
id = "checkout"
displayName = "결제"
description = "The full checkout form"
category = "form"
configSchema = {{ type = "object", properties = {{ title = {{ type = "string", default = "지금 결제" }} }} }}
renderEndpoint = "/widgets/checkout/render"
previewImage = "https://example.com/previews/checkout.png"
responsive = true
"#
        ),
    )
    .unwrap();
    ok(&ctl(&d, &["addons", "register", toml_path.to_str().unwrap()]).await, "register addon.toml");
    let r = d.get("/api/addons/shapes-toml").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.data()["manifest"]["display_name"], "결제 위젯 모음");
    assert_eq!(r.data()["manifest"]["dependencies"], json!({"shapes-inventory": "*"}));
    for k in WIDGET_FIELDS {
        assert_eq!(r.data()["manifest"]["widgets"][0][k], sent["widgets"][0][k], "addon.toml: {k}");
    }

    // A list of dependencies is a list of addons that must be installed (any version).
    let r = d.post("/api/addons/shapes-pay/install", json!({"name": "모바일 앱"})).await;
    assert_eq!(r.status, 409, "{:?}", r.body);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("shapes-inventory"), "{:?}", r.body);
    install_addon(&d, json!({"name": "shapes-inventory", "version": "2.3.0", "image": IMAGE, "apis": ["echo"]}), None).await;

    // Installed under a Korean display name; the instance keeps the addon's slug.
    let r = d.post("/api/addons/shapes-pay/install?wait=started&timeout=180", json!({"name": "모바일 앱"})).await;
    assert_eq!(r.status, 201, "{:?}\n{}", r.body, tail(&d.log(), 30));
    assert_eq!(r.data()["instance"], "shapes-pay");
    assert_eq!(r.data()["display_name"], "모바일 앱");
    assert_eq!(r.data()["phase"], "Started");
    // The name is taken now: another installation cannot have it.
    let r = d.post("/api/addons/shapes-pay/install", json!({"instance": "shapes-pay-2", "name": "모바일 앱"})).await;
    assert_eq!(r.status, 409, "{:?}", r.body);
    let r = d.post("/api/addons/shapes-pay/install", json!({"instance": "shapes-pay-2", "name": "모바일\n앱"})).await;
    assert_eq!((r.status, r.body["error"]["field"].as_str()), (400, Some("name")), "{:?}", r.body);

    // The widget catalogue gives every field back as it was sent.
    let r = d.get("/api/widgets").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let listed: Vec<&Value> = r.data().as_array().unwrap().iter().filter(|w| w["addon"] == "shapes-pay").collect();
    assert_eq!(listed.len(), 2, "{:?}", r.body);
    for (got, want) in listed.iter().zip(sent["widgets"].as_array().unwrap()) {
        for k in WIDGET_FIELDS {
            assert_eq!(got[k], want[k], "GET /api/widgets: {k} of {}", want["id"]);
        }
        assert_eq!(got["addon_display_name"], "모바일 앱");
    }
    // GraphQL's Widget.name is the display name, as the addon-server documents name it.
    let r = d.post("/graphql", json!({"query": "{ widgets { id name addonId } }"})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let names: Vec<(String, String)> = r.body["data"]["widgets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["addonId"] == "shapes-pay")
        .map(|w| (w["id"].as_str().unwrap().to_string(), w["name"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(
        names,
        [("checkout".to_string(), "결제".to_string()), ("checkout-compact".to_string(), "간단 결제".to_string())],
        "{:?}",
        r.body
    );
    let r = d.get("/api/widgets?category=display").await;
    assert!(r.data().as_array().unwrap().iter().any(|w| w["id"] == "checkout-compact"), "{:?}", r.body);

    // Looked up by its URL-encoded display name.
    let by_name = encode_path_segment("모바일 앱");
    let r = d.get(&format!("/api/addons/{by_name}")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.data()["instance"], "shapes-pay");
    for k in WIDGET_FIELDS {
        assert_eq!(r.data()["manifest"]["widgets"][1][k], sent["widgets"][1][k], "GET /api/addons/{{display name}}: {k}");
    }

    // Widgets render, the second only through its renderEndpoint.
    let r = d.get("/api/widgets/shapes-pay/checkout").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(r.data()["html"].as_str().unwrap().contains("지금 결제"), "{:?}", r.body);
    let r = d.post(&format!("/api/widgets/{by_name}/checkout-compact"), json!({"config": {"title": "간단히"}, "context": {}})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(r.data()["html"].as_str().unwrap().contains("간단히"), "{:?}", r.body);

    // An action declared under `apis` runs in the container, with its input schema checked.
    let r = d.post(&format!("/api/addons/{by_name}/execute"), json!({"action": "add", "data": {"a": 2, "b": 40}})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.data()["sum"], 42);
    let r = d.post("/api/addons/shapes-pay/execute", json!({"action": "add", "data": {"a": 2}})).await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    let r = d.post("/api/addons/shapes-pay/execute", json!({"action": "echo", "data": {"x": "하나"}})).await;
    assert_eq!(r.data()["echo"]["x"], "하나", "{:?}", r.body);

    // Uninstalled by its display name too.
    let r = d.delete(&format!("/api/addons/{by_name}?wait=deleted&timeout=120")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.data()["instance"], "shapes-pay");
}
